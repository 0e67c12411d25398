//! One network namespace's share of the engine's state: the connections that reach its kernel
//! (made once, with the thread inside; afterwards they serve from faultd's own namespace),
//! and each device we attached to, with its attachment id, filters and delay qdiscs. What the
//! datapath holds for faults (slots, trie entries) is the engine's: it is shared.

use std::{collections::BTreeMap, path::Path};

use tokio::{sync::mpsc, task::JoinHandle};

use super::{
    delay::{DelayClass, DelayQdiscs, DelaySpec},
    journal::DeviceRecord,
    watch::KernelEvent,
    EngineError,
};
use crate::kernel::{
    bpf::{Datapath, Hook},
    filter::{self, DATAPATH_PRIORITY, STEER_PRIORITY},
    link,
    netns::{Netns, NetnsId},
    qdisc,
    rtnl::{Netlink, Notifications},
    DeviceNames, KernelError,
};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceKey {
    pub name: String,
    pub ifindex: u32,
}

/// A device we attached to: it carries our filters while it has faults.
#[derive(Debug)]
pub struct Device {
    /// The classid of our filters on it, by which the datapath finds its faults.
    pub attachment: u32,
    /// Whether we added its clsact qdisc, and so remove it.
    created_clsact: bool,
    /// Faults using each hook, indexed like `Hook::ALL`.
    hook_users: [usize; 2],
    faults: usize,
    pub delays: DelayQdiscs,
}

fn hook_index(hook: Hook) -> usize {
    match hook {
        Hook::Egress => 0,
        Hook::Ingress => 1,
    }
}

/// (egress, ingress): which sides `hooks` act on.
pub fn sides(hooks: &[Hook]) -> (bool, bool) {
    (
        hooks.contains(&Hook::Egress),
        hooks.contains(&Hook::Ingress),
    )
}

#[derive(Debug)]
pub struct Namespace {
    netns: Netns,
    names: DeviceNames,
    nl: Netlink,
    /// Forwards the namespace's link and tc announcements to the engine.
    listener: JoinHandle<()>,
    devices: BTreeMap<DeviceKey, Device>,
}

impl Drop for Namespace {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl Namespace {
    /// Connects to `netns`: the thread enters it (from `home`) for as long as that takes.
    pub fn open(
        netns: Netns,
        home: &Netns,
        events: mpsc::UnboundedSender<KernelEvent>,
    ) -> Result<Namespace, KernelError> {
        let inside = netns.enter(home)?;
        let names = DeviceNames::here()?;
        let nl = Netlink::here()?;
        let notifications = Notifications::here()?;
        drop(inside);
        let listener = tokio::spawn(super::watch::forward(netns.id(), notifications, events));
        Ok(Namespace {
            netns,
            names,
            nl,
            listener,
            devices: BTreeMap::new(),
        })
    }

    pub fn id(&self) -> NetnsId {
        self.netns.id()
    }

    pub fn path(&self) -> &Path {
        self.netns.path()
    }

    /// Listens again, after the announcements' socket failed.
    pub fn relisten(
        &mut self,
        home: &Netns,
        events: mpsc::UnboundedSender<KernelEvent>,
    ) -> Result<(), KernelError> {
        let inside = self.netns.enter(home)?;
        let notifications = Notifications::here()?;
        drop(inside);
        self.listener.abort();
        self.listener = tokio::spawn(super::watch::forward(self.id(), notifications, events));
        Ok(())
    }

    /// `dev`'s ifindex in this namespace, looked up from any thread.
    pub fn ifindex(&self, dev: &str) -> Result<u32, KernelError> {
        self.names.ifindex(dev)
    }

    pub fn is_idle(&self) -> bool {
        self.devices.is_empty()
    }

    pub fn devices(&self) -> impl Iterator<Item = (&DeviceKey, &Device)> {
        self.devices.iter()
    }

    pub fn device(&self, key: &DeviceKey) -> Option<&Device> {
        self.devices.get(key)
    }

