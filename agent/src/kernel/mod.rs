//! The only code that touches the kernel: eBPF programs and maps (`bpf`, pinned in `pins`),
//! tc objects over rtnetlink (`tc`, `qdisc`, `link`), and network namespaces (`netns`). Everything above is plain Rust.

pub mod abi;
pub mod bpf;
pub mod link;
pub mod netem;
pub mod netem_dist;
pub mod netns;
pub mod pins;
pub mod probe;
pub mod qdisc;
pub mod rtnl;
pub mod tc;

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum KernelError {
    #[error("network namespace {path} cannot be opened: {source}")]
    NetnsNotFound {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no network device {dev:?} in the target namespace")]
    DeviceNotFound { dev: String },
    #[error("this kernel cannot run {feature}: {detail}")]
    Unsupported {
        feature: &'static str,
        detail: String,
    },
    #[error("the embedded eBPF object has no {0}")]
    MissingObject(&'static str),
    #[error("{call} failed: {source}")]
    Syscall {
        call: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("eBPF map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("eBPF program {what}: {source}")]
    Program {
        what: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("tc {op}: {source}")]
    Tc {
        op: &'static str,
        #[source]
        source: aya::programs::tc::TcError,
    },
    #[error("netlink {op}: {source}")]
    Netlink {
        op: &'static str,
        #[source]
        source: rtnetlink::Error,
    },
}

/// The ifindex of `dev` in the calling thread's namespace.
pub fn ifindex(dev: &str) -> Result<u32, KernelError> {
    nix::net::if_::if_nametoindex(dev).map_err(|_| KernelError::DeviceNotFound {
        dev: dev.to_owned(),
    })
}

/// CLOCK_MONOTONIC now, in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64);
    // CLOCK_MONOTONIC cannot fail on Linux; 0 would make every deadline already passed.
    now.unwrap_or(0)
}
