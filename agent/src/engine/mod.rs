//! The one owner of active faults and of every kernel object faultd installs. It runs on its
//! own thread (it enters network namespaces, which is per thread) with a single-threaded
//! runtime: commands from connections, announcements from the kernel and fault deadlines are
//! handled one at a time, in order. The datapath is loaded once and shared by every
//! namespace; each namespace keeps its own netlink connections. Expiry, revoke, lease loss,
//! clear, loss and shutdown all go through `remove_fault` (faults.rs), the single inverse of
//! `apply`. Every change is journaled before it is answered, so a later faultd or the reaper
//! can take over (`adopt`).

mod adopt;
mod deadline;
mod delay;
mod dry_run;
mod error;
mod faults;
mod handle;
mod journal;
mod namespace;
mod view;
mod watch;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering as AtomicOrdering},
        Arc,
    },
    time::{Instant, SystemTime},
};

use tokio::sync::{broadcast, mpsc};

use self::{
    deadline::{unix_ms, Deadline, Deadlines},
    delay::DelaySpec,
    faults::{Installed, Slots, Unreachable},
    journal::Journal,
    namespace::Namespace,
    watch::{KernelEvent, PathWatch},
};
pub use self::{
    error::EngineError,
    handle::{spawn, Command, ConnectionId, EngineHandle, Reply},
    journal::JournalError,
};
use crate::{
    abi::DEFAULT_FAULT_SLOTS,
    fault::{
        plan::{self, PrefixIndex},
        spec::{Action, DurationLimits, FaultSpec, FaultWire},
        values::format_duration,
    },
    kernel::{
        self,
        bpf::{Datapath, Hook},
        netem_groups::NetemGroup,
        netns::{Netns, NetnsId},
        pins,
        probe::{self, Capabilities, Capability},
        KernelError,
    },
    policy::Policy,
    proto::{
        CapabilityReport, EngineStats, Event, FaultState, Features, Hello, Limits, MAX_LINE_BYTES,
        PROTOCOL_VERSION,
    },
};

/// Most faults one faultd may hold (`--max-faults`); the datapath's maps are sized for what
/// is asked, DEFAULT_MAX_FAULTS unless told otherwise.
pub const MAX_FAULTS_LIMIT: usize = 16_384;
pub const DEFAULT_MAX_FAULTS: usize = DEFAULT_FAULT_SLOTS as usize;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub state_dir: PathBuf,
    /// bpffs directory where the datapath's maps are pinned, with a marker directory for each
    /// namespace that has faults.
    pub pin_root: PathBuf,
    pub durations: DurationLimits,
    /// Faults active at once (`--max-faults`, or the policy's lower limit).
    pub max_faults: usize,
    /// The datapath's fault slots (`--max-faults`): the maps are sized for them at load.
    pub fault_slots: usize,
    /// What may be applied, beyond the limits above (which already include its own).
    pub policy: Arc<Policy>,
    /// The reaper's mode: take over, stop once the last fault is gone, apply nothing.
    pub exit_when_idle: bool,
}

struct ActiveFault {
    id: String,
    key: Option<String>,
    lease: Option<ConnectionId>,
    spec: FaultSpec,
    wire: FaultWire,
    netns: NetnsId,
    installed: Installed,
    hooks: Vec<Hook>,
    applied_at: SystemTime,
    deadline: Deadline,
}