    /// The device (ours) whose ifindex, or whose ifb's, is `ifindex`.
    pub fn device_of(&self, ifindex: u32) -> Option<&DeviceKey> {
        self.devices
            .iter()
            .find(|(key, device)| key.ifindex == ifindex || device.delays.ifb() == Some(ifindex))
            .map(|(key, _)| key)
    }

    /// How many faults use our filter on `device` at `hook`.
    pub fn hook_users(&self, device: &DeviceKey, hook: Hook) -> usize {
        self.devices
            .get(device)
            .map_or(0, |d| d.hook_users[hook_index(hook)])
    }

    /// The devices as the journal records them.
    pub fn device_records(&self) -> Vec<DeviceRecord> {
        self.devices
            .iter()
            .map(|(key, device)| DeviceRecord {
                name: key.name.clone(),
                ifindex: key.ifindex,
                attachment: device.attachment,
                created_clsact: device.created_clsact,
                original_root: device.delays.original_root().cloned(),
                ifb: device.delays.ifb(),
            })
            .collect()
    }

    /// A device a journal describes, with its delay classes (and their netem options).
    pub fn adopt_device(&mut self, record: &DeviceRecord, classes: Vec<(DelayClass, Vec<u8>)>) {
        let key = DeviceKey {
            name: record.name.clone(),
            ifindex: record.ifindex,
        };
        let delays = DelayQdiscs::adopted(record.original_root.clone(), record.ifb, classes);
        self.devices.insert(
            key,
            Device {
                attachment: record.attachment,
                created_clsact: record.created_clsact,
                hook_users: [0; 2],
                faults: 0,
                delays,
            },
        );
    }

    /// Counts an adopted fault on its device.
    pub fn count_adopted(&mut self, device: &DeviceKey, hooks: &[Hook]) {
        if let Some(state) = self.devices.get_mut(device) {
            state.faults += 1;
            for &hook in hooks {
                state.hook_users[hook_index(hook)] += 1;
            }
        }
    }

    /// Starts keeping `device`, with `attachment`, if it is new; true if it is. Whether we
    /// will add its clsact is known (and journaled by the caller) before we add it: a faultd
    /// killed in between leaves a clsact its successor can tell is ours.
    pub async fn track(
        &mut self,
        device: &DeviceKey,
        attachment: u32,
    ) -> Result<bool, KernelError> {
        if self.devices.contains_key(device) {
            return Ok(false);
        }
        let had_clsact = qdisc::has_clsact(&self.nl, device.ifindex).await?;
        self.devices.insert(
            device.clone(),
            Device {
                attachment,
                created_clsact: !had_clsact,
                hook_users: [0; 2],
                faults: 0,
                delays: DelayQdiscs::default(),
            },
        );
        Ok(true)
    }

    /// Counts one more fault on `device` (tracked before), adding clsact and our filters
    /// where missing. Returns the device's attachment. `counted` turns true as soon as the
    /// device counts the fault, so that a rollback releases exactly what was acquired.
    pub async fn acquire(
        &mut self,
        datapath: &Datapath,
        device: &DeviceKey,
        hooks: &[Hook],
        counted: &mut bool,
    ) -> Result<u32, KernelError> {
        let Some(state) = self.devices.get_mut(device) else {
            unreachable!("tracked before");
        };
        if state.faults == 0 && state.created_clsact {
            // Someone may have added one since we looked: then it is theirs.
            state.created_clsact = filter::add_clsact(&self.nl, device.ifindex).await?;
        }
        state.faults += 1;
        *counted = true;
        for &hook in hooks {
            if state.hook_users[hook_index(hook)] == 0 {
                // Replaces a filter of ours an earlier faultd may have left there.
                let filter = datapath.filter(hook, state.attachment)?;
                filter::attach(&self.nl, device.ifindex, hook, &filter).await?;
            }
            // Counted once attached, so a rollback does not detach what is not there.
            state.hook_users[hook_index(hook)] += 1;
        }
        Ok(state.attachment)
    }

