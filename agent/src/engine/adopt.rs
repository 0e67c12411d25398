//! What survives a faultd: the journal it keeps (`sync_journal`) and the takeover by the next
//! faultd or the reaper (`adopt`): live faults come back with their ids, deadlines and
//! counters (the pinned maps hold them); faults that ended meanwhile, or whose connection
//! lease died with faultd, are removed; objects of ours nobody accounts for are swept, in the
//! datapath and in every namespace marked as ours.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use super::{
    deadline::{unix_ms, Deadline},
    faults::Installed,
    hooks_of,
    journal::{Entry, FaultRecord, NamespaceHeader, NamespaceRecord},
    namespace::{self, DeviceKey, Namespace},
    ActiveFault, Engine,
};
use crate::{
    abi::FlFault,
    fault::{
        plan,
        spec::{Action, DurationLimits, FaultSpec},
    },
    kernel::{
        self,
        netem::netem_options,
        netns::{Netns, NetnsId},
        pins,
        rtnl::Netlink,
        KernelError,
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
    pub(super) async fn adopt(&mut self) {
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
            match self.adopt_namespace(id, &record).await {
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
        for id in pins::marked_namespaces(&self.config.pin_root) {
            if !adopted.contains(&id) {
                sweep_namespace(&self.home, id).await;
                pins::remove_marker(&self.config.pin_root, id);
            }
        }
        if let Err(e) = self.sweep_datapath() {
            tracing::error!(error = %e, "cannot clear the datapath of what no fault accounts for");
        }
        for id in ended {
            if self.faults.contains_key(&id) {
                self.remove_fault(&id, FaultState::Expired, None).await;
            }
        }
        if !self.faults.is_empty() {
            tracing::info!(count = self.faults.len(), "re-adopted live faults");
        }
        self.restart_journal();
    }

    /// Re-adopts one namespace's devices and faults; false when the namespace is gone (and
    /// everything of ours in it with it, but for what the datapath holds, swept after).
    async fn adopt_namespace(
        &mut self,
        id: NetnsId,
        record: &NamespaceRecord,
    ) -> Result<bool, KernelError> {
        let path = &record.header.netns_path;
        let Some(netns) = find_netns(id, Some(path)) else {
            return Ok(false);
        };
        let mut namespace = Namespace::open(netns, &self.home, self.kernel_events.clone())?;
        let faults: Vec<ActiveFault> = record
            .faults
            .iter()
            .filter_map(|r| active_fault(r, id, &record.header))
            .collect();
        for device in &record.header.devices {
            let classes = faults
                .iter()
                .filter(|f| f.installed.device.ifindex == device.ifindex)
                .filter_map(|f| Some((f.installed.delay?, delay_options(&f.spec)?)))
                .collect();
            namespace.adopt_device(device, classes);
            self.next_attachment = self.next_attachment.max(device.attachment.wrapping_add(1));
        }
        for fault in &faults {
            namespace.count_adopted(&fault.installed.device, &fault.hooks);
            // A prefix overflow cannot happen for faults that fitted before.
            let _ = self
                .index
                .insert(fault.installed.slot, &fault.installed.prefixes);
        }
        // Devices journaled by a faultd that died before any fault on them was.
        for e in namespace.release_idle().await {
            tracing::error!(netns = %path.display(), error = %e, "releasing a device no fault holds");
        }
        namespace.sweep().await?;
        pins::add_marker(&self.config.pin_root, id)?;
        self.paths.watch(path);
        self.namespaces.insert(id, namespace);
        for fault in faults {
            if let Some(key) = &fault.key {
                self.keys.insert(key.clone(), fault.id.clone());
            }
            self.deadlines.insert(fault.deadline.at, &fault.id);
            self.faults.insert(fault.id.clone(), fault);
        }
        // Nothing of ours left in it (its devices were all released): let it go.
        self.drop_namespace_if_idle(id);
        Ok(true)
    }

    /// Clears the datapath of what no adopted fault accounts for: slots, their tracked
    /// connections, and trie entries (the trie is rewritten from the adopted faults).
    fn sweep_datapath(&mut self) -> Result<(), KernelError> {
        let used: BTreeSet<u32> = self.faults.values().map(|f| f.installed.slot).collect();
        self.slots.set_used(&used);
        for slot in self.datapath.live_slots(0)? {
            if !used.contains(&slot) {
                self.datapath.write_fault(slot, &FlFault::default())?;
            }
        }
        let tracked = self.datapath.connection_slots()?;
        self.datapath
            .forget_connections(&tracked.difference(&used).copied().collect())?;
        let entries = self.index.entries();
        for (key, candidates) in &entries {
            self.datapath.set_prefix(key, candidates)?;
        }
        let wanted: BTreeSet<_> = entries.iter().map(|(key, _)| *key).collect();
        for key in self.datapath.prefix_keys()? {
            if !wanted.contains(&key) {
                self.datapath.delete_prefix(&key)?;
            }
        }
        Ok(())
    }
}

/// Removes everything of ours from a namespace no journal accounts for.
async fn sweep_namespace(home: &Netns, id: NetnsId) {
    let Some(netns) = find_netns(id, None) else {
        return;
    };
    tracing::warn!(netns = %netns.path().display(), "removing objects of ours no journal accounts for");
    let swept = match netns.enter(home) {
        Ok(inside) => {
            let nl = Netlink::here();
            drop(inside);
            match nl {
                Ok(nl) => namespace::sweep(&nl, &Default::default()).await,
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    if let Err(e) = swept {
        tracing::error!(netns = %netns.path().display(), error = %e, "cannot sweep a namespace");
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
        applied_at_unix_ms: unix_ms(fault.applied_at),
        expires_at_unix_ms: unix_ms(fault.deadline.wall),
        deadline_ns: fault.deadline.kernel_ns,
    }
}

/// A journaled fault that must not be re-adopted as live.
fn ended_now(record: &FaultRecord) -> bool {
    record.leased || record.deadline_ns <= kernel::monotonic_ns()
}

/// The netem options of a delay fault's spec.
fn delay_options(spec: &FaultSpec) -> Option<Vec<u8>> {
    match &spec.action {
        Action::Netem(netem) => Some(netem_options(netem)),
        _ => None,
    }
}

/// The engine's view of a journaled fault; None when the record no longer validates or names
/// no recorded device (its kernel state is then swept as unaccounted).
fn active_fault(
    record: &FaultRecord,
    netns: NetnsId,
    header: &NamespaceHeader,
) -> Option<ActiveFault> {
    // The limits in force now do not shorten a fault already granted.
    let limits = DurationLimits {
        default: None,
        max: std::time::Duration::MAX,
    };
    let spec = FaultSpec::from_wire(&record.fault, &limits)
        .map_err(|e| tracing::error!(fault_id = %record.id, error = %e, "journaled fault no longer validates"))
        .ok()?;
    let attachment = header
        .devices
        .iter()
        .find(|d| d.ifindex == record.ifindex)?
        .attachment;
    let device = DeviceKey {
        name: record.dev.clone(),
        ifindex: record.ifindex,
    };
    let prefixes = plan::prefix_keys(&spec, attachment);
    // What the slot holds but its deadline and flow seed, which these two do not look at.
    let value = plan::fault_value(&spec, 0);
    let hooks = hooks_of(&spec);
    Some(ActiveFault {
        id: record.id.clone(),
        key: record.key.clone(),
        // The connection that held the lease is gone; `adopt` revokes the fault.
        lease: record.leased.then_some(0),
        wire: record.fault.clone(),
        netns,
        installed: Installed {
            device,
            slot: record.slot,
            prefixes,
            delay: record.delay,
            acquired: true,
            tracks_connections: plan::tracks_connections(&value),
            counts_actions: plan::counts_actions(&value),
        },
        hooks,
        applied_at: std::time::UNIX_EPOCH
            + std::time::Duration::from_millis(record.applied_at_unix_ms),
        spec,
        deadline: Deadline::from_kernel(record.deadline_ns, record.expires_at_unix_ms),
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
