//! The journal: every active fault and every kernel object faultd holds for it, rewritten
//! atomically (write, rename) after each change, before the change is answered, so a faultd
//! (or reaper) taking over after a crash knows exactly what is live. The rename makes each
//! version whole against a crash of faultd; an fsync, done off the request path by a
//! flusher thread, makes it durable against a crash of the host.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    sync::mpsc,
};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::delay::DelayClass;
use crate::{fault::spec::FaultWire, kernel::qdisc::RootQdisc};

const VERSION: u32 = 2;
const FILE: &str = "journal.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceRecord {
    /// A path that opened the namespace (it may name another one, or none, by the time it is
    /// read; the identity below decides).
    pub netns_path: PathBuf,
    pub netns_dev: u64,
    pub netns_ino: u64,
    pub devices: Vec<DeviceRecord>,
    pub faults: Vec<FaultRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRecord {
    pub name: String,
    pub ifindex: u32,
    /// Whether we added the device's clsact qdisc, and so remove it.
    pub created_clsact: bool,
    /// The root qdisc our htb replaced, while it is the root.
    pub original_root: Option<RootQdisc>,
    /// Our ifb for the device's ingress delay faults.
    pub ifb: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRecord {
    pub id: String,
    pub key: Option<String>,
    /// Held by a connection: revoked on adoption, since that connection died with its faultd.
    pub leased: bool,
    pub fault: FaultWire,
    pub dev: String,
    pub ifindex: u32,
    pub slot: u32,
    pub delay: Option<DelayClass>,
    pub applied_at_unix_ms: u64,
    pub expires_at_unix_ms: u64,
    /// CLOCK_MONOTONIC deadline, as the datapath holds it.
    pub deadline_ns: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalFile {
    version: u32,
    /// Monotonic deadlines, and every kernel object, mean nothing after a reboot.
    boot_id: String,
    namespaces: Vec<NamespaceRecord>,
}

/// A journal that exists but cannot be trusted.
#[derive(Debug, Error)]
pub enum JournalError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} has format version {found}; this faultd reads version {VERSION}")]
    Version { path: PathBuf, found: u32 },
}

#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    boot_id: String,
    flusher: mpsc::Sender<()>,
}

impl Journal {
    pub fn open(state_dir: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(state_dir)?;
        let boot_id = fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let path = state_dir.join(FILE);
        let (flusher, requests) = mpsc::channel();
        let target = path.clone();
        std::thread::Builder::new()
            .name("faultline-journal".into())
            .spawn(move || flush_loop(&target, &requests))?;
        Ok(Self {
            path,
            boot_id,
            flusher,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the faultd before this one left in this boot.
    pub fn read(&self) -> Result<Vec<NamespaceRecord>, JournalError> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(JournalError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let corrupt = |source| JournalError::Corrupt {
            path: self.path.clone(),
            source,
        };
        let version: Version = serde_json::from_slice(&bytes).map_err(corrupt)?;
        if version.version != VERSION {
            return Err(JournalError::Version {
                path: self.path.clone(),
                found: version.version,
            });
        }
        let file: JournalFile = serde_json::from_slice(&bytes).map_err(corrupt)?;
        if file.boot_id != self.boot_id {
            tracing::info!("the journal is from an earlier boot; nothing of it is live");
            return Ok(Vec::new());
        }
        Ok(file.namespaces)
    }

    /// Replaces the journal: a whole new version or, on error, the old one.
    pub fn write(&self, namespaces: &[NamespaceRecord]) -> std::io::Result<()> {
        #[derive(Serialize)]
        struct Out<'a> {
            version: u32,
            boot_id: &'a str,
            namespaces: &'a [NamespaceRecord],
        }
        let bytes = serde_json::to_vec(&Out {
            version: VERSION,
            boot_id: &self.boot_id,
            namespaces,
        })
        .map_err(std::io::Error::other)?;
        let tmp = self.path.with_extension("json.tmp");
        fs::File::create(&tmp)?.write_all(&bytes)?;
        fs::rename(&tmp, &self.path)?;
        let _ = self.flusher.send(());
        Ok(())
    }
}

/// Fsyncs the journal and its directory after writes, once per burst of them.
fn flush_loop(path: &Path, requests: &mpsc::Receiver<()>) {
    while requests.recv().is_ok() {
        while requests.try_recv().is_ok() {}
        let synced = fs::File::open(path)
            .and_then(|f| f.sync_all())
            .and_then(|()| match path.parent() {
                Some(dir) => fs::File::open(dir).and_then(|d| d.sync_all()),
                None => Ok(()),
            });
        if let Err(e) = synced {
            tracing::warn!(path = %path.display(), error = %e, "cannot fsync the journal");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> NamespaceRecord {
        let fault: FaultWire = serde_json::from_str(
            r#"{"target": {"dev": "veth0"}, "loss": {"percent": 5}, "duration": "30s"}"#,
        )
        .expect("wire");
        NamespaceRecord {
            netns_path: "/run/netns/x".into(),
            netns_dev: 4,
            netns_ino: 4026532000,
            devices: vec![DeviceRecord {
                name: "veth0".into(),
                ifindex: 7,
                created_clsact: true,
                original_root: None,
                ifb: None,
            }],
            faults: vec![FaultRecord {
                id: "f0000abcd".into(),
                key: None,
                leased: false,
                fault,
                dev: "veth0".into(),
                ifindex: 7,
                slot: 0,
                delay: None,
                applied_at_unix_ms: 1,
                expires_at_unix_ms: 30_001,
                deadline_ns: 123,
            }],
        }
    }

    #[test]
    fn round_trip_and_every_kind_of_damage() {
        let dir = std::env::temp_dir().join(format!("faultline-journal-{}", std::process::id()));
        let journal = Journal::open(&dir).expect("state dir");
        assert!(journal.read().expect("absent is empty").is_empty());
        journal.write(&[record()]).expect("write");
        assert_eq!(journal.read().expect("read"), vec![record()]);

        let full = fs::read(dir.join(FILE)).expect("bytes");
        fs::write(dir.join(FILE), &full[..full.len() / 2]).expect("truncate");
        assert!(matches!(journal.read(), Err(JournalError::Corrupt { .. })));
        fs::write(dir.join(FILE), b"\x00\xffgarbage").expect("garbage");
        assert!(matches!(journal.read(), Err(JournalError::Corrupt { .. })));
        fs::write(dir.join(FILE), br#"{"version": 9, "anything": []}"#).expect("version");
        assert!(matches!(
            journal.read(),
            Err(JournalError::Version { found: 9, .. })
        ));
        let other_boot = String::from_utf8(full)
            .expect("utf8")
            .replace(&journal.boot_id, "another-boot");
        fs::write(dir.join(FILE), other_boot).expect("other boot");
        assert!(journal.read().expect("other boot").is_empty());
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
