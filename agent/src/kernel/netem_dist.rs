//! netem's delay distribution tables (TCA_NETEM_DELAY_DIST), generated here instead of read
//! from iproute2's `/usr/lib/tc/*.dist` so the agent needs no iproute2 on the host.
//!
//! Each table is a scaled inverse CDF: the kernel draws a uniform index and adds
//! `jitter * table[index] / NETEM_DIST_SCALE` to the delay. The generators follow iproute2's
//! netem/normal.c, pareto.c and paretonormal.c step for step (same loop bounds, the same
//! floating-point operations in the same order, `rint` = round-half-even) because a last-bit
//! difference moves an entry; the unit tests pin values of the files iproute2 6.1 installs.

use std::sync::OnceLock;

use crate::fault::netem::Distribution;

/// `NETEM_DIST_SCALE` (include/uapi/linux/pkt_sched.h): table entries are sigma * 8192.
pub const NETEM_DIST_SCALE: f64 = 8192.0;
/// Resolution of the generators' inverse CDF; every fourth entry is emitted.
const TABLESIZE: usize = 16384;
/// Entries in every generated table (what the kernel receives).
pub const TABLE_LEN: usize = TABLESIZE / 4;
/// The pareto shape parameter of NIST Net's pareto tables.
const PARETO_SHAPE: f64 = 3.0;

/// The s16 table netem needs for `dist`; None for uniform, which the kernel computes itself.
/// Generated once per distribution (about 8 ms each) and kept.
pub fn table(dist: Distribution) -> Option<&'static [i16]> {
    static NORMAL: OnceLock<Vec<i16>> = OnceLock::new();
    static PARETO: OnceLock<Vec<i16>> = OnceLock::new();
    static PARETO_NORMAL: OnceLock<Vec<i16>> = OnceLock::new();
    let cell = match dist {
        Distribution::Uniform => return None,
        Distribution::Normal => &NORMAL,
        Distribution::Pareto => &PARETO,
        Distribution::ParetoNormal => &PARETO_NORMAL,
    };
    Some(cell.get_or_init(|| generate(dist).unwrap_or_default()))
}

fn generate(dist: Distribution) -> Option<Vec<i16>> {
    match dist {
        Distribution::Uniform => None,
        Distribution::Normal => Some(normal_values().into_iter().map(clamp_i16).collect()),
        Distribution::Pareto => Some(pareto_values().into_iter().map(clamp_i16).collect()),
        Distribution::ParetoNormal => Some(
            normal_values()
                .into_iter()
                .zip(pareto_values())
                // 25% normal + 75% pareto, in C int arithmetic (division truncates).
                .map(|(normal, pareto)| clamp_i16((normal + 3 * pareto) / 4))
                .collect(),
        ),
    }
}

fn clamp_i16(value: i32) -> i16 {
    value.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
}

/// C's `(int) rint(v)`: round half to even, then truncate into an int.
fn rint_int(value: f64) -> i32 {
    value.round_ties_even() as i32
}

/// Standard normal table entries, unclamped (paretonormal mixes them before clamping).
fn normal_values() -> Vec<i32> {
    // Sweep x and remember, per CDF bucket, the last x that rounds into it: an inverse CDF.
    // The accumulated `x += 0.00005` (not x = -10 + k * step) is part of the recipe.
    let mut inverse = vec![0.0_f64; TABLESIZE + 1];
    let mut x = -10.0_f64;
    while x < 10.05 {
        let bucket = (TABLESIZE as f64 * normal_cdf(x)).round_ties_even();
        if let Some(slot) = inverse.get_mut(bucket as usize) {
            *slot = x;
        }
        x += 0.00005;
    }
    inverse
        .iter()
        .take(TABLESIZE)
        .step_by(4)
        .map(|&x| rint_int(x * NETEM_DIST_SCALE))
        .collect()
}

fn normal_cdf(x: f64) -> f64 {
    0.5 + 0.5 * erf(x / std::f64::consts::SQRT_2)
}

/// Pareto entries for quantiles 1, 1 - 16/65536, …, 16/65536, already capped at i16::MAX.
fn pareto_values() -> Vec<i32> {
    (1..=TABLE_LEN)
        .rev()
        .map(|k| {
            let quantile = (k * 16) as f64 / 65536.0;
            let mut value = 1.0 / quantile.powf(1.0 / PARETO_SHAPE);
            // Centre on the mean (1.5 for shape 3) and scale so sigma maps to the table scale.
            value -= 1.5;
            value *= (4.0 / 3.0) * NETEM_DIST_SCALE;
            if value > 32767.0 {
                value = 32767.0;
            }
            rint_int(value)
        })
        .collect()
}