    /// The inverse of `acquire`, tolerant of a half-done acquire and of a device that
    /// disappeared (its filters went with it). Returns every error met.
    pub async fn release(&mut self, device: &DeviceKey, hooks: &[Hook]) -> Vec<KernelError> {
        let mut errors = Vec::new();
        let present = self.present(device);
        let Some(state) = self.devices.get_mut(device) else {
            return errors;
        };
        state.faults = state.faults.saturating_sub(1);
        for &hook in hooks {
            let users = &mut state.hook_users[hook_index(hook)];
            if *users == 0 {
                continue;
            }
            *users -= 1;
            if *users == 0 && present {
                let detached = filter::detach(&self.nl, device.ifindex, hook, DATAPATH_PRIORITY);
                errors.extend(detached.await.err());
            }
        }
        if state.faults == 0 {
            let created_clsact = state.created_clsact;
            let mut gone = self.devices.remove(device);
            if let Some(gone) = &mut gone {
                // Left by a half-done delay apply, at most.
                errors.extend(gone.delays.teardown(&self.nl, device.ifindex).await);
            }
            if present && created_clsact {
                errors.extend(
                    remove_clsact_if_unused(&self.nl, device.ifindex)
                        .await
                        .err(),
                );
            }
        }
        errors
    }

    /// Whether `device` is still this namespace's device of that name.
    fn present(&self, device: &DeviceKey) -> bool {
        self.names.ifindex(&device.name).ok() == Some(device.ifindex)
    }

    /// Adds a delay fault's class on `device` (acquired already), and the steering filter
    /// when its ingress needs a new ifb.
    pub async fn add_delay(
        &mut self,
        datapath: &Datapath,
        device: &DeviceKey,
        hooks: &[Hook],
        spec: &DelaySpec,
    ) -> Result<DelayClass, EngineError> {
        let Some(state) = self.devices.get_mut(device) else {
            unreachable!("acquired before");
        };
        let had_ifb = state.delays.ifb().is_some();
        let class = state
            .delays
            .add(&self.nl, device.ifindex, sides(hooks), spec)
            .await?;
        if let (false, Some(ifb)) = (had_ifb, state.delays.ifb()) {
            let attached = match datapath.steer_filter(ifb) {
                Ok(steer) => filter::attach(&self.nl, device.ifindex, Hook::Ingress, &steer).await,
                Err(e) => Err(e),
            };
            if let Err(e) = attached {
                for undo in state.delays.remove(&self.nl, device.ifindex, &class).await {
                    tracing::error!(error = %undo, "rolling back a failed delay class");
                }
                return Err(e.into());
            }
        }
        Ok(class)
    }

    /// Removes a delay fault's class; the last ingress one takes the steering filter and the
    /// ifb with it.
    pub async fn remove_delay(
        &mut self,
        device: &DeviceKey,
        class: &DelayClass,
    ) -> Vec<KernelError> {
        let mut errors = Vec::new();
        let Some(state) = self.devices.get_mut(device) else {
            return errors;
        };
        let last_ingress = class.ingress
            && state.delays.ifb().is_some()
            && !state.delays.has_other_ingress(class.minor);
        if last_ingress {
            // Packets stop going to the ifb before it goes.
            let detached = filter::detach(&self.nl, device.ifindex, Hook::Ingress, STEER_PRIORITY);
            errors.extend(detached.await.err());
        }
        errors.extend(state.delays.remove(&self.nl, device.ifindex, class).await);
        errors
    }

    /// Refuses what `DelayQdiscs::check_mix` refuses, before anything is changed.
    pub fn check_delay_mix(
        &self,
        device: &DeviceKey,
        hooks: &[Hook],
        spec: &DelaySpec,
    ) -> Result<(), KernelError> {
        match self.devices.get(device) {
            Some(state) => state.delays.check_mix(sides(hooks), spec),
            None => Ok(()),
        }
    }

    /// Removes every object of ours from the namespace's devices at once: the traffic is
    /// released (filters detached, qdiscs restored, ifbs deleted, clsacts ours removed), and
    /// the model ends empty. Returns every error met.
    pub async fn teardown(&mut self) -> Vec<KernelError> {
        let mut errors = Vec::new();
        for (device, state) in std::mem::take(&mut self.devices) {
            errors.extend(self.let_go(&device, state).await);
        }
        errors
    }

