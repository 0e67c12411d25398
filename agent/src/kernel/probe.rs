//! What this kernel can do, found once at start by trying it: in two scratch network
//! namespaces joined by a veth pair, faults are installed the way faultd installs them and
//! UDP datagrams cross them. A capability is what a datagram showed, never a version number
//! (distributions backport features, and an accepted configuration can still drop packets:
//! before 6.4, packets `bpf_redirect`ed from ingress into an ifb were dropped). The scratch
//! namespaces die with the probe's thread, so probing changes nothing anyone can see.

use std::{
    collections::BTreeMap,
    fmt,
    fs::File,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::{AsFd, AsRawFd},
    time::{Duration, Instant},
};

use futures::TryStreamExt;
use nix::sched::{setns, unshare, CloneFlags};
use rtnetlink::{LinkUnspec, LinkVeth};

use super::{
    bpf::{Datapath, Hook},
    filter, link,
    netem::netem_options,
    netem_groups::{self, NetemGroup},
    qdisc, rtnl, KernelError,
};
use crate::{
    abi::{
        FlAction, FlCandidates, FlFault, FlMatch, FlPortRange, PrefixKey, ACTION_DELAY,
        ACTION_PARTITION, HOOK_EGRESS, HOOK_INGRESS, MAX_CANDIDATES,
    },
    fault::netem::{Netem, NetemWire},
};

/// One thing a fault may need from the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    /// Loss, burst loss and partitions: the eBPF programs at both tc hooks.
    EbpfFaults,
    /// Delay faults on sent packets: a netem class under an htb root.
    EgressDelay,
    /// Delay faults on received packets: the same on an ifb, fed by act_mirred.
    IngressDelay,
    /// One group of netem's options, as the kernel applies and reports it.
    Netem(NetemGroup),
    /// A netem that duplicates packets in one qdisc tree with another netem: since a 2025
    /// fix, stable kernels refuse it (6.1.192 does; 6.12.117 does not).
    NetemDuplicateBesideOthers,
}

