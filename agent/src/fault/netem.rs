//! The netem impairments of a delay fault: wire form and validated form. netem itself applies
//! them in a qdisc; the datapath only steers the fault's flows into it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::burst::{BurstWire, GilbertElliott};
use super::error::SpecError;
use super::values::{format_duration, parse_duration, Percent};

/// The most packets netem may hold (its `limit`).
pub const MAX_LIMIT: u32 = 1_000_000;
pub const DEFAULT_LIMIT: u32 = 10_000;

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetemWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<String>,
    /// Percent, 0–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_correlation: Option<f64>,
    /// uniform (default), normal, pareto, paretonormal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<NetemLossWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<ChanceWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<ChanceWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reorder: Option<ReorderWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChanceWire {
    pub percent: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<f64>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetemLossWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<f64>,
    /// Gilbert-Elliott, as for eBPF loss faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<BurstWire>,
    /// netem's 4-state Markov model (`loss state p13 p31 p32 p23 p14`), percentages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state4: Option<FourStateWire>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FourStateWire {
    pub p13: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p31: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p32: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p23: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p14: Option<f64>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReorderWire {
    pub percent: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<f64>,
    /// Reorder every `gap`-th packet (netem `gap`); 0 = any packet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<u32>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateWire {
    /// e.g. "10mbit", "1gbit", "500kbit", "125000bps" (bytes per second).
    pub rate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packet_overhead: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell_overhead: Option<i32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Distribution {
    #[default]
    Uniform,
    Normal,
    Pareto,
    ParetoNormal,
}

impl Distribution {
    pub fn name(self) -> &'static str {
        match self {
            Self::Uniform => "uniform",
            Self::Normal => "normal",
            Self::Pareto => "pareto",
            Self::ParetoNormal => "paretonormal",
        }
    }
}

/// A probability with netem's correlation to the previous draw.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Chance {
    pub percent: Percent,
    pub correlation: Percent,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NetemLoss {
    Random(Chance),
    GilbertElliott(GilbertElliott),
    /// netem's 4-state model, transition probabilities in percent.
    FourState {
        p13: Percent,
        p31: Percent,
        p32: Percent,
        p23: Percent,
        p14: Percent,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reorder {
    pub chance: Chance,
    pub gap: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub bytes_per_sec: u64,
    pub packet_overhead: i32,
    pub cell_size: u32,
    pub cell_overhead: i32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Netem {
    pub delay: Duration,
    pub jitter: Duration,
    pub delay_correlation: Percent,
    pub distribution: Distribution,
    pub loss: Option<NetemLoss>,
    pub duplicate: Option<Chance>,
    pub corrupt: Option<Chance>,
    pub reorder: Option<Reorder>,
    pub rate: Option<Rate>,
    pub limit: u32,
}

const AT: &str = "fault.netem";

fn field(name: &str) -> String {
    format!("{AT}.{name}")
}

fn percent(name: &str, value: f64) -> Result<Percent, SpecError> {
    Percent::new(value).map_err(SpecError::at(field(name)))
}

fn percent_or_zero(name: &str, value: Option<f64>) -> Result<Percent, SpecError> {
    Percent::new_or_zero(value.unwrap_or(0.0)).map_err(SpecError::at(field(name)))
}

fn chance(name: &str, wire: &ChanceWire) -> Result<Chance, SpecError> {
    Ok(Chance {
        percent: percent(&format!("{name}.percent"), wire.percent)?,
        correlation: percent_or_zero(&format!("{name}.correlation"), wire.correlation)?,
    })
}

fn duration(name: &str, text: &Option<String>) -> Result<Duration, SpecError> {
    match text {
        None => Ok(Duration::ZERO),
        Some(text) => parse_duration(text).map_err(SpecError::at(field(name))),
    }
}

/// Parses `10mbit`, `1.5gbit`, `500kbit`, `64kbps` (bytes), `1000bps`… into bytes per second,
/// as tc reads rates (SI prefixes, `bit` or `bps` = bytes per second).
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let text = text.trim().to_ascii_lowercase();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a rate like 10mbit"))?;
    let bits_per_unit = match unit {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "tbit" => 1e12,
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit; use bit, kbit, mbit, gbit or bps, kbps, mbps, gbps"
            ))
        }
    };
    let bytes = value * bits_per_unit / 8.0;
    if !(1.0..=1.25e12).contains(&bytes) {
        return Err(format!("{text:?} is out of range (8bit .. 10tbit)"));
    }
    Ok(bytes.round() as u64)
}

