//! The fault spec: its JSON wire form, and the validated form every layer below the protocol
//! works with. `FaultSpec::from_wire` is the only way in, so a `FaultSpec` is always valid.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::burst::{BurstWire, GilbertElliott};
use super::corrupt::{Corrupt, CorruptWire};
use super::error::SpecError;
use super::netem::{Netem, NetemWire};
use super::values::{
    format_duration, parse_duration, Cidr, Connections, Direction, Fraction, Percent, PortRange,
    Proto, ValueError,
};
use crate::abi::{MAX_LOCAL_CIDRS, MAX_PORT_RANGES};

/// Most remote (`dst`) CIDRs one fault may name; each is one entry in the datapath's trie.
pub const MAX_REMOTE_CIDRS: usize = 64;
pub const MAX_LABEL_LEN: usize = 256;

// ---- wire form -------------------------------------------------------------------------------

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultWire {
    pub target: TargetWire,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<LossWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<PartitionWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<ResetWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject: Option<RejectWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall: Option<StallWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_after: Option<ResetAfterWire>,
    /// Flip payload bits, the checksum recomputed or left broken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<CorruptWire>,
    /// Delay and the rest of the netem model, applied by a netem qdisc.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netem: Option<NetemWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    pub dev: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub matcher: Option<MatchWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flows: Option<f64>,
    /// `new`, `established` or `all` (the default, left out of the normalised form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MatchWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub src: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dst: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sport: Vec<PortWire>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dport: Vec<PortWire>,
}

/// A port or range, written `80`, `"80"` or `"9000-9100"`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum PortWire {
    Number(i64),
    Text(String),
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LossWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<BurstWire>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PartitionWire {}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResetWire {
    /// The peer gets a RST too, not only this host's side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RejectWire {}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StallWire {
    /// Payload bytes each connection passes per direction before nothing more does.
    pub bytes: i64,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResetAfterWire {
    /// Payload bytes each connection passes per direction before it is reset.
    pub bytes: i64,
    /// The peer gets a RST too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<bool>,
}

// ---- validated form --------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
pub struct FaultSpec {
    pub target: Target,
    pub action: Action,
    pub duration: Duration,
    pub label: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub netns: Option<NetnsRef>,
    pub dev: DeviceName,
    pub direction: Direction,
    pub matcher: FlowMatch,
    pub flows: Option<Fraction>,
    pub connections: Connections,
}

/// Where a target's network namespace is: `None` in `Target` means faultd's own.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NetnsRef {
    /// A name under /run/netns, as `ip netns` makes them.
    Named(String),
    /// A path to an nsfs file, e.g. /proc/123/ns/net or a bind mount.
    Path(PathBuf),
    /// The namespace of a running process.
    Pid(u32),
}

impl NetnsRef {
    pub fn path(&self) -> PathBuf {
        match self {
            Self::Named(name) => PathBuf::from("/run/netns").join(name),
            Self::Path(path) => path.clone(),
            Self::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
        }
    }

    fn parse(text: &str) -> Result<Self, ValueError> {
        let bad = |why: &str| ValueError(format!("{text:?}: {why}"));
        if let Some(pid) = text.strip_prefix("pid:") {
            return pid
                .parse()
                .map(Self::Pid)
                .map_err(|_| bad("pid:N needs a process id"));
        }
        if text.starts_with('/') {
            return Ok(Self::Path(PathBuf::from(text)));
        }
        if text.is_empty() || text.contains('/') || text == "." || text == ".." {
            return Err(bad(
                "not a name under /run/netns, an absolute path, or pid:N",
            ));
        }
        Ok(Self::Named(text.to_owned()))
    }

    pub fn to_wire(&self) -> String {
        match self {
            Self::Named(name) => name.clone(),
            Self::Path(path) => path.display().to_string(),
            Self::Pid(pid) => format!("pid:{pid}"),
        }
    }
}

/// A network interface name as the kernel accepts them (1–15 bytes, no '/' or whitespace).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceName(String);

