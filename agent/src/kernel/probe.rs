//! What this kernel can do, found once at start by trying it: in two scratch network
//! namespaces joined by a veth pair, faults are installed the way faultd installs them (with
//! the agent's one datapath, under attachments and slots lent for the probe) and UDP datagrams
//! cross them. A capability is what a datagram showed, never a version number (distributions
//! backport features, and an accepted configuration can still drop packets: before 6.4,
//! packets `bpf_redirect`ed from ingress into an ifb were dropped). The scratch namespaces die
//! with the probe's thread, so probing changes nothing anyone can see.

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
    qdisc,
    rtnl::Netlink,
    KernelError,
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

/// Faults the probe installs: partitions at A's egress and B's ingress, and delays there.
pub const PROBE_FAULTS: usize = 4;

/// What the probe borrows of the agent's datapath: fault slots, and an attachment for each
/// scratch device. Free when lent, and free again when the probe returns.
#[derive(Clone, Copy, Debug)]
pub struct Lent {
    pub slots: [u32; PROBE_FAULTS],
    /// A's device, then B's.
    pub attachments: [u32; 2],
}

/// Probes every capability. Never fails: what cannot be probed is reported as missing.
pub fn probe(datapath: &mut Datapath, lent: Lent) -> Capabilities {
    let found = std::thread::scope(|s| {
        let probing = std::thread::Builder::new()
            .name("faultline-probe".into())
            .spawn_scoped(s, || probe_here(datapath, lent))
            .map(|thread| thread.join());
        match probing {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(_)) => Err("the probe thread panicked".to_owned()),
            Err(e) => Err(format!("cannot start the probe thread: {e}")),
        }
    });
    match found {
        Ok(found) => Capabilities { found },
        Err(why) => Capabilities::none(&why),
    }
}

/// The probe, on a thread of its own: it leaves its namespace for the scratch ones.
fn probe_here(datapath: &mut Datapath, lent: Lent) -> BTreeMap<Capability, Result<(), String>> {
    let mut found = BTreeMap::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("tokio runtime"));
    let result = runtime.and_then(|runtime| {
        runtime.block_on(async {
            let lab = ScratchLab::new().await?;
            let mut faults = Faults {
                datapath,
                lent,
                used: 0,
                listed: BTreeMap::new(),
            };
            let probed = lab.probe(&mut faults, &mut found).await;
            faults.clear();
            probed
        })
    });
    if let Err(e) = result {
        for capability in Capability::all() {
            found
                .entry(capability)
                .or_insert_with(|| Err(format!("the probe failed: {e}")));
        }
    }
    found
}

/// Two scratch namespaces, A and B, joined by a veth pair (A's end `a_dev`, B's `b_dev`), with
/// a netlink connection in each. The thread that made them sits in A.
struct ScratchLab {
    a_dev: u32,
    b_dev: u32,
    a_nl: Netlink,
    b_nl: Netlink,
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

fn netlink(op: &'static str) -> impl FnOnce(rtnetlink::Error) -> KernelError {
    move |source| KernelError::Netlink { op, source }
}

/// A kernel refusal as the reason a capability is missing, naming what was refused.
fn named(what: &'static str) -> impl Fn(KernelError) -> String {
    move |e| format!("{what}: {e}")
}

fn this_netns() -> Result<File, KernelError> {
    File::open("/proc/thread-self/ns/net").map_err(io("open the scratch namespace"))
}

impl ScratchLab {
    /// Leaves the calling thread in A.
    async fn new() -> Result<ScratchLab, KernelError> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(syscall("unshare a scratch namespace"))?;
        let b = this_netns()?;
        let b_nl = Netlink::here()?;
        unshare(CloneFlags::CLONE_NEWNET).map_err(syscall("unshare a scratch namespace"))?;
        let a = this_netns()?;
        let a_nl = Netlink::here()?;
        let (a_dev, b_dev) = Self::wire(&a_nl, &b_nl, &b).await?;
        let sink = {
            setns(b.as_fd(), CloneFlags::CLONE_NEWNET).map_err(syscall("setns"))?;
            let sink = UdpSocket::bind((B_ADDR, 0)).map_err(io("bind the probe's receiver"));
            setns(a.as_fd(), CloneFlags::CLONE_NEWNET).map_err(syscall("setns"))?;
            sink?
        };
        Ok(ScratchLab {
            a_dev,
            b_dev,
            a_nl,
            b_nl,
            sink,
        })
    }