pub struct Engine {
    config: EngineConfig,
    home: Netns,
    /// The programs and maps, loaded once; every namespace's filters run them.
    datapath: Datapath,
    slots: Slots,
    /// Which fault slots own which trie keys, for the whole datapath.
    index: PrefixIndex,
    /// Slots (and their trie changes) of removed faults no packet can reach any more, to clear
    /// once the answer is out.
    unreachable: Unreachable,
    /// The next attachment id (a device's filters' classid); never reused while faultd runs.
    next_attachment: u32,
    faults: BTreeMap<String, ActiveFault>,
    /// The faults' deadlines, earliest first.
    deadlines: Deadlines,
    keys: HashMap<String, String>,
    namespaces: HashMap<NetnsId, Namespace>,
    journal: Journal,
    /// The namespace records as last journaled.
    journaled: HashMap<NetnsId, journal::NamespaceHeader>,
    /// Fault entries not yet journaled.
    pending: Vec<journal::Entry>,
    /// What this kernel showed it can do, at start.
    capabilities: Capabilities,
    events: broadcast::Sender<Event>,
    /// What the kernel announces (`watch`), for the engine's loop.
    kernel_events: mpsc::UnboundedSender<KernelEvent>,
    kernel_inbox: mpsc::UnboundedReceiver<KernelEvent>,
    paths: PathWatch,
    repairs: u64,
    /// How many faults are active, for `EngineHandle::hello`.
    active: Arc<AtomicUsize>,
    next_id: u64,
    /// Differs between faultd runs, so a restarted faultd does not repeat an earlier's ids.
    id_seed: u64,
}

impl Engine {
    /// Loads the datapath (once for the agent), takes over what an earlier faultd left, and
    /// probes the kernel. Without eBPF faults faultd is useless, and does not start.
    async fn start(
        config: EngineConfig,
        events: broadcast::Sender<Event>,
        active: Arc<AtomicUsize>,
    ) -> Result<Engine, EngineError> {
        let home = Netns::current()?;
        let protected = plan::protected_list(config.policy.protected())?;
        let journal = Journal::open(&config.state_dir).map_err(|source| KernelError::Syscall {
            call: "create state dir",
            source,
        })?;
        if let Err(e) = pins::ensure_bpffs(&config.pin_root) {
            tracing::error!(error = %e, "cannot mount bpffs; restarts will not re-adopt faults");
        }
        // The start-up probe borrows a few slots, whatever faults an earlier faultd left.
        let slots = config.fault_slots.saturating_add(probe::PROBE_FAULTS);
        let slots = u32::try_from(slots).unwrap_or(u32::MAX);
        let mut datapath = Datapath::load(Some(&config.pin_root), slots)?;
        // The policy's pass-list, written before any fault can be, and again on adoption,
        // so a restart with a new policy protects what the new one names.
        datapath.set_protected(&protected)?;
        let (kernel_events, kernel_inbox) = mpsc::unbounded_channel();
        let slot_count = datapath.slots();
        let mut engine = Engine {
            home,
            datapath,
            slots: Slots::new(slot_count),
            index: PrefixIndex::default(),
            unreachable: Unreachable::default(),
            next_attachment: 1,
            faults: BTreeMap::new(),
            deadlines: Deadlines::default(),
            keys: HashMap::new(),
            namespaces: HashMap::new(),
            journal,
            journaled: HashMap::new(),
            pending: Vec::new(),
            capabilities: Capabilities::none("not probed yet"),
            events,
            paths: PathWatch::new(kernel_events.clone()),
            kernel_events,
            kernel_inbox,
            repairs: 0,
            active,
            next_id: 0,
            id_seed: mix64(
                kernel::monotonic_ns()
                    ^ (u64::from(std::process::id()) << 40)
                    ^ unix_ms(SystemTime::now()),
            ),
            config,
        };
        engine.adopt().await;
        // The reaper applies nothing, and so probes nothing.
        if engine.config.exit_when_idle {
            engine.capabilities = Capabilities::none("the reaper applies no faults");
        } else {
            engine.capabilities = engine.probe()?;
        }
        engine
            .active
            .store(engine.faults.len(), AtomicOrdering::Relaxed);
        Ok(engine)
    }

    /// Probes the kernel with the agent's datapath, under slots and attachments lent for it.
    fn probe(&mut self) -> Result<Capabilities, EngineError> {
        let mut slots = [0; probe::PROBE_FAULTS];
        for slot in &mut slots {
            *slot = self.slots.take()?;
        }
        let attachments = [self.new_attachment(), self.new_attachment()];
        let found = probe::probe(&mut self.datapath, probe::Lent { slots, attachments });
        for slot in slots {
            self.slots.put_back(slot);
        }
        found.check(Capability::EbpfFaults)?;
        Ok(found)
    }

    fn new_attachment(&mut self) -> u32 {
        let attachment = self.next_attachment;
        self.next_attachment = self.next_attachment.wrapping_add(1).max(1);
        attachment
    }