/// erf(x) computed as fdlibm's s_erf.c (the algorithm of glibc ≤ 2.40 and musl) so the
/// tables come out bit-identical to those iproute2 generated; Rust's std has no erf.
fn erf(x: f64) -> f64 {
    const ERX: f64 = f64::from_bits(0x3FEB0AC1_60000000);
    const EFX: f64 = f64::from_bits(0x3FC06EBA_8214DB69);
    // erf on [0, 0.84375]: x + x * P(x²)/Q(x²).
    const PP: [f64; 5] = bits([
        0x3FC06EBA_8214DB68,
        0xBFD4CD7D_691CB913,
        0xBF9D2A51_DBD7194F,
        0xBF77A291_236668E4,
        0xBEF8EAD6_120016AC,
    ]);
    const QQ: [f64; 5] = bits([
        0x3FD97779_CDDADC09,
        0x3FB0A54C_5536CEBA,
        0x3F74D022_C4D36B0F,
        0x3F215DC9_221C1A10,
        0xBED09C43_42A26120,
    ]);
    // erf on [0.84375, 1.25]: ERX + P(s)/Q(s), s = |x| - 1.
    const PA: [f64; 7] = bits([
        0xBF6359B8_BEF77538,
        0x3FDA8D00_AD92B34D,
        0xBFD7D240_FBB8C3F1,
        0x3FD45FCA_805120E4,
        0xBFBC6398_3D3E28EC,
        0x3FA22A36_599795EB,
        0xBF61BF38_0A96073F,
    ]);
    const QA: [f64; 6] = bits([
        0x3FBB3E66_18EEE323,
        0x3FE14AF0_92EB6F33,
        0x3FB2635C_D99FE9A7,
        0x3FC02660_E763351F,
        0x3F8BEDC2_6B51DD1C,
        0x3F888B54_5735151D,
    ]);
    // erfc on [1.25, 1/0.35]: exp(-x² - 0.5625 + R(1/x²)/S(1/x²)) / x.
    const RA: [f64; 8] = bits([
        0xBF843412_600D6435,
        0xBFE63416_E4BA7360,
        0xC0251E04_41B0E726,
        0xC04F300A_E4CBA38D,
        0xC0644CB1_84282266,
        0xC067135C_EBCCABB2,
        0xC0545265_57E4D2F2,
        0xC023A0EF_C69AC25C,
    ]);
    const SA: [f64; 8] = bits([
        0x4033A6B9_BD707687,
        0x4061350C_526AE721,
        0x407B290D_D58A1A71,
        0x40842B19_21EC2868,
        0x407AD021_57700314,
        0x405B28A3_EE48AE2C,
        0x401A47EF_8E484A93,
        0xBFAEEFF2_EE749A62,
    ]);
    // erfc on [1/0.35, 6]: the same form with other coefficients.
    const RB: [f64; 7] = bits([
        0xBF843412_39E86F4A,
        0xBFE993BA_70C285DE,
        0xC031C209_555F995A,
        0xC064145D_43C5ED98,
        0xC083EC88_1375F228,
        0xC0900461_6A2E5992,
        0xC07E384E_9BDC383F,
    ]);
    const SB: [f64; 7] = bits([
        0x403E568B_261D5190,
        0x40745CAE_221B9F0A,
        0x409802EB_189D5118,
        0x40A8FFB7_688C246A,
        0x40A3F219_CEDF3BE6,
        0x407DA874_E79FE763,
        0xC03670E2_42712D62,
    ]);

    // fdlibm picks the interval from the high word; comparing it keeps boundaries identical.
    let high = (x.to_bits() >> 32) as u32 & 0x7fff_ffff;
    let sign = if x.is_sign_negative() { -1.0 } else { 1.0 };
    if x.is_nan() {
        return x;
    }
    if high < 0x3feb_0000 {
        if high < 0x3e30_0000 {
            return x + EFX * x;
        }
        let z = x * x;
        let r = poly(z, PP[0], &PP[1..]);
        let s = poly(z, 1.0, &QQ);
        return x + x * (r / s);
    }
    if high < 0x3ff4_0000 {
        let s = x.abs() - 1.0;
        let p = poly(s, PA[0], &PA[1..]);
        let q = poly(s, 1.0, &QA);
        return sign * (ERX + p / q);
    }
    if high >= 0x4018_0000 {
        return sign;
    }
    let ax = x.abs();
    let s = 1.0 / (ax * ax);
    let (r, big_s) = if high < 0x4006_db6e {
        (poly(s, RA[0], &RA[1..]), poly(s, 1.0, &SA))
    } else {
        (poly(s, RB[0], &RB[1..]), poly(s, 1.0, &SB))
    };
    // Split x² exactly: z keeps the top 20 mantissa bits so z * z is exact.
    let z = f64::from_bits(ax.to_bits() & 0xffff_ffff_0000_0000);
    let r = (-z * z - 0.5625).exp() * ((z - ax) * (z + ax) + r / big_s).exp();
    sign * (1.0 - r / ax)
}