impl Capability {
    pub fn name(self) -> &'static str {
        match self {
            Self::EbpfFaults => "ebpf_faults",
            Self::EgressDelay => "egress_delay",
            Self::IngressDelay => "ingress_delay",
            Self::Netem(group) => group.capability(),
            Self::NetemDuplicateBesideOthers => "netem_duplicate_beside_others",
        }
    }

    fn all() -> impl Iterator<Item = Capability> {
        [Self::EbpfFaults, Self::EgressDelay, Self::IngressDelay]
            .into_iter()
            .chain(NetemGroup::ALL.into_iter().map(Self::Netem))
            .chain([Self::NetemDuplicateBesideOthers])
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the probes found: each capability, or why the kernel lacks it.
#[derive(Clone, Debug)]
pub struct Capabilities {
    found: BTreeMap<Capability, Result<(), String>>,
}

impl Capabilities {
    /// Every capability missing for `reason` (the reaper, which applies nothing, probes nothing).
    pub fn none(reason: &str) -> Self {
        Self {
            found: Capability::all()
                .map(|c| (c, Err(reason.to_owned())))
                .collect(),
        }
    }

    pub fn check(&self, capability: Capability) -> Result<(), KernelError> {
        match self.found.get(&capability) {
            Some(Ok(())) => Ok(()),
            Some(Err(detail)) => Err(KernelError::Unsupported {
                feature: capability.name(),
                detail: detail.clone(),
            }),
            None => Err(KernelError::Unsupported {
                feature: capability.name(),
                detail: "not probed".to_owned(),
            }),
        }
    }

    pub fn has(&self, capability: Capability) -> bool {
        self.check(capability).is_ok()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Capability, &Result<(), String>)> {
        self.found.iter().map(|(c, r)| (*c, r))
    }
}

/// How long netem holds the probe's delayed datagrams: long enough that one which skipped
/// netem cannot pass for delayed, short enough not to slow faultd's start.
const PROBE_DELAY: Duration = Duration::from_millis(50);
/// How long the probe waits for datagrams that should arrive (under an emulated CPU too).
const PROBE_WAIT: Duration = Duration::from_secs(5);
const A_ADDR: Ipv4Addr = Ipv4Addr::new(10, 255, 255, 1);
const B_ADDR: Ipv4Addr = Ipv4Addr::new(10, 255, 255, 2);

/// Probes every capability. Never fails: what cannot be probed is reported as missing.
pub fn probe() -> Capabilities {
    let probing = std::thread::Builder::new()
        .name("faultline-probe".into())
        .spawn(|| {
            let mut found = BTreeMap::new();
            if let Err(e) = ScratchLab::new().and_then(|lab| lab.probe(&mut found)) {
                for capability in Capability::all() {
                    found
                        .entry(capability)
                        .or_insert_with(|| Err(format!("the probe failed: {e}")));
                }
            }
            found
        });
    let found = match probing.map(|thread| thread.join()) {
        Ok(Ok(found)) => found,
        Ok(Err(_)) => return Capabilities::none("the probe thread panicked"),
        Err(e) => return Capabilities::none(&format!("cannot start the probe thread: {e}")),
    };
    Capabilities { found }
}

/// Two scratch namespaces, A and B, joined by a veth pair (A's end `a_dev`, B's `b_dev`).
/// The thread that made them sits in A, and enters B with `in_b`.
struct ScratchLab {
    a: File,
    b: File,
    a_dev: u32,
    b_dev: u32,
    /// Receives in B, on B_ADDR.
    sink: UdpSocket,
}

fn syscall(call: &'static str) -> impl FnOnce(nix::Error) -> KernelError {
    move |e| KernelError::Syscall {
        call,
        source: e.into(),
    }
}

fn io(call: &'static str) -> impl FnOnce(std::io::Error) -> KernelError {
    move |source| KernelError::Syscall { call, source }
}

/// A kernel refusal as the reason a capability is missing, naming what was refused.
fn named(what: &'static str) -> impl Fn(KernelError) -> String {
    move |e| format!("{what}: {e}")
}

fn this_netns() -> Result<File, KernelError> {
    File::open("/proc/thread-self/ns/net").map_err(io("open the scratch namespace"))
}

impl ScratchLab {
    /// Leaves the calling thread in A: call it on a thread of its own.
    fn new() -> Result<ScratchLab, KernelError> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(syscall("unshare a scratch namespace"))?;
        let b = this_netns()?;
        unshare(CloneFlags::CLONE_NEWNET).map_err(syscall("unshare a scratch namespace"))?;
        let a = this_netns()?;
        let b_fd = b.as_raw_fd();
        let (a_dev, b_dev) = rtnl::run("scratch veth", |handle| async move {
            handle
                .link()
                .add(LinkVeth::new("flprobe0", "flprobe1").build())
                .execute()
                .await?;
            let index = |name: &'static str| {
                let handle = handle.clone();
                async move {
                    let link = handle.link().get().match_name(name.to_owned()).execute();
                    let found = link.try_collect::<Vec<_>>().await?;
                    Ok::<_, rtnetlink::Error>(found.first().map_or(0, |l| l.header.index))
                }
            };
            let (a_dev, b_dev) = (index("flprobe0").await?, index("flprobe1").await?);
            // Moved, the peer keeps its index.
            handle
                .link()
                .set(LinkUnspec::new_with_index(b_dev).setns_by_fd(b_fd).build())
                .execute()
                .await?;
            handle
                .address()
                .add(a_dev, A_ADDR.into(), 30)
                .execute()
                .await?;
            handle
                .link()
                .set(LinkUnspec::new_with_index(a_dev).up().build())
                .execute()
                .await?;
            Ok((a_dev, b_dev))
        })?;
        let lab = ScratchLab {
            a,
            b,
            a_dev,
            b_dev,
            sink: UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(io("bind"))?,
        };
        let sink = lab.in_b(|| {
            rtnl::run("scratch address", |handle| async move {
                handle
                    .address()
                    .add(b_dev, B_ADDR.into(), 30)
                    .execute()
                    .await?;
                handle
                    .link()
                    .set(LinkUnspec::new_with_index(b_dev).up().build())
                    .execute()
                    .await
            })?;
            UdpSocket::bind((B_ADDR, 0)).map_err(io("bind the probe's receiver"))
        })??;
        Ok(ScratchLab { sink, ..lab })
    }

    /// Runs `f` with the thread in B, then back in A.
    fn in_b<T>(&self, f: impl FnOnce() -> T) -> Result<T, KernelError> {
        setns(self.b.as_fd(), CloneFlags::CLONE_NEWNET).map_err(syscall("setns"))?;
        let result = f();
        setns(self.a.as_fd(), CloneFlags::CLONE_NEWNET).map_err(syscall("setns"))?;
        Ok(result)
    }

    /// Installs one fault of each kind a capability needs, each matching one sending port of
    /// A, sends a datagram from each port and one from a port no fault matches, and judges
    /// what arrived.
    fn probe(
        &self,
        found: &mut BTreeMap<Capability, Result<(), String>>,
    ) -> Result<(), KernelError> {
        let datapath = Datapath::load(None)?;
        filter::add_clsact(self.a_dev)?;
        datapath.attach(self.a_dev, Hook::Egress)?;
        self.in_b(|| {
            filter::add_clsact(self.b_dev)?;
            datapath.attach(self.b_dev, Hook::Ingress)
        })??;
        let senders = Senders::new()?;
        let mut faults = Faults {
            datapath,
            next_slot: 0,
            listed: BTreeMap::new(),
        };
        // Partitions, at A's egress and B's ingress.
        faults.add(
            self.a_dev,
            HOOK_EGRESS,
            senders.port(Probe::EgressDrop),
            ACTION_PARTITION,
            0,
        )?;
        faults.add(
            self.b_dev,
            HOOK_INGRESS,
            senders.port(Probe::IngressDrop),
            ACTION_PARTITION,
            0,
        )?;
        // Delays: a netem class under an htb root on A's device, and on an ifb in B.
        let plain_delay = NetemWire {
            delay: Some(format!("{}ms", PROBE_DELAY.as_millis())),
            ..NetemWire::default()
        };
        let netem = netem_options(&netem_of(&plain_delay)?);
        let egress_delay = qdisc::install_root(self.a_dev)
            .map_err(named("the htb qdisc (sch_htb)"))
            .and_then(|()| {
                qdisc::add_delay_class(self.a_dev, 1, netem.clone())
                    .map_err(named("the netem qdisc (sch_netem)"))
            })
            .map(|()| qdisc::class_handle(1));
        match &egress_delay {
            Ok(class) => faults.add(
                self.a_dev,
                HOOK_EGRESS,
                senders.port(Probe::EgressDelay),
                ACTION_DELAY,
                *class,
            )?,
            Err(e) => {
                found.insert(Capability::EgressDelay, Err(e.clone()));
            }
        }
        let ingress_delay = self.in_b(|| -> Result<u32, String> {
            let ifb = link::create_ifb(&link::ifb_name(self.b_dev))
                .map_err(named("ifb devices (ifb)"))?;
            qdisc::install_root(ifb).map_err(named("the htb qdisc (sch_htb)"))?;
            qdisc::add_delay_class(ifb, 1, netem.clone())
                .map_err(named("the netem qdisc (sch_netem)"))?;
            faults
                .datapath
                .attach_steer(self.b_dev, ifb)
                .map_err(named("the steering filter (cls_bpf with act_mirred)"))?;
            Ok(qdisc::class_handle(1))
        })?;
        match &ingress_delay {
            Ok(class) => faults.add(
                self.b_dev,
                HOOK_INGRESS,
                senders.port(Probe::IngressDelay),
                ACTION_DELAY,
                *class,
            )?,
            Err(e) => {
                found.insert(Capability::IngressDelay, Err(e.clone()));
            }
        }

        let seen = senders.send_and_collect(&self.sink)?;
        found.insert(
            Capability::EbpfFaults,
            seen.dropped(Probe::EgressDrop, "egress")
                .and_then(|()| seen.dropped(Probe::IngressDrop, "ingress")),
        );
        if egress_delay.is_ok() {
            found.insert(Capability::EgressDelay, seen.delayed(Probe::EgressDelay));
        }
        if ingress_delay.is_ok() {
            found.insert(Capability::IngressDelay, seen.delayed(Probe::IngressDelay));
        }
        let no_netem = || Err("no netem class could be made (see egress_delay)".to_owned());
        for group in NetemGroup::ALL {
            let result = match egress_delay {
                // Beside netems of the other groups, which a duplicating one may not be.
                Ok(_) if group == NetemGroup::Duplicate => {
                    self.in_b(|| netem_readback(self.b_dev, group))?
                }
                Ok(_) => netem_readback(self.a_dev, group),
                Err(_) => no_netem(),
            };
            found.insert(Capability::Netem(group), result);
        }
        let mixed = match (
            &egress_delay,
            &found[&Capability::Netem(NetemGroup::Duplicate)],
        ) {
            (Ok(_), Ok(())) => self.in_b(|| {
                qdisc::add_delay_class(self.b_dev, 1, netem.clone())
                    .map_err(named("a netem beside a duplicating netem"))
            })?,
            _ => no_netem(),
        };
        found.insert(Capability::NetemDuplicateBesideOthers, mixed);
        Ok(())
    }
}

