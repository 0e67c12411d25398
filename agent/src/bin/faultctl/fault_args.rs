//! The fault commands' flags (loss, delay, netem, partition), shared by applying a fault and
//! by `faultctl run`, which adds the command to run; and the apply request they make.

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Map, Value};

use super::netem_args::{burst_json, NetemArgs};

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
        #[arg(long, value_name = "P,R[,1-H[,1-K]]", value_parser = burst_json)]
        burst: Option<Value>,
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

    /// The `apply` request's arguments: `{"fault": ..., "key"?: ...}`.
    pub(crate) fn apply_args(&self) -> Value {
        let (target, action, body) = match self {
            Self::Loss {
                target,
                percent,
                burst,
                ..
            } => {
                let loss = match (percent, burst) {
                    (Some(p), _) => json!({"percent": p}),
                    (None, Some(burst)) => json!({"burst": burst}),
                    (None, None) => unreachable!("clap requires one"),
                };
                (target, "loss", loss)
            }
            Self::Partition { target, .. } => (target, "partition", json!({})),
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
            } => (target, "netem", netem.to_json(delay.as_ref())),
        };
        let common = self.common();
        let mut fault = json!({"target": target.to_json(), action: body});
        if let Some(duration) = &common.duration {
            fault["duration"] = json!(duration);
        }
        if let Some(label) = &common.label {
            fault["label"] = json!(label);
        }
        let mut args = json!({"fault": fault});
        if let Some(key) = &common.key {
            args["key"] = json!(key);
        }
        if common.dry_run {
            args["dry_run"] = json!(true);
        }
        args
    }
}

impl TargetArgs {
    fn to_json(&self) -> Value {
        let mut matcher = Map::new();
        let mut put = |name: &str, values: &[String]| {
            if !values.is_empty() {
                matcher.insert(name.into(), json!(values));
            }
        };
        put("src", &self.src);
        put("dst", &self.dst);
        put("sport", &self.sport);
        put("dport", &self.dport);
        if let Some(proto) = &self.proto {
            matcher.insert("proto".into(), json!(proto));
        }
        let mut target = json!({"dev": self.dev, "match": matcher});
        for (name, value) in [
            ("netns", self.netns.as_ref().map(|v| json!(v))),
            ("direction", self.direction.as_ref().map(|v| json!(v))),
            ("flows", self.flows.map(|v| json!(v))),
        ] {
            if let Some(value) = value {
                target[name] = value;
            }
        }
        target
    }
}
