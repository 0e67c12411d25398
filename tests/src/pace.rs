//! How fast this machine does the work tests wait for, against the machines their bounds were
//! measured on. A bound on how long something takes to happen (faultd acting on a timer, a
//! process starting, a connection closing) is `pace::scaled(bound)`: under an emulated CPU
//! (the VM stage runs under qemu's TCG, ~15x slower) it grows with the slowdown measured here
//! rather than failing one run in ten. What the kernel promises is not scaled: a fault's
//! deadline is checked by its effect (traffic passes once the deadline is surely past).

use std::{
    process::Command,
    sync::OnceLock,
    time::{Duration, Instant},
};

/// Spawning `true` on the machine kind the bounds come from (2 vCPUs, host kernel): 1.0 ms
/// median, measured for docs/field.md; the cheapest of a few tries rarely exceeds this.
const REFERENCE_SPAWN: Duration = Duration::from_micros(1500);
/// `compute` there, as the tests are built (the dev profile leaves this crate unoptimized).
const REFERENCE_COMPUTE: Duration = if cfg!(debug_assertions) {
    Duration::from_millis(40)
} else {
    Duration::from_millis(8)
};
const TRIES: u32 = 5;

/// How many times slower than the reference this machine is; at least 1. Both a process
/// spawn and plain computation are timed, and the slower ratio counts: an emulated CPU can be
/// quick at one (qemu's TCG caches the translation of a binary it runs again) and 15 times
/// slower at the other.
pub fn factor() -> f64 {
    static FACTOR: OnceLock<f64> = OnceLock::new();
    *FACTOR.get_or_init(|| {
        let spawn = cheapest(|| {
            let status = Command::new("true").status().expect("spawn true");
            assert!(status.success());
        });
        let compute = cheapest(compute);
        let ratio =
            |took: Duration, reference: Duration| took.as_secs_f64() / reference.as_secs_f64();
        let factor = ratio(spawn, REFERENCE_SPAWN)
            .max(ratio(compute, REFERENCE_COMPUTE))
            .max(1.0);
        println!(
            "FAULTLINE-MEASURE pace_factor={factor:.1} spawn_ms={:.2} compute_ms={:.1}",
            spawn.as_secs_f64() * 1e3,
            compute.as_secs_f64() * 1e3
        );
        factor
    })
}

/// The shortest of `TRIES` runs of `f`.
fn cheapest(f: impl Fn()) -> Duration {
    (0..TRIES)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// A fixed amount of integer work (4 M rounds of xorshift).
fn compute() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut sum = 0u64;
    for i in 0..(1u64 << 22) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        sum = sum.wrapping_add(x.wrapping_mul(i | 1));
    }
    std::hint::black_box(sum);
}

/// `bound` as this machine's pace stretches it.
pub fn scaled(bound: Duration) -> Duration {
    bound.mul_f64(factor())
}

/// Sleeps until `at` (returns at once if it has passed).
pub fn sleep_until(at: Instant) {
    std::thread::sleep(at.saturating_duration_since(Instant::now()));
}
