//! What survives a faultd: the journal it keeps (`sync_journal`) and the takeover by the next
//! faultd or the reaper (`adopt`): live faults come back with their ids, deadlines and
//! counters; faults that ended meanwhile, or whose connection lease died with faultd, are
//! removed; objects of ours nobody accounts for are swept.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::{Duration, Instant, UNIX_EPOCH},
};

use super::{
    journal::{Entry, FaultRecord, NamespaceHeader, NamespaceRecord},
    namespace::{self, AdoptedFault, DeviceKey, Installed, Namespace},
    ActiveFault, Engine,
};
use crate::{
    fault::{
        plan,
        spec::{DurationLimits, FaultSpec},
    },
    kernel::{
        self,
        netns::{Netns, NetnsId},
        pins, KernelError,
    },
    proto::FaultState,
};

impl Engine {
    /// Journals what changed since the last call: namespace records that differ, then the
    /// fault entries queued by apply, renew and removal, then namespaces that are gone. The
    /// log is compacted into a snapshot once it holds several times what is live.
    pub(super) fn sync_journal(&mut self) {
        let mut entries = Vec::new();
        for (id, ns) in &self.namespaces {
            let header = namespace_header(*id, ns);
            if self.journaled.get(id) != Some(&header) {
                self.journaled.insert(*id, header.clone());
                entries.push(Entry::Namespace(header));
            }
        }
        entries.append(&mut self.pending);
        let gone: Vec<NetnsId> = self
            .journaled
            .keys()
            .filter(|id| !self.namespaces.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            self.journaled.remove(&id);
            entries.push(Entry::NamespaceGone {
                netns_dev: id.dev,
                netns_ino: id.ino,
            });
        }
        if entries.is_empty() {
            return;
        }
        let live = self.faults.len() + self.namespaces.len();
        let written = if self.journal.lines() + entries.len() > 4 * live + 1024 {
            self.journal.rewrite(&self.snapshot())
        } else {
            self.journal.append(&entries)
        };
        if let Err(e) = written {
            tracing::error!(path = %self.journal.path().display(), error = %e, "cannot write the journal");
        }
    }

    /// Everything live, as the entries of a fresh log.
    fn snapshot(&self) -> Vec<Entry> {
        let headers = self
            .namespaces
            .iter()
            .map(|(id, ns)| Entry::Namespace(namespace_header(*id, ns)));
        let faults = self
            .faults
            .values()
            .map(|f| Entry::Fault(Box::new(fault_record(f))));
        headers.chain(faults).collect()
    }

    /// Starts a fresh log holding exactly what this engine holds.
    fn restart_journal(&mut self) {
        self.pending.clear();
        self.journaled = self
            .namespaces
            .iter()
            .map(|(id, ns)| (*id, namespace_header(*id, ns)))
            .collect();
        if let Err(e) = self.journal.rewrite(&self.snapshot()) {
            tracing::error!(path = %self.journal.path().display(), error = %e, "cannot write the journal");
        }
    }

    /// Takes over from the faultd before (see the module doc).
    pub(super) fn adopt(&mut self) {
        if let Err(e) = pins::ensure_bpffs(&self.config.pin_root) {
            tracing::error!(error = %e, "cannot mount bpffs; restarts will not re-adopt faults");
        }
        let records = self.journal.read().unwrap_or_else(|e| {
            tracing::error!(
                error = %e,
                "THE JOURNAL CANNOT BE TRUSTED: removing every kernel object of ours instead of re-adopting"
            );
            Vec::new()
        });
        let mut adopted = BTreeSet::new();
        let mut ended = Vec::new();
        for record in records {
            let id = NetnsId {
                dev: record.header.netns_dev,
                ino: record.header.netns_ino,
            };
            match self.adopt_namespace(id, &record) {
                Ok(true) => {
                    adopted.insert(id);
                    ended.extend(
                        record
                            .faults
                            .iter()
                            .filter(|f| ended_now(f))
                            .map(|f| f.id.clone()),
                    );
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(netns = %record.header.netns_path.display(), error = %e, "cannot re-adopt a namespace's faults")
                }
            }
        }
        for id in pins::pinned_namespaces(&self.config.pin_root) {
            if !adopted.contains(&id) {
                self.sweep_namespace(id);
            }
        }
        for id in ended {
            if self.faults.contains_key(&id) {
                self.remove_fault(&id, FaultState::Expired);
            }
        }
        if !self.faults.is_empty() {
            tracing::info!(count = self.faults.len(), "re-adopted live faults");
        }
        self.restart_journal();
    }

