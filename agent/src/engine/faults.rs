//! Applying and removing faults: `apply` puts a fault's kernel state in place, all of it or
//! none; `remove_fault` is its single inverse, whatever ends the fault (expiry, revoke, lease,
//! loss); `remove_all` and `remove_namespace` do the same for many at once, releasing the
//! traffic first.

use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, SystemTime},
};

use super::{
    adopt::fault_record,
    deadline::Deadline,
    delay::{DelayClass, DelaySpec},
    hooks_of, journal, mix64,
    namespace::{DeviceKey, Namespace},
    netns_path, ActiveFault, ConnectionId, Engine, EngineError,
};
use crate::{
    abi::{FlFault, PrefixKey},
    fault::{
        error::SpecError,
        plan::{self, TrieChanges},
        spec::FaultWire,
        values::{format_duration, parse_duration},
    },
    kernel::{
        bpf::{Hook, SlotCounters},
        netns::{Netns, NetnsId},
        pins, KernelError,
    },
    proto::{EventKind, FaultState, FaultView},
};

/// The datapath's fault slots: taken by faults (and lent to the start-up probe), given back.
#[derive(Debug)]
pub struct Slots {
    free: Vec<u32>,
    next: u32,
    count: u32,
}

impl Slots {
    pub fn new(count: u32) -> Slots {
        Slots {
            free: Vec::new(),
            next: 0,
            count,
        }
    }

    pub fn take(&mut self) -> Result<u32, EngineError> {
        if let Some(slot) = self.free.pop() {
            return Ok(slot);
        }
        if self.next >= self.count {
            return Err(EngineError::TooManyFaults {
                max: self.count as usize,
            });
        }
        self.next += 1;
        Ok(self.next - 1)
    }

    pub fn put_back(&mut self, slot: u32) {
        self.free.push(slot);
    }

    /// Exactly `used` taken, as after an adoption.
    pub fn set_used(&mut self, used: &std::collections::BTreeSet<u32>) {
        self.next = used.last().map_or(0, |last| last + 1);
        self.free = (0..self.next).filter(|s| !used.contains(s)).collect();
    }
}

/// What `install` put in place for one fault; `uninstall` takes it back.
#[derive(Debug)]
/// What `remove_namespace` released but left in the datapath, to clear once the answer is out.
#[derive(Default)]
pub(super) struct Unreachable {
    slots: Vec<u32>,
    keys: Vec<PrefixKey>,
}

pub struct Installed {
    pub device: DeviceKey,
    pub slot: u32,
    pub prefixes: Vec<PrefixKey>,
    pub delay: Option<DelayClass>,
    /// Whether the device counts this fault (clsact and filters acquired).
    pub acquired: bool,
    /// Whether its packets may have entered `fl_conns` (`plan::tracks_connections`).
    pub tracks_connections: bool,
    /// Whether its action counts in `fl_action_counters` (`plan::counts_actions`).
    pub counts_actions: bool,
}

impl Engine {
    pub(super) async fn apply(
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
        let netns = self.open_namespace(&netns_path(&spec))?;
        let id = self.new_fault_id();
        let applied_at = SystemTime::now();
        let deadline = Deadline::after(spec.duration);
        let flow_seed = (mix64(self.next_id ^ deadline.kernel_ns) >> 32) as u32;
        let mut value = plan::fault_value(&spec, flow_seed);
        value.deadline_ns = deadline.kernel_ns;
        let hooks = hooks_of(&spec);
        let dev = spec.target.dev.as_str().to_owned();
        let installed = self
            .install(netns, &dev, &hooks, value, delay.as_ref(), |attachment| {
                plan::prefix_keys(&spec, attachment)
            })
            .await;
        let installed = match installed {
            Ok(done) => done,
            Err(e) => {
                self.drop_namespace_if_idle(netns);
                return Err(e);
            }
        };
        let fault = ActiveFault {
            id: id.clone(),
            key: key.clone(),
            lease,
            wire: normalized,
            netns,
            installed,
            hooks,
            applied_at,
            spec,
            deadline,
        };
        tracing::info!(fault_id = %id, dev = %dev, duration = %format_duration(fault.spec.duration), "fault applied");
        let view = self.view(&fault, FaultState::Active);
        if let Some(key) = key {
            self.keys.insert(key, id.clone());
        }
        self.pending
            .push(journal::Entry::Fault(Box::new(fault_record(&fault))));
        self.deadlines.insert(fault.deadline.at, &id);
        self.faults.insert(id, fault);
        self.emit(EventKind::Applied, &view, None);
        Ok(view)
    }