/// Sets up `group`'s sample as class fa17:(2 + group) on `dev`'s htb and checks that the
/// kernel reports back every option it was given.
fn netem_readback(dev: u32, group: NetemGroup) -> Result<(), String> {
    let minor = 2 + group as u16;
    if !qdisc::root_is_ours(dev).map_err(|e| e.to_string())? {
        qdisc::install_root(dev).map_err(named("the htb qdisc (sch_htb)"))?;
    }
    let sent = netem_options(&netem_of(&group.sample()).map_err(|e| e.to_string())?);
    qdisc::add_delay_class(dev, minor, sent.clone()).map_err(|e| e.to_string())?;
    let reported = qdisc::leaf_options(dev, qdisc::class_handle(minor))
        .map_err(|e| e.to_string())?
        .ok_or("the kernel reports no options for the netem qdisc")?;
    netem_groups::compare_reported(&sent, &reported)
}

/// The probe's own netem configurations, validated as a user's would be.
fn netem_of(wire: &NetemWire) -> Result<Netem, KernelError> {
    Netem::from_wire(wire).map_err(|e| KernelError::Unsupported {
        feature: "netem",
        detail: format!("the probe's configuration is invalid: {e}"),
    })
}

/// The fault slots and trie entries of the probe's datapath.
struct Faults {
    datapath: Datapath,
    next_slot: u32,
    /// The slots listed under each device's trie entry.
    listed: BTreeMap<u32, Vec<u32>>,
}