impl Netem {
    pub fn from_wire(wire: &NetemWire) -> Result<Self, SpecError> {
        let delay = duration("delay", &wire.delay)?;
        let jitter = duration("jitter", &wire.jitter)?;
        if jitter > delay && !jitter.is_zero() {
            // netem clamps negative delays to zero, which skews the distribution.
            return Err(SpecError::new(field("jitter"), "must not exceed delay"));
        }
        let distribution = match wire.distribution.as_deref() {
            None | Some("uniform") => Distribution::Uniform,
            Some("normal") => Distribution::Normal,
            Some("pareto") => Distribution::Pareto,
            Some("paretonormal") => Distribution::ParetoNormal,
            Some(other) => {
                return Err(SpecError::new(
                    field("distribution"),
                    format!("{other:?} is not uniform, normal, pareto or paretonormal"),
                ))
            }
        };
        if distribution != Distribution::Uniform && jitter.is_zero() {
            return Err(SpecError::new(field("distribution"), "needs a jitter"));
        }
        let loss = wire.loss.as_ref().map(netem_loss).transpose()?;
        let rate = wire
            .rate
            .as_ref()
            .map(|r| {
                Ok::<_, SpecError>(Rate {
                    bytes_per_sec: parse_rate(&r.rate)
                        .map_err(|message| SpecError::new(field("rate.rate"), message))?,
                    packet_overhead: r.packet_overhead.unwrap_or(0),
                    cell_size: r.cell_size.unwrap_or(0),
                    cell_overhead: r.cell_overhead.unwrap_or(0),
                })
            })
            .transpose()?;
        let limit = wire.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(SpecError::new(
                field("limit"),
                format!("must be in 1..={MAX_LIMIT} packets"),
            ));
        }
        let netem = Self {
            delay,
            jitter,
            delay_correlation: percent_or_zero("delay_correlation", wire.delay_correlation)?,
            distribution,
            loss,
            duplicate: wire
                .duplicate
                .as_ref()
                .map(|c| chance("duplicate", c))
                .transpose()?,
            corrupt: wire
                .corrupt
                .as_ref()
                .map(|c| chance("corrupt", c))
                .transpose()?,
            reorder: wire
                .reorder
                .as_ref()
                .map(|r| {
                    Ok::<_, SpecError>(Reorder {
                        chance: chance(
                            "reorder",
                            &ChanceWire {
                                percent: r.percent,
                                correlation: r.correlation,
                            },
                        )?,
                        gap: r.gap.unwrap_or(0),
                    })
                })
                .transpose()?,
            rate,
            limit,
        };
        if netem.reorder.is_some() && netem.delay.is_zero() {
            return Err(SpecError::new(
                field("reorder"),
                "needs a delay (netem reorders by not delaying)",
            ));
        }
        let impairs = !netem.delay.is_zero()
            || netem.loss.is_some()
            || netem.duplicate.is_some()
            || netem.corrupt.is_some()
            || netem.rate.is_some();
        if !impairs {
            return Err(SpecError::new(AT, "names no impairment"));
        }
        Ok(netem)
    }

    pub fn to_wire(&self) -> NetemWire {
        let chance = |c: &Chance| ChanceWire {
            percent: c.percent.value(),
            correlation: Some(c.correlation.value()),
        };
        NetemWire {
            delay: Some(format_duration(self.delay)),
            jitter: (!self.jitter.is_zero()).then(|| format_duration(self.jitter)),
            delay_correlation: (self.delay_correlation.value() > 0.0)
                .then(|| self.delay_correlation.value()),
            distribution: (self.distribution != Distribution::Uniform)
                .then(|| self.distribution.name().to_owned()),
            loss: self.loss.map(|loss| match loss {
                NetemLoss::Random(c) => NetemLossWire {
                    percent: Some(c.percent.value()),
                    correlation: Some(c.correlation.value()),
                    ..NetemLossWire::default()
                },
                NetemLoss::GilbertElliott(ge) => NetemLossWire {
                    burst: Some(ge.to_wire()),
                    ..NetemLossWire::default()
                },
                NetemLoss::FourState {
                    p13,
                    p31,
                    p32,
                    p23,
                    p14,
                } => NetemLossWire {
                    state4: Some(FourStateWire {
                        p13: p13.value(),
                        p31: Some(p31.value()),
                        p32: Some(p32.value()),
                        p23: Some(p23.value()),
                        p14: Some(p14.value()),
                    }),
                    ..NetemLossWire::default()
                },
            }),
            duplicate: self.duplicate.as_ref().map(chance),
            corrupt: self.corrupt.as_ref().map(chance),
            reorder: self.reorder.map(|r| ReorderWire {
                percent: r.chance.percent.value(),
                correlation: Some(r.chance.correlation.value()),
                gap: Some(r.gap),
            }),
            rate: self.rate.map(|r| RateWire {
                rate: format!("{}bps", r.bytes_per_sec),
                packet_overhead: Some(r.packet_overhead),
                cell_size: Some(r.cell_size),
                cell_overhead: Some(r.cell_overhead),
            }),
            limit: Some(self.limit),
        }
    }
}

