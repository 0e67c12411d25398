//! When a fault ends, on each clock that needs to know: the engine's timer (monotonic), the
//! datapath's check (CLOCK_MONOTONIC nanoseconds, `bpf_ktime_get_ns`) and what clients are
//! told (wall clock). Read together, so they never drift apart.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

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
}

/// The faults' deadlines in the order they fall, so the engine's loop finds the next one and
/// the passed ones without looking at every fault after every command.
#[derive(Default)]
pub struct Deadlines(BTreeSet<(Instant, String)>);

impl Deadlines {
    pub fn insert(&mut self, at: Instant, id: &str) {
        self.0.insert((at, id.to_owned()));
    }

    pub fn remove(&mut self, at: Instant, id: &str) {
        self.0.remove(&(at, id.to_owned()));
    }

    pub fn next(&self) -> Option<Instant> {
        self.0.first().map(|(at, _)| *at)
    }

    /// Takes the ids whose deadline has passed, earliest first.
    pub fn take_passed(&mut self, now: Instant) -> Vec<String> {
        let later = self.0.split_off(&(now, String::new()));
        let passed = std::mem::replace(&mut self.0, later);
        passed.into_iter().map(|(_, id)| id).collect()
    }
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passed_deadlines_are_taken_earliest_first() {
        let now = Instant::now();
        let mut deadlines = Deadlines::default();
        deadlines.insert(now + Duration::from_secs(5), "late");
        deadlines.insert(now + Duration::from_secs(6), "renewed");
        deadlines.insert(now - Duration::from_secs(1), "b");
        deadlines.insert(now - Duration::from_secs(2), "a");
        deadlines.remove(now + Duration::from_secs(6), "renewed");
        assert_eq!(deadlines.next(), Some(now - Duration::from_secs(2)));
        assert_eq!(deadlines.take_passed(now), ["a", "b"]);
        assert!(deadlines.take_passed(now).is_empty());
        assert_eq!(deadlines.next(), Some(now + Duration::from_secs(5)));
        assert_eq!(
            deadlines.take_passed(now + Duration::from_secs(9)),
            ["late"]
        );
    }
}
