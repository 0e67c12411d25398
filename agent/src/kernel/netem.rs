//! The TCA_OPTIONS payload of a netem qdisc, byte for byte as `tc qdisc add … netem …` sends it.
//!
//! netem's options are not a plain attribute list: a raw `struct tc_netem_qopt` comes first
//! and the TCA_NETEM_* attributes follow it. The caller wraps the result in one TCA_OPTIONS
//! attribute. Which attributes appear, and when, follows iproute2's tc/q_netem.c; the unit
//! tests hold the bytes captured from real `tc` (6.1.0 and 7.1.0) on this project's build host.
//!
//! Delay and jitter go out twice: as psched ticks in the qopt (what tc ≤ 6.8 sends; the only
//! form kernels < 4.15 read) and as nanoseconds in TCA_NETEM_LATENCY64 / JITTER64 (what tc ≥
//! 6.9 sends). Kernels ≥ 4.15 let the 64-bit attributes override the ticks, so delays stay
//! exact to the nanosecond and are not capped at the ~275 s a u32 of 64 ns ticks can hold.

use std::{sync::OnceLock, time::Duration};

use super::{
    netem_dist,
    nla::{put as attr, words, NLA_F_NESTED},
};
use crate::fault::{
    netem::{Chance, Netem, NetemLoss},
    values::Percent,
};

// Attribute types nested after the qopt (enum TCA_NETEM_* in linux/pkt_sched.h).
const TCA_NETEM_CORR: u16 = 1;
const TCA_NETEM_DELAY_DIST: u16 = 2;
const TCA_NETEM_REORDER: u16 = 3;
const TCA_NETEM_CORRUPT: u16 = 4;
const TCA_NETEM_LOSS: u16 = 5;
const TCA_NETEM_RATE: u16 = 6;
const TCA_NETEM_RATE64: u16 = 8;
const TCA_NETEM_LATENCY64: u16 = 10;
const TCA_NETEM_JITTER64: u16 = 11;
// Inside TCA_NETEM_LOSS.
const NETEM_LOSS_GI: u16 = 1;
const NETEM_LOSS_GE: u16 = 2;

/// The kernel's packet-scheduler clock as /proc/net/psched reports it; converts times to the
/// ticks of `tc_netem_qopt.latency` / `.jitter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Psched {
    t2us: u32,
    us2t: u32,
    clock_res: u32,
}

impl Psched {
    /// What current kernels report: 64 ns ticks (`000003e8 00000040 000f4240 …`).
    pub const LINUX: Self = Self {
        t2us: 1000,
        us2t: 64,
        clock_res: 1_000_000,
    };

    /// Parses /proc/net/psched text: hex words t2us, us2t, clock_res (a fourth is ignored,
    /// as tc's `tc_core_init` ignores it).
    pub fn parse(text: &str) -> Option<Self> {
        let mut words = text
            .split_whitespace()
            .map(|word| u32::from_str_radix(word, 16).ok());
        let (t2us, us2t, clock_res) = (words.next()??, words.next()??, words.next()??);
        (us2t != 0).then_some(Self {
            t2us,
            us2t,
            clock_res,
        })
    }

    /// This host's clock, read once; `LINUX` if /proc/net/psched is unreadable. Only kernels
    /// older than 4.15 use the ticks at all, so the fallback cannot skew a modern kernel.
    pub fn host() -> Self {
        static HOST: OnceLock<Psched> = OnceLock::new();
        *HOST.get_or_init(|| {
            std::fs::read_to_string("/proc/net/psched")
                .ok()
                .and_then(|text| Self::parse(&text))
                .unwrap_or(Self::LINUX)
        })
    }

    /// Ticks per microsecond, computed as iproute2's tc_core.c does.
    fn ticks_per_usec(self) -> f64 {
        // tc_core's compatibility rule: a 1 GHz clock_res means t2us really equals us2t.
        let t2us = if self.clock_res == 1_000_000_000 {
            self.us2t
        } else {
            self.t2us
        };
        let clock_factor = f64::from(self.clock_res) / 1e6;
        f64::from(t2us) / f64::from(self.us2t) * clock_factor
    }