fn netem_loss(wire: &NetemLossWire) -> Result<NetemLoss, SpecError> {
    match (wire.percent, &wire.burst, &wire.state4) {
        (Some(p), None, None) => Ok(NetemLoss::Random(Chance {
            percent: percent("loss.percent", p)?,
            correlation: percent_or_zero("loss.correlation", wire.correlation)?,
        })),
        (None, Some(b), None) => Ok(NetemLoss::GilbertElliott(GilbertElliott::from_wire(
            b,
            &field("loss.burst"),
        )?)),
        (None, None, Some(s)) => {
            // netem's defaults for omitted transitions (iproute2 q_netem.c).
            let p31 = s.p31.unwrap_or(100.0 - s.p13);
            Ok(NetemLoss::FourState {
                p13: percent("loss.state4.p13", s.p13)?,
                p31: percent_or_zero("loss.state4.p31", Some(p31))?,
                p32: percent_or_zero("loss.state4.p32", s.p32)?,
                p23: percent_or_zero("loss.state4.p23", Some(s.p23.unwrap_or(100.0)))?,
                p14: percent_or_zero("loss.state4.p14", s.p14)?,
            })
        }
        _ => Err(SpecError::new(
            field("loss"),
            "needs exactly one of percent, burst, state4",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Netem, SpecError> {
        Netem::from_wire(&serde_json::from_str(json).expect("json"))
    }

    #[test]
    fn combined_impairments() {
        let n = parse(
            r#"{"delay":"100ms","jitter":"10ms","distribution":"normal","loss":{"percent":1}}"#,
        )
        .expect("valid");
        assert_eq!(n.delay, Duration::from_millis(100));
        assert_eq!(n.distribution, Distribution::Normal);
        assert!(matches!(n.loss, Some(NetemLoss::Random(_))));
        assert_eq!(Netem::from_wire(&n.to_wire()), Ok(n));
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("10mbit"), Ok(1_250_000));
        assert_eq!(parse_rate("1gbit"), Ok(125_000_000));
        assert_eq!(parse_rate("1000bps"), Ok(1000));
        assert!(parse_rate("10 parsecs").is_err());
        assert!(parse_rate("0bit").is_err());
    }

    #[test]
    fn rejects_bad_impairments() {
        let field = |json: &str| parse(json).expect_err("invalid").field;
        assert_eq!(
            field(r#"{"delay":"10ms","jitter":"20ms"}"#),
            "fault.netem.jitter"
        );
        assert_eq!(
            field(r#"{"delay":"10ms","distribution":"normal"}"#),
            "fault.netem.distribution"
        );
        assert_eq!(
            field(r#"{"delay":"10ms","jitter":"1ms","distribution":"cauchy"}"#),
            "fault.netem.distribution"
        );
        assert_eq!(
            field(r#"{"duplicate":{"percent":150}}"#),
            "fault.netem.duplicate.percent"
        );
        assert_eq!(
            field(r#"{"reorder":{"percent":10}}"#),
            "fault.netem.reorder"
        );
        assert_eq!(
            field(r#"{"rate":{"rate":"fast"}}"#),
            "fault.netem.rate.rate"
        );
        assert_eq!(field(r#"{"limit":0,"delay":"1ms"}"#), "fault.netem.limit");
        assert_eq!(field(r#"{}"#), "fault.netem");
    }
}
