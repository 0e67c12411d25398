//! One network namespace's share of the engine's state: its datapath (programs and maps), the
//! trie model, slot allocation, and which devices carry our filters. Every method that touches
//! the kernel runs with the thread inside the namespace (`Namespace::run`).

use std::{collections::BTreeMap, path::Path};

use super::EngineError;
use crate::{
    fault::plan::{PrefixIndex, PrefixKey, TrieChanges},
    kernel::{
        self,
        abi::{FlCounters, FlFault, MAX_FAULTS},
        bpf::{self, Datapath, Hook},
        netns::Netns,
        tc, KernelError,
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
    datapath: Datapath,
    index: PrefixIndex,
    free_slots: Vec<u32>,
    next_slot: u32,
    devices: BTreeMap<DeviceKey, Device>,
}

impl Namespace {
    /// Loads a datapath for the namespace `netns` (the thread's current one).
    pub fn new(netns: Netns) -> Result<Self, KernelError> {
        Ok(Self {
            netns,
            datapath: Datapath::load()?,
            index: PrefixIndex::default(),
            free_slots: Vec::new(),
            next_slot: 0,
            devices: BTreeMap::new(),
        })
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

    pub fn is_idle(&self) -> bool {
        self.devices.is_empty()
    }

    pub fn devices(&self) -> impl Iterator<Item = (DeviceKey, bool)> + '_ {
        self.devices
            .iter()
            .map(|(key, d)| (key.clone(), d.created_clsact))
    }

    /// Marks the device's clsact as ours to remove (an earlier faultd added it).
    pub fn adopt_clsact(&mut self, name: &str) {
        for (key, device) in &mut self.devices {
            if key.name == name {
                device.created_clsact = true;
            }
        }
    }

    pub fn read_counters(&self, slot: u32) -> Result<FlCounters, KernelError> {
        self.datapath.read_counters(slot)
    }

    /// Installs one fault on `dev`: all of it, or (on error) none of it.
    pub fn install(
        &mut self,
        dev: &str,
        hooks: &[Hook],
        value: &FlFault,
        prefixes_for: impl FnOnce(u32) -> Vec<PrefixKey>,
    ) -> Result<(DeviceKey, u32, Vec<PrefixKey>), EngineError> {
        let device = DeviceKey {
            name: dev.to_owned(),
            ifindex: kernel::ifindex(dev)?,
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
        let attached = self.install_kernel(&device, hooks, slot, value, &changes);
        if let Err(e) = attached {
            let undo = self.index.remove(slot, &prefixes);
            let mut errors = self.write_trie(&undo);
            errors.extend(self.datapath.write_fault(slot, &FlFault::default()).err());
            errors.extend(self.release_device(&device, hooks));
            for undo_error in errors {
                tracing::error!(error = %undo_error, "rolling back a failed apply");
            }
            self.free_slots.push(slot);
            return Err(e);
        }
        Ok((device, slot, prefixes))
    }

    fn install_kernel(
        &mut self,
        device: &DeviceKey,
        hooks: &[Hook],
        slot: u32,
        value: &FlFault,
        changes: &TrieChanges,
    ) -> Result<(), EngineError> {
        // The slot is invisible until the trie lists it, so it is written first.
        self.datapath.reset_counters(slot)?;
        self.datapath.write_fault(slot, value)?;
        self.acquire_device(device, hooks)?;
        if let Some(e) = self.write_trie(changes).into_iter().next() {
            return Err(e.into());
        }
        Ok(())
    }

    /// Removes one fault; returns its final counters and every error met on the way.
    pub fn uninstall(
        &mut self,
        device: &DeviceKey,
        slot: u32,
        prefixes: &[PrefixKey],
        hooks: &[Hook],
    ) -> (Option<FlCounters>, Vec<KernelError>) {
        let changes = self.index.remove(slot, prefixes);
        let mut errors = self.write_trie(&changes);
        let counters = self
            .datapath
            .read_counters(slot)
            .map_err(|e| errors.push(e))
            .ok();
        errors.extend(self.datapath.write_fault(slot, &FlFault::default()).err());
        self.free_slots.push(slot);
        errors.extend(self.release_device(device, hooks));
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
    fn acquire_device(&mut self, device: &DeviceKey, hooks: &[Hook]) -> Result<(), KernelError> {
        if !self.devices.contains_key(device) {
            let created_clsact = bpf::add_clsact(&device.name)?;
            // An earlier faultd may have left its filters on a hook we will not use.
            for hook in Hook::ALL {
                bpf::detach(&device.name, hook)?;
            }
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
        for &hook in hooks {
            if state.hook_users[hook_index(hook)] == 0 {
                // Count the user only once attached, so a rollback does not detach twice.
                self.datapath.attach(&device.name, hook)?;
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
        let present = kernel::ifindex(&device.name).ok() == Some(device.ifindex);
        state.faults = state.faults.saturating_sub(1);
        for &hook in hooks {
            let users = &mut state.hook_users[hook_index(hook)];
            if *users == 0 {
                continue;
            }
            *users -= 1;
            if *users == 0 && present {
                errors.extend(bpf::detach(&device.name, hook).err());
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

fn remove_clsact_if_unused(ifindex: u32) -> Result<(), KernelError> {
    let mut foreign = 0;
    for hook in Hook::ALL {
        foreign += tc::foreign_filters(ifindex, hook)?;
    }
    if foreign == 0 {
        tc::delete_clsact(ifindex)?;
    }
    Ok(())
}

/// Removes what an earlier faultd attached to `dev` (the thread must be in its namespace).
pub fn remove_attachment(dev: &str, created_clsact: bool) -> Result<(), KernelError> {
    let Ok(ifindex) = kernel::ifindex(dev) else {
        return Ok(()); // The device is gone, and its filters with it.
    };
    for hook in Hook::ALL {
        bpf::detach(dev, hook)?;
    }
    if created_clsact {
        remove_clsact_if_unused(ifindex)?;
    }
    Ok(())
}
