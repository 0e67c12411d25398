//! faultd's pins in bpffs: the datapath's maps, which a restarted faultd (or its reaper) takes
//! over with the faults in them, counters included; and an empty marker directory for each
//! namespace that has faults, so that a faultd whose journal cannot be trusted still knows
//! where to sweep.

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
const MARKER_PREFIX: &str = "netns-";

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

fn marker(pin_root: &Path, id: NetnsId) -> PathBuf {
    pin_root.join(format!("{MARKER_PREFIX}{}-{}", id.dev, id.ino))
}

/// Marks namespace `id` as holding objects of ours.
pub fn add_marker(pin_root: &Path, id: NetnsId) -> Result<(), KernelError> {
    fs::create_dir_all(marker(pin_root, id)).map_err(|source| KernelError::Syscall {
        call: "create a namespace marker",
        source,
    })
}

pub fn remove_marker(pin_root: &Path, id: NetnsId) {
    let path = marker(pin_root, id);
    if let Err(e) = fs::remove_dir(&path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(dir = %path.display(), error = %e, "cannot remove a namespace marker");
        }
    }
}

/// Every namespace marked under `pin_root`.
pub fn marked_namespaces(pin_root: &Path) -> Vec<NetnsId> {
    let Ok(entries) = fs::read_dir(pin_root) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let (dev, ino) = name.strip_prefix(MARKER_PREFIX)?.split_once('-')?;
            Some(NetnsId {
                dev: dev.parse().ok()?,
                ino: ino.parse().ok()?,
            })
        })
        .collect()
}

/// Unpins everything under `pin_root` and removes it: the maps live on while a program (a
/// filter) uses them.
pub fn remove_all(pin_root: &Path) {
    let Ok(entries) = fs::read_dir(pin_root) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let removed = if path.is_dir() {
            fs::remove_dir(&path)
        } else {
            fs::remove_file(&path)
        };
        if let Err(e) = removed {
            tracing::warn!(pin = %path.display(), error = %e, "cannot unpin");
        }
    }
    let _ = fs::remove_dir(pin_root);
}
