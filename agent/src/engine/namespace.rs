//! One network namespace's share of the engine's state: its datapath (programs and maps), the
//! trie model, slot allocation, and which devices carry our filters. Every method that touches
//! the kernel through netlink runs with the thread inside the namespace (`Namespace::run`, or
//! entered by `install` and `uninstall` when they change filters or qdiscs); map updates and
//! device lookups work from anywhere.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use super::{
    delay::{DelayClass, DelayQdiscs, DelaySpec},
    journal::DeviceRecord,
    EngineError,
};
use crate::{
    abi::{FlCounters, FlFault, FlProtectedList, PrefixKey, MAX_FAULTS},
    fault::plan::{PrefixIndex, TrieChanges},
    kernel::{
        bpf::{self, Datapath, Hook},
        filter, link,
        netns::Netns,
        pins, qdisc, DeviceNames, KernelError,
    },
};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceKey {
    pub name: String,
    pub ifindex: u32,
}

#[derive(Debug, Default)]
struct Device {
    created_clsact: bool,
    /// Faults using each hook, indexed like `Hook::ALL`.
    hook_users: [usize; 2],
    faults: usize,
}

fn hook_index(hook: Hook) -> usize {
    match hook {
        Hook::Egress => 0,
        Hook::Ingress => 1,
    }
}

#[derive(Debug)]
pub struct Namespace {
    netns: Netns,
    names: DeviceNames,
    pin_dir: PathBuf,
    datapath: Datapath,
    index: PrefixIndex,
    free_slots: Vec<u32>,
    next_slot: u32,
    devices: BTreeMap<DeviceKey, Device>,
    delays: BTreeMap<DeviceKey, DelayQdiscs>,
}

/// What `install` put in place for one fault; `uninstall` takes it back.
#[derive(Debug)]
pub struct Installed {
    pub device: DeviceKey,
    pub slot: u32,
    pub prefixes: Vec<PrefixKey>,
    pub delay: Option<DelayClass>,
    /// Whether the device counts this fault (clsact and filters acquired).
    acquired: bool,
}

impl Installed {
    /// A fault a journal describes as installed.
    pub fn adopted(
        device: DeviceKey,
        slot: u32,
        prefixes: Vec<PrefixKey>,
        delay: Option<DelayClass>,
    ) -> Self {
        Self {
            device,
            slot,
            prefixes,
            delay,
            acquired: true,
        }
    }
}

/// One fault a journal describes, as `Namespace::adopt` takes it.
pub struct AdoptedFault<'a> {
    pub installed: &'a Installed,
    pub hooks: &'a [Hook],
}

impl Namespace {
    /// Loads a datapath for the namespace `netns` (the thread's current one) with new maps
    /// pinned in `pin_dir`; pins left there by a namespace that had the same identity before
    /// are stale, and go first.
    pub fn new(
        netns: Netns,
        pin_dir: PathBuf,
        protected: &FlProtectedList,
    ) -> Result<Self, KernelError> {
        pins::remove_dir(&pin_dir).map_err(|source| KernelError::Syscall {
            call: "remove stale pins",
            source,
        })?;
        Self::with_datapath(netns, pin_dir, protected)
    }

    /// The policy's pass-list is written before any fault can be, and rewritten on adoption,
    /// so a restart with a new policy protects what the new one names.
    fn with_datapath(
        netns: Netns,
        pin_dir: PathBuf,
        protected: &FlProtectedList,
    ) -> Result<Self, KernelError> {
        let mut datapath = Datapath::load(Some(&pin_dir))?;
        datapath.set_protected(protected)?;
        Ok(Self {
            datapath,
            netns,
            names: DeviceNames::here()?,
            pin_dir,
            index: PrefixIndex::default(),
            free_slots: Vec::new(),
            next_slot: 0,
            devices: BTreeMap::new(),
            delays: BTreeMap::new(),
        })
    }