    async fn run(&mut self, mut inbox: mpsc::UnboundedReceiver<Command>) {
        loop {
            if self.config.exit_when_idle && self.faults.is_empty() {
                tracing::info!("no fault left to watch over");
                self.remove_pins_if_idle();
                return;
            }
            let next = self.deadlines.next();
            let mut look_at = BTreeSet::new();
            tokio::select! {
                command = inbox.recv() => match command {
                    Some(Command::Shutdown(reply)) => {
                        let removed = self.remove_all(FaultState::Revoked).await;
                        self.clear_datapath();
                        self.sync_journal();
                        self.remove_pins_if_idle();
                        let _ = reply.send(Ok(removed));
                        return;
                    }
                    Some(Command::HandOver(reply)) => {
                        tracing::info!("handing the faults over to a new faultd");
                        let _ = reply.send(Ok(()));
                        return;
                    }
                    Some(command) => self.handle(command).await,
                    None => break,
                },
                Some(event) = self.kernel_inbox.recv() => self.heard(event, &mut look_at).await,
                () = sleep_until(next) => {}
            }
            // Whatever else the kernel announced meanwhile, before looking.
            while let Ok(event) = self.kernel_inbox.try_recv() {
                self.heard(event, &mut look_at).await;
            }
            self.repair_looked_at(look_at).await;
            self.expire_due().await;
            self.sync_journal();
            self.clear_datapath();
            self.active
                .store(self.faults.len(), AtomicOrdering::Relaxed);
        }
        self.remove_all(FaultState::Revoked).await;
        self.clear_datapath();
        self.sync_journal();
        self.remove_pins_if_idle();
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Apply {
                fault,
                key,
                lease,
                reply,
            } => {
                let result = self.apply(&fault, key, lease).await;
                // Journaled before the answer: an acknowledged fault is one a successor knows.
                self.sync_journal();
                let _ = reply.send(result);
            }
            Command::Plan { fault, reply } => {
                let _ = reply.send(self.plan(&fault));
            }
            Command::Renew {
                fault_id,
                duration,
                reply,
            } => {
                let result = self.renew(&fault_id, &duration);
                self.sync_journal();
                let _ = reply.send(result);
            }
            Command::ConnectionClosed(connection) => {
                let leased: Vec<String> = self
                    .faults
                    .values()
                    .filter(|f| f.lease == Some(connection))
                    .map(|f| f.id.clone())
                    .collect();
                for id in leased {
                    tracing::info!(fault_id = %id, "its connection closed; revoking the leased fault");
                    self.remove_fault(&id, FaultState::Revoked, None).await;
                }
            }
            Command::List(reply) => {
                let _ = reply.send(Ok(self
                    .faults
                    .values()
                    .map(|f| self.view(f, FaultState::Active))
                    .collect()));
            }
            Command::Get { fault_id, reply } => {
                let view = self
                    .faults
                    .get(&fault_id)
                    .map(|f| self.view(f, FaultState::Active));
                let _ = reply.send(view.ok_or(EngineError::NotFound(fault_id)));
            }
            Command::Revoke { fault_id, reply } => {
                let result = if self.faults.contains_key(&fault_id) {
                    Ok(self
                        .remove_fault(&fault_id, FaultState::Revoked, None)
                        .await)
                } else {
                    Err(EngineError::NotFound(fault_id))
                };
                self.sync_journal();
                let _ = reply.send(result);
            }
            Command::Clear(reply) => {
                let removed = self.remove_all(FaultState::Revoked).await;
                self.sync_journal();
                let _ = reply.send(Ok(removed));
            }
            Command::Stats(reply) => {
                let (per_cpu, cpus) = self.datapath.per_cpu();
                let stats = self.datapath.memory().map(|memory| EngineStats {
                    datapath_memory_bytes: memory,
                    datapath_per_cpu_bytes: per_cpu,
                    possible_cpus: cpus,
                    repairs: self.repairs,
                });
                let _ = reply.send(stats.map_err(EngineError::from));
            }
            Command::Shutdown(_) | Command::HandOver(_) => unreachable!("handled by run"),
        }
    }

    fn hello(&self) -> Hello {
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        let capabilities = self
            .capabilities
            .iter()
            .map(|(capability, found)| {
                let report = CapabilityReport {
                    available: found.is_ok(),
                    missing: found.clone().err(),
                };
                (capability.name().to_owned(), report)
            })
            .collect();
        Hello {
            active_faults: self.faults.len(),
            agent: "faultd".to_owned(),
            capabilities,
            features: Features {
                ebpf_tc: self.capabilities.has(Capability::EbpfFaults),
                netem: self.capabilities.has(Capability::EgressDelay),
            },
            kernel: release,
            limits: Limits {
                default_duration: self.config.durations.default.map(format_duration),
                max_duration: format_duration(self.config.durations.max),
                max_faults: self.config.max_faults,
                max_line_bytes: MAX_LINE_BYTES,
            },
            policy: self.config.policy.summary(),
            protocol: PROTOCOL_VERSION,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    async fn expire_due(&mut self) {
        for id in self.deadlines.take_passed(Instant::now()) {
            if self.faults.contains_key(&id) {
                self.remove_fault(&id, FaultState::Expired, None).await;
            }
        }
    }

    fn new_fault_id(&mut self) -> String {
        loop {
            self.next_id += 1;
            // mix64 is a bijection: distinct counters give distinct ids before truncation.
            let id = format!(
                "f{:08x}",
                (mix64(self.id_seed.wrapping_add(self.next_id)) >> 32) as u32
            );
            if !self.faults.contains_key(&id) {
                return id;
            }
        }
    }

    /// What any apply must pass, a dry run's included: a valid spec the policy allows, on a
    /// kernel that can do it. Returns the spec and, for a delay fault, what its qdiscs need.
    fn admit(&self, wire: &FaultWire) -> Result<(FaultSpec, Option<DelaySpec>), EngineError> {
        let spec = FaultSpec::from_wire(wire, &self.config.durations)?;
        self.config
            .policy
            .check_fault(&spec, SystemTime::now())
            .map_err(EngineError::Forbidden)?;
        self.capabilities.check(Capability::EbpfFaults)?;
        let delay = match &spec.action {
            Action::Netem(netem) => {
                let direction = spec.target.direction;
                if direction.has_egress() {
                    self.capabilities.check(Capability::EgressDelay)?;
                }
                if direction.has_ingress() {
                    self.capabilities.check(Capability::IngressDelay)?;
                }
                for group in NetemGroup::used_by(netem) {
                    self.capabilities.check(Capability::Netem(group))?;
                }
                Some(DelaySpec {
                    options: kernel::netem::netem_options(netem),
                    duplicating: netem.duplicate.is_some(),
                    mix_allowed: self
                        .capabilities
                        .has(Capability::NetemDuplicateBesideOthers),
                })
            }
            _ => None,
        };
        Ok((spec, delay))
    }

    fn check_room(&self) -> Result<(), EngineError> {
        if self.faults.len() >= self.config.max_faults {
            return Err(EngineError::TooManyFaults {
                max: self.config.max_faults,
            });
        }
        Ok(())
    }

    /// Removes the pin root once nothing of ours is in it: the maps go with the programs.
    fn remove_pins_if_idle(&self) {
        if self.faults.is_empty() && self.namespaces.is_empty() {
            pins::remove_all(&self.config.pin_root);
        }
    }
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The namespace a fault targets, as a path to it.
fn netns_path(spec: &FaultSpec) -> PathBuf {
    match &spec.target.netns {
        Some(reference) => reference.path(),
        // Reopened by a later faultd, this path names that faultd's (the same) namespace.
        None => PathBuf::from("/proc/self/ns/net"),
    }
}

/// The tc hooks a fault acts at.
fn hooks_of(spec: &FaultSpec) -> Vec<Hook> {
    Hook::ALL
        .into_iter()
        .filter(|h| match h {
            Hook::Egress => spec.target.direction.has_egress(),
            Hook::Ingress => spec.target.direction.has_ingress(),
        })
        .collect()
}

/// splitmix64: spreads ids and flow seeds.
fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
