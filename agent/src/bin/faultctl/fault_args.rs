//! The fault commands' flags (loss, delay, netem, partition), shared by applying a fault and
//! by `faultctl run`, which adds the command to run; and the apply request they make.

use clap::{Args, Subcommand, ValueEnum};
use faultline::{
    fault::spec::{BurstWire, FaultWire, LossWire, MatchWire, PartitionWire, PortWire, TargetWire},
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
    /// egress, ingress or both (default: egress for loss, both for partition).
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
            | Self::Partition { common, .. } => common,
        }
    }

    pub(crate) fn then(&self) -> &X {
        match self {
            Self::Loss { then, .. }
            | Self::Delay { then, .. }
            | Self::Netem { then, .. }
            | Self::Partition { then, .. } => then,
        }
    }

    /// The `apply` request the flags make.
    pub(crate) fn apply_request(&self) -> Apply {
        let common = self.common();
        let (target, loss, partition, netem) = match self {
            Self::Loss {
                target,
                percent,
                burst,
                ..
            } => {
                let loss = LossWire {
                    percent: *percent,
                    burst: burst.clone(),
                };
                (target, Some(loss), None, None)
            }
            Self::Partition { target, .. } => (target, None, Some(PartitionWire {}), None),
            Self::Delay {
                target,
                delay,
                netem,
                ..
            }
            | Self::Netem {
                target,
                delay,
                netem,
                ..
            } => (target, None, None, Some(netem.to_wire(delay.clone()))),
        };
        let fault = FaultWire {
            target: target.to_wire(),
            loss,
            partition,
            netem,
            duration: common.duration.clone(),
            label: common.label.clone(),
        };
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
        }
    }
}
