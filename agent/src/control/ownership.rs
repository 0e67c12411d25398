//! Who owns the kernel state of one state directory: a faultd, or the reaper a faultd left
//! behind. An exclusive flock on `owner.lock` decides; `owner` says who holds it, so a new
//! faultd can ask a reaper to hand over (SIGUSR2) and wait for it.

use std::{
    fs::{self, File},
    io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use thiserror::Error;

/// The reaper hands its faults over to a new faultd on this signal.
pub const HAND_OVER: Signal = Signal::SIGUSR2;
const HAND_OVER_WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Faultd,
    Reaper,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Self::Faultd => "faultd",
            Self::Reaper => "reaper",
        }
    }
}

#[derive(Debug, Error)]
pub enum OwnershipError {
    #[error("faultd (pid {pid}) already uses state directory {dir}")]
    InUse { pid: i32, dir: PathBuf },
    #[error("the reaper (pid {pid}) did not hand over {dir} within {HAND_OVER_WAIT:?}")]
    NoHandOver { pid: i32, dir: PathBuf },
    #[error("state directory {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Held while this process owns the state directory.
#[derive(Debug)]
pub struct Ownership {
    _lock: Flock<File>,
}

fn try_lock(dir: &Path) -> Result<Option<Flock<File>>, OwnershipError> {
    let io_err = |source| OwnershipError::Io {
        dir: dir.to_owned(),
        source,
    };
    fs::create_dir_all(dir).map_err(io_err)?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("owner.lock"))
        .map_err(io_err)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(io_err(errno.into())),
    }
}

fn holder(dir: &Path) -> Option<(Role, i32)> {
    let text = fs::read_to_string(dir.join("owner")).ok()?;
    let (role, pid) = text.trim().split_once(' ')?;
    let role = match role {
        "faultd" => Role::Faultd,
        "reaper" => Role::Reaper,
        _ => return None,
    };
    Some((role, pid.parse().ok()?))
}

/// Whether `pid` is a running process (a zombie, being dead, is not).
fn alive(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the parenthesised command name.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

fn claim(dir: &Path, lock: Flock<File>, role: Role) -> Result<Ownership, OwnershipError> {
    let record = format!("{} {}\n", role.name(), std::process::id());
    fs::write(dir.join("owner"), record).map_err(|source| OwnershipError::Io {
        dir: dir.to_owned(),
        source,
    })?;
    Ok(Ownership { _lock: lock })
}

/// Takes the state directory for a faultd; a reaper holding it is asked to hand over.
pub fn acquire(dir: &Path) -> Result<Ownership, OwnershipError> {
    let mut asked: Option<(i32, Instant)> = None;
    let started = Instant::now();
    loop {
        if let Some(lock) = try_lock(dir)? {
            return claim(dir, lock, Role::Faultd);
        }
        match (holder(dir), asked) {
            (Some((Role::Faultd, pid)), _) if alive(pid) => {
                return Err(OwnershipError::InUse {
                    pid,
                    dir: dir.to_owned(),
                })
            }
            (Some((Role::Reaper, pid)), None) => {
                tracing::info!(pid, "asking the reaper to hand its faults over");
                let _ = kill(Pid::from_raw(pid), HAND_OVER);
                asked = Some((pid, Instant::now()));
            }
            (_, Some((pid, since))) if since.elapsed() > HAND_OVER_WAIT => {
                return Err(OwnershipError::NoHandOver {
                    pid,
                    dir: dir.to_owned(),
                })
            }
            (None | Some((Role::Faultd, _)), None) if started.elapsed() > HAND_OVER_WAIT => {
                return Err(OwnershipError::Io {
                    dir: dir.to_owned(),
                    source: io::Error::other("owner.lock stays locked by an unknown process"),
                })
            }
            // The holder has not said who it is yet (the file names a dead faultd), or
            // is handing over.
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Takes the state directory for the reaper of faultd `parent`, unless a new faultd (or
/// reaper) already has it. The parent may not have released its lock yet: the kernel closes a
/// dying process's files one by one, so the reaper can see end-of-file on its pipe while the
/// parent, still exiting, holds the lock and looks alive.
pub fn try_acquire_for_reaper(
    dir: &Path,
    parent: i32,
) -> Result<Option<Ownership>, OwnershipError> {
    let started = Instant::now();
    loop {
        if let Some(lock) = try_lock(dir)? {
            return claim(dir, lock, Role::Reaper).map(Some);
        }
        match holder(dir) {
            Some((_, pid)) if pid != parent && alive(pid) => return Ok(None),
            _ if started.elapsed() > HAND_OVER_WAIT => return Ok(None),
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}