    /// Takes over the namespace from the faultd before: its pinned maps (faults, counters and
    /// trie stay live throughout), the devices and faults its journal lists, and the filters
    /// it left attached, which run the same maps. Whatever of ours the journal does not
    /// list (a fault slot, a trie entry, a filter, a qdisc, an ifb) is removed.
    pub fn adopt(
        netns: Netns,
        pin_dir: PathBuf,
        devices: &[DeviceRecord],
        faults: &[AdoptedFault<'_>],
        protected: &FlProtectedList,
    ) -> Result<Self, KernelError> {
        let mut ns = Self::with_datapath(netns, pin_dir, protected)?;
        for record in devices {
            let key = DeviceKey {
                name: record.name.clone(),
                ifindex: record.ifindex,
            };
            let classes: Vec<DelayClass> = faults
                .iter()
                .filter(|f| f.installed.device == key)
                .filter_map(|f| f.installed.delay)
                .collect();
            if record.original_root.is_some() || record.ifb.is_some() {
                let delays =
                    DelayQdiscs::adopted(record.original_root.clone(), record.ifb, &classes);
                ns.delays.insert(key.clone(), delays);
            }
            ns.devices.insert(
                key,
                Device {
                    created_clsact: record.created_clsact,
                    ..Device::default()
                },
            );
        }
        let mut used = BTreeSet::new();
        for fault in faults {
            let installed = fault.installed;
            // A prefix overflow cannot happen for faults that fitted before.
            let _ = ns.index.insert(installed.slot, &installed.prefixes);
            used.insert(installed.slot);
            let device = ns.devices.entry(installed.device.clone()).or_default();
            device.faults += 1;
            for &hook in fault.hooks {
                device.hook_users[hook_index(hook)] += 1;
            }
        }
        ns.next_slot = used.last().map_or(0, |last| last + 1);
        ns.free_slots = (0..ns.next_slot).filter(|s| !used.contains(s)).collect();
        ns.sweep(&used)?;
        Ok(ns)
    }

    /// Removes every object of ours in the namespace that the model does not account for.
    fn sweep(&mut self, used_slots: &BTreeSet<u32>) -> Result<(), KernelError> {
        for slot in self.datapath.live_slots(0)? {
            if !used_slots.contains(&slot) {
                self.datapath.write_fault(slot, &FlFault::default())?;
            }
        }
        let entries = self.index.entries();
        for (key, candidates) in &entries {
            self.datapath.set_prefix(key, candidates)?;
        }
        let wanted: BTreeSet<PrefixKey> = entries.iter().map(|(key, _)| *key).collect();
        for key in self.datapath.prefix_keys()? {
            if !wanted.contains(&key) {
                self.datapath.delete_prefix(&key)?;
            }
        }
        let attached: BTreeSet<u32> = self.devices.keys().map(|d| d.ifindex).collect();
        let ifbs: BTreeMap<u32, &DelayQdiscs> = self
            .delays
            .values()
            .filter_map(|d| Some((d.ifb()?, d)))
            .collect();
        let rooted: BTreeMap<u32, &DelayQdiscs> = self
            .delays
            .iter()
            .filter(|(_, d)| d.original_root().is_some())
            .map(|(key, d)| (key.ifindex, d))
            .collect();
        for (ifindex, name) in link::list_links()? {
            if link::is_our_ifb(&name) {
                match ifbs.get(&ifindex) {
                    Some(delays) => remove_unlisted_classes(ifindex, delays)?,
                    None => link::delete_link(ifindex)?,
                }
                continue;
            }
            if !attached.contains(&ifindex) {
                remove_unlisted_filters(ifindex, &name)?;
            }
            if qdisc::root_is_ours(ifindex)? {
                match rooted.get(&ifindex) {
                    Some(delays) => remove_unlisted_classes(ifindex, delays)?,
                    None => qdisc::delete_root(ifindex)?,
                }
            }
        }
        Ok(())
    }

    /// Removes the namespace's pins (its maps go when the last program using them does).
    pub fn remove_pins(&self) {
        if let Err(e) = pins::remove_dir(&self.pin_dir) {
            tracing::warn!(dir = %self.pin_dir.display(), error = %e, "cannot remove pins");
        }
    }

    /// The devices as the journal records them.
    pub fn device_records(&self) -> Vec<DeviceRecord> {
        self.devices
            .iter()
            .map(|(key, device)| {
                let delays = self.delays.get(key);
                DeviceRecord {
                    name: key.name.clone(),
                    ifindex: key.ifindex,
                    created_clsact: device.created_clsact,
                    original_root: delays.and_then(|d| d.original_root().cloned()),
                    ifb: delays.and_then(DelayQdiscs::ifb),
                }
            })
            .collect()
    }

    /// Moves a fault's kernel deadline.
    pub fn set_deadline(&mut self, slot: u32, deadline_ns: u64) -> Result<(), KernelError> {
        let mut value = self.datapath.read_fault(slot)?;
        value.deadline_ns = deadline_ns;
        self.datapath.write_fault(slot, &value)
    }

    pub fn path(&self) -> &Path {
        self.netns.path()
    }

    pub fn run<T>(
        &mut self,
        home: &Netns,
        f: impl FnOnce(&mut Self) -> T,
    ) -> Result<T, EngineError> {
        let _inside = self.netns.enter(home)?;
        Ok(f(self))
    }

    /// `dev`'s ifindex in this namespace, looked up from any thread.
    pub fn ifindex(&self, dev: &str) -> Result<u32, KernelError> {
        self.names.ifindex(dev)
    }

    /// How many faults use our filter on `dev` at `hook`.
    pub fn hook_users(&self, dev: &str, ifindex: u32, hook: Hook) -> usize {
        let key = DeviceKey {
            name: dev.to_owned(),
            ifindex,
        };
        self.devices
            .get(&key)
            .map_or(0, |state| state.hook_users[hook_index(hook)])
    }

    /// Refuses what `DelayQdiscs::check_mix` refuses, before anything is changed.
    pub fn check_delay_mix(
        &self,
        dev: &str,
        ifindex: u32,
        hooks: &[Hook],
        spec: &DelaySpec,
    ) -> Result<(), KernelError> {
        let key = DeviceKey {
            name: dev.to_owned(),
            ifindex,
        };
        match self.delays.get(&key) {
            Some(delays) => delays.check_mix(sides(hooks), spec),
            None => Ok(()),
        }
    }

    /// Whether our htb is `dev`'s root, and our ifb for its ingress.
    pub fn delay_state(&self, dev: &str, ifindex: u32) -> (bool, Option<u32>) {
        let key = DeviceKey {
            name: dev.to_owned(),
            ifindex,
        };
        self.delays.get(&key).map_or((false, None), |delays| {
            (delays.original_root().is_some(), delays.ifb())
        })
    }

    pub fn is_idle(&self) -> bool {
        self.devices.is_empty() && self.delays.is_empty()
    }

    pub fn read_counters(&self, slot: u32) -> Result<FlCounters, KernelError> {
        self.datapath.read_counters(slot)
    }

    /// Installs one fault on `dev`: all of it, or (on error) none of it. `netem` carries the
    /// netem qdisc options of a delay fault. The thread enters the namespace (and comes back
    /// to `home`) only when filters or qdiscs change.
    pub fn install(
        &mut self,
        home: &Netns,
        dev: &str,
        hooks: &[Hook],
        value: FlFault,
        delay: Option<&DelaySpec>,
        prefixes_for: impl FnOnce(u32) -> Vec<PrefixKey>,
    ) -> Result<Installed, EngineError> {
        let device = DeviceKey {
            name: dev.to_owned(),
            ifindex: self.names.ifindex(dev)?,
        };
        let _inside = if delay.is_some() || self.attaches(&device, hooks) {
            Some(self.netns.enter(home)?)
        } else {
            None
        };
        let slot = self.alloc_slot()?;
        let prefixes = prefixes_for(device.ifindex);
        let changes = match self.index.insert(slot, &prefixes) {
            Ok(changes) => changes,
            Err(e) => {
                self.free_slots.push(slot);
                return Err(e.into());
            }
        };
        let mut installed = Installed {
            device,
            slot,
            prefixes,
            delay: None,
            acquired: false,
        };
        if let Err(e) = self.install_kernel(&mut installed, hooks, value, delay, &changes) {
            self.undo_install(&installed, hooks);
            return Err(e);
        }
        Ok(installed)
    }

    fn undo_install(&mut self, installed: &Installed, hooks: &[Hook]) {
        let (_, errors) = self.uninstall_here(installed, hooks);
        for undo_error in errors {
            tracing::error!(error = %undo_error, "rolling back a failed apply");
        }
    }

    /// The device's filters (and a delay fault's qdiscs, whose class the fault names), then
    /// the fault's slot, then the trie entries that make the slot visible to packets.
    fn install_kernel(
        &mut self,
        installed: &mut Installed,
        hooks: &[Hook],
        mut value: FlFault,
        delay: Option<&DelaySpec>,
        changes: &TrieChanges,
    ) -> Result<(), EngineError> {
        if let Some(spec) = delay {
            if let Some(delays) = self.delays.get(&installed.device) {
                delays.check_mix(sides(hooks), spec)?;
            }
        }
        self.acquire_device(&installed.device, hooks, &mut installed.acquired)?;
        if let Some(spec) = delay {
            let delays = self.delays.entry(installed.device.clone()).or_default();
            let ifindex = installed.device.ifindex;
            let class = delays.add(&self.datapath, ifindex, sides(hooks), spec)?;
            value.action.class_id = qdisc::class_handle(class.minor);
            installed.delay = Some(class);
        }
        self.datapath.reset_counters(installed.slot)?;
        self.datapath.write_fault(installed.slot, &value)?;
        if let Some(e) = self.write_trie(changes).into_iter().next() {
            return Err(e.into());
        }
        Ok(())
    }

    /// Whether a fault on `device` at `hooks` needs a filter attached.
    fn attaches(&self, device: &DeviceKey, hooks: &[Hook]) -> bool {
        self.devices.get(device).is_none_or(|state| {
            hooks
                .iter()
                .any(|&hook| state.hook_users[hook_index(hook)] == 0)
        })
    }

    /// Whether removing a fault on `device` at `hooks` detaches a filter or clsact.
    fn releases(&self, device: &DeviceKey, hooks: &[Hook]) -> bool {
        self.devices.get(device).is_some_and(|state| {
            state.faults <= 1
                || hooks
                    .iter()
                    .any(|&hook| state.hook_users[hook_index(hook)] <= 1)
        })
    }

    /// Removes one fault; returns its final counters and every error met on the way. Enters
    /// the namespace only when filters or qdiscs change.
    pub fn uninstall(
        &mut self,
        home: &Netns,
        installed: &Installed,
        hooks: &[Hook],
    ) -> (Option<FlCounters>, Vec<KernelError>) {
        let netlink = installed.delay.is_some()
            || (installed.acquired && self.releases(&installed.device, hooks));
        let _inside = if netlink {
            match self.netns.enter(home) {
                Ok(inside) => Some(inside),
                Err(e) => return (None, vec![e]),
            }
        } else {
            None
        };
        self.uninstall_here(installed, hooks)
    }

    /// `uninstall` with the thread already where netlink calls must be made, or none needed;
    /// also takes back what a failed install got done.
    fn uninstall_here(
        &mut self,
        installed: &Installed,
        hooks: &[Hook],
    ) -> (Option<FlCounters>, Vec<KernelError>) {
        let Installed {
            device,
            slot,
            prefixes,
            delay,
            acquired,
        } = installed;
        let changes = self.index.remove(*slot, prefixes);
        let mut errors = self.write_trie(&changes);
        let counters = self
            .datapath
            .read_counters(*slot)
            .map_err(|e| errors.push(e))
            .ok();
        errors.extend(self.datapath.write_fault(*slot, &FlFault::default()).err());
        self.free_slots.push(*slot);
        if let Some(class) = delay {
            if let Some(delays) = self.delays.get_mut(device) {
                errors.extend(delays.remove(device.ifindex, class));
                if delays.is_idle() {
                    self.delays.remove(device);
                }
            }
        }
        if *acquired {
            errors.extend(self.release_device(device, hooks));
        }
        (counters, errors)
    }

    /// Removes every fault of the namespace at once; returns the final counters of `slots` and
    /// every error met. Traffic is released first; the model ends empty (idle), and the maps
    /// are left to go with the pins.
    pub fn teardown(&mut self, slots: &[u32]) -> (BTreeMap<u32, FlCounters>, Vec<KernelError>) {
        let mut errors = Vec::new();
        let names = &self.names;
        let present = |device: &DeviceKey| names.ifindex(&device.name).ok() == Some(device.ifindex);
        for (device, state) in &self.devices {
            if !present(device) {
                continue;
            }
            for hook in Hook::ALL {
                if state.hook_users[hook_index(hook)] > 0 {
                    errors.extend(bpf::detach(device.ifindex, hook).err());
                }
            }
        }
        for (device, delays) in &mut self.delays {
            errors.extend(delays.teardown(device.ifindex));
        }
        self.delays.clear();
        let counters = slots
            .iter()
            .filter_map(|&slot| Some((slot, self.datapath.read_counters(slot).ok()?)))
            .collect();
        for (device, state) in std::mem::take(&mut self.devices) {
            if state.created_clsact && present(&device) {
                errors.extend(remove_clsact_if_unused(device.ifindex).err());
            }
        }
        self.index = PrefixIndex::default();
        self.free_slots.clear();
        self.next_slot = 0;
        (counters, errors)
    }

    fn alloc_slot(&mut self) -> Result<u32, EngineError> {
        if let Some(slot) = self.free_slots.pop() {
            return Ok(slot);
        }
        if self.next_slot >= MAX_FAULTS {
            return Err(EngineError::TooManyFaults {
                max: MAX_FAULTS as usize,
            });
        }
        self.next_slot += 1;
        Ok(self.next_slot - 1)
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

    /// Counts one more fault on `device`, adding clsact and our filters where missing.
    /// `counted` turns true as soon as the device counts the fault, so that a rollback
    /// releases exactly what was acquired.
    fn acquire_device(
        &mut self,
        device: &DeviceKey,
        hooks: &[Hook],
        counted: &mut bool,
    ) -> Result<(), KernelError> {
        let first = !self.devices.contains_key(device);
        if first {
            let created_clsact = filter::add_clsact(device.ifindex)?;
            self.devices.insert(
                device.clone(),
                Device {
                    created_clsact,
                    ..Device::default()
                },
            );
        }
        let Some(state) = self.devices.get_mut(device) else {
            unreachable!("inserted above");
        };
        state.faults += 1;
        *counted = true;
        if first {
            // An earlier faultd may have left its filters on a hook we will not use.
            for hook in Hook::ALL {
                bpf::detach(device.ifindex, hook)?;
            }
        }
        for &hook in hooks {
            if state.hook_users[hook_index(hook)] == 0 {
                // Count the user only once attached, so a rollback does not detach twice.
                self.datapath.attach(device.ifindex, hook)?;
            }
            state.hook_users[hook_index(hook)] += 1;
        }
        Ok(())
    }

    /// The inverse of `acquire_device`, tolerant of a half-done acquire and of a device that
    /// disappeared (its filters went with it).
    fn release_device(&mut self, device: &DeviceKey, hooks: &[Hook]) -> Vec<KernelError> {
        let mut errors = Vec::new();
        let Some(state) = self.devices.get_mut(device) else {
            return errors;
        };
        let present = self.names.ifindex(&device.name).ok() == Some(device.ifindex);
        state.faults = state.faults.saturating_sub(1);
        for &hook in hooks {
            let users = &mut state.hook_users[hook_index(hook)];
            if *users == 0 {
                continue;
            }
            *users -= 1;
            if *users == 0 && present {
                errors.extend(bpf::detach(device.ifindex, hook).err());
            }
        }
        if state.faults == 0 {
            let created_clsact = state.created_clsact;
            self.devices.remove(device);
            if present && created_clsact {
                errors.extend(remove_clsact_if_unused(device.ifindex).err());
            }
        }
        errors
    }
}

/// (egress, ingress): which sides `hooks` act on.
fn sides(hooks: &[Hook]) -> (bool, bool) {
    (
        hooks.contains(&Hook::Egress),
        hooks.contains(&Hook::Ingress),
    )
}

fn remove_clsact_if_unused(ifindex: u32) -> Result<(), KernelError> {
    let mut foreign = 0;
    for hook in Hook::ALL {
        foreign += filter::filters(ifindex, hook)?.foreign;
    }
    if foreign == 0 {
        filter::delete_clsact(ifindex)?;
    }
    Ok(())
}

/// Detaches filters of ours nobody accounts for; a clsact that held nothing else goes too,
/// as whoever added it (a faultd whose journal was lost) cannot be told.
fn remove_unlisted_filters(ifindex: u32, name: &str) -> Result<(), KernelError> {
    let mut ours = 0;
    for hook in Hook::ALL {
        ours += filter::filters(ifindex, hook)?.ours;
    }
    if ours == 0 {
        return Ok(());
    }
    tracing::info!(dev = name, "removing filters no fault accounts for");
    for hook in Hook::ALL {
        bpf::detach(ifindex, hook)?;
    }
    bpf::detach_steer(ifindex)?;
    remove_clsact_if_unused(ifindex)
}

fn remove_unlisted_classes(ifindex: u32, delays: &DelayQdiscs) -> Result<(), KernelError> {
    for minor in qdisc::delay_classes(ifindex)? {
        if !delays.has_minor(minor) {
            qdisc::delete_delay_class(ifindex, minor)?;
        }
    }
    Ok(())
}

/// Removes every object of ours from the thread's namespace: for a namespace no journal
/// accounts for.
pub fn sweep_unaccounted() -> Result<(), KernelError> {
    for (ifindex, name) in link::list_links()? {
        if link::is_our_ifb(&name) {
            link::delete_link(ifindex)?;
            continue;
        }
        remove_unlisted_filters(ifindex, &name)?;
        if qdisc::root_is_ours(ifindex)? {
            qdisc::delete_root(ifindex)?;
        }
    }
    Ok(())
}
