//! What limits a path of faultd's: its on-CPU time and context switches per operation, and the
//! same path run with faultd and the client held on one CPU, where no wake-up crosses CPUs.

use std::time::Duration;

use nix::{
    sched::{sched_getaffinity, sched_setaffinity, CpuSet},
    time::{clock_getcpuclockid, clock_gettime},
    unistd::Pid,
};

/// CPU time and context switches of a process, all its threads together.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    pub cpu: Duration,
    pub switches: u64,
}

impl std::ops::Sub for Usage {
    type Output = Usage;

    fn sub(self, earlier: Usage) -> Usage {
        Usage {
            cpu: self.cpu.saturating_sub(earlier.cpu),
            switches: self.switches.saturating_sub(earlier.switches),
        }
    }
}

pub fn usage(pid: u32) -> Usage {
    let clock = clock_getcpuclockid(pid_of(pid)).expect("faultd's CPU clock");
    let cpu = Duration::from(clock_gettime(clock).expect("faultd's CPU time"));
    let switches = threads(pid)
        .iter()
        .map(|tid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
                .unwrap_or_default();
            status
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("voluntary_ctxt_switches:")
                        .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                })
                .filter_map(|v| v.trim().parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum();
    Usage { cpu, switches }
}

/// Holds faultd's threads and the calling thread on the first CPU this thread may use, until
/// dropped; then each gets back the CPUs it had.
pub struct OneCpu {
    restore: Vec<(Pid, CpuSet)>,
}

impl OneCpu {
    pub fn pin(pid: u32) -> OneCpu {
        let here = Pid::from_raw(0);
        let allowed = sched_getaffinity(here).expect("this thread's CPUs");
        let cpu = (0..CpuSet::count())
            .find(|&c| allowed.is_set(c).unwrap_or(false))
            .expect("a CPU to run on");
        let mut one = CpuSet::new();
        one.set(cpu).expect("a CPU index");
        let mut restore = Vec::new();
        for tid in threads(pid).into_iter().map(pid_of).chain([here]) {
            if let Ok(had) = sched_getaffinity(tid) {
                sched_setaffinity(tid, &one).expect("pin a thread");
                restore.push((tid, had));
            }
        }
        OneCpu { restore }
    }
}

impl Drop for OneCpu {
    fn drop(&mut self) {
        for (tid, had) in &self.restore {
            // A thread that has exited since needs nothing back.
            let _ = sched_setaffinity(*tid, had);
        }
    }
}

fn threads(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn pid_of(id: u32) -> Pid {
    Pid::from_raw(i32::try_from(id).expect("a pid"))
}
