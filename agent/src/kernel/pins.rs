//! Pinned maps in bpffs: what lets a restarted faultd (or its reaper) take over the faults of
//! the one before it, counters included. Each namespace with a datapath has one directory,
//! named by the namespace's identity, under faultd's pin root.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use nix::{
    mount::{mount, MsFlags},
    sys::statfs::statfs,
};

use super::{netns::NetnsId, KernelError};

/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Mounts bpffs on the standard mount point when the pin root lies under it and nothing is
/// mounted there yet (it is not mounted by default on many hosts).
pub fn ensure_bpffs(pin_root: &Path) -> Result<(), KernelError> {
    let mount_point = Path::new("/sys/fs/bpf");
    let is_bpffs = |path: &Path| statfs(path).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC);
    if !pin_root.starts_with(mount_point) || is_bpffs(mount_point) {
        return Ok(());
    }
    mount(
        Some("bpf"),
        mount_point,
        Some("bpf"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0700"),
    )
    .map_err(|errno| KernelError::Syscall {
        call: "mount bpffs on /sys/fs/bpf",
        source: errno.into(),
    })?;
    tracing::info!("mounted bpffs on /sys/fs/bpf");
    Ok(())
}

/// The pin directory of namespace `id`.
pub fn namespace_dir(pin_root: &Path, id: NetnsId) -> PathBuf {
    pin_root.join(format!("netns-{}-{}", id.dev, id.ino))
}

/// Every namespace that has a pin directory under `pin_root`.
pub fn pinned_namespaces(pin_root: &Path) -> Vec<NetnsId> {
    let Ok(entries) = fs::read_dir(pin_root) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let (dev, ino) = name.strip_prefix("netns-")?.split_once('-')?;
            Some(NetnsId {
                dev: dev.parse().ok()?,
                ino: ino.parse().ok()?,
            })
        })
        .collect()
}

/// Unpins everything in `dir` and removes it (a map lives on while a program uses it).
pub fn remove_dir(dir: &Path) -> io::Result<()> {
    match fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                fs::remove_file(entry?.path())?;
            }
            fs::remove_dir(dir)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes the pin root itself once no namespace directory is left in it.
pub fn remove_root_if_empty(pin_root: &Path) {
    if fs::read_dir(pin_root).is_ok_and(|mut entries| entries.next().is_none()) {
        let _ = fs::remove_dir(pin_root);
    }
}
