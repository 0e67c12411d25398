//! The one owner of active faults and of every kernel object faultd installs. It runs on its
//! own thread (it enters network namespaces, which is per thread); connections send it
//! `Command`s and get answers on oneshot channels. Expiry, revoke, lease loss, clear and
//! shutdown all go through `remove_fault`, the single inverse of `apply`. Every change is
//! journaled before it is answered, so a later faultd or the reaper can take over (`adopt`).

mod adopt;
mod delay;
mod dry_run;
mod error;
mod journal;
mod namespace;
mod view;

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering as AtomicOrdering},
        mpsc, Arc,
    },
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::{json, Value};
use tokio::sync::{broadcast, oneshot};

use self::{
    delay::DelaySpec,
    journal::Journal,
    namespace::{Installed, Namespace},
};
pub use self::{error::EngineError, journal::JournalError};
use crate::{
    abi::{FlCounters, FlProtectedList, MAX_FAULTS},
    fault::{
        plan,
        spec::{Action, DurationLimits, FaultSpec, FaultWire, SpecError},
        values::{format_duration, parse_duration},
    },
    kernel::{
        self,
        bpf::Hook,
        netem_groups::NetemGroup,
        netns::{Netns, NetnsId},
        pins,
        probe::{self, Capabilities, Capability},
        KernelError,
    },
    policy::Policy,
    proto::{Event, EventKind, FaultState, FaultView, Plan, MAX_LINE_BYTES, PROTOCOL_VERSION},
};

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub state_dir: PathBuf,
    /// bpffs directory under which each namespace's maps are pinned.
    pub pin_root: PathBuf,
    pub durations: DurationLimits,
    pub max_faults: usize,
    /// What may be applied, beyond the limits above (which already include its own).
    pub policy: Arc<Policy>,
    /// The reaper's mode: take over, stop once the last fault is gone, apply nothing.
    pub exit_when_idle: bool,
}

/// Identifies one client connection, for connection leases.
pub type ConnectionId = u64;

type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

pub enum Command {
    Apply {
        fault: Box<FaultWire>,
        key: Option<String>,
        /// The connection holding the fault, for `"lease": "connection"`.
        lease: Option<ConnectionId>,
        reply: Reply<FaultView>,
    },
    Renew {
        fault_id: String,
        duration: String,
        reply: Reply<FaultView>,
    },
    /// A connection closed: its leased faults go.
    ConnectionClosed(ConnectionId),
    List(Reply<Vec<FaultView>>),
    Get {
        fault_id: String,
        reply: Reply<FaultView>,
    },
    Revoke {
        fault_id: String,
        reply: Reply<FaultView>,
    },
    /// An apply's checks and plan, changing nothing.
    Plan {
        fault: Box<FaultWire>,
        reply: Reply<Plan>,
    },
    Clear(Reply<Vec<FaultView>>),
    /// Revert everything and stop the engine thread.
    Shutdown(Reply<Vec<FaultView>>),
    /// Stop without touching anything: the reaper hands over to a new faultd, which adopts
    /// what the journal lists.
    HandOver(Reply<()>),
}

/// A cloneable way to talk to the engine.
#[derive(Clone, Debug)]
pub struct EngineHandle {
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<Event>,
    /// `hello`'s answer but for the active count: fixed once the engine has started.
    hello: Arc<Value>,
    active: Arc<AtomicUsize>,
}

impl EngineHandle {
    /// The answer to `hello`, without waiting for the engine: however busy it is, a client
    /// can always learn that faultd is up, and what it can do.
    pub fn hello(&self) -> Value {
        let mut hello = (*self.hello).clone();
        hello["active_faults"] = self.active.load(AtomicOrdering::Relaxed).into();
        hello
    }

    pub async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .map_err(|_| EngineError::Stopped)?;
        answer.await.map_err(|_| EngineError::Stopped)?
    }

    /// Sends a command that needs no answer.
    pub fn send(&self, command: Command) {
        // A stopped engine has nothing left to act on.
        let _ = self.commands.send(command);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
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
    expires_at: SystemTime,
    deadline: Instant,
    deadline_ns: u64,
}