impl Faults {
    /// A fault on device `dev` at `hooks` matching UDP from or to A's port `port`.
    fn add(
        &mut self,
        dev: u32,
        hooks: u8,
        port: u16,
        kind: u32,
        class_id: u32,
    ) -> Result<(), KernelError> {
        let slot = self.next_slot;
        self.next_slot += 1;
        let range = [FlPortRange {
            first: port,
            last: port,
        }; 1];
        let mut matcher = FlMatch {
            hooks,
            proto: libc::IPPROTO_UDP as u8,
            ..FlMatch::default()
        };
        // At A's egress A's port is the local one; at B's ingress it is the remote one.
        if hooks == HOOK_EGRESS {
            matcher.local_port_count = 1;
            matcher.local_ports[..1].copy_from_slice(&range);
        } else {
            matcher.remote_port_count = 1;
            matcher.remote_ports[..1].copy_from_slice(&range);
        }
        let fault = FlFault {
            deadline_ns: u64::MAX,
            match_: matcher,
            action: FlAction {
                kind,
                class_id,
                ..FlAction::default()
            },
            ..FlFault::default()
        };
        self.datapath.reset_counters(slot)?;
        self.datapath.write_fault(slot, &fault)?;
        // Every remote address on the device; each device's faults listed under it.
        let key = PrefixKey {
            ifindex: dev,
            addr: [0; 16],
            len: 0,
        };
        let listed = self.listed.entry(dev).or_default();
        listed.push(slot);
        let mut candidates = FlCandidates {
            count: listed.len() as u32,
            slots: [0; MAX_CANDIDATES],
        };
        candidates.slots[..listed.len()].copy_from_slice(listed);
        self.datapath.set_prefix(&key, &candidates)
    }
}

/// What each of A's sending ports is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probe {
    EgressDrop,
    IngressDrop,
    EgressDelay,
    IngressDelay,
    /// Matched by no fault: it arrives, and after it nothing the partitions hold back can.
    Control,
}

const PROBES: [Probe; 5] = [
    Probe::EgressDrop,
    Probe::IngressDrop,
    Probe::EgressDelay,
    Probe::IngressDelay,
    Probe::Control,
];

/// One UDP socket in A per probe.
struct Senders {
    sockets: Vec<(Probe, UdpSocket, u16)>,
}

impl Senders {
    fn new() -> Result<Senders, KernelError> {
        let sockets = PROBES
            .iter()
            .map(|&probe| {
                let socket = UdpSocket::bind((A_ADDR, 0)).map_err(io("bind a probe sender"))?;
                let port = socket.local_addr().map_err(io("getsockname"))?.port();
                Ok((probe, socket, port))
            })
            .collect::<Result<_, KernelError>>()?;
        Ok(Senders { sockets })
    }

    fn port(&self, probe: Probe) -> u16 {
        self.sockets
            .iter()
            .find(|(p, ..)| *p == probe)
            .map_or(0, |(_, _, port)| *port)
    }

