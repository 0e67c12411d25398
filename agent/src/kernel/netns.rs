//! Network namespaces: open one by reference, and run kernel calls inside it on the current
//! thread. Only the engine's thread enters namespaces, so no other code ever runs in a
//! namespace it did not ask for.

use std::{
    fs::File,
    os::fd::AsFd,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use nix::sched::{setns, CloneFlags};

use super::KernelError;

/// The identity of a namespace: the nsfs inode (and device) behind any path to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetnsId {
    pub dev: u64,
    pub ino: u64,
}

/// An open namespace; holding it keeps the namespace alive.
#[derive(Debug)]
pub struct Netns {
    file: File,
    id: NetnsId,
    path: PathBuf,
}

impl Netns {
    pub fn open(path: &Path) -> Result<Self, KernelError> {
        let file = File::open(path).map_err(|source| KernelError::NetnsNotFound {
            path: path.to_owned(),
            source,
        })?;
        let meta = file
            .metadata()
            .map_err(|source| KernelError::NetnsNotFound {
                path: path.to_owned(),
                source,
            })?;
        // Anything on nsfs is a namespace; a plain file is not.
        if !is_net_namespace(&file) {
            return Err(KernelError::NetnsNotFound {
                path: path.to_owned(),
                source: std::io::Error::other("not a network namespace"),
            });
        }
        Ok(Self {
            file,
            id: NetnsId {
                dev: meta.dev(),
                ino: meta.ino(),
            },
            path: path.to_owned(),
        })
    }

    /// The identity of the namespace at `path`, without opening it: enough to find one
    /// already open (a path naming no namespace gets an identity no namespace has).
    pub fn identify(path: &Path) -> Result<NetnsId, KernelError> {
        let meta = std::fs::metadata(path).map_err(|source| KernelError::NetnsNotFound {
            path: path.to_owned(),
            source,
        })?;
        Ok(NetnsId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// The namespace the calling thread is in now.
    pub fn current() -> Result<Self, KernelError> {
        Self::open(Path::new("/proc/thread-self/ns/net"))
    }

    pub fn id(&self) -> NetnsId {
        self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the calling thread inside this namespace, then returns to `home`.
    pub fn run<T>(&self, home: &Netns, f: impl FnOnce() -> T) -> Result<T, KernelError> {
        let _inside = self.enter(home)?;
        Ok(f())
    }

    /// Moves the calling thread into this namespace until the guard drops.
    pub fn enter<'h>(&self, home: &'h Netns) -> Result<NetnsGuard<'h>, KernelError> {
        if self.id == home.id {
            return Ok(NetnsGuard { home: None });
        }
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| KernelError::Syscall {
            call: "setns",
            source: e.into(),
        })?;
        Ok(NetnsGuard { home: Some(home) })
    }
}

/// Returns the thread to faultd's own namespace on drop.
#[derive(Debug)]
pub struct NetnsGuard<'h> {
    home: Option<&'h Netns>,
}

impl Drop for NetnsGuard<'_> {
    fn drop(&mut self) {
        if let Some(home) = self.home {
            // Failing to return would leave every later call in the wrong namespace.
            if let Err(e) = setns(home.file.as_fd(), CloneFlags::CLONE_NEWNET) {
                tracing::error!(error = %e, "cannot return to faultd's network namespace; aborting");
                std::process::abort();
            }
        }
    }
}

fn is_net_namespace(file: &File) -> bool {
    // NS_GET_NSTYPE = _IO(0xb7, 0x3) answers CLONE_NEWNET for a network namespace.
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    use std::os::fd::AsRawFd;
    // SAFETY: an ioctl without arguments on a descriptor we own.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
    kind == libc::CLONE_NEWNET
}
