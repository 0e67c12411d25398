//! When a fault ends, on each clock that needs to know: the engine's timer (monotonic), the
//! datapath's check (CLOCK_MONOTONIC nanoseconds, `bpf_ktime_get_ns`) and what clients are
//! told (wall clock). Read together, so they never drift apart.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::kernel;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline {
    pub at: Instant,
    pub kernel_ns: u64,
    pub wall: SystemTime,
}

impl Deadline {
    /// `duration` from now.
    pub fn after(duration: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + duration,
            kernel_ns: kernel::monotonic_ns().saturating_add(duration.as_nanos() as u64),
            wall: SystemTime::now() + duration,
        }
    }

    /// A deadline the datapath holds (a journaled fault's): the engine's timer is set from it.
    pub fn from_kernel(kernel_ns: u64, wall_unix_ms: u64) -> Deadline {
        let remaining = Duration::from_nanos(kernel_ns.saturating_sub(kernel::monotonic_ns()));
        Deadline {
            at: Instant::now() + remaining,
            kernel_ns,
            wall: UNIX_EPOCH + Duration::from_millis(wall_unix_ms),
        }
    }

    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    pub fn passed(&self) -> bool {
        self.at <= Instant::now()
    }
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
