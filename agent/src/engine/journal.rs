//! The journal: every active fault and every kernel object faultd holds for it, as an
//! append-only log of changes (`journal.log`), written before each change is answered so a
//! faultd (or reaper) taking over after a crash knows exactly what is live. An append is one
//! `write`, whole against a crash of faultd, and costs the same with 1 or 10,000 faults;
//! the log is compacted into a snapshot (write, rename) as it grows. There is no fsync: the
//! page cache outlives faultd, and a crash of the host takes every kernel object the journal
//! describes with it (the journal of an earlier boot is ignored), so durability would buy
//! nothing.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::delay::DelayClass;
use crate::{fault::spec::FaultWire, kernel::qdisc::RootQdisc};

const VERSION: u32 = 4;
const FILE: &str = "journal.log";

/// One namespace with a datapath: where it is, and our devices in it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceHeader {
    /// A path that opened the namespace (it may name another one, or none, by the time it is
    /// read; the identity below decides).
    pub netns_path: PathBuf,
    pub netns_dev: u64,
    pub netns_ino: u64,
    pub devices: Vec<DeviceRecord>,
}

/// A namespace and its faults, as a successor adopts them.
#[derive(Clone, Debug, PartialEq)]
pub struct NamespaceRecord {
    pub header: NamespaceHeader,
    pub faults: Vec<FaultRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRecord {
    pub name: String,
    pub ifindex: u32,
    /// The classid of our filters on it: the datapath's key for its faults.
    pub attachment: u32,
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
    pub netns_dev: u64,
    pub netns_ino: u64,
    pub dev: String,
    pub ifindex: u32,
    pub slot: u32,
    pub delay: Option<DelayClass>,
    pub applied_at_unix_ms: u64,
    pub expires_at_unix_ms: u64,
    /// CLOCK_MONOTONIC deadline, as the datapath holds it.
    pub deadline_ns: u64,
}

/// One line of the log after its header line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Entry {
    /// The namespace's record, new or replaced.
    Namespace(NamespaceHeader),
    /// The namespace holds nothing of ours any more.
    NamespaceGone {
        netns_dev: u64,
        netns_ino: u64,
    },
    /// A fault, new or replaced (renewed).
    Fault(Box<FaultRecord>),
    FaultGone {
        id: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    version: u32,
    /// Monotonic deadlines, and every kernel object, mean nothing after a reboot.
    boot_id: String,
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
    #[error("{path} line {line} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} line {line} names a namespace it never recorded")]
    Inconsistent { path: PathBuf, line: usize },
    #[error("{path} has format version {found}; this faultd reads version {VERSION}")]
    Version { path: PathBuf, found: u32 },
}

#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    boot_id: String,
    file: Option<fs::File>,
    /// Lines after the header, to decide when to compact.
    lines: usize,
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
            file: None,
            lines: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lines appended since the last snapshot.
    pub fn lines(&self) -> usize {
        self.lines
    }

    /// What the faultd before this one left in this boot: the log replayed.
    pub fn read(&self) -> Result<Vec<NamespaceRecord>, JournalError> {
        let text = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(JournalError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let corrupt = |line: usize| {
            let path = self.path.clone();
            move |source| JournalError::Corrupt { path, line, source }
        };
        let mut lines = text.split(|&b| b == b'\n').enumerate();
        let header_line = lines.next().map_or(&[][..], |(_, l)| l);
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let version: Version = serde_json::from_slice(header_line).map_err(corrupt(1))?;
        if version.version != VERSION {
            return Err(JournalError::Version {
                path: self.path.clone(),
                found: version.version,
            });
        }
        let header: Header = serde_json::from_slice(header_line).map_err(corrupt(1))?;
        if header.boot_id != self.boot_id {
            tracing::info!("the journal is from an earlier boot; nothing of it is live");
            return Ok(Vec::new());
        }
        let mut namespaces: BTreeMap<(u64, u64), NamespaceHeader> = BTreeMap::new();
        let mut faults: BTreeMap<String, FaultRecord> = BTreeMap::new();
        for (index, line) in lines {
            if line.is_empty() {
                continue;
            }
            let number = index + 1;
            match serde_json::from_slice(line).map_err(corrupt(number))? {
                Entry::Namespace(ns) => {
                    namespaces.insert((ns.netns_dev, ns.netns_ino), ns);
                }
                Entry::NamespaceGone {
                    netns_dev,
                    netns_ino,
                } => {
                    namespaces.remove(&(netns_dev, netns_ino));
                }
                Entry::Fault(fault) => {
                    if !namespaces.contains_key(&(fault.netns_dev, fault.netns_ino)) {
                        return Err(JournalError::Inconsistent {
                            path: self.path.clone(),
                            line: number,
                        });
                    }
                    faults.insert(fault.id.clone(), *fault);
                }
                Entry::FaultGone { id } => {
                    faults.remove(&id);
                }
            }
        }
        let mut grouped: HashMap<(u64, u64), Vec<FaultRecord>> = HashMap::new();
        for fault in faults.into_values() {
            grouped
                .entry((fault.netns_dev, fault.netns_ino))
                .or_default()
                .push(fault);
        }
        Ok(namespaces
            .into_iter()
            .map(|(key, header)| NamespaceRecord {
                header,
                faults: grouped.remove(&key).unwrap_or_default(),
            })
            .collect())
    }

    /// Appends entries in one write.
    pub fn append(&mut self, entries: &[Entry]) -> std::io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::new();
        for entry in entries {
            serde_json::to_writer(&mut bytes, entry).map_err(std::io::Error::other)?;
            bytes.push(b'\n');
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => self
                .file
                .insert(fs::OpenOptions::new().append(true).open(&self.path)?),
        };
        file.write_all(&bytes)?;
        self.lines += entries.len();
        Ok(())
    }