    /// Lets go of the devices no fault counts: tracked for an apply that failed, or journaled
    /// by a faultd that died before its fault was. Returns every error met.
    pub async fn release_idle(&mut self) -> Vec<KernelError> {
        let idle: Vec<DeviceKey> = self
            .devices
            .iter()
            .filter(|(_, state)| state.faults == 0)
            .map(|(device, _)| device.clone())
            .collect();
        let mut errors = Vec::new();
        for device in idle {
            if let Some(state) = self.devices.remove(&device) {
                errors.extend(self.let_go(&device, state).await);
            }
        }
        errors
    }

    /// Removes everything of ours from one device the model no longer holds. Filters are
    /// detached whether or not a fault counted them: a faultd may have died after attaching.
    async fn let_go(&self, device: &DeviceKey, mut state: Device) -> Vec<KernelError> {
        let mut errors = Vec::new();
        if !self.present(device) {
            // Gone with everything on it, but for our ifb.
            if let Some(ifb) = state.delays.ifb() {
                errors.extend(link::delete_link(&self.nl, ifb).await.err());
            }
            return errors;
        }
        let ours = Hook::ALL
            .into_iter()
            .map(|hook| (hook, DATAPATH_PRIORITY))
            .chain([(Hook::Ingress, STEER_PRIORITY)]);
        for (hook, priority) in ours {
            let detached = filter::detach(&self.nl, device.ifindex, hook, priority);
            errors.extend(detached.await.err());
        }
        errors.extend(state.delays.teardown(&self.nl, device.ifindex).await);
        if state.created_clsact {
            errors.extend(
                remove_clsact_if_unused(&self.nl, device.ifindex)
                    .await
                    .err(),
            );
        }
        errors
    }

    /// Forgets a device that is gone (deleted, or moved to another namespace): its filters and
    /// qdiscs went with it; our ifb for it did not. Returns every error met.
    pub async fn forget_device(&mut self, device: &DeviceKey) -> Vec<KernelError> {
        let mut errors = Vec::new();
        if let Some(state) = self.devices.remove(device) {
            if let Some(ifb) = state.delays.ifb() {
                errors.extend(link::delete_link(&self.nl, ifb).await.err());
            }
        }
        errors
    }