    /// Sends one datagram per probe (the control last) and collects arrivals until every
    /// datagram that should arrive has, or `PROBE_WAIT` has passed.
    fn send_and_collect(&self, sink: &UdpSocket) -> Result<Seen, KernelError> {
        let to = sink.local_addr().map_err(io("getsockname"))?;
        let started = Instant::now();
        for (_, socket, _) in &self.sockets {
            socket.send_to(b"faultline probe", to).map_err(io("send"))?;
        }
        let mut seen = Seen {
            arrivals: Vec::new(),
            ports: self
                .sockets
                .iter()
                .map(|(p, _, port)| (*p, *port))
                .collect(),
        };
        let expected = [Probe::EgressDelay, Probe::IngressDelay, Probe::Control];
        let mut buf = [0u8; 64];
        while started.elapsed() < PROBE_WAIT && !expected.iter().all(|p| seen.arrival(*p).is_some())
        {
            let left = PROBE_WAIT.saturating_sub(started.elapsed());
            sink.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .map_err(io("set timeout"))?;
            match sink.recv_from(&mut buf) {
                Ok((_, SocketAddr::V4(from))) => {
                    seen.arrivals.push((from.port(), started.elapsed()));
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => return Err(io("receive")(e)),
            }
        }
        Ok(seen)
    }
}

/// The datagrams that arrived: (A's port, time after sending).
struct Seen {
    arrivals: Vec<(u16, Duration)>,
    ports: Vec<(Probe, u16)>,
}

impl Seen {
    fn arrival(&self, probe: Probe) -> Option<Duration> {
        let port = self.ports.iter().find(|(p, _)| *p == probe)?.1;
        self.arrivals
            .iter()
            .find(|(from, _)| *from == port)
            .map(|(_, at)| *at)
    }

    fn dropped(&self, probe: Probe, hook: &str) -> Result<(), String> {
        if self.arrival(Probe::Control).is_none() {
            return Err(format!(
                "a datagram no fault matched did not arrive within {PROBE_WAIT:?}"
            ));
        }
        match self.arrival(probe) {
            None => Ok(()),
            Some(_) => Err(format!(
                "a datagram the {hook} partition should have dropped arrived"
            )),
        }
    }

    fn delayed(&self, probe: Probe) -> Result<(), String> {
        match self.arrival(probe) {
            Some(at) if at >= PROBE_DELAY => Ok(()),
            Some(at) => Err(format!(
                "a datagram steered into netem's {PROBE_DELAY:?} delay arrived after {at:?}: \
                 it went around netem"
            )),
            None => Err(format!(
                "a datagram steered into netem's {PROBE_DELAY:?} delay never arrived (waited \
                 {PROBE_WAIT:?}): this kernel drops what is steered there"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(arrivals: &[(Probe, u64)]) -> Seen {
        let ports: Vec<(Probe, u16)> = PROBES.iter().map(|&p| (p, 40_000 + p as u16)).collect();
        Seen {
            arrivals: arrivals
                .iter()
                .map(|&(p, ms)| (40_000 + p as u16, Duration::from_millis(ms)))
                .collect(),
            ports,
        }
    }

    #[test]
    fn a_drop_counts_only_when_what_no_fault_matched_came_through() {
        let ok = seen(&[(Probe::Control, 1)]);
        assert_eq!(ok.dropped(Probe::EgressDrop, "egress"), Ok(()));
        let leaked = seen(&[(Probe::Control, 1), (Probe::EgressDrop, 0)]);
        assert!(leaked.dropped(Probe::EgressDrop, "egress").is_err());
        // Nothing arrived at all: the path is broken, which proves no drop.
        assert!(seen(&[]).dropped(Probe::EgressDrop, "egress").is_err());
    }

    #[test]
    fn a_delay_counts_only_when_the_datagram_arrived_no_sooner() {
        let delay = PROBE_DELAY.as_millis() as u64;
        assert_eq!(
            seen(&[(Probe::IngressDelay, delay + 3)]).delayed(Probe::IngressDelay),
            Ok(())
        );
        let around = seen(&[(Probe::IngressDelay, 1)]).delayed(Probe::IngressDelay);
        assert!(around.is_err_and(|e| e.contains("went around")));
        // Steered and never delivered: what 6.1's bpf_redirect into an ifb did.
        let lost = seen(&[(Probe::Control, 1)]).delayed(Probe::IngressDelay);
        assert!(lost.is_err_and(|e| e.contains("never arrived")));
    }
}