    /// `d` in ticks: whole microseconds first, then scaled and truncated, like tc's
    /// `get_time` + `tc_core_time2tick`. Saturates where tc would refuse ("too large").
    pub fn ticks(self, d: Duration) -> u32 {
        let usec = d.as_micros() as f64;
        // `as` truncates toward zero and saturates at u32::MAX.
        (usec * self.ticks_per_usec()) as u32
    }
}

/// The TCA_OPTIONS payload for `netem`, with ticks from this host's /proc/net/psched.
pub fn netem_options(netem: &Netem) -> Vec<u8> {
    netem_options_with(netem, &Psched::host())
}

/// The TCA_OPTIONS payload for `netem`, converting delay and jitter to ticks with `psched`.
pub fn netem_options_with(netem: &Netem, psched: &Psched) -> Vec<u8> {
    let loss_random = match netem.loss {
        Some(NetemLoss::Random(chance)) => Some(chance),
        _ => None,
    };
    let reorder = netem.reorder;
    // The kernel only reorders when gap > 0 ("not doing reordering" otherwise); tc turns a
    // missing gap into 1, i.e. every packet is a candidate.
    let gap = reorder.map_or(0, |r| r.gap.max(1));
    let qopt = [
        psched.ticks(netem.delay),
        netem.limit,
        loss_random.map_or(0, |c| scaled(c.percent)),
        gap,
        netem.duplicate.map_or(0, |c| scaled(c.percent)),
        psched.ticks(netem.jitter),
    ];
    let mut out: Vec<u8> = qopt.iter().flat_map(|v| v.to_ne_bytes()).collect();

    if !netem.delay.is_zero() {
        let latency = nanos(netem.delay).to_ne_bytes();
        attr(&mut out, TCA_NETEM_LATENCY64, &latency);
    }
    if !netem.jitter.is_zero() {
        let jitter = nanos(netem.jitter).to_ne_bytes();
        attr(&mut out, TCA_NETEM_JITTER64, &jitter);
    }

    let corr = [
        scaled(netem.delay_correlation),
        loss_random.map_or(0, |c| scaled(c.correlation)),
        netem.duplicate.map_or(0, |c| scaled(c.correlation)),
    ];
    // tc sends TCA_NETEM_CORR once any correlation was typed (reorder and corrupt ones
    // included, though their values travel in their own attributes). An absent attribute
    // equals zeros for a new qdisc. Unlike tc we also send it for a duplicate correlation
    // alone, which tc forgets to do (it drops `duplicate 10% 25%`'s 25%).
    let other_corr = [reorder.map(|r| r.chance), netem.corrupt]
        .iter()
        .flatten()
        .any(|c| scaled(c.correlation) != 0);
    if corr != [0; 3] || other_corr {
        attr(&mut out, TCA_NETEM_CORR, &words(&corr));
    }
    if let Some(reorder) = reorder {
        attr(&mut out, TCA_NETEM_REORDER, &chance_words(reorder.chance));
    }
    if let Some(corrupt) = netem.corrupt {
        attr(&mut out, TCA_NETEM_CORRUPT, &chance_words(corrupt));
    }
    if let Some(model) = loss_model(netem.loss) {
        attr(&mut out, TCA_NETEM_LOSS | NLA_F_NESTED, &model);
    }
    if let Some(rate) = netem.rate {
        // tc_netem_rate.rate is a u32 of bytes/s; faster rates go in RATE64 with the u32
        // saturated (the kernel takes the larger of the two).
        let rate32 = u32::try_from(rate.bytes_per_sec).unwrap_or(u32::MAX);
        if rate.bytes_per_sec > u64::from(u32::MAX) {
            let rate64 = rate.bytes_per_sec.to_ne_bytes();
            attr(&mut out, TCA_NETEM_RATE64, &rate64);
        }
        let payload = [
            rate32.to_ne_bytes(),
            rate.packet_overhead.to_ne_bytes(),
            rate.cell_size.to_ne_bytes(),
            rate.cell_overhead.to_ne_bytes(),
        ]
        .concat();
        attr(&mut out, TCA_NETEM_RATE, &payload);
    }
    if let Some(table) = netem_dist::table(netem.distribution) {
        let payload: Vec<u8> = table.iter().flat_map(|v| v.to_ne_bytes()).collect();
        attr(&mut out, TCA_NETEM_DELAY_DIST, &payload);
    }
    out
}