/// c0 + t*(c[0] + t*(c[1] + …)), Horner's rule as fdlibm writes it.
fn poly(t: f64, c0: f64, c: &[f64]) -> f64 {
    let tail = c.iter().rev().fold(0.0, |acc, &ci| ci + t * acc);
    c0 + t * tail
}

const fn bits<const N: usize>(raw: [u64; N]) -> [f64; N] {
    let mut out = [0.0; N];
    let mut i = 0;
    while i < N {
        out[i] = f64::from_bits(raw[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Indexes sampled from each table: both ends, the middle, and points between.
    const INDEXES: [usize; 24] = [
        0, 1, 2, 3, 7, 64, 255, 511, 1000, 1024, 1500, 2000, 2047, 2048, 2049, 2500, 3000, 3071,
        3500, 4000, 4088, 4093, 4094, 4095,
    ];

    /// Asserts `dist`'s table against the .dist file Debian's iproute2 6.1.0 installs in
    /// /usr/lib/x86_64-linux-gnu/tc/: its values at INDEXES, its sum, and its index-weighted
    /// sum Σ (i + 1) * v (which catches swapped entries). All 3 × 4096 entries were compared
    /// with those files once, and were equal.
    fn check(dist: Distribution, values: [i16; 24], sum: i64, weighted_sum: i64) {
        let table = table(dist).expect("a table");
        assert_eq!(table.len(), TABLE_LEN);
        let sampled = INDEXES.map(|i| table[i]);
        assert_eq!(sampled, values, "{dist:?}");
        let total: i64 = table.iter().map(|&v| i64::from(v)).sum();
        let weighted: i64 = (1..).zip(table).map(|(i, &v)| i * i64::from(v)).sum();
        assert_eq!((total, weighted), (sum, weighted_sum), "{dist:?}");
    }

    #[test]
    fn normal_matches_iproute2() {
        let values = [
            -32768, -28307, -26871, -25967, -23937, -17638, -12582, -9432, -5677, -5525, -2800,
            -240, -5, 0, 5, 2296, 5081, 5520, 8651, 16285, 23679, 26164, 27159, 28858,
        ];
        check(Distribution::Normal, values, -26_163, 38_718_192_955);
    }

    #[test]
    fn pareto_matches_iproute2() {
        let values = [
            -5461, -5460, -5460, -5459, -5455, -5404, -5225, -4965, -4393, -4362, -3668, -2728,
            -2625, -2622, -2620, -1430, 566, 949, 4383, 21783, 32767, 32767, 32767, 32767,
        ];
        check(Distribution::Pareto, values, -1_123_786, 22_904_699_865);
    }

    #[test]
    fn paretonormal_matches_iproute2() {
        let values = [
            -12305, -11171, -10812, -10586, -10075, -8462, -7064, -6081, -4714, -4652, -3451,
            -2106, -1970, -1966, -1963, -498, 1694, 2091, 5450, 20408, 30495, 31116, 31365, 31789,
        ];
        check(Distribution::ParetoNormal, values, -848_968, 26_857_509_890);
    }

    #[test]
    fn uniform_has_no_table() {
        assert_eq!(table(Distribution::Uniform), None);
    }

    #[test]
    fn erf_reference_points() {
        // Exact for zero and the saturated tails; within 1e-15 of the true values elsewhere.
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(6.5), 1.0);
        assert_eq!(erf(-7.0), -1.0);
        for (x, expected) in [
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.5, 0.999_999_256_901_627_6),
        ] {
            assert!((erf(x) - expected).abs() < 1e-15, "erf({x})");
            assert_eq!(erf(-x), -erf(x));
        }
    }
}