    /// The veth pair, its ends addressed and up; returns their ifindexes (A's, B's).
    async fn wire(a_nl: &Netlink, b_nl: &Netlink, b: &File) -> Result<(u32, u32), KernelError> {
        let a = a_nl.handle();
        a.link()
            .add(LinkVeth::new("flprobe0", "flprobe1").build())
            .execute()
            .await
            .map_err(netlink("scratch veth"))?;
        let index = |name: &'static str| {
            let a = a.clone();
            async move {
                let link = a.link().get().match_name(name.to_owned()).execute();
                let found: Vec<_> = link.try_collect().await.map_err(netlink("find veth"))?;
                Ok::<_, KernelError>(found.first().map_or(0, |l| l.header.index))
            }
        };
        let (a_dev, b_dev) = (index("flprobe0").await?, index("flprobe1").await?);
        // Moved, the peer keeps its index.
        a.link()
            .set(
                LinkUnspec::new_with_index(b_dev)
                    .setns_by_fd(b.as_raw_fd())
                    .build(),
            )
            .execute()
            .await
            .map_err(netlink("move veth"))?;
        for (nl, dev, addr) in [(a_nl, a_dev, A_ADDR), (b_nl, b_dev, B_ADDR)] {
            let handle = nl.handle();
            handle
                .address()
                .add(dev, addr.into(), 30)
                .execute()
                .await
                .map_err(netlink("scratch address"))?;
            handle
                .link()
                .set(LinkUnspec::new_with_index(dev).up().build())
                .execute()
                .await
                .map_err(netlink("scratch link up"))?;
        }
        Ok((a_dev, b_dev))
    }

    /// Installs one fault of each kind a capability needs, each matching one sending port of
    /// A, sends a datagram from each port and one from a port no fault matches, and judges
    /// what arrived.
    async fn probe(
        &self,
        faults: &mut Faults<'_>,
        found: &mut BTreeMap<Capability, Result<(), String>>,
    ) -> Result<(), KernelError> {
        let [a_attachment, b_attachment] = faults.lent.attachments;
        filter::add_clsact(&self.a_nl, self.a_dev).await?;
        let egress = faults.datapath.filter(Hook::Egress, a_attachment)?;
        filter::attach(&self.a_nl, self.a_dev, Hook::Egress, &egress).await?;
        filter::add_clsact(&self.b_nl, self.b_dev).await?;
        let ingress = faults.datapath.filter(Hook::Ingress, b_attachment)?;
        filter::attach(&self.b_nl, self.b_dev, Hook::Ingress, &ingress).await?;
        let senders = Senders::new()?;
        // Partitions, at A's egress and B's ingress.
        let port = |probe| senders.port(probe);
        faults.add(
            a_attachment,
            HOOK_EGRESS,
            port(Probe::EgressDrop),
            ACTION_PARTITION,
            0,
        )?;
        faults.add(
            b_attachment,
            HOOK_INGRESS,
            port(Probe::IngressDrop),
            ACTION_PARTITION,
            0,
        )?;
        // Delays: a netem class under an htb root on A's device, and on an ifb in B.
        let plain_delay = NetemWire {
            delay: Some(format!("{}ms", PROBE_DELAY.as_millis())),
            ..NetemWire::default()
        };
        let netem = netem_options(&netem_of(&plain_delay)?);
        let egress_delay = self.delay_class(&self.a_nl, self.a_dev, &netem).await;
        if let Ok(class) = egress_delay {
            faults.add(
                a_attachment,
                HOOK_EGRESS,
                port(Probe::EgressDelay),
                ACTION_DELAY,
                class,
            )?;
        }
        let ingress_delay = self.ingress_delay_class(faults.datapath, &netem).await;
        if let Ok(class) = ingress_delay {
            faults.add(
                b_attachment,
                HOOK_INGRESS,
                port(Probe::IngressDelay),
                ACTION_DELAY,
                class,
            )?;
        }

        let seen = senders.send_and_collect(&self.sink)?;
        found.insert(
            Capability::EbpfFaults,
            seen.dropped(Probe::EgressDrop, "egress")
                .and_then(|()| seen.dropped(Probe::IngressDrop, "ingress")),
        );
        found.insert(
            Capability::EgressDelay,
            egress_delay.and_then(|_| seen.delayed(Probe::EgressDelay)),
        );
        let have_netem = found[&Capability::EgressDelay].is_ok();
        found.insert(
            Capability::IngressDelay,
            ingress_delay.and_then(|_| seen.delayed(Probe::IngressDelay)),
        );
        let no_netem = || Err("no netem class could be made (see egress_delay)".to_owned());
        for group in NetemGroup::ALL {
            let result = match group {
                _ if !have_netem => no_netem(),
                // Beside netems of the other groups, which a duplicating one may not be.
                NetemGroup::Duplicate => netem_readback(&self.b_nl, self.b_dev, group).await,
                _ => netem_readback(&self.a_nl, self.a_dev, group).await,
            };
            found.insert(Capability::Netem(group), result);
        }
        let mixed = match &found[&Capability::Netem(NetemGroup::Duplicate)] {
            Ok(()) => qdisc::add_delay_class(&self.b_nl, self.b_dev, 1, netem.clone())
                .await
                .map_err(named("a netem beside a duplicating netem")),
            Err(_) => no_netem(),
        };
        found.insert(Capability::NetemDuplicateBesideOthers, mixed);
        Ok(())
    }

    /// A class with a netem leaf under a new htb root on `dev`; returns its handle.
    async fn delay_class(&self, nl: &Netlink, dev: u32, netem: &[u8]) -> Result<u32, String> {
        qdisc::install_root(nl, dev)
            .await
            .map_err(named("the htb qdisc (sch_htb)"))?;
        qdisc::add_delay_class(nl, dev, 1, netem.to_vec())
            .await
            .map_err(named("the netem qdisc (sch_netem)"))?;
        Ok(qdisc::class_handle(1))
    }

    /// The same on an ifb in B, fed by the steering filter on B's device.
    async fn ingress_delay_class(&self, datapath: &Datapath, netem: &[u8]) -> Result<u32, String> {
        let ifb = link::create_ifb(&self.b_nl, &link::ifb_name(self.b_dev))
            .await
            .map_err(named("ifb devices (ifb)"))?;
        let class = self.delay_class(&self.b_nl, ifb, netem).await?;
        let steer = datapath
            .steer_filter(ifb)
            .map_err(named("the steering program"))?;
        filter::attach(&self.b_nl, self.b_dev, Hook::Ingress, &steer)
            .await
            .map_err(named("the steering filter (cls_bpf with act_mirred)"))?;
        Ok(class)
    }
}

