//! The attachment journal: which devices carry our filters, and until when a fault on them may
//! still be live. A faultd that was killed leaves its filters in place (the faults keep their
//! effect until their kernel deadlines); the next faultd reads this file and removes those
//! filters once their deadline has passed.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

const VERSION: u32 = 1;
const FILE: &str = "attachments.json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    /// A path that opened the namespace (may be gone by the time it is read).
    pub netns_path: PathBuf,
    pub netns_dev: u64,
    pub netns_ino: u64,
    pub dev: String,
    /// Whether we added the device's clsact qdisc, and so should remove it.
    pub created_clsact: bool,
    /// CLOCK_MONOTONIC ns after which no fault on this device can be live.
    pub deadline_ns: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct JournalFile {
    version: u32,
    /// Monotonic deadlines mean nothing after a reboot (and nothing survives one).
    boot_id: String,
    attachments: Vec<AttachmentRecord>,
}

#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    boot_id: String,
}

impl Journal {
    pub fn open(state_dir: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(state_dir)?;
        let boot_id = fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        Ok(Self {
            path: state_dir.join(FILE),
            boot_id,
        })
    }

    /// What an earlier faultd of this boot left; a journal that cannot be read is reported and
    /// treated as empty.
    pub fn read(&self) -> Vec<AttachmentRecord> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot read the attachment journal");
                return Vec::new();
            }
        };
        match serde_json::from_str::<JournalFile>(&text) {
            Ok(file) if file.version == VERSION && file.boot_id == self.boot_id => file.attachments,
            Ok(file) if file.version != VERSION => {
                tracing::error!(
                    version = file.version,
                    "attachment journal has an unknown version; ignoring it"
                );
                Vec::new()
            }
            Ok(_) => Vec::new(),
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "attachment journal is corrupt; ignoring it");
                Vec::new()
            }
        }
    }

    /// Replaces the journal atomically (write, fsync, rename).
    pub fn write(&self, attachments: &[AttachmentRecord]) -> std::io::Result<()> {
        let file = JournalFile {
            version: VERSION,
            boot_id: self.boot_id.clone(),
            attachments: attachments.to_vec(),
        };
        let tmp = self.path.with_extension("json.tmp");
        let mut out = fs::File::create(&tmp)?;
        out.write_all(&serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?)?;
        out.sync_all()?;
        fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = std::env::temp_dir().join(format!("faultline-journal-{}", std::process::id()));
        let journal = Journal::open(&dir).expect("state dir");
        assert!(journal.read().is_empty());
        let record = AttachmentRecord {
            netns_path: "/run/netns/x".into(),
            netns_dev: 4,
            netns_ino: 4026532000,
            dev: "veth0".into(),
            created_clsact: true,
            deadline_ns: 123,
        };
        journal.write(std::slice::from_ref(&record)).expect("write");
        assert_eq!(journal.read(), vec![record]);
        fs::write(dir.join(FILE), b"{\"version\": 1, \"boot").expect("truncate");
        assert!(journal.read().is_empty());
        fs::write(
            dir.join(FILE),
            b"{\"version\": 9, \"boot_id\": \"\", \"attachments\": []}",
        )
        .expect("version");
        assert!(journal.read().is_empty());
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