/// The nested TCA_NETEM_LOSS payload of the Markov loss models; None for random loss, which
/// lives in the qopt.
fn loss_model(loss: Option<NetemLoss>) -> Option<Vec<u8>> {
    let mut nested = Vec::new();
    match loss? {
        NetemLoss::Random(_) => return None,
        NetemLoss::GilbertElliott(ge) => {
            // tc_netem_gemodel {p, r, h, k1}: the kernel wants h (no loss while bad), users
            // give 1-h; k1 already is 1-k (loss while good).
            let h = u32::MAX - scaled(ge.loss_bad);
            let model = [scaled(ge.p), scaled(ge.r), h, scaled(ge.loss_good)];
            attr(&mut nested, NETEM_LOSS_GE, &words(&model));
        }
        NetemLoss::FourState {
            p13,
            p31,
            p32,
            p23,
            p14,
        } => {
            // tc_netem_gimodel's field order is p13, p31, p32, p14, p23 (not tc's argument order).
            let model = [p13, p31, p32, p14, p23].map(scaled);
            attr(&mut nested, NETEM_LOSS_GI, &words(&model));
        }
    }
    Some(nested)
}

/// A percentage as netem's fraction of u32::MAX, as tc's `set_percent`: rint(p * UINT32_MAX).
fn scaled(percent: Percent) -> u32 {
    // Same operations as tc (value / 100, then * 4294967295, round half even) so the bits match.
    (percent.value() / 100.0 * f64::from(u32::MAX)).round_ties_even() as u32
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn chance_words(chance: Chance) -> Vec<u8> {
    words(&[scaled(chance.percent), scaled(chance.correlation)])
}

/// Expected bytes are `strace -e write=3` captures of `tc qdisc add dev lo root netem ARGS`
/// (quoted above each case) from iproute2 6.1.0 (Debian) and 7.1.0 (built from source), with
/// /proc/net/psched `000003e8 00000040 000f4240 3b9aca00`. Both agree unless a delay is set:
/// then 6.1 puts ticks in the qopt and 7.1 zeros there plus LATENCY64/JITTER64, and we expect
/// 6.1's qopt followed by 7.1's attributes. Captures are little-endian.
#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;
    use crate::fault::{
        burst::GilbertElliott,
        netem::{Distribution, Rate, Reorder},
    };

    /// The qopt of a netem without delay, loss, gap or duplicates: limit 1000.
    const QOPT: &str = "00000000 e8030000 00000000 00000000 00000000 00000000";
    /// The qopt and LATENCY64/JITTER64 of `delay 100ms 10ms`.
    const DELAY_100_10: &str = "84d71700 e8030000 00000000 00000000 00000000 5a620200 \
                                0c000a00 00e1f505 00000000  0c000b00 80969800 00000000";

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        let byte = |pair: &[u8]| std::str::from_utf8(pair).expect("ascii").to_owned();
        let parse = |pair: &[u8]| u8::from_str_radix(&byte(pair), 16).expect("hex");
        digits.chunks(2).map(parse).collect()
    }

    fn pct(value: f64) -> Percent {
        Percent::new_or_zero(value).expect("a percentage")
    }

    fn chance(percent: f64, correlation: f64) -> Chance {
        let (percent, correlation) = (pct(percent), pct(correlation));
        Chance {
            percent,
            correlation,
        }
    }

    fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    /// tc's netem without arguments (limit 1000), changed by `edit`.
    fn netem(edit: impl FnOnce(&mut Netem)) -> Netem {
        let mut netem = Netem {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            delay_correlation: pct(0.0),
            distribution: Distribution::Uniform,
            loss: None,
            duplicate: None,
            corrupt: None,
            reorder: None,
            rate: None,
            limit: 1000,
        };
        edit(&mut netem);
        netem
    }

    fn options(netem: &Netem) -> Vec<u8> {
        let psched = Psched::parse("000003e8 00000040 000f4240 3b9aca00").expect("psched");
        netem_options_with(netem, &psched)
    }

    /// Asserts the options of tc's bare netem changed by `edit`.
    fn check(edit: impl FnOnce(&mut Netem), expected: &str) {
        assert_eq!(options(&netem(edit)), hex(expected));
    }

    #[test]
    fn psched_ticks() {
        let psched = Psched::parse("000003e8 00000040 000f4240 3b9aca00").expect("psched");
        assert_eq!(psched, Psched::LINUX);
        assert_eq!(psched.ticks(ms(100)), 1_562_500);
        // Whole microseconds, then truncated ticks: 300 us * 15.625 = 4687.5 → 4687.
        assert_eq!(psched.ticks(Duration::from_nanos(300_999)), 4_687);
        // tc 6.1 refuses `delay 300s` ("too large"); we saturate and rely on LATENCY64.
        assert_eq!(psched.ticks(Duration::from_secs(300)), u32::MAX);
        assert_eq!(Psched::parse("3e8 0 f4240"), None);
        assert_eq!(Psched::parse("3e8 40"), None);
    }

    #[test]
    fn delay_only() {
        // delay 100ms
        let expected = "84d71700 e8030000 00000000 00000000 00000000 00000000 \
                        0c000a00 00e1f505 00000000";
        check(|n| n.delay = ms(100), expected);
        // delay 300s: only 7.1 can send it; the qopt's ticks saturate.
        let expected = "ffffffff e8030000 00000000 00000000 00000000 00000000 \
                        0c000a00 00b864d9 45000000";
        check(|n| n.delay = Duration::from_secs(300), expected);
    }

    #[test]
    fn delay_jitter_correlation() {
        // delay 100ms 10ms 25%
        let corr = "10000100 00000040 00000000 00000000";
        let delay = |n: &mut Netem| {
            (n.delay, n.jitter, n.delay_correlation) = (ms(100), ms(10), pct(25.0));
        };
        check(delay, &format!("{DELAY_100_10} {corr}"));
        // delay 1.5ms 0.3ms: sub-millisecond ticks truncate as in tc.
        let expected = "8d5b0000 e8030000 00000000 00000000 00000000 4f120000 \
                        0c000a00 60e31600 00000000  0c000b00 e0930400 00000000";
        let micros = Duration::from_micros;
        check(
            |n| (n.delay, n.jitter) = (micros(1500), micros(300)),
            expected,
        );
    }

    #[test]
    fn distribution_tables() {
        // delay 100ms 10ms distribution normal | pareto | paretonormal
        for (dist, first_values) in [
            (Distribution::Normal, "0080 6d91 0997 919a"),
            (Distribution::Pareto, "abea acea acea adea"),
            (Distribution::ParetoNormal, "efcf 5dd4 c4d5 a6d6"),
        ] {
            let bytes = options(&netem(|n| {
                (n.delay, n.jitter, n.distribution) = (ms(100), ms(10), dist);
            }));
            // DELAY_DIST's header: nla_len 8196 = 4 + 4096 s16, type 2; no padding follows.
            let prefix = hex(&format!("{DELAY_100_10} 04200200"));
            let (head, table) = bytes.split_at(prefix.len().min(bytes.len()));
            assert_eq!(head, prefix, "{dist:?}");
            let ours = netem_dist::table(dist).expect("a table");
            let ours: Vec<u8> = ours.iter().flat_map(|v| v.to_ne_bytes()).collect();
            assert_eq!(table, ours, "{dist:?}");
            assert!(table.starts_with(&hex(first_values)), "{dist:?}");
        }
    }

    #[test]
    fn loss_random_with_correlation() {
        // loss random 1% 25%
        let expected = "00000000 e8030000 295c8f02 00000000 00000000 00000000 \
                        10000100 00000000 00000040 00000000";
        check(
            |n| n.loss = Some(NetemLoss::Random(chance(1.0, 25.0))),
            expected,
        );
        // loss random 2.5%
        let expected = "00000000 e8030000 66666606 00000000 00000000 00000000";
        check(
            |n| n.loss = Some(NetemLoss::Random(chance(2.5, 0.0))),
            expected,
        );
    }

    #[test]
    fn loss_gemodel() {
        let gemodel = |percents: [f64; 4]| {
            let [p, r, loss_bad, loss_good] = percents.map(pct);
            let model = NetemLoss::GilbertElliott(GilbertElliott {
                p,
                r,
                loss_bad,
                loss_good,
            });
            move |n: &mut Netem| n.loss = Some(model)
        };
        // loss gemodel 1% 10% 70% 0.1%
        let model = "18000580 14000200 295c8f02 9a999919 cdcccc4c 37894100";
        check(gemodel([1.0, 10.0, 70.0, 0.1]), &format!("{QOPT} {model}"));
        // loss gemodel 5% 20% (1-h defaults to 100%, so h = 0)
        let model = "18000580 14000200 cdcccc0c 33333333 00000000 00000000";
        check(gemodel([5.0, 20.0, 100.0, 0.0]), &format!("{QOPT} {model}"));
    }

    #[test]
    fn loss_state() {
        let state = |percents: [f64; 5]| {
            let [p13, p31, p32, p23, p14] = percents.map(pct);
            let model = NetemLoss::FourState {
                p13,
                p31,
                p32,
                p23,
                p14,
            };
            move |n: &mut Netem| n.loss = Some(model)
        };
        // loss state 1% 30% 2% 40% 0.5% (p13 p31 p32 p23 p14; the struct has p14 before p23)
        let model = "1c000580 18000100 295c8f02 cccccc4c 52b81e05 14ae4701 66666666";
        check(
            state([1.0, 30.0, 2.0, 40.0, 0.5]),
            &format!("{QOPT} {model}"),
        );
        // loss state 1%: tc's defaults p31 = 99%, p32 = 0, p23 = 100%, p14 = 0
        let model = "1c000580 18000100 295c8f02 d6a370fd 00000000 00000000 ffffffff";
        check(
            state([1.0, 99.0, 0.0, 100.0, 0.0]),
            &format!("{QOPT} {model}"),
        );
    }

    #[test]
    fn duplicate() {
        // duplicate 10%
        let expected = "00000000 e8030000 00000000 00000000 9a999919 00000000";
        check(|n| n.duplicate = Some(chance(10.0, 0.0)), expected);
        // duplicate 10% 25%: tc sends the same bytes, dropping the 25%; we add the CORR.
        let corr = "10000100 00000000 00000000 00000040";
        check(
            |n| n.duplicate = Some(chance(10.0, 25.0)),
            &format!("{expected} {corr}"),
        );
    }

    #[test]
    fn corrupt() {
        // corrupt 0.1%
        let corrupt = "0c000400 37894100 00000000";
        check(
            |n| n.corrupt = Some(chance(0.1, 0.0)),
            &format!("{QOPT} {corrupt}"),
        );
        // corrupt 0.1% 5%: tc adds an all-zero CORR whenever any correlation was given.
        let corr = "10000100 00000000 00000000 00000000";
        let corrupt = "0c000400 37894100 cdcccc0c";
        check(
            |n| n.corrupt = Some(chance(0.1, 5.0)),
            &format!("{QOPT} {corr} {corrupt}"),
        );
    }

    #[test]
    fn reorder_with_gap() {
        let reorder = |chance, gap| {
            let reorder = Some(Reorder { chance, gap });
            move |n: &mut Netem| (n.delay, n.reorder) = (ms(10), reorder)
        };
        // delay 10ms reorder 25% 50% gap 5
        let expected = "5a620200 e8030000 00000000 05000000 00000000 00000000 \
                        0c000a00 80969800 00000000  10000100 00000000 00000000 00000000 \
                        0c000300 00000040 00000080";
        check(reorder(chance(25.0, 50.0), 5), expected);
        // delay 10ms reorder 25%: gap 0 (the kernel's "no reordering") becomes gap 1.
        let expected = "5a620200 e8030000 00000000 01000000 00000000 00000000 \
                        0c000a00 80969800 00000000  0c000300 00000040 00000000";
        check(reorder(chance(25.0, 0.0), 0), expected);
    }

    #[test]
    fn rate_with_overhead() {
        let rate = |bytes_per_sec, packet_overhead, cell_size, cell_overhead| {
            let rate = Rate {
                bytes_per_sec,
                packet_overhead,
                cell_size,
                cell_overhead,
            };
            move |n: &mut Netem| n.rate = Some(rate)
        };
        // rate 10mbit 20
        let expected = format!("{QOPT} 14000600 d0121300 14000000 00000000 00000000");
        check(rate(1_250_000, 20, 0, 0), &expected);
        // rate 10mbit -4 53 5
        let expected = format!("{QOPT} 14000600 d0121300 fcffffff 35000000 05000000");
        check(rate(1_250_000, -4, 53, 5), &expected);
        // rate 100gbit: 12.5e9 bytes/s needs RATE64; the u32 saturates.
        let rate64 = "0c000800 00dd0ee9 02000000";
        let expected = format!("{QOPT} {rate64} 14000600 ffffffff 00000000 00000000 00000000");
        check(rate(12_500_000_000, 0, 0, 0), &expected);
    }

    #[test]
    fn limit() {
        // limit 12345
        let expected = "00000000 39300000 00000000 00000000 00000000 00000000";
        check(|n| n.limit = 12345, expected);
    }

    #[test]
    fn everything_at_once() {
        // delay 100ms 10ms 25% distribution normal loss 1% 25% duplicate 10% corrupt 0.1%
        //   reorder 25% 50% gap 5 rate 10mbit 20 limit 1000
        let bytes = options(&netem(|n| {
            (n.delay, n.jitter, n.delay_correlation) = (ms(100), ms(10), pct(25.0));
            n.distribution = Distribution::Normal;
            n.loss = Some(NetemLoss::Random(chance(1.0, 25.0)));
            n.duplicate = Some(chance(10.0, 0.0));
            n.corrupt = Some(chance(0.1, 0.0));
            n.reorder = Some(Reorder {
                chance: chance(25.0, 50.0),
                gap: 5,
            });
            let rate = Rate {
                bytes_per_sec: 1_250_000,
                packet_overhead: 20,
                cell_size: 0,
                cell_overhead: 0,
            };
            n.rate = Some(rate);
        }));
        let prefix = hex("84d71700 e8030000 295c8f02 05000000 9a999919 5a620200 \
                          0c000a00 00e1f505 00000000  0c000b00 80969800 00000000 \
                          10000100 00000040 00000040 00000000  0c000300 00000040 00000080 \
                          0c000400 37894100 00000000 \
                          14000600 d0121300 14000000 00000000 00000000  04200200");
        let (head, table) = bytes.split_at(prefix.len().min(bytes.len()));
        assert_eq!(head, prefix);
        // The captured table: 4096 values from -32768 to 28858 summing to -26163.
        let table: Vec<i16> = table
            .chunks(2)
            .map(|p| i16::from_ne_bytes([p[0], p[1]]))
            .collect();
        assert_eq!(table.len(), 4096);
        assert_eq!(table.iter().map(|&v| i32::from(v)).sum::<i32>(), -26163);
        assert_eq!((table[0], table[4095]), (-32768, 28858));
    }
}