    /// Re-adopts one namespace's faults; false when the namespace is gone (and everything of
    /// ours in it with it, but for its pins, which go here).
    fn adopt_namespace(
        &mut self,
        id: NetnsId,
        record: &NamespaceRecord,
    ) -> Result<bool, KernelError> {
        let pin_dir = pins::namespace_dir(&self.config.pin_root, id);
        let Some(netns) = find_netns(id, Some(&record.header.netns_path)) else {
            remove_pins(&pin_dir);
            return Ok(false);
        };
        let now_ns = kernel::monotonic_ns();
        let faults: Vec<ActiveFault> = record
            .faults
            .iter()
            .filter_map(|r| active_fault(r, id, now_ns))
            .collect();
        let adopted: Vec<AdoptedFault<'_>> = faults
            .iter()
            .map(|f| AdoptedFault {
                installed: &f.installed,
                hooks: &f.hooks,
            })
            .collect();
        let inside = netns.enter(&self.home)?;
        let namespace = Namespace::adopt(
            netns,
            pin_dir,
            &record.header.devices,
            &adopted,
            &self.protected,
        );
        drop(inside);
        self.namespaces.insert(id, namespace?);
        for fault in faults {
            if let Some(key) = &fault.key {
                self.keys.insert(key.clone(), fault.id.clone());
            }
            self.faults.insert(fault.id.clone(), fault);
        }
        Ok(true)
    }

    /// Removes everything of ours from a namespace no journal accounts for, then its pins.
    fn sweep_namespace(&mut self, id: NetnsId) {
        let pin_dir = pins::namespace_dir(&self.config.pin_root, id);
        if let Some(netns) = find_netns(id, None) {
            tracing::warn!(netns = %netns.path().display(), "removing objects of ours no journal accounts for");
            match netns.run(&self.home, namespace::sweep_unaccounted) {
                Ok(Ok(())) => {}
                Ok(Err(e)) | Err(e) => {
                    tracing::error!(netns = %netns.path().display(), error = %e, "cannot sweep a namespace")
                }
            }
        }
        remove_pins(&pin_dir);
    }
}

fn remove_pins(dir: &Path) {
    if let Err(e) = pins::remove_dir(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove pins");
    }
}

fn namespace_header(id: NetnsId, ns: &Namespace) -> NamespaceHeader {
    NamespaceHeader {
        netns_path: ns.path().to_owned(),
        netns_dev: id.dev,
        netns_ino: id.ino,
        devices: ns.device_records(),
    }
}

pub(super) fn fault_record(fault: &ActiveFault) -> FaultRecord {
    FaultRecord {
        id: fault.id.clone(),
        key: fault.key.clone(),
        leased: fault.lease.is_some(),
        fault: fault.wire.clone(),
        netns_dev: fault.netns.dev,
        netns_ino: fault.netns.ino,
        dev: fault.installed.device.name.clone(),
        ifindex: fault.installed.device.ifindex,
        slot: fault.installed.slot,
        delay: fault.installed.delay,
        applied_at_unix_ms: super::unix_ms(fault.applied_at),
        expires_at_unix_ms: super::unix_ms(fault.expires_at),
        deadline_ns: fault.deadline_ns,
    }
}

/// A journaled fault that must not be re-adopted as live.
fn ended_now(record: &FaultRecord) -> bool {
    record.leased || record.deadline_ns <= kernel::monotonic_ns()
}

/// The engine's view of a journaled fault; None when the record no longer validates (its
/// kernel state is then swept as unaccounted).
fn active_fault(record: &FaultRecord, netns: NetnsId, now_ns: u64) -> Option<ActiveFault> {
    // The limits in force now do not shorten a fault already granted.
    let limits = DurationLimits {
        default: None,
        max: Duration::MAX,
    };
    let spec = FaultSpec::from_wire(&record.fault, &limits)
        .map_err(|e| tracing::error!(fault_id = %record.id, error = %e, "journaled fault no longer validates"))
        .ok()?;
    let device = DeviceKey {
        name: record.dev.clone(),
        ifindex: record.ifindex,
    };
    let prefixes = plan::prefix_keys(&spec, record.ifindex);
    let hooks = super::hooks_of(&spec);
    let remaining = Duration::from_nanos(record.deadline_ns.saturating_sub(now_ns));
    Some(ActiveFault {
        id: record.id.clone(),
        key: record.key.clone(),
        // The connection that held the lease is gone; `adopt` revokes the fault.
        lease: record.leased.then_some(0),
        wire: record.fault.clone(),
        netns,
        installed: Installed::adopted(device, record.slot, prefixes, record.delay),
        hooks,
        applied_at: UNIX_EPOCH + Duration::from_millis(record.applied_at_unix_ms),
        expires_at: UNIX_EPOCH + Duration::from_millis(record.expires_at_unix_ms),
        spec,
        deadline: Instant::now() + remaining,
        deadline_ns: record.deadline_ns,
    })
}

/// Opens the namespace with identity `id`: at `hint` if that path still names it, otherwise
/// wherever a named namespace or a process holds it.
fn find_netns(id: NetnsId, hint: Option<&Path>) -> Option<Netns> {
    let named = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path());
    let held = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .map(|e| e.path().join("ns/net"));
    let candidates: Vec<PathBuf> = hint
        .map(Path::to_path_buf)
        .into_iter()
        .chain(named)
        .chain(held)
        .collect();
    candidates
        .into_iter()
        .filter_map(|path| Netns::open(&path).ok())
        .find(|netns| netns.id() == id)
}