impl DeviceName {
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        let ok = !text.is_empty()
            && text.len() < 16
            && text != "."
            && text != ".."
            && !text
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace());
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(ValueError(format!(
                "{text:?} is not a network interface name"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Flows as this host sends them: `src`/`sport` are this host's side, `dst`/`dport` the peer's.
/// Ingress packets of the same flows are matched with the sides swapped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FlowMatch {
    pub proto: Proto,
    pub src: Vec<Cidr>,
    pub dst: Vec<Cidr>,
    pub sport: Vec<PortRange>,
    pub dport: Vec<PortRange>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Partition,
    Loss(Percent),
    BurstLoss(GilbertElliott),
    Netem(Box<Netem>),
    /// Answer TCP segments with a RST to this host's side, and to the peer's when `peer`.
    Reset {
        peer: bool,
    },
    /// Refuse new connections as a closed port does: RST/ACK, ICMP port unreachable.
    Reject,
    /// Per TCP connection and direction, `budget` payload bytes pass; then `then`.
    Stall {
        budget: u32,
        then: StallEnd,
    },
    /// Flip payload bits of a share of the TCP and UDP packets.
    Corrupt(Corrupt),
}

/// What a stall does once a connection has spent its budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StallEnd {
    /// Nothing more passes: the connection hangs (`stall`).
    Drop,
    /// The connection is reset as by `reset` (`reset_after`).
    Reset { peer: bool },
}

/// The actions of the wire form, in the order error messages name them.
const ACTIONS: &str = "\"loss\", \"partition\", \"netem\", \"reset\", \"reject\", \"stall\", \
                       \"reset_after\" or \"corrupt\"";

/// Duration bounds the agent enforces; the policy of issue 4 will extend this.
#[derive(Clone, Copy, Debug)]
pub struct DurationLimits {
    pub default: Option<Duration>,
    pub max: Duration,
}

impl FaultSpec {
    pub fn from_wire(wire: &FaultWire, limits: &DurationLimits) -> Result<Self, SpecError> {
        let given = [
            wire.loss.is_some(),
            wire.partition.is_some(),
            wire.netem.is_some(),
            wire.reset.is_some(),
            wire.reject.is_some(),
            wire.stall.is_some(),
            wire.reset_after.is_some(),
            wire.corrupt.is_some(),
        ];
        match given.iter().filter(|&&g| g).count() {
            0 => {
                return Err(SpecError::new(
                    "fault",
                    format!("needs an action: {ACTIONS}"),
                ))
            }
            1 => {}
            _ => {
                return Err(SpecError::new(
                    "fault",
                    format!("needs exactly one action of {ACTIONS}"),
                ))
            }
        }
        let action = if let Some(loss) = &wire.loss {
            loss_action(loss)?
        } else if let Some(netem) = &wire.netem {
            Action::Netem(Box::new(Netem::from_wire(netem)?))
        } else if let Some(reset) = &wire.reset {
            Action::Reset {
                peer: reset.peer.unwrap_or(false),
            }
        } else if wire.reject.is_some() {
            Action::Reject
        } else if let Some(stall) = &wire.stall {
            Action::Stall {
                budget: stall_budget(stall.bytes, "fault.stall.bytes")?,
                then: StallEnd::Drop,
            }
        } else if let Some(after) = &wire.reset_after {
            Action::Stall {
                budget: stall_budget(after.bytes, "fault.reset_after.bytes")?,
                then: StallEnd::Reset {
                    peer: after.peer.unwrap_or(false),
                },
            }
        } else if let Some(corrupt) = &wire.corrupt {
            Action::Corrupt(Corrupt::from_wire(corrupt)?)
        } else {
            Action::Partition
        };
        let duration = match &wire.duration {
            Some(text) => parse_duration(text).map_err(SpecError::at("fault.duration"))?,
            None => limits.default.ok_or_else(|| {
                SpecError::new(
                    "fault.duration",
                    "required (no default duration is configured)",
                )
            })?,
        };
        if duration.is_zero() {
            return Err(SpecError::new("fault.duration", "must be longer than zero"));
        }
        if duration > limits.max {
            return Err(SpecError::new(
                "fault.duration",
                format!(
                    "{} exceeds the maximum of {}",
                    format_duration(duration),
                    format_duration(limits.max)
                ),
            ));
        }
        if let Some(label) = &wire.label {
            if label.len() > MAX_LABEL_LEN {
                return Err(SpecError::new(
                    "fault.label",
                    format!("longer than {MAX_LABEL_LEN} bytes"),
                ));
            }
        }
        let default_direction = match action {
            Action::Partition | Action::Reset { .. } | Action::Reject | Action::Stall { .. } => {
                Direction::Both
            }
            Action::Loss(_) | Action::BurstLoss(_) | Action::Netem(_) | Action::Corrupt(_) => {
                Direction::Egress
            }
        };
        let target = target(&wire.target, default_direction)?;
        // With `any`, the datapath leaves the packets it cannot act on alone.
        let acts_on = match action {
            Action::Reset { .. } => Some(("reset", &[Proto::Any, Proto::Tcp][..])),
            Action::Reject => Some(("reject", &[Proto::Any, Proto::Tcp, Proto::Udp][..])),
            Action::Stall {
                then: StallEnd::Drop,
                ..
            } => Some(("stall", &[Proto::Any, Proto::Tcp][..])),
            Action::Stall {
                then: StallEnd::Reset { .. },
                ..
            } => Some(("reset_after", &[Proto::Any, Proto::Tcp][..])),
            Action::Corrupt(_) => Some(("corrupt", &[Proto::Any, Proto::Tcp, Proto::Udp][..])),
            Action::Partition | Action::Loss(_) | Action::BurstLoss(_) | Action::Netem(_) => None,
        };
        if let Some((name, protos)) = acts_on {
            let proto = target.matcher.proto;
            if !protos.contains(&proto) {
                let names: Vec<&str> = protos.iter().map(|p| p.name()).collect();
                return Err(SpecError::new(
                    "fault.target.match.proto",
                    format!(
                        "{name} acts only on {}; not {}",
                        names.join(" or "),
                        proto.name()
                    ),
                ));
            }
        }
        Ok(Self {
            target,
            action,
            duration,
            label: wire.label.clone(),
        })
    }

    /// The normalised wire form, defaults filled in, for responses and the journal.
    pub fn to_wire(&self) -> FaultWire {
        let t = &self.target;
        let m = &t.matcher;
        let strings = |v: &[Cidr]| v.iter().map(ToString::to_string).collect();
        let ports = |v: &[PortRange]| v.iter().map(|p| PortWire::Text(p.to_string())).collect();
        let (mut loss, mut partition, mut netem) = (None, None, None);
        let (mut reset, mut reject, mut corrupt) = (None, None, None);
        let (mut stall, mut reset_after) = (None, None);
        match &self.action {
            Action::Partition => partition = Some(PartitionWire {}),
            Action::Reset { peer } => reset = Some(ResetWire { peer: Some(*peer) }),
            Action::Reject => reject = Some(RejectWire {}),
            Action::Stall {
                budget,
                then: StallEnd::Drop,
            } => {
                stall = Some(StallWire {
                    bytes: i64::from(*budget),
                })
            }
            Action::Stall {
                budget,
                then: StallEnd::Reset { peer },
            } => {
                reset_after = Some(ResetAfterWire {
                    bytes: i64::from(*budget),
                    peer: Some(*peer),
                })
            }
            Action::Corrupt(c) => corrupt = Some(c.to_wire()),
            Action::Loss(p) => {
                loss = Some(LossWire {
                    percent: Some(p.value()),
                    burst: None,
                })
            }
            Action::Netem(n) => netem = Some(n.to_wire()),
            Action::BurstLoss(ge) => {
                loss = Some(LossWire {
                    percent: None,
                    burst: Some(ge.to_wire()),
                })
            }
        }
        FaultWire {
            target: TargetWire {
                netns: t.netns.as_ref().map(NetnsRef::to_wire),
                dev: t.dev.as_str().to_owned(),
                direction: Some(t.direction.name().to_owned()),
                matcher: Some(MatchWire {
                    proto: Some(m.proto.name().to_owned()),
                    src: strings(&m.src),
                    dst: strings(&m.dst),
                    sport: ports(&m.sport),
                    dport: ports(&m.dport),
                }),
                flows: t.flows.map(Fraction::value),
                connections: (t.connections != Connections::All)
                    .then(|| t.connections.name().to_owned()),
            },
            loss,
            partition,
            reset,
            reject,
            stall,
            reset_after,
            corrupt,
            netem,
            duration: Some(format_duration(self.duration)),
            label: self.label.clone(),
        }
    }
}

/// A stall's budget: 0 (nothing passes) up to 2 GiB - 1. The datapath compares TCP sequence
/// numbers, which wrap at 2^32, by their signed difference: half the space is the most it
/// can tell ahead from behind.
fn stall_budget(bytes: i64, field: &str) -> Result<u32, SpecError> {
    i32::try_from(bytes)
        .ok()
        .and_then(|b| u32::try_from(b).ok())
        .ok_or_else(|| {
            SpecError::new(
                field,
                format!("{bytes} is not a byte count in 0..={}", i32::MAX),
            )
        })
}

fn loss_action(loss: &LossWire) -> Result<Action, SpecError> {
    match (loss.percent, &loss.burst) {
        (Some(percent), None) => Ok(Action::Loss(
            Percent::new(percent).map_err(SpecError::at("fault.loss.percent"))?,
        )),
        (None, Some(b)) => Ok(Action::BurstLoss(GilbertElliott::from_wire(
            b,
            "fault.loss.burst",
        )?)),
        (None, None) => Err(SpecError::new(
            "fault.loss",
            "needs \"percent\" or \"burst\"",
        )),
        (Some(_), Some(_)) => Err(SpecError::new(
            "fault.loss",
            "\"percent\" and \"burst\" exclude each other",
        )),
    }
}

fn target(wire: &TargetWire, default_direction: Direction) -> Result<Target, SpecError> {
    let netns = wire
        .netns
        .as_deref()
        .map(NetnsRef::parse)
        .transpose()
        .map_err(SpecError::at("fault.target.netns"))?;
    let dev = DeviceName::parse(&wire.dev).map_err(SpecError::at("fault.target.dev"))?;
    let direction = match &wire.direction {
        Some(text) => text
            .parse()
            .map_err(SpecError::at("fault.target.direction"))?,
        None => default_direction,
    };
    let flows = wire
        .flows
        .map(Fraction::new)
        .transpose()
        .map_err(SpecError::at("fault.target.flows"))?;
    let matcher = flow_match(wire.matcher.as_ref().unwrap_or(&MatchWire::default()))?;
    let connections = match &wire.connections {
        Some(text) => text
            .parse()
            .map_err(SpecError::at("fault.target.connections"))?,
        None => Connections::All,
    };
    Ok(Target {
        netns,
        dev,
        direction,
        matcher,
        flows,
        connections,
    })
}

fn flow_match(wire: &MatchWire) -> Result<FlowMatch, SpecError> {
    const AT: &str = "fault.target.match";
    let proto = match &wire.proto {
        Some(text) => text.parse().map_err(SpecError::at(format!("{AT}.proto")))?,
        None => Proto::Any,
    };
    let cidrs = |name: &str, items: &[String], max: usize| -> Result<Vec<Cidr>, SpecError> {
        if items.len() > max {
            return Err(SpecError::new(
                format!("{AT}.{name}"),
                format!("at most {max} CIDRs"),
            ));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, text)| {
                text.parse()
                    .map_err(SpecError::at(format!("{AT}.{name}[{i}]")))
            })
            .collect()
    };
    let ports = |name: &str, items: &[PortWire]| -> Result<Vec<PortRange>, SpecError> {
        if items.len() > MAX_PORT_RANGES {
            return Err(SpecError::new(
                format!("{AT}.{name}"),
                format!("at most {MAX_PORT_RANGES} port ranges"),
            ));
        }
        if !items.is_empty() && !matches!(proto, Proto::Any | Proto::Tcp | Proto::Udp) {
            return Err(SpecError::new(
                format!("{AT}.{name}"),
                format!("ports need proto tcp or udp, not {}", proto.name()),
            ));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let text = match item {
                    PortWire::Number(n) => n.to_string(),
                    PortWire::Text(t) => t.clone(),
                };
                text.parse()
                    .map_err(SpecError::at(format!("{AT}.{name}[{i}]")))
            })
            .collect()
    };
    let matcher = FlowMatch {
        proto,
        src: cidrs("src", &wire.src, MAX_LOCAL_CIDRS)?,
        dst: cidrs("dst", &wire.dst, MAX_REMOTE_CIDRS)?,
        sport: ports("sport", &wire.sport)?,
        dport: ports("dport", &wire.dport)?,
    };
    let families = |v: &[Cidr]| {
        (
            v.iter().any(|c| c.addr().is_ipv4()),
            v.iter().any(|c| c.addr().is_ipv6()),
        )
    };
    if !matcher.src.is_empty() && !matcher.dst.is_empty() {
        let (src4, src6) = families(&matcher.src);
        let (dst4, dst6) = families(&matcher.dst);
        if !(src4 && dst4 || src6 && dst6) {
            return Err(SpecError::new(
                AT,
                "src and dst are of different IP families; nothing can match",
            ));
        }
    }
    Ok(matcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: DurationLimits = DurationLimits {
        default: None,
        max: Duration::from_secs(3600),
    };

    fn parse(json: &str) -> Result<FaultSpec, SpecError> {
        let wire: FaultWire = serde_json::from_str(json).expect("wire json");
        FaultSpec::from_wire(&wire, &LIMITS)
    }

    fn field_of(json: &str) -> String {
        parse(json).expect_err("must be rejected").field
    }

    #[test]
    fn full_spec_round_trips() {
        let spec = parse(
            r#"{"target":{"netns":"lab-a","dev":"veth0","direction":"both",
                "match":{"proto":"udp","src":["10.0.0.0/24"],"dst":["10.0.0.2"],
                "sport":[53],"dport":["9000-9100"]},"flows":0.25},
                "loss":{"percent":20},"duration":"30s","label":"drill"}"#,
        )
        .expect("valid");
        assert_eq!(spec.target.netns, Some(NetnsRef::Named("lab-a".into())));
        assert_eq!(spec.action, Action::Loss(Percent::new(20.0).expect("20")));
        assert_eq!(spec.duration, Duration::from_secs(30));
        let again = FaultSpec::from_wire(&spec.to_wire(), &LIMITS).expect("normalised is valid");
        assert_eq!(again, spec);
    }

    #[test]
    fn defaults() {
        let spec =
            parse(r#"{"target":{"dev":"eth0"},"partition":{},"duration":"3s"}"#).expect("ok");
        assert_eq!(spec.target.direction, Direction::Both);
        assert_eq!(spec.target.matcher, FlowMatch::default());
        let spec =
            parse(r#"{"target":{"dev":"eth0"},"loss":{"burst":{"p":1,"r":25}},"duration":"3s"}"#)
                .expect("ok");
        assert_eq!(spec.target.direction, Direction::Egress);
        match spec.action {
            Action::BurstLoss(ge) => {
                assert_eq!(ge.loss_bad.value(), 100.0);
                assert_eq!(ge.loss_good.value(), 0.0);
                assert_eq!(100.0 / ge.r.value(), 4.0, "mean burst 1/r");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_values_name_their_field() {
        let base = |loss: &str, target_extra: &str, duration: &str| {
            format!(
                r#"{{"target":{{"dev":"eth0"{target_extra}}},"loss":{loss},"duration":"{duration}"}}"#
            )
        };
        assert_eq!(
            field_of(&base(r#"{"percent":150}"#, "", "1s")),
            "fault.loss.percent"
        );
        assert_eq!(
            field_of(&base(
                r#"{"percent":5}"#,
                r#","match":{"dst":["10.0.0.0/33"]}"#,
                "1s"
            )),
            "fault.target.match.dst[0]"
        );
        assert_eq!(
            field_of(&base(
                r#"{"percent":5}"#,
                r#","match":{"dport":[70000]}"#,
                "1s"
            )),
            "fault.target.match.dport[0]"
        );
        assert_eq!(
            field_of(&base(
                r#"{"percent":5}"#,
                r#","match":{"proto":"sctp"}"#,
                "1s"
            )),
            "fault.target.match.proto"
        );
        assert_eq!(
            field_of(&base(r#"{"percent":5}"#, "", "0s")),
            "fault.duration"
        );
        assert_eq!(
            field_of(&base(r#"{"percent":5}"#, "", "-5s")),
            "fault.duration"
        );
        assert_eq!(
            field_of(&base(r#"{"percent":5}"#, "", "48h")),
            "fault.duration"
        );
        assert_eq!(
            field_of(&base(r#"{"percent":5}"#, r#","flows":1.5"#, "1s")),
            "fault.target.flows"
        );
        assert_eq!(
            field_of(&base(r#"{"percent":5}"#, r#","netns":"a/b""#, "1s")),
            "fault.target.netns"
        );
        assert_eq!(field_of(&base(r#"{}"#, "", "1s")), "fault.loss");
        assert_eq!(
            field_of(&base(
                r#"{"percent":5}"#,
                r#","match":{"proto":"icmp","dport":[1]}"#,
                "1s"
            )),
            "fault.target.match.dport"
        );
        assert_eq!(
            field_of(&base(
                r#"{"percent":5}"#,
                r#","match":{"src":["10.0.0.0/8"],"dst":["fd00::/8"]}"#,
                "1s"
            )),
            "fault.target.match"
        );
        assert_eq!(
            field_of(r#"{"target":{"dev":"eth0"},"duration":"1s"}"#),
            "fault"
        );
        assert_eq!(
            field_of(
                r#"{"target":{"dev":"this-name-is-too-long"},"partition":{},"duration":"1s"}"#
            ),
            "fault.target.dev"
        );
        assert_eq!(
            field_of(r#"{"target":{"dev":"eth0"},"partition":{}}"#),
            "fault.duration"
        );
    }

    #[test]
    fn connection_actions_and_their_defaults() {
        let spec = parse(
            r#"{"target":{"dev":"eth0","connections":"new","match":{"proto":"tcp"}},
                "reset":{"peer":true},"duration":"3s"}"#,
        )
        .expect("valid");
        assert_eq!(spec.action, Action::Reset { peer: true });
        assert_eq!(spec.target.direction, Direction::Both);
        assert_eq!(spec.target.connections, Connections::New);
        assert_eq!(FaultSpec::from_wire(&spec.to_wire(), &LIMITS), Ok(spec));
        let spec = parse(r#"{"target":{"dev":"eth0"},"reject":{},"duration":"3s"}"#).expect("ok");
        assert_eq!(spec.action, Action::Reject);
        assert_eq!(spec.target.connections, Connections::All);
        // `all` is the default, and left out of the normalised form.
        assert_eq!(spec.to_wire().target.connections, None);
        let spec = parse(r#"{"target":{"dev":"eth0"},"reset":{},"duration":"3s"}"#).expect("ok");
        assert_eq!(spec.action, Action::Reset { peer: false });
    }

    #[test]
    fn stalls_hold_a_budget_then_drop_or_reset() {
        let spec = parse(r#"{"target":{"dev":"e"},"stall":{"bytes":512},"duration":"3s"}"#)
            .expect("valid");
        assert_eq!(
            spec.action,
            Action::Stall {
                budget: 512,
                then: StallEnd::Drop
            }
        );
        assert_eq!(spec.target.direction, Direction::Both);
        assert_eq!(FaultSpec::from_wire(&spec.to_wire(), &LIMITS), Ok(spec));
        let spec = parse(
            r#"{"target":{"dev":"e"},"reset_after":{"bytes":0,"peer":true},"duration":"3s"}"#,
        )
        .expect("valid");
        assert_eq!(
            spec.action,
            Action::Stall {
                budget: 0,
                then: StallEnd::Reset { peer: true }
            }
        );
        assert_eq!(FaultSpec::from_wire(&spec.to_wire(), &LIMITS), Ok(spec));
        assert_eq!(
            field_of(r#"{"target":{"dev":"e"},"stall":{"bytes":-1},"duration":"1s"}"#),
            "fault.stall.bytes"
        );
        assert_eq!(
            field_of(
                r#"{"target":{"dev":"e"},"reset_after":{"bytes":2147483648},"duration":"1s"}"#
            ),
            "fault.reset_after.bytes"
        );
        assert_eq!(
            field_of(
                r#"{"target":{"dev":"e","match":{"proto":"udp"}},"stall":{"bytes":1},"duration":"1s"}"#
            ),
            "fault.target.match.proto"
        );
    }

    #[test]
    fn connection_actions_refuse_what_they_cannot_answer() {
        assert_eq!(
            field_of(
                r#"{"target":{"dev":"e","match":{"proto":"udp"}},"reset":{},"duration":"1s"}"#
            ),
            "fault.target.match.proto"
        );
        assert_eq!(
            field_of(
                r#"{"target":{"dev":"e","match":{"proto":"icmp"}},"reject":{},"duration":"1s"}"#
            ),
            "fault.target.match.proto"
        );
        assert_eq!(
            field_of(
                r#"{"target":{"dev":"e","connections":"old"},"partition":{},"duration":"1s"}"#
            ),
            "fault.target.connections"
        );
        assert_eq!(
            field_of(r#"{"target":{"dev":"e"},"reset":{},"reject":{},"duration":"1s"}"#),
            "fault"
        );
    }

    #[test]
    fn corrupt_defaults_to_egress_and_acts_on_tcp_and_udp_only() {
        let spec = parse(r#"{"target":{"dev":"eth0"},"corrupt":{"percent":2},"duration":"3s"}"#)
            .expect("valid");
        assert_eq!(spec.target.direction, Direction::Egress);
        let Action::Corrupt(corrupt) = spec.action else {
            panic!("{:?}", spec.action)
        };
        assert_eq!((corrupt.percent.value(), corrupt.bits.get()), (2.0, 1));
        assert_eq!(FaultSpec::from_wire(&spec.to_wire(), &LIMITS), Ok(spec));
        for proto in ["tcp", "udp"] {
            let json = format!(
                r#"{{"target":{{"dev":"e","match":{{"proto":"{proto}"}}}},
                    "corrupt":{{"percent":50,"bits":3,"checksum":"broken"}},"duration":"1s"}}"#
            );
            assert!(parse(&json).is_ok(), "{proto}");
        }
        assert_eq!(
            field_of(
                r#"{"target":{"dev":"e","match":{"proto":"icmp"}},"corrupt":{"percent":1},
                    "duration":"1s"}"#
            ),
            "fault.target.match.proto"
        );
        assert_eq!(
            field_of(r#"{"target":{"dev":"e"},"corrupt":{"percent":1,"bits":9},"duration":"1s"}"#),
            "fault.corrupt.bits"
        );
        assert_eq!(
            field_of(
                r#"{"target":{"dev":"e"},"corrupt":{"percent":1},"loss":{"percent":1},
                        "duration":"1s"}"#
            ),
            "fault"
        );
    }

    #[test]
    fn unknown_fields_are_rejected_by_the_wire_form() {
        let err = serde_json::from_str::<FaultWire>(
            r#"{"target":{"dev":"eth0","colour":"red"},"partition":{},"duration":"1s"}"#,
        );
        assert!(err.is_err());
    }
}