    /// Puts back what someone else removed from `device`: clsact, our filters, our delay
    /// qdiscs and ifb. Returns what was put back, described; nothing when all was there.
    pub async fn repair(
        &mut self,
        datapath: &Datapath,
        device: &DeviceKey,
    ) -> Result<Vec<String>, KernelError> {
        let dev = device.name.as_str();
        let Some(state) = self.devices.get_mut(device) else {
            return Ok(Vec::new());
        };
        let mut put_back = Vec::new();
        let had_ifb = state.delays.ifb();
        put_back.extend(state.delays.repair(&self.nl, device.ifindex).await?);
        let mut wanted: Vec<(Hook, u16)> = Hook::ALL
            .into_iter()
            .filter(|&hook| state.hook_users[hook_index(hook)] > 0)
            .map(|hook| (hook, DATAPATH_PRIORITY))
            .collect();
        if state.delays.needs_ifb() {
            wanted.push((Hook::Ingress, STEER_PRIORITY));
        }
        let mut missing = Vec::new();
        for hook in Hook::ALL {
            let listed = filter::filters(&self.nl, device.ifindex, hook).await?;
            for &(wanted_hook, priority) in &wanted {
                let there = listed.iter().any(|f| f.ours && f.priority == priority);
                if wanted_hook == hook && !there {
                    missing.push((hook, priority));
                }
            }
        }
        // A new ifb needs its steering filter pointed at it.
        if state.delays.ifb() != had_ifb && state.delays.needs_ifb() {
            missing.push((Hook::Ingress, STEER_PRIORITY));
        }
        missing.dedup();
        if !missing.is_empty() && filter::add_clsact(&self.nl, device.ifindex).await? {
            // Ours now, to remove with the last fault.
            state.created_clsact = true;
            put_back.push(format!("the clsact qdisc of {dev}"));
        }
        for (hook, priority) in missing {
            let filter = match (priority, state.delays.ifb()) {
                (STEER_PRIORITY, Some(ifb)) => datapath.steer_filter(ifb)?,
                _ => datapath.filter(hook, state.attachment)?,
            };
            filter::attach(&self.nl, device.ifindex, hook, &filter).await?;
            put_back.push(format!("{} on {dev} {}", filter.name, hook.name()));
        }
        Ok(put_back)
    }
}

async fn remove_clsact_if_unused(nl: &Netlink, ifindex: u32) -> Result<(), KernelError> {
    let mut foreign = 0;
    for hook in Hook::ALL {
        foreign += filter::filters(nl, ifindex, hook)
            .await?
            .iter()
            .filter(|f| !f.ours)
            .count();
    }
    if foreign == 0 {
        filter::delete_clsact(nl, ifindex).await?;
    }
    Ok(())
}

/// Removes every object of ours in the namespace that `listed` does not account for: filters
/// on devices not listed, ifbs, htb roots and classes. A clsact that held nothing else goes
/// too, as whoever added it (a faultd whose journal was lost) cannot be told.
pub async fn sweep(nl: &Netlink, listed: &BTreeMap<DeviceKey, Device>) -> Result<(), KernelError> {
    let attached: Vec<u32> = listed.keys().map(|d| d.ifindex).collect();
    let ifbs: BTreeMap<u32, &Device> = listed
        .values()
        .filter_map(|d| Some((d.delays.ifb()?, d)))
        .collect();
    let rooted: BTreeMap<u32, &Device> = listed
        .iter()
        .filter(|(_, d)| d.delays.original_root().is_some())
        .map(|(key, d)| (key.ifindex, d))
        .collect();
    for (ifindex, name) in link::list_links(nl).await? {
        if link::is_our_ifb(&name) {
            match ifbs.get(&ifindex) {
                Some(device) => remove_unlisted_classes(nl, ifindex, device).await?,
                None => link::delete_link(nl, ifindex).await?,
            }
            continue;
        }
        if !attached.contains(&ifindex) {
            remove_unlisted_filters(nl, ifindex, &name).await?;
        }
        if qdisc::root_is_ours(nl, ifindex).await? {
            match rooted.get(&ifindex) {
                Some(device) => remove_unlisted_classes(nl, ifindex, device).await?,
                None => qdisc::delete_root(nl, ifindex).await?,
            }
        }
    }
    Ok(())
}

impl Namespace {
    /// `sweep` of this namespace against its own devices.
    pub async fn sweep(&self) -> Result<(), KernelError> {
        sweep(&self.nl, &self.devices).await
    }
}

async fn remove_unlisted_filters(
    nl: &Netlink,
    ifindex: u32,
    name: &str,
) -> Result<(), KernelError> {
    let mut ours = 0;
    for hook in Hook::ALL {
        ours += filter::filters(nl, ifindex, hook)
            .await?
            .iter()
            .filter(|f| f.ours)
            .count();
    }
    if ours == 0 {
        return Ok(());
    }
    tracing::info!(dev = name, "removing filters no fault accounts for");
    for hook in Hook::ALL {
        filter::detach(nl, ifindex, hook, DATAPATH_PRIORITY).await?;
    }
    filter::detach(nl, ifindex, Hook::Ingress, STEER_PRIORITY).await?;
    remove_clsact_if_unused(nl, ifindex).await
}

async fn remove_unlisted_classes(
    nl: &Netlink,
    ifindex: u32,
    device: &Device,
) -> Result<(), KernelError> {
    for (minor, _) in qdisc::delay_classes(nl, ifindex).await? {
        if !device.delays.has_minor(minor) {
            qdisc::delete_delay_class(nl, ifindex, minor).await?;
        }
    }
    Ok(())
}