/// Sets up `group`'s sample as class fa17:(2 + group) on `dev`'s htb (made if missing) and
/// checks that the kernel reports back every option it was given.
async fn netem_readback(nl: &Netlink, dev: u32, group: NetemGroup) -> Result<(), String> {
    let minor = 2 + group as u16;
    let sent = netem_options(&netem_of(&group.sample()).map_err(|e| e.to_string())?);
    if !qdisc::root_is_ours(nl, dev)
        .await
        .map_err(|e| e.to_string())?
    {
        qdisc::install_root(nl, dev)
            .await
            .map_err(named("the htb qdisc (sch_htb)"))?;
    }
    qdisc::add_delay_class(nl, dev, minor, sent.clone())
        .await
        .map_err(|e| e.to_string())?;
    let reported = qdisc::leaf_options(nl, dev, qdisc::class_handle(minor))
        .await
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

/// The probe's faults in the agent's datapath, in the slots lent for them.
struct Faults<'d> {
    datapath: &'d mut Datapath,
    lent: Lent,
    used: usize,
    /// The slots listed under each attachment's trie entry.
    listed: BTreeMap<u32, Vec<u32>>,
}

impl Faults<'_> {
    /// A fault under `attachment` at `hooks` matching UDP from or to A's port `port`.
    fn add(
        &mut self,
        attachment: u32,
        hooks: u8,
        port: u16,
        kind: u32,
        class_id: u32,
    ) -> Result<(), KernelError> {
        let slot = self.lent.slots[self.used];
        self.used += 1;
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
        let listed = self.listed.entry(attachment).or_default();
        listed.push(slot);
        let mut candidates = FlCandidates {
            count: listed.len() as u32,
            slots: [0; MAX_CANDIDATES],
        };
        candidates.slots[..listed.len()].copy_from_slice(listed);
        self.datapath
            .set_prefix(&any_address(attachment), &candidates)
    }

    /// Gives the slots and trie entries back empty.
    fn clear(&mut self) {
        for &attachment in self.listed.keys() {
            if let Err(e) = self.datapath.delete_prefix(&any_address(attachment)) {
                tracing::warn!(error = %e, "the probe cannot remove its trie entry");
            }
        }
        for &slot in &self.lent.slots[..self.used] {
            if let Err(e) = self.datapath.write_fault(slot, &FlFault::default()) {
                tracing::warn!(error = %e, "the probe cannot clear its fault slot");
            }
        }
    }
}

/// Every remote address under `attachment`.
fn any_address(attachment: u32) -> PrefixKey {
    PrefixKey {
        attachment,
        addr: [0; 16],
        len: 0,
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
