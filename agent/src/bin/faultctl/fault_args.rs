//! The fault commands' flags (loss, delay, netem, partition, reset, reject, stall, reset-after,
//! corrupt), shared by
//! applying a fault and by `faultctl run`, which adds the command to run; and the apply request
//! they make.

use clap::{Args, Subcommand, ValueEnum};
use faultline::{
    fault::{
        burst::BurstWire,
        corrupt::CorruptWire,
        spec::{
            FaultWire, LossWire, MatchWire, PartitionWire, PortWire, RejectWire, ResetAfterWire,
            ResetWire, StallWire, TargetWire,
        },
    },
    proto::{Apply, Lease},
};

use super::netem_args::{burst, NetemArgs};

/// One fault command; `X` is what follows its flags (nothing, or `run`'s `-- CMD`).
#[derive(Debug, Subcommand)]
pub(crate) enum FaultCmd<X: Args> {
    /// Drop a share of the matching packets.
    Loss {
        #[command(flatten)]
        target: TargetArgs,
        /// Percent of packets to drop, uniformly at random.
        #[arg(long, required_unless_present = "burst", conflicts_with = "burst")]
        percent: Option<f64>,
        /// Gilbert-Elliott bursts, as netem's gemodel: P,R[,1-H[,1-K]] in percent.
        #[arg(long, value_name = "P,R[,1-H[,1-K]]", value_parser = burst)]
        burst: Option<BurstWire>,
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        then: X,
    },
    /// Delay matching packets (netem), optionally with jitter and other impairments.
    Delay {
        #[command(flatten)]
        target: TargetArgs,
        /// Added latency, e.g. 100ms.
        #[arg(long, required = true)]
        delay: Option<String>,
        #[command(flatten)]
        netem: NetemArgs,
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        then: X,
    },
    /// Impair matching packets with any combination of netem's knobs.
    Netem {
        #[command(flatten)]
        target: TargetArgs,
        /// Added latency, e.g. 100ms.
        #[arg(long)]
        delay: Option<String>,
        #[command(flatten)]
        netem: NetemArgs,
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        then: X,
    },
    /// Drop every matching packet.
    Partition {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        then: X,
    },
    /// Answer matching TCP segments with a RST: the local application gets ECONNRESET at its
    /// next send (the handshake passes, so new connections open and are then reset).
    Reset {
        #[command(flatten)]
        target: TargetArgs,
        /// The peer gets a RST too.
        #[arg(long)]
        peer: bool,
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        then: X,
    },
    /// Refuse new connections as a closed port does: a SYN gets RST/ACK (ECONNREFUSED), a UDP
    /// datagram ICMP port unreachable.
    Reject {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        then: X,
    },
    /// Per TCP connection and direction, let BYTES of payload through, then nothing: a hung
    /// API or TLS handshake.
    Stall {
        #[command(flatten)]
        target: TargetArgs,
        /// Payload bytes each connection passes per direction (0: none).
        #[arg(long)]
        bytes: i64,
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        then: X,
    },
    /// Per TCP connection and direction, let BYTES of payload through, then reset the
    /// connection.
    ResetAfter {
        #[command(flatten)]
        target: TargetArgs,
        /// Payload bytes each connection passes per direction (0: none).
        #[arg(long)]
        bytes: i64,
        /// The peer gets a RST too.
        #[arg(long)]
        peer: bool,
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        then: X,
    },
    /// Flip payload bits in a share of the matching TCP and UDP packets: with the checksum
    /// recomputed the application receives the corrupted bytes; left broken, the receiving
    /// kernel discards the packets (netem's corrupt).
    Corrupt {
        #[command(flatten)]
        target: TargetArgs,
        /// Percent of packets to corrupt, uniformly at random.
        #[arg(long, required = true)]
        percent: Option<f64>,
        /// Payload bits flipped in each corrupted packet (1-8; default 1).
        #[arg(long)]
        bits: Option<i64>,
        /// recompute (the default): the application gets corrupted bytes; broken: they are
        /// discarded by the receiver.
        #[arg(long, value_parser = ["recompute", "broken"])]
        checksum: Option<String>,
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        then: X,
    },
}

/// Nothing follows a plain fault command.
#[derive(Debug, Args)]
pub(crate) struct NoCommand {}

