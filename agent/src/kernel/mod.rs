//! The only code that touches the kernel: eBPF programs and maps (`bpf`, pinned in `pins`),
//! tc objects over rtnetlink (`filter`, `qdisc`, `link`), and network namespaces (`netns`).
//! Everything above is plain Rust.

pub mod bpf;
pub mod filter;
pub mod link;
pub mod netem;
pub mod netem_dist;
pub mod netem_groups;
pub mod netns;
pub mod nla;
pub mod pins;
pub mod probe;
pub mod qdisc;
pub mod rtnl;

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
    #[error("this kernel lacks {feature}: {detail}")]
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

/// Looks device names up in the namespace it was made in, from whatever namespace the
/// calling thread is in: a socket keeps the namespace it was created in, so a fault on a
/// device that already carries our filters needs no `setns` at all.
#[derive(Debug)]
pub struct DeviceNames {
    socket: std::os::fd::OwnedFd,
}

impl DeviceNames {
    /// For the calling thread's namespace.
    pub fn here() -> Result<Self, KernelError> {
        use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
        let socket = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| KernelError::Syscall {
            call: "socket",
            source: e.into(),
        })?;
        Ok(Self { socket })
    }

    pub fn ifindex(&self, dev: &str) -> Result<u32, KernelError> {
        use std::os::fd::AsRawFd;
        let not_found = || KernelError::DeviceNotFound {
            dev: dev.to_owned(),
        };
        // SAFETY: ifreq is plain data; all zeroes is a valid (empty) request.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        if dev.len() >= request.ifr_name.len() || dev.as_bytes().contains(&0) {
            return Err(not_found());
        }
        for (to, &from) in request.ifr_name.iter_mut().zip(dev.as_bytes()) {
            *to = from as libc::c_char;
        }
        // SAFETY: SIOCGIFINDEX reads the NUL-terminated name and writes the index into the
        // request, which outlives the call.
        let rc = unsafe { libc::ioctl(self.socket.as_raw_fd(), libc::SIOCGIFINDEX, &mut request) };
        if rc < 0 {
            return Err(not_found());
        }
        // SAFETY: a successful SIOCGIFINDEX fills the union's ifindex member.
        let index = unsafe { request.ifr_ifru.ifru_ifindex };
        u32::try_from(index).map_err(|_| not_found())
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64);
    // CLOCK_MONOTONIC cannot fail on Linux; 0 would make every deadline already passed.
    now.unwrap_or(0)
}