    /// The namespace at `path`, connected to if it is not yet (the one `setns` of its life).
    pub(super) fn open_namespace(
        &mut self,
        path: &std::path::Path,
    ) -> Result<NetnsId, EngineError> {
        // An open namespace is found by identity, without opening the path again.
        let id = Netns::identify(path)?;
        if self.namespaces.contains_key(&id) {
            return Ok(id);
        }
        let netns = Netns::open(path)?;
        // The path may have been bound to another namespace since it was looked at.
        let id = netns.id();
        if self.namespaces.contains_key(&id) {
            return Ok(id);
        }
        let namespace = Namespace::open(netns, &self.home, self.kernel_events.clone())?;
        pins::add_marker(&self.config.pin_root, id)?;
        self.paths.watch(path);
        self.namespaces.insert(id, namespace);
        Ok(id)
    }

    /// Installs one fault on `dev` of namespace `netns`: all of it, or (on error) none of it.
    /// The device's filters and qdiscs first, then the fault's slot, then the trie entries
    /// that make the slot visible to packets.
    async fn install(
        &mut self,
        netns: NetnsId,
        dev: &str,
        hooks: &[Hook],
        mut value: FlFault,
        delay: Option<&DelaySpec>,
        prefixes_for: impl FnOnce(u32) -> Vec<PrefixKey>,
    ) -> Result<Installed, EngineError> {
        let Some(namespace) = self.namespaces.get_mut(&netns) else {
            unreachable!("opened before");
        };
        let device = DeviceKey {
            name: dev.to_owned(),
            ifindex: namespace.ifindex(dev)?,
        };
        if let Some(spec) = delay {
            namespace.check_delay_mix(&device, hooks, spec)?;
        }
        let slot = self.slots.take()?;
        let tracked = namespace.track(&device, self.next_attachment).await;
        let mut installed = Installed {
            device,
            slot,
            prefixes: Vec::new(),
            delay: None,
            acquired: false,
            tracks_connections: plan::tracks_connections(&value),
            counts_actions: plan::counts_actions(&value),
        };
        let result = match tracked {
            Ok(new) => {
                if new {
                    self.new_attachment();
                    // Journaled before the kernel changes: a successor must know whose clsact
                    // it finds, should this faultd die in the middle.
                    self.sync_journal();
                }
                self.install_kernel(netns, &mut installed, hooks, &mut value, delay)
                    .await
            }
            Err(e) => Err(e.into()),
        };
        let result = match result {
            Ok(attachment) => {
                installed.prefixes = prefixes_for(attachment);
                match self.index.insert(slot, &installed.prefixes) {
                    Ok(changes) => self.write_fault(&installed, &value, &changes),
                    Err(e) => {
                        installed.prefixes.clear();
                        Err(e.into())
                    }
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            let (_, errors) = self.uninstall(netns, &installed, hooks).await;
            for undo_error in errors {
                tracing::error!(error = %undo_error, "rolling back a failed apply");
            }
            return Err(e);
        }
        Ok(installed)
    }

    /// The device's filters and a delay fault's qdiscs (whose class the fault names); returns
    /// the device's attachment.
    async fn install_kernel(
        &mut self,
        netns: NetnsId,
        installed: &mut Installed,
        hooks: &[Hook],
        value: &mut FlFault,
        delay: Option<&DelaySpec>,
    ) -> Result<u32, EngineError> {
        let Some(namespace) = self.namespaces.get_mut(&netns) else {
            unreachable!("opened before");
        };
        let attachment = namespace
            .acquire(
                &self.datapath,
                &installed.device,
                hooks,
                &mut installed.acquired,
            )
            .await?;
        if let Some(spec) = delay {
            let class = namespace
                .add_delay(&self.datapath, &installed.device, hooks, spec)
                .await?;
            value.action.class_id = crate::kernel::qdisc::class_handle(class.minor);
            installed.delay = Some(class);
        }
        Ok(attachment)
    }

    /// The slot, then the trie entries that make it visible.
    fn write_fault(
        &mut self,
        installed: &Installed,
        value: &FlFault,
        changes: &TrieChanges,
    ) -> Result<(), EngineError> {
        self.datapath.reset_counters(installed.slot)?;
        self.datapath.write_fault(installed.slot, value)?;
        if let Some(e) = self.write_trie(changes).into_iter().next() {
            return Err(e.into());
        }
        Ok(())
    }

    fn write_trie(&mut self, changes: &TrieChanges) -> Vec<KernelError> {
        let mut errors = Vec::new();
        for (key, value) in &changes.set {
            errors.extend(self.datapath.set_prefix(key, value).err());
        }
        for key in &changes.delete {
            errors.extend(self.datapath.delete_prefix(key).err());
        }
        errors
    }

    /// Takes a fault's kernel state back (or what a failed install got done): trie entries,
    /// slot, delay class, the device's hold. Returns its final counters and every error met.
    async fn uninstall(
        &mut self,
        netns: NetnsId,
        installed: &Installed,
        hooks: &[Hook],
    ) -> (Option<SlotCounters>, Vec<KernelError>) {
        let changes = self.index.remove(installed.slot, &installed.prefixes);
        let mut errors = self.write_trie(&changes);
        let counters = self
            .datapath
            .read_counters(installed.slot, installed.counts_actions)
            .map_err(|e| errors.push(e))
            .ok();
        errors.extend(
            self.datapath
                .write_fault(installed.slot, &FlFault::default())
                .err(),
        );
        // After the slot is cleared, so no packet can track a connection under it again.
        if installed.tracks_connections {
            errors.extend(
                self.datapath
                    .forget_connections(&BTreeSet::from([installed.slot]))
                    .err(),
            );
        }
        self.slots.put_back(installed.slot);
        if let Some(namespace) = self.namespaces.get_mut(&netns) {
            if let Some(class) = &installed.delay {
                errors.extend(namespace.remove_delay(&installed.device, class).await);
            }
            if installed.acquired {
                errors.extend(namespace.release(&installed.device, hooks).await);
            }
            // A device tracked for an apply that failed before it counted.
            errors.extend(namespace.release_idle().await);
        }
        (counters, errors)
    }

    /// Gives a fault `duration` from now (within the agent's maximum), in the datapath and here.
    pub(super) fn renew(&mut self, id: &str, duration: &str) -> Result<FaultView, EngineError> {
        let invalid = |message: String| EngineError::Spec(SpecError::new("duration", message));
        let duration = parse_duration(duration).map_err(|e| invalid(e.0))?;
        if duration.is_zero() {
            return Err(invalid(
                "must be longer than zero; revoke ends a fault now".into(),
            ));
        }
        self.check_duration(duration, "duration")?;
        let fault = self
            .faults
            .get(id)
            .ok_or_else(|| EngineError::NotFound(id.to_owned()))?;
        let deadline = Deadline::after(duration);
        let slot = fault.installed.slot;
        let mut value = self.datapath.read_fault(slot)?;
        value.deadline_ns = deadline.kernel_ns;
        self.datapath.write_fault(slot, &value)?;
        let Some(fault) = self.faults.get_mut(id) else {
            unreachable!("looked up above");
        };
        self.deadlines.remove(fault.deadline.at, id);
        self.deadlines.insert(deadline.at, id);
        fault.deadline = deadline;
        tracing::info!(fault_id = %id, duration = %format_duration(duration), "fault renewed");
        let Some(fault) = self.faults.get(id) else {
            unreachable!("looked up above");
        };
        let view = self.view(fault, FaultState::Active);
        self.pending
            .push(journal::Entry::Fault(Box::new(fault_record(fault))));
        self.emit(EventKind::Renewed, &view, None);
        Ok(view)
    }

    /// The agent's and the policy's maxima for a fault's duration, in one place and order for
    /// apply and renew: over the agent's is an invalid value, over the policy's (lower) one is
    /// forbidden.
    pub(super) fn check_duration(
        &self,
        duration: Duration,
        field: &str,
    ) -> Result<(), EngineError> {
        if duration > self.config.durations.max {
            return Err(EngineError::Spec(SpecError::new(
                field,
                format!(
                    "{} exceeds the maximum of {}",
                    format_duration(duration),
                    format_duration(self.config.durations.max)
                ),
            )));
        }
        self.config
            .policy
            .check_duration(duration)
            .map_err(EngineError::Forbidden)
    }

    /// Removes one fault's kernel state; errors are logged and reported as an `error` event,
    /// and the fault leaves the table regardless (there is nothing left to retry against).
    /// `reason` says why, for a fault `lost`.
    pub(super) async fn remove_fault(
        &mut self,
        id: &str,
        state: FaultState,
        reason: Option<&str>,
    ) -> FaultView {
        let Some(fault) = self.faults.remove(id) else {
            unreachable!("callers check the id");
        };
        let (counters, errors) = self
            .uninstall(fault.netns, &fault.installed, &fault.hooks)
            .await;
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        log_removal(std::slice::from_ref(&fault.id), state, &errors);
        self.drop_namespace_if_idle(fault.netns);
        self.forget(fault, state, counters, &errors, reason)
    }

    /// The bookkeeping after a fault's kernel state is gone: key, journal, view and events.
    fn forget(
        &mut self,
        fault: ActiveFault,
        state: FaultState,
        counters: Option<SlotCounters>,
        errors: &[String],
        reason: Option<&str>,
    ) -> FaultView {
        let id = fault.id.as_str();
        self.deadlines.remove(fault.deadline.at, id);
        if let Some(key) = &fault.key {
            self.keys.remove(key);
        }
        self.pending
            .push(journal::Entry::FaultGone { id: id.to_owned() });
        let mut view = self.view_with(&fault, state, counters.unwrap_or_default());
        view.remaining_ms = 0;
        let message = (!errors.is_empty()).then(|| errors.join("; "));
        tracing::debug!(fault_id = %id, state = ?state, "fault removed");
        let kind = match state {
            FaultState::Expired => EventKind::Expired,
            FaultState::Lost => EventKind::Lost,
            FaultState::Active | FaultState::Revoked => EventKind::Revoked,
        };
        self.emit(kind, &view, reason.map(str::to_owned));
        if let Some(m) = message {
            self.emit(EventKind::Error, &view, Some(m));
        }
        view
    }

    /// Removes every fault, the kill switch's way: per namespace, the traffic is released
    /// first (filters detached, qdiscs restored) in one pass, then each fault's slot and trie
    /// entries go.
    pub(super) async fn remove_all(&mut self, state: FaultState) -> Vec<FaultView> {
        let mut views = Vec::new();
        let netns_ids: Vec<NetnsId> = self.namespaces.keys().copied().collect();
        for netns in netns_ids {
            views.extend(self.remove_namespace(netns, state, None).await);
        }
        // Faults of no known namespace cannot be: removed one by one all the same.
        let rest: Vec<String> = self.faults.keys().cloned().collect();
        for id in rest {
            views.push(self.remove_fault(&id, state, None).await);
        }
        views
    }

    /// Removes every fault of one namespace and everything of ours in it, then lets the
    /// namespace go.
    pub(super) async fn remove_namespace(
        &mut self,
        netns: NetnsId,
        state: FaultState,
        reason: Option<&str>,
    ) -> Vec<FaultView> {
        let Some(namespace) = self.namespaces.get_mut(&netns) else {
            return Vec::new();
        };
        let errors: Vec<String> = namespace
            .teardown()
            .await
            .iter()
            .map(ToString::to_string)
            .collect();
        let ids: Vec<String> = self
            .faults
            .values()
            .filter(|f| f.netns == netns)
            .map(|f| f.id.clone())
            .collect();
        // The traffic is released: what the datapath holds for these faults (slots, trie
        // entries under the namespace's attachments) no packet can reach, and goes once the
        // answer is out (`clear_datapath`).
        let mut finals: HashMap<&str, SlotCounters> = HashMap::new();
        let mut attachments = BTreeSet::new();
        for id in &ids {
            let Some(fault) = self.faults.get(id) else {
                continue;
            };
            let slot = fault.installed.slot;
            let read = self
                .datapath
                .read_counters(slot, fault.installed.counts_actions);
            if let Ok(counters) = read {
                finals.insert(id, counters);
            }
            attachments.extend(fault.installed.prefixes.iter().map(|key| key.attachment));
            self.unreachable.slots.push(slot);
        }
        for attachment in attachments {
            let keys = self.index.remove_attachment(attachment);
            self.unreachable.keys.extend(keys);
        }
        log_removal(&ids, state, &errors);
        self.drop_namespace_if_idle(netns);
        let mut views = Vec::with_capacity(ids.len());
        for id in &ids {
            if let Some(fault) = self.faults.remove(id) {
                let counters = finals.get(id.as_str()).copied();
                views.push(self.forget(fault, state, counters, &errors, reason));
            }
        }
        views
    }

    /// Clears the slots and trie entries of faults whose traffic `remove_namespace` released,
    /// and gives the slots back.
    pub(super) fn clear_datapath(&mut self) {
        let Unreachable { slots, keys } = std::mem::take(&mut self.unreachable);
        let mut errors = Vec::new();
        for key in &keys {
            errors.extend(self.datapath.delete_prefix(key).err());
        }
        for &slot in &slots {
            errors.extend(self.datapath.write_fault(slot, &FlFault::default()).err());
        }
        let cleared: BTreeSet<u32> = slots.iter().copied().collect();
        errors.extend(self.datapath.forget_connections(&cleared).err());
        for slot in slots {
            self.slots.put_back(slot);
        }
        for e in errors {
            tracing::error!(error = %e, "clearing a removed fault's slot");
        }
    }

    /// A namespace without faults keeps nothing of ours: faultd lets it go.
    pub(super) fn drop_namespace_if_idle(&mut self, netns: NetnsId) {
        if self.namespaces.get(&netns).is_some_and(Namespace::is_idle) {
            self.namespaces.remove(&netns);
            pins::remove_marker(&self.config.pin_root, netns);
        }
    }
}

/// One line per removal however many faults it took: a kill switch over thousands of faults
/// is not held up writing thousands of lines (each fault's event still goes out).
fn log_removal(ids: &[String], state: FaultState, errors: &[String]) {
    let (first, count) = (ids.first().map_or("", String::as_str), ids.len());
    if errors.is_empty() {
        tracing::info!(fault_id = %first, count, state = ?state, "faults removed");
    } else {
        let error = errors.join("; ");
        tracing::error!(fault_id = %first, count, state = ?state, error = %error, "faults removed with errors");
    }
}