pub struct Engine {
    config: EngineConfig,
    home: Netns,
    faults: BTreeMap<String, ActiveFault>,
    keys: HashMap<String, String>,
    namespaces: HashMap<NetnsId, Namespace>,
    journal: Journal,
    /// The policy's protected targets as the datapath's pass-list.
    protected: FlProtectedList,
    /// The namespace records as last journaled.
    journaled: HashMap<NetnsId, journal::NamespaceHeader>,
    /// Fault entries not yet journaled.
    pending: Vec<journal::Entry>,
    /// What this kernel showed it can do, at start.
    capabilities: Capabilities,
    events: broadcast::Sender<Event>,
    /// How many faults are active, for `EngineHandle::hello`.
    active: Arc<AtomicUsize>,
    next_id: u64,
    /// Differs between faultd runs, so a restarted faultd does not repeat an earlier's ids.
    id_seed: u64,
}

/// Starts the engine thread.
pub fn spawn(
    config: EngineConfig,
) -> Result<(EngineHandle, std::thread::JoinHandle<()>), EngineError> {
    let (commands, inbox) = mpsc::channel();
    let (events, _) = broadcast::channel(1024);
    let protected = plan::protected_list(config.policy.protected())?;
    let journal = Journal::open(&config.state_dir).map_err(|source| KernelError::Syscall {
        call: "create state dir",
        source,
    })?;
    let active = Arc::new(AtomicUsize::new(0));
    let engine_active = active.clone();
    let engine_events = events.clone();
    let (ready_tx, ready_rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("faultline-engine".into())
        .spawn(move || {
            let home = match Netns::current() {
                Ok(home) => home,
                Err(e) => {
                    let _ = ready_tx.send(Err(EngineError::Kernel(e)));
                    return;
                }
            };
            // The probes tell `hello` (and every apply) what this kernel can do. The reaper
            // applies nothing, and so probes nothing. Without eBPF faults faultd is useless.
            let capabilities = if config.exit_when_idle {
                Capabilities::none("the reaper applies no faults")
            } else {
                let found = probe::probe();
                if let Err(e) = found.check(Capability::EbpfFaults) {
                    let _ = ready_tx.send(Err(EngineError::Kernel(e)));
                    return;
                }
                found
            };
            let mut engine = Engine {
                config,
                home,
                faults: BTreeMap::new(),
                keys: HashMap::new(),
                namespaces: HashMap::new(),
                journal,
                journaled: HashMap::new(),
                pending: Vec::new(),
                protected,
                capabilities,
                events: engine_events,
                active: engine_active,
                next_id: 0,
                id_seed: mix64(
                    kernel::monotonic_ns()
                        ^ (u64::from(std::process::id()) << 40)
                        ^ unix_ms(SystemTime::now()),
                ),
            };
            engine.adopt();
            engine
                .active
                .store(engine.faults.len(), AtomicOrdering::Relaxed);
            let _ = ready_tx.send(Ok(engine.hello()));
            engine.run(inbox);
        })
        .map_err(|source| KernelError::Syscall {
            call: "spawn engine thread",
            source,
        })?;
    let hello = ready_rx.recv().map_err(|_| EngineError::Stopped)??;
    let handle = EngineHandle {
        commands,
        events,
        hello: Arc::new(hello),
        active,
    };
    Ok((handle, thread))
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Engine {
    fn run(&mut self, inbox: mpsc::Receiver<Command>) {
        loop {
            if self.config.exit_when_idle && self.faults.is_empty() {
                tracing::info!("no fault left to watch over");
                pins::remove_root_if_empty(&self.config.pin_root);
                return;
            }
            let next = self.next_wakeup();
            let command = match next {
                Some(at) => {
                    match inbox.recv_timeout(at.saturating_duration_since(Instant::now())) {
                        Ok(command) => Some(command),
                        Err(mpsc::RecvTimeoutError::Timeout) => None,
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match inbox.recv() {
                    Ok(command) => Some(command),
                    Err(_) => break,
                },
            };
            self.expire_due();
            match command {
                Some(Command::Shutdown(reply)) => {
                    let removed = self.remove_all(FaultState::Revoked);
                    self.sync_journal();
                    pins::remove_root_if_empty(&self.config.pin_root);
                    let _ = reply.send(Ok(removed));
                    return;
                }
                Some(Command::HandOver(reply)) => {
                    tracing::info!("handing the faults over to a new faultd");
                    let _ = reply.send(Ok(()));
                    return;
                }
                Some(command) => self.handle(command),
                None => {}
            }
            self.sync_journal();
            self.active
                .store(self.faults.len(), AtomicOrdering::Relaxed);
        }
        self.remove_all(FaultState::Revoked);
        self.sync_journal();
        pins::remove_root_if_empty(&self.config.pin_root);
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Apply {
                fault,
                key,
                lease,
                reply,
            } => {
                let result = self.apply(&fault, key, lease);
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
                    self.remove_fault(&id, FaultState::Revoked);
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
                    Ok(self.remove_fault(&fault_id, FaultState::Revoked))
                } else {
                    Err(EngineError::NotFound(fault_id))
                };
                self.sync_journal();
                let _ = reply.send(result);
            }
            Command::Clear(reply) => {
                let removed = self.remove_all(FaultState::Revoked);
                self.sync_journal();
                let _ = reply.send(Ok(removed));
            }
            Command::Shutdown(_) | Command::HandOver(_) => unreachable!("handled by run"),
        }
    }

    fn hello(&self) -> Value {
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        json!({
            "protocol": PROTOCOL_VERSION,
            "agent": "faultd",
            "version": env!("CARGO_PKG_VERSION"),
            "kernel": release,
            // Kept from before `capabilities`: eBPF faults, and delay faults on sent packets.
            "features": {
                "ebpf_tc": self.capabilities.has(Capability::EbpfFaults),
                "netem": self.capabilities.has(Capability::EgressDelay),
            },
            "capabilities": self
                .capabilities
                .iter()
                .map(|(capability, found)| {
                    let entry = match found {
                        Ok(()) => json!({"available": true}),
                        Err(missing) => json!({"available": false, "missing": missing}),
                    };
                    (capability.name().to_owned(), entry)
                })
                .collect::<serde_json::Map<String, Value>>(),
            "limits": {
                "max_duration": format_duration(self.config.durations.max),
                "default_duration": self.config.durations.default.map(format_duration),
                "max_faults": self.config.max_faults,
                "max_line_bytes": MAX_LINE_BYTES,
            },
            "active_faults": self.faults.len(),
            "policy": self.config.policy.summary(),
        })
    }

    fn next_wakeup(&self) -> Option<Instant> {
        self.faults.values().map(|f| f.deadline).min()
    }

    fn expire_due(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .faults
            .values()
            .filter(|f| f.deadline <= now)
            .map(|f| f.id.clone())
            .collect();
        for id in due {
            self.remove_fault(&id, FaultState::Expired);
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

    fn apply(
        &mut self,
        wire: &FaultWire,
        key: Option<String>,
        lease: Option<ConnectionId>,
    ) -> Result<FaultView, EngineError> {
        let (spec, delay) = self.admit(wire)?;
        let normalized = spec.to_wire();
        if let Some(existing) = key
            .as_ref()
            .and_then(|k| self.keys.get(k))
            .and_then(|id| self.faults.get(id))
        {
            if existing.wire == normalized {
                return Ok(self.view(existing, FaultState::Active));
            }
            return Err(EngineError::Conflict {
                key: key.unwrap_or_default(),
                fault_id: existing.id.clone(),
            });
        }
        self.check_room()?;
        let netns_path = netns_path(&spec);
        // An open namespace is found by identity, without opening the path again.
        let mut netns_id = Netns::identify(&netns_path)?;
        let id = self.new_fault_id();
        let applied_at = SystemTime::now();
        let deadline = Instant::now() + spec.duration;
        let deadline_ns = kernel::monotonic_ns() + spec.duration.as_nanos() as u64;
        let flow_seed = (mix64(self.next_id ^ deadline_ns) >> 32) as u32;
        let mut value = plan::fault_value(&spec, flow_seed);
        value.deadline_ns = deadline_ns;
        let hooks = hooks_of(&spec);

        let home = &self.home;
        let fresh = !self.namespaces.contains_key(&netns_id);
        if fresh {
            let netns = Netns::open(&netns_path)?;
            // The path may have been bound to another namespace since it was looked at.
            netns_id = netns.id();
            let pin_dir = pins::namespace_dir(&self.config.pin_root, netns_id);
            let inside = netns.enter(home)?;
            let namespace = Namespace::new(netns, pin_dir, &self.protected);
            drop(inside);
            self.namespaces.insert(netns_id, namespace?);
        }
        let Some(namespace) = self.namespaces.get_mut(&netns_id) else {
            unreachable!("inserted above");
        };
        let dev = spec.target.dev.as_str().to_owned();
        let installed = namespace.install(home, &dev, &hooks, value, delay.as_ref(), |ifindex| {
            plan::prefix_keys(&spec, ifindex)
        });
        let installed = match installed {
            Ok(done) => done,
            Err(e) => {
                if fresh {
                    self.drop_namespace_if_idle(netns_id);
                }
                return Err(e);
            }
        };

        let fault = ActiveFault {
            id: id.clone(),
            key: key.clone(),
            lease,
            wire: normalized,
            netns: netns_id,
            installed,
            hooks,
            applied_at,
            expires_at: applied_at + spec.duration,
            spec,
            deadline,
            deadline_ns,
        };
        tracing::info!(fault_id = %id, dev = %dev, netns = %netns_path.display(), duration = %format_duration(fault.spec.duration), "fault applied");
        let view = self.view(&fault, FaultState::Active);
        if let Some(key) = key {
            self.keys.insert(key, id.clone());
        }
        self.pending
            .push(journal::Entry::Fault(Box::new(adopt::fault_record(&fault))));
        self.faults.insert(id, fault);
        self.emit(EventKind::Applied, view.clone(), None);
        Ok(view)
    }

    /// Gives a fault `duration` from now (within the agent's maximum), in the datapath and here.
    fn renew(&mut self, id: &str, duration: &str) -> Result<FaultView, EngineError> {
        let invalid = |message: String| {
            EngineError::Spec(SpecError {
                field: "duration".into(),
                message,
            })
        };
        let duration = parse_duration(duration).map_err(|e| invalid(e.0))?;
        if duration.is_zero() {
            return Err(invalid(
                "must be longer than zero; revoke ends a fault now".into(),
            ));
        }
        self.config
            .policy
            .check_duration(duration)
            .map_err(EngineError::Forbidden)?;
        if duration > self.config.durations.max {
            return Err(invalid(format!(
                "longer than the agent's maximum, {}",
                format_duration(self.config.durations.max)
            )));
        }
        let fault = self
            .faults
            .get(id)
            .ok_or_else(|| EngineError::NotFound(id.to_owned()))?;
        let deadline_ns = kernel::monotonic_ns() + duration.as_nanos() as u64;
        let slot = fault.installed.slot;
        let netns = fault.netns;
        if let Some(namespace) = self.namespaces.get_mut(&netns) {
            namespace.set_deadline(slot, deadline_ns)?;
        }
        let Some(fault) = self.faults.get_mut(id) else {
            unreachable!("looked up above");
        };
        fault.deadline = Instant::now() + duration;
        fault.deadline_ns = deadline_ns;
        fault.expires_at = SystemTime::now() + duration;
        tracing::info!(fault_id = %id, duration = %format_duration(duration), "fault renewed");
        let Some(fault) = self.faults.get(id) else {
            unreachable!("looked up above");
        };
        let view = self.view(fault, FaultState::Active);
        self.pending
            .push(journal::Entry::Fault(Box::new(adopt::fault_record(fault))));
        self.emit(EventKind::Renewed, view.clone(), None);
        Ok(view)
    }

    /// Removes one fault's kernel state; errors are logged and reported as an `error` event,
    /// and the fault leaves the table regardless (there is nothing left to retry against).
    fn remove_fault(&mut self, id: &str, state: FaultState) -> FaultView {
        let Some(fault) = self.faults.remove(id) else {
            unreachable!("callers check the id");
        };
        let (counters, errors) = match self.namespaces.get_mut(&fault.netns) {
            Some(namespace) => {
                let (read, errors) =
                    namespace.uninstall(&self.home, &fault.installed, &fault.hooks);
                (read, errors.iter().map(ToString::to_string).collect())
            }
            None => (None, Vec::new()),
        };
        self.drop_namespace_if_idle(fault.netns);
        self.forget(fault, state, counters, &errors)
    }

    /// The bookkeeping after a fault's kernel state is gone: key, journal, view and events.
    fn forget(
        &mut self,
        fault: ActiveFault,
        state: FaultState,
        counters: Option<FlCounters>,
        errors: &[String],
    ) -> FaultView {
        let id = fault.id.as_str();
        if let Some(key) = &fault.key {
            self.keys.remove(key);
        }
        self.pending
            .push(journal::Entry::FaultGone { id: id.to_owned() });
        let mut view = self.view_with(&fault, state, counters.unwrap_or_default());
        view.remaining_ms = 0;
        let message = (!errors.is_empty()).then(|| errors.join("; "));
        match &message {
            Some(m) => tracing::error!(fault_id = %id, error = %m, "fault removed with errors"),
            None => tracing::info!(fault_id = %id, state = ?state, "fault removed"),
        }
        let kind = match state {
            FaultState::Expired => EventKind::Expired,
            _ => EventKind::Revoked,
        };
        self.emit(kind, view.clone(), None);
        if let Some(m) = message {
            self.emit(EventKind::Error, view.clone(), Some(m));
        }
        view
    }

    /// Removes every fault, the kill switch's way: per namespace, the traffic is released
    /// first (filters detached, qdiscs restored) in one pass, and the maps go with the pins,
    /// instead of undoing each fault's map entries one by one.
    fn remove_all(&mut self, state: FaultState) -> Vec<FaultView> {
        let mut views = Vec::new();
        let netns_ids: Vec<NetnsId> = self.namespaces.keys().copied().collect();
        for netns in netns_ids {
            let ids: Vec<String> = self
                .faults
                .values()
                .filter(|f| f.netns == netns)
                .map(|f| f.id.clone())
                .collect();
            let slots: Vec<u32> = ids
                .iter()
                .filter_map(|id| self.faults.get(id))
                .map(|f| f.installed.slot)
                .collect();
            let Some(namespace) = self.namespaces.get_mut(&netns) else {
                continue;
            };
            let (counters, errors) = match namespace.run(&self.home, |ns| ns.teardown(&slots)) {
                Ok((counters, errors)) => {
                    (counters, errors.iter().map(ToString::to_string).collect())
                }
                Err(e) => (BTreeMap::new(), vec![e.to_string()]),
            };
            self.drop_namespace_if_idle(netns);
            for id in ids {
                if let Some(fault) = self.faults.remove(&id) {
                    let read = counters.get(&fault.installed.slot).copied();
                    views.push(self.forget(fault, state, read, &errors));
                }
            }
        }
        // Faults of no known namespace cannot be: removed one by one all the same.
        let rest: Vec<String> = self.faults.keys().cloned().collect();
        views.extend(rest.iter().map(|id| self.remove_fault(id, state)));
        views
    }

    /// A namespace without faults keeps nothing of ours, pins included.
    fn drop_namespace_if_idle(&mut self, netns: NetnsId) {
        if self.namespaces.get(&netns).is_some_and(Namespace::is_idle) {
            if let Some(namespace) = self.namespaces.remove(&netns) {
                namespace.remove_pins();
            }
        }
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

// MAX_FAULTS bounds the slots of one namespace; the agent-wide cap is configurable below it.
pub const DEFAULT_MAX_FAULTS: usize = MAX_FAULTS as usize;
