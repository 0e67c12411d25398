//! netem's options in groups, each one capability of the kernel: what a delay fault needs
//! (`NetemGroup::used_by`), what the start-up probe configures to find out
//! (`NetemGroup::sample`), and whether the kernel then reports back what it was given
//! (`compare_reported`) — a kernel that ignored an option it did not know would not.

use super::nla;
use crate::fault::{
    burst::BurstWire,
    netem::{ChanceWire, Netem, NetemLoss, NetemLossWire, NetemWire, RateWire, ReorderWire},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NetemGroup {
    /// delay, jitter, their correlation and distribution.
    Delay,
    /// Random loss with its correlation.
    Loss,
    /// The Gilbert-Elliott and 4-state loss models.
    LossModels,
    Duplicate,
    Corrupt,
    Reorder,
    Rate,
}

impl NetemGroup {
    pub const ALL: [NetemGroup; 7] = [
        Self::Delay,
        Self::Loss,
        Self::LossModels,
        Self::Duplicate,
        Self::Corrupt,
        Self::Reorder,
        Self::Rate,
    ];

    /// The capability's name in `hello` and in `unsupported` errors.
    pub fn capability(self) -> &'static str {
        match self {
            Self::Delay => "netem_delay",
            Self::Loss => "netem_loss",
            Self::LossModels => "netem_loss_models",
            Self::Duplicate => "netem_duplicate",
            Self::Corrupt => "netem_corrupt",
            Self::Reorder => "netem_reorder",
            Self::Rate => "netem_rate",
        }
    }

    /// The groups whose options `netem` sets.
    pub fn used_by(netem: &Netem) -> Vec<NetemGroup> {
        let delay = !netem.delay.is_zero()
            || !netem.jitter.is_zero()
            || netem.delay_correlation.value() > 0.0
            || netem.distribution != Default::default();
        let loss = match netem.loss {
            None => None,
            Some(NetemLoss::Random(_)) => Some(Self::Loss),
            Some(_) => Some(Self::LossModels),
        };
        [
            delay.then_some(Self::Delay),
            loss,
            netem.duplicate.map(|_| Self::Duplicate),
            netem.corrupt.map(|_| Self::Corrupt),
            netem.reorder.map(|_| Self::Reorder),
            netem.rate.map(|_| Self::Rate),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// A configuration that uses every option of the group, as a user would write it.
    pub fn sample(self) -> NetemWire {
        let chance = |percent, correlation| ChanceWire {
            percent,
            correlation: Some(correlation),
        };
        let ms = |n: u32| Some(format!("{n}ms"));
        match self {
            Self::Delay => NetemWire {
                delay: ms(10),
                jitter: ms(1),
                delay_correlation: Some(25.0),
                distribution: Some("normal".to_owned()),
                ..NetemWire::default()
            },
            Self::Loss => NetemWire {
                loss: Some(NetemLossWire {
                    percent: Some(1.0),
                    correlation: Some(10.0),
                    ..NetemLossWire::default()
                }),
                ..NetemWire::default()
            },
            Self::LossModels => NetemWire {
                loss: Some(NetemLossWire {
                    burst: Some(BurstWire {
                        p: 1.0,
                        r: 20.0,
                        loss_bad: Some(90.0),
                        loss_good: Some(1.0),
                    }),
                    ..NetemLossWire::default()
                }),
                ..NetemWire::default()
            },
            Self::Duplicate => NetemWire {
                duplicate: Some(chance(1.0, 10.0)),
                ..NetemWire::default()
            },
            Self::Corrupt => NetemWire {
                corrupt: Some(chance(1.0, 10.0)),
                ..NetemWire::default()
            },
            Self::Reorder => NetemWire {
                delay: ms(10),
                reorder: Some(ReorderWire {
                    percent: 25.0,
                    correlation: Some(10.0),
                    gap: Some(5),
                }),
                ..NetemWire::default()
            },
            Self::Rate => NetemWire {
                rate: Some(RateWire {
                    rate: "10mbit".to_owned(),
                    packet_overhead: Some(14),
                    cell_size: Some(64),
                    cell_overhead: Some(4),
                }),
                ..NetemWire::default()
            },
        }
    }
}

// The parts of netem's TCA_OPTIONS (linux/pkt_sched.h): a tc_netem_qopt of six u32 (latency,
// limit, loss, gap, duplicate, jitter), then attributes.
const QOPT_LEN: usize = 24;
const TCA_NETEM_DELAY_DIST: u16 = 2;
const TCA_NETEM_LATENCY64: u16 = 10;
const TCA_NETEM_JITTER64: u16 = 11;
/// psched ticks are 64 ns (PSCHED_SHIFT).
const PSCHED_SHIFT: u32 = 6;

/// Whether `reported` (a netem qdisc's options as the kernel dumps them) holds every option
/// `sent` set; the error names the first that differs.
pub fn compare_reported(sent: &[u8], reported: &[u8]) -> Result<(), String> {
    let (Some(sent_qopt), Some(reported_qopt)) = (qopt(sent), qopt(reported)) else {
        return Err("the netem options are shorter than tc_netem_qopt".to_owned());
    };
    let (sent_attrs, reported_attrs) = (
        nla::parse(&sent[QOPT_LEN..]),
        nla::parse(&reported[QOPT_LEN..]),
    );
    for (index, name) in [(1, "limit"), (2, "loss"), (3, "gap"), (4, "duplicate")] {
        if sent_qopt[index] != reported_qopt[index] {
            return Err(format!(
                "netem's {name} was set to {} but reads {}",
                sent_qopt[index], reported_qopt[index]
            ));
        }
    }
    for (ticks, attr, name) in [
        (0, TCA_NETEM_LATENCY64, "delay"),
        (5, TCA_NETEM_JITTER64, "jitter"),
    ] {
        let (sent_ns, reported_ns) = (
            nanos(sent_qopt[ticks], &sent_attrs, attr),
            nanos(reported_qopt[ticks], &reported_attrs, attr),
        );
        if sent_ns != reported_ns {
            return Err(format!(
                "netem's {name} was set to {sent_ns} ns but reads {reported_ns} ns"
            ));
        }
    }
    for (kind, payload) in &sent_attrs {
        // The delay table is not reported back; the 64-bit times were compared above.
        if [
            TCA_NETEM_DELAY_DIST,
            TCA_NETEM_LATENCY64,
            TCA_NETEM_JITTER64,
        ]
        .contains(kind)
        {
            continue;
        }
        match reported_attrs.iter().find(|(k, _)| k == kind) {
            Some((_, value)) if value == payload => {}
            Some(_) => return Err(format!("netem option {kind} reads back changed")),
            None => {
                return Err(format!(
                    "netem option {kind} is not reported back: the kernel ignored it"
                ))
            }
        }
    }
    Ok(())
}

fn qopt(options: &[u8]) -> Option<[u32; 6]> {
    let bytes = options.get(..QOPT_LEN)?;
    let mut words = [0; 6];
    for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(4)) {
        *word = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    Some(words)
}

/// A time in nanoseconds: the 64-bit attribute when there is one, else the qopt's ticks.
fn nanos(ticks: u32, attrs: &[(u16, &[u8])], attr: u16) -> u64 {
    attrs
        .iter()
        .find(|(k, _)| *k == attr)
        .and_then(|(_, v)| <[u8; 8]>::try_from(*v).ok())
        .map_or(u64::from(ticks) << PSCHED_SHIFT, u64::from_ne_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::netem::netem_options;

    fn options(group: NetemGroup) -> Vec<u8> {
        netem_options(&Netem::from_wire(&group.sample()).expect("a valid sample"))
    }

    #[test]
    fn every_sample_is_valid_and_uses_its_own_group() {
        for group in NetemGroup::ALL {
            let netem = Netem::from_wire(&group.sample()).expect("a valid sample");
            let used = NetemGroup::used_by(&netem);
            assert!(used.contains(&group), "{group:?} uses {used:?}");
        }
    }

    #[test]
    fn what_a_kernel_echoes_compares_equal_and_what_it_drops_does_not() {
        for group in NetemGroup::ALL {
            let sent = options(group);
            assert_eq!(compare_reported(&sent, &sent), Ok(()), "{group:?}");
            // A kernel that knew none of the attributes would report the bare qopt.
            let bare = &sent[..QOPT_LEN];
            if nla::parse(&sent[QOPT_LEN..]).iter().any(|(k, _)| {
                ![
                    TCA_NETEM_DELAY_DIST,
                    TCA_NETEM_LATENCY64,
                    TCA_NETEM_JITTER64,
                ]
                .contains(k)
            }) {
                assert!(compare_reported(&sent, bare).is_err(), "{group:?}");
            }
        }
        let mut changed = options(NetemGroup::Duplicate);
        changed[16] ^= 1;
        assert!(compare_reported(&options(NetemGroup::Duplicate), &changed).is_err());
    }
}
