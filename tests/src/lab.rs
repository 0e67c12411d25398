//! Two network namespaces joined by a veth pair, torn down on drop.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

/// Each lab is its own link, so every lab's ends can have the same addresses.
const MAC_A: &str = "02:fa:17:00:00:0a";
const MAC_B: &str = "02:fa:17:00:00:0b";

/// Linux interface names are limited to IFNAMSIZ - 1 bytes.
const IFNAME_MAX: usize = 15;
const OPER_UP_TIMEOUT: Duration = Duration::from_secs(5);

static NEXT_LAB: AtomicUsize = AtomicUsize::new(0);

/// Fails the test loudly: a privileged test that silently skipped would look green.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "privileged test: run as root"
    );
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

/// One end of the lab: a namespace and its veth.
#[derive(Debug)]
pub struct Peer {
    pub netns: String,
    pub dev: String,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

impl Peer {
    /// Operationally up is when the kernel has activated the device; until
    /// then it drops what it is asked to send.
    fn wait_oper_up(&self) {
        let deadline = Instant::now() + OPER_UP_TIMEOUT;
        loop {
            let out = Command::new("ip")
                .args(["-n", &self.netns, "-o", "link", "show", "dev", &self.dev])
                .output()
                .expect("spawn ip");
            if String::from_utf8_lossy(&out.stdout).contains(" state UP ") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} in {} not operationally up after {OPER_UP_TIMEOUT:?}",
                self.dev,
                self.netns
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[derive(Debug)]
pub struct Lab {
    pub a: Peer,
    pub b: Peer,
}

impl Lab {
    /// Side a is 10.0.0.1/24 + fd00::1/64, side b is 10.0.0.2/24 + fd00::2/64.
    #[expect(
        clippy::new_without_default,
        reason = "creates kernel objects; `Default` would hide that"
    )]
    pub fn new() -> Lab {
        require_root();
        let pid = std::process::id();
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let peer = |tag: &str, v4, v6| {
            let dev = format!("fl{}{n}{tag}", pid % 100_000);
            assert!(dev.len() <= IFNAME_MAX, "veth name {dev} too long");
            Peer {
                netns: format!("fl-{pid}-{n}-{tag}"),
                dev,
                v4,
                v6,
            }
        };
        // Built before any kernel object exists so that a failure half-way
        // through setup still runs Drop while unwinding.
        let lab = Lab {
            a: peer("a", Ipv4Addr::new(10, 0, 0, 1), fd00(1)),
            b: peer("b", Ipv4Addr::new(10, 0, 0, 2), fd00(2)),
        };
        for p in [&lab.a, &lab.b] {
            // Leftover from a SIGKILLed run whose pid we reuse; harmless if absent.
            let _ = Command::new("ip").args(["netns", "del", &p.netns]).output();
            ip(&["netns", "add", &p.netns]);
        }
        // Both ends are created inside a's namespace and one is moved to b's, so
        // nothing ever appears in the root namespace, even if we die right here.
        // Distinct ifindexes matter: with equal ones (both would get 2 in fresh
        // namespaces) the kernel treats carrier-up as non-urgent and may defer
        // activating the device by up to 1 s, silently dropping the first
        // ARP/ND packets sent meanwhile. Created together they get 2 and 3, and
        // a move keeps the index (older kernels refuse explicit `index` here).
        let (a, b) = (&lab.a, &lab.b);
        ip(&[
            "-n", &a.netns, "link", "add", &a.dev, "address", MAC_A, "type", "veth", "peer",
            "name", &b.dev, "address", MAC_B,
        ]);
        ip(&["-n", &a.netns, "link", "set", &b.dev, "netns", &b.netns]);
        for (p, other, other_mac) in [(a, b, MAC_B), (b, a, MAC_A)] {
            let (v4, v6) = (format!("{}/24", p.v4), format!("{}/64", p.v6));
            ip(&["-n", &p.netns, "link", "set", "lo", "up"]);
            ip(&["-n", &p.netns, "addr", "add", &v4, "dev", &p.dev]);
            ip(&["-n", &p.netns, "addr", "add", &v6, "dev", &p.dev, "nodad"]);
            ip(&["-n", &p.netns, "link", "set", &p.dev, "up"]);
            // The lab's traffic never waits on ARP or neighbour discovery: a resolution lost
            // in the moment a device's qdiscs change (the kernel drops the device's packets
            // while it swaps them) would hold a flow's first packets back for a second.
            for addr in [other.v4.to_string(), other.v6.to_string()] {
                ip(&[
                    "-n",
                    &p.netns,
                    "neigh",
                    "replace",
                    &addr,
                    "lladdr",
                    other_mac,
                    "dev",
                    &p.dev,
                    "nud",
                    "permanent",
                ]);
            }
        }
        for p in [a, b] {
            p.wait_oper_up();
        }
        lab
    }

    pub fn peer(&self, side: Side) -> &Peer {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }

    pub fn ns(&self, side: Side) -> &str {
        &self.peer(side).netns
    }

    pub fn dev(&self, side: Side) -> &str {
        &self.peer(side).dev
    }

    /// The side owning `addr`; panics for addresses outside the lab.
    pub fn side_of(&self, addr: IpAddr) -> Side {
        [Side::A, Side::B]
            .into_iter()
            .find(|&s| {
                let p = self.peer(s);
                addr == IpAddr::V4(p.v4) || addr == IpAddr::V6(p.v6)
            })
            .unwrap_or_else(|| panic!("{addr} is not a lab address"))
    }

    /// Runs `cmd` inside the side's namespace; the caller inspects the status.
    pub fn exec(&self, side: Side, cmd: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", self.ns(side)])
            .args(cmd)
            .output()
            .unwrap_or_else(|e| panic!("spawn {cmd:?} in {}: {e}", self.ns(side)))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace destroys the veth end inside it, and with it the pair.
        for p in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", &p.netns]).output();
        }
    }
}

/// Runs `f` on a fresh thread that has joined the named network namespace.
/// Sockets created by `f` stay in that namespace wherever they are used later.
pub fn in_netns<T: Send>(netns_name: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{netns_name}");
    let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    std::thread::scope(|s| {
        s.spawn(move || {
            setns(&ns, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn fd00(host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, host)
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("spawn ip (is iproute2 installed? see scripts/setup.sh)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}