    /// Replaces the log with a snapshot of `entries`: a whole new log or, on error, the old one.
    pub fn rewrite(&mut self, entries: &[Entry]) -> std::io::Result<()> {
        let mut bytes = serde_json::to_vec(&Header {
            version: VERSION,
            boot_id: self.boot_id.clone(),
        })
        .map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        for entry in entries {
            serde_json::to_writer(&mut bytes, entry).map_err(std::io::Error::other)?;
            bytes.push(b'\n');
        }
        let tmp = self.path.with_extension("log.tmp");
        fs::File::create(&tmp)?.write_all(&bytes)?;
        fs::rename(&tmp, &self.path)?;
        self.file = None;
        self.lines = entries.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> NamespaceHeader {
        NamespaceHeader {
            netns_path: "/run/netns/x".into(),
            netns_dev: 4,
            netns_ino: 4026532000,
            devices: vec![DeviceRecord {
                name: "veth0".into(),
                ifindex: 7,
                attachment: 1,
                created_clsact: true,
                original_root: None,
                ifb: None,
            }],
        }
    }

    fn fault(id: &str) -> FaultRecord {
        let fault: FaultWire = serde_json::from_str(
            r#"{"target": {"dev": "veth0"}, "loss": {"percent": 5}, "duration": "30s"}"#,
        )
        .expect("wire");
        FaultRecord {
            id: id.into(),
            key: None,
            leased: false,
            fault,
            netns_dev: 4,
            netns_ino: 4026532000,
            dev: "veth0".into(),
            ifindex: 7,
            slot: 0,
            delay: None,
            applied_at_unix_ms: 1,
            expires_at_unix_ms: 30_001,
            deadline_ns: 123,
        }
    }

    #[test]
    fn replays_appends_over_a_snapshot_and_refuses_every_kind_of_damage() {
        let dir = std::env::temp_dir().join(format!("faultline-journal-{}", std::process::id()));
        let mut journal = Journal::open(&dir).expect("state dir");
        assert!(journal.read().expect("absent is empty").is_empty());
        journal
            .rewrite(&[
                Entry::Namespace(header()),
                Entry::Fault(Box::new(fault("a"))),
            ])
            .expect("snapshot");
        journal
            .append(&[
                Entry::Fault(Box::new(fault("b"))),
                Entry::FaultGone { id: "a".into() },
            ])
            .expect("append");
        let read = journal.read().expect("read");
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].header, header());
        assert_eq!(read[0].faults, vec![fault("b")]);
        journal
            .append(&[
                Entry::FaultGone { id: "b".into() },
                Entry::NamespaceGone {
                    netns_dev: 4,
                    netns_ino: 4026532000,
                },
            ])
            .expect("append");
        assert!(journal.read().expect("read").is_empty());

        let full = fs::read(dir.join(FILE)).expect("bytes");
        fs::write(dir.join(FILE), &full[..full.len() - 10]).expect("truncate");
        assert!(matches!(journal.read(), Err(JournalError::Corrupt { .. })));
        fs::write(dir.join(FILE), b"\x00\xffgarbage").expect("garbage");
        assert!(matches!(
            journal.read(),
            Err(JournalError::Corrupt { line: 1, .. })
        ));
        fs::write(dir.join(FILE), br#"{"version": 9, "anything": []}"#).expect("version");
        assert!(matches!(
            journal.read(),
            Err(JournalError::Version { found: 9, .. })
        ));
        let orphan = format!(
            "{{\"version\":{VERSION},\"boot_id\":\"{}\"}}\n{}\n",
            journal.boot_id,
            serde_json::to_string(&Entry::Fault(Box::new(fault("c")))).expect("json")
        );
        fs::write(dir.join(FILE), orphan).expect("orphan fault");
        assert!(matches!(
            journal.read(),
            Err(JournalError::Inconsistent { line: 2, .. })
        ));
        let other_boot = String::from_utf8(full)
            .expect("utf8")
            .replace(&journal.boot_id, "another-boot");
        fs::write(dir.join(FILE), other_boot).expect("other boot");
        assert!(journal.read().expect("other boot").is_empty());
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
