//! The attachment journal's side of the engine: what survives a faultd that was killed, and
//! how the next faultd takes it over.

use std::time::{Duration, Instant};

use super::{journal::AttachmentRecord, namespace, Engine, Orphan};
use crate::kernel::{
    self,
    netns::{Netns, NetnsId},
};

impl Engine {
    /// Journals every attached device with a deadline a little past its last fault's, so the
    /// file is rewritten (and fsynced) only when a device is attached or detached or a fault
    /// outlasts the slack, not on every apply.
    pub(super) fn sync_journal(&mut self) {
        const SLACK: Duration = Duration::from_secs(5);
        let mut wanted: Vec<AttachmentRecord> = Vec::new();
        for (netns_id, ns) in &self.namespaces {
            for (device, created_clsact) in ns.devices() {
                let last = self
                    .faults
                    .values()
                    .filter(|f| f.netns == *netns_id && f.installed.device == device)
                    .map(|f| f.deadline_ns)
                    .max()
                    .unwrap_or(0);
                let journaled = self.journaled.iter().find(|r| {
                    r.netns_ino == netns_id.ino
                        && r.netns_dev == netns_id.dev
                        && r.dev == device.name
                });
                let deadline_ns = match journaled {
                    Some(r) if r.deadline_ns >= last => r.deadline_ns,
                    _ => last + SLACK.as_nanos() as u64,
                };
                wanted.push(AttachmentRecord {
                    netns_path: ns.path().to_owned(),
                    netns_dev: netns_id.dev,
                    netns_ino: netns_id.ino,
                    dev: device.name.clone(),
                    created_clsact,
                    deadline_ns,
                });
            }
        }
        wanted.extend(self.orphans.iter().map(|o| o.record.clone()));
        wanted.sort_by(|a, b| (a.netns_ino, &a.dev).cmp(&(b.netns_ino, &b.dev)));
        if wanted != self.journaled {
            if let Err(e) = self.journal.write(&wanted) {
                tracing::error!(error = %e, "cannot write the attachment journal");
            }
            self.journaled = wanted;
        }
    }

    /// Takes over what an earlier faultd left: devices whose faults are over are cleaned now,
    /// the others when their deadline passes.
    pub(super) fn adopt_orphans(&mut self) {
        let now_ns = kernel::monotonic_ns();
        let now = Instant::now();
        self.orphans = self
            .journal
            .read()
            .into_iter()
            .map(|record| {
                let wait = Duration::from_nanos(record.deadline_ns.saturating_sub(now_ns));
                Orphan {
                    record,
                    deadline: now + wait,
                }
            })
            .collect();
        if !self.orphans.is_empty() {
            tracing::info!(
                count = self.orphans.len(),
                "found devices attached by an earlier faultd"
            );
        }
        self.remove_orphans(false);
    }

    /// Removes the filters (and clsact) of orphans whose deadline has passed, or of all
    /// orphans when `all`.
    pub(super) fn remove_orphans(&mut self, all: bool) {
        let now = Instant::now();
        let (due, keep): (Vec<Orphan>, Vec<Orphan>) = std::mem::take(&mut self.orphans)
            .into_iter()
            .partition(|o| all || o.deadline <= now);
        self.orphans = keep;
        for orphan in due {
            let r = &orphan.record;
            let Ok(netns) = Netns::open(&r.netns_path) else {
                continue;
            };
            if netns.id()
                != (NetnsId {
                    dev: r.netns_dev,
                    ino: r.netns_ino,
                })
            {
                continue; // The namespace is gone and the path now names another.
            }
            let result = netns.run(&self.home, || {
                namespace::remove_attachment(&r.dev, r.created_clsact)
            });
            match result.and_then(|r| r) {
                Ok(()) => {
                    tracing::info!(dev = %r.dev, netns = %r.netns_path.display(), "removed an earlier faultd's filters")
                }
                Err(e) => {
                    tracing::warn!(dev = %r.dev, error = %e, "cannot remove an earlier faultd's filters")
                }
            }
        }
        self.sync_journal();
    }
}