#[derive(Debug, Args)]
pub(crate) struct TargetArgs {
    /// Network device to act on.
    #[arg(long)]
    pub(crate) dev: String,
    /// Network namespace: a name under /run/netns, a path, or pid:N.
    #[arg(long)]
    pub(crate) netns: Option<String>,
    /// egress, ingress or both (default: egress for loss, netem and corrupt; both for partition,
    /// reset and reject).
    #[arg(long)]
    pub(crate) direction: Option<String>,
    /// tcp, udp, icmp, icmpv6 or any.
    #[arg(long)]
    pub(crate) proto: Option<String>,
    /// This host's side of the flow (CIDR; repeatable).
    #[arg(long)]
    pub(crate) src: Vec<String>,
    /// The peer's side of the flow (CIDR; repeatable).
    #[arg(long)]
    pub(crate) dst: Vec<String>,
    /// This host's port or range, e.g. 8080 or 9000-9100 (repeatable).
    #[arg(long)]
    pub(crate) sport: Vec<String>,
    /// The peer's port or range (repeatable).
    #[arg(long)]
    pub(crate) dport: Vec<String>,
    /// Fraction of flows affected, chosen by a hash of each flow (0 < F <= 1).
    #[arg(long)]
    pub(crate) flows: Option<f64>,
    /// TCP connections acted on: new (SYN seen after the fault began), established, or all.
    #[arg(long, value_parser = ["new", "established", "all"])]
    pub(crate) connections: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct CommonArgs {
    /// How long the fault lasts, e.g. 30s, 500ms, 2m.
    #[arg(long = "for", value_name = "DURATION")]
    pub(crate) duration: Option<String>,
    /// A free-text label shown in listings.
    #[arg(long)]
    pub(crate) label: Option<String>,
    /// Makes a retried apply idempotent: the same key returns the same fault.
    #[arg(long)]
    pub(crate) key: Option<String>,
    /// `connection`: hold the fault only while faultctl runs. faultctl stays connected until
    /// the fault ends, or until SIGINT/SIGTERM, when it revokes the fault and exits 0; if
    /// faultctl dies, faultd revokes the fault as the connection closes.
    #[arg(long, value_enum, value_name = "connection")]
    pub(crate) lease: Option<LeaseArg>,
    /// Check the fault and print the kernel objects it would use; change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum LeaseArg {
    Connection,
}

impl<X: Args> FaultCmd<X> {
    pub(crate) fn common(&self) -> &CommonArgs {
        match self {
            Self::Loss { common, .. }
            | Self::Delay { common, .. }
            | Self::Netem { common, .. }
            | Self::Partition { common, .. }
            | Self::Reset { common, .. }
            | Self::Reject { common, .. }
            | Self::Stall { common, .. }
            | Self::ResetAfter { common, .. }
            | Self::Corrupt { common, .. } => common,
        }
    }

    pub(crate) fn then(&self) -> &X {
        match self {
            Self::Loss { then, .. }
            | Self::Delay { then, .. }
            | Self::Netem { then, .. }
            | Self::Partition { then, .. }
            | Self::Reset { then, .. }
            | Self::Reject { then, .. }
            | Self::Stall { then, .. }
            | Self::ResetAfter { then, .. }
            | Self::Corrupt { then, .. } => then,
        }
    }

    /// The `apply` request the flags make.
    pub(crate) fn apply_request(&self) -> Apply {
        let common = self.common();
        let target = match self {
            Self::Loss { target, .. }
            | Self::Delay { target, .. }
            | Self::Netem { target, .. }
            | Self::Partition { target, .. }
            | Self::Reset { target, .. }
            | Self::Reject { target, .. }
            | Self::Stall { target, .. }
            | Self::ResetAfter { target, .. }
            | Self::Corrupt { target, .. } => target,
        };
        let mut fault = FaultWire {
            target: target.to_wire(),
            loss: None,
            partition: None,
            reset: None,
            reject: None,
            stall: None,
            reset_after: None,
            corrupt: None,
            netem: None,
            duration: common.duration.clone(),
            label: common.label.clone(),
        };
        match self {
            Self::Loss { percent, burst, .. } => {
                fault.loss = Some(LossWire {
                    percent: *percent,
                    burst: burst.clone(),
                })
            }
            Self::Partition { .. } => fault.partition = Some(PartitionWire {}),
            Self::Reset { peer, .. } => fault.reset = Some(ResetWire { peer: Some(*peer) }),
            Self::Reject { .. } => fault.reject = Some(RejectWire {}),
            Self::Stall { bytes, .. } => fault.stall = Some(StallWire { bytes: *bytes }),
            Self::ResetAfter { bytes, peer, .. } => {
                fault.reset_after = Some(ResetAfterWire {
                    bytes: *bytes,
                    peer: Some(*peer),
                })
            }
            Self::Corrupt {
                percent,
                bits,
                checksum,
                ..
            } => {
                fault.corrupt = Some(CorruptWire {
                    percent: *percent,
                    bits: *bits,
                    checksum: checksum.clone(),
                })
            }
            Self::Delay { delay, netem, .. } | Self::Netem { delay, netem, .. } => {
                fault.netem = Some(netem.to_wire(delay.clone()))
            }
        }
        Apply {
            fault: Box::new(fault),
            key: common.key.clone(),
            lease: common.lease.map(|LeaseArg::Connection| Lease::Connection),
            dry_run: common.dry_run,
        }
    }
}

impl TargetArgs {
    fn to_wire(&self) -> TargetWire {
        let ports = |ports: &[String]| ports.iter().cloned().map(PortWire::Text).collect();
        TargetWire {
            netns: self.netns.clone(),
            dev: self.dev.clone(),
            direction: self.direction.clone(),
            matcher: Some(MatchWire {
                proto: self.proto.clone(),
                src: self.src.clone(),
                dst: self.dst.clone(),
                sport: ports(&self.sport),
                dport: ports(&self.dport),
            }),
            flows: self.flows,
            connections: self.connections.clone(),
        }
    }
}
