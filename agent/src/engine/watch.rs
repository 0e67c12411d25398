//! faultd's view of its faults kept equal to the kernel's when the world changes under them.
//! Each namespace's link and tc announcements reach the engine (`forward`); so does the
//! deletion of the path a namespace was named by, or the exit of the process it was taken from
//! (`PathWatch`). When something of ours is removed by someone else and its device is still
//! there, it is put back (`repaired`); when the device or the namespace is gone, its faults
//! end as `lost`, with the reason.

use std::{
    collections::{BTreeSet, HashMap},
    os::fd::{FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use netlink_packet_route::{link::LinkMessage, tc::TcMessage, RouteNetlinkMessage};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::{
    io::{unix::AsyncFd, Interest},
    sync::mpsc,
};

use super::{namespace::DeviceKey, Engine};
use crate::{
    kernel::{
        netns::{Netns, NetnsId},
        rtnl::Notifications,
    },
    proto::{EventKind, FaultState},
};

/// What the engine hears from the kernel between commands.
#[derive(Debug)]
pub enum KernelEvent {
    /// A link or tc announcement in a namespace; `None` when its socket failed, and what it
    /// missed must be found by looking.
    Announced(NetnsId, Option<RouteNetlinkMessage>),
    /// A namespace's path was deleted, or the process it was taken from exited.
    PathGone(PathBuf),
}

/// Passes one namespace's announcements on to the engine, until the engine stops listening.
pub async fn forward(
    netns: NetnsId,
    mut notifications: Notifications,
    events: mpsc::UnboundedSender<KernelEvent>,
) {
    loop {
        let message = notifications.next().await;
        let failed = message.is_none();
        if events.send(KernelEvent::Announced(netns, message)).is_err() || failed {
            return;
        }
    }
}

/// Watches the paths namespaces were opened by: the directory entry (e.g. /run/netns/NAME,
/// which `ip netns del` removes) or, for /proc/PID/ns/net, the process.
#[derive(Debug)]
pub struct PathWatch {
    inotify: Option<Arc<Inotify>>,
    directories: Arc<Mutex<HashMap<WatchDescriptor, PathBuf>>>,
    watched: BTreeSet<PathBuf>,
    events: mpsc::UnboundedSender<KernelEvent>,
}

impl PathWatch {
    pub fn new(events: mpsc::UnboundedSender<KernelEvent>) -> PathWatch {
        let directories = Arc::new(Mutex::new(HashMap::new()));
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| tracing::warn!(error = %e, "no inotify: deleted namespaces are noticed when used"))
            .ok()
            .map(Arc::new);
        if let Some(inotify) = &inotify {
            tokio::spawn(read_inotify(
                inotify.clone(),
                directories.clone(),
                events.clone(),
            ));
        }
        PathWatch {
            inotify,
            directories,
            watched: BTreeSet::new(),
            events,
        }
    }

    /// Starts watching `path`, by which a namespace was opened. faultd's own namespace
    /// (`/proc/self/ns/net`) is never gone.
    pub fn watch(&mut self, path: &Path) {
        if path == Path::new("/proc/self/ns/net") || !self.watched.insert(path.to_owned()) {
            return;
        }
        if let Some(pid) = process_of(path) {
            self.watch_process(pid, path);
            return;
        }
        let (Some(dir), Some(inotify)) = (path.parent(), &self.inotify) else {
            return;
        };
        let flags = AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM;
        match inotify.add_watch(dir, flags) {
            Ok(wd) => {
                let mut directories = self.directories.lock().unwrap_or_else(|e| e.into_inner());
                directories.insert(wd, dir.to_owned());
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch for deleted namespaces")
            }
        }
    }

    /// A process's exit, through a pidfd.
    fn watch_process(&self, pid: i32, path: &Path) {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let Ok(fd) = i32::try_from(fd) else { return };
        if fd < 0 {
            // Already gone: the next look at the namespace tells.
            let _ = self.events.send(KernelEvent::PathGone(path.to_owned()));
            return;
        }
        // SAFETY: a descriptor pidfd_open just returned, owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let (events, path) = (self.events.clone(), path.to_owned());
        tokio::spawn(async move {
            // SAFETY: the AsyncFd owns the descriptor, which stays open as long as it does.
            let registered = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) };
            if let Ok(fd) = registered {
                // A pidfd becomes readable when its process exits.
                let _ = fd.readable().await;
            }
            let _ = events.send(KernelEvent::PathGone(path));
        });
    }
}

/// The pid of a /proc/PID/ns/net path.
fn process_of(path: &Path) -> Option<i32> {
    let rest = path.strip_prefix("/proc").ok()?;
    let mut parts = rest.components();
    let pid = parts.next()?.as_os_str().to_str()?.parse().ok()?;
    (parts.as_path() == Path::new("ns/net")).then_some(pid)
}

async fn read_inotify(
    inotify: Arc<Inotify>,
    directories: Arc<Mutex<HashMap<WatchDescriptor, PathBuf>>>,
    events: mpsc::UnboundedSender<KernelEvent>,
) {
    // SAFETY: the AsyncFd holds a reference to the Inotify, whose descriptor stays open (and
    // the same) for as long as one exists.
    let registered =
        unsafe { AsyncFd::register_with_interest(InotifyFd(inotify.clone()), Interest::READABLE) };
    let Ok(readable) = registered else {
        return;
    };
    loop {
        let Ok(mut guard) = readable.readable().await else {
            return;
        };
        match inotify.read_events() {
            Ok(read) => {
                for event in read {
                    let dir = directories
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&event.wd)
                        .cloned();
                    if let (Some(dir), Some(name)) = (dir, event.name) {
                        if events.send(KernelEvent::PathGone(dir.join(name))).is_err() {
                            return;
                        }
                    }
                }
            }
            Err(nix::Error::EAGAIN) => guard.clear_ready(),
            Err(_) => return,
        }
    }
}

/// The inotify descriptor, for tokio to poll.
struct InotifyFd(Arc<Inotify>);

impl std::os::fd::AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> i32 {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

/// What to do about a device after an announcement.
enum Verdict {
    /// Something of ours on it (or its ifb) may have been removed: look and put it back.
    Look,
    /// It is gone: its faults are lost.
    Gone,
}

impl Engine {
    /// Acts on what the kernel announced: devices gone lose their faults at once; devices
    /// that may have lost something of ours are looked at once the announcements queued so
    /// far are read (`repair_looked_at`).
    pub(super) async fn heard(
        &mut self,
        event: KernelEvent,
        look_at: &mut BTreeSet<(NetnsId, DeviceKey)>,
    ) {
        match event {
            KernelEvent::Announced(netns, None) => {
                // The socket failed (its buffer overflowed, say): listen again, look at all.
                let (home, events) = (&self.home, self.kernel_events.clone());
                if let Some(namespace) = self.namespaces.get_mut(&netns) {
                    if let Err(e) = namespace.relisten(home, events) {
                        tracing::error!(error = %e, "cannot listen to a namespace's announcements");
                    }
                    look_at.extend(namespace.devices().map(|(key, _)| (netns, key.clone())));
                }
            }
            KernelEvent::Announced(netns, Some(message)) => {
                let Some(namespace) = self.namespaces.get(&netns) else {
                    return;
                };
                let Some((device, verdict)) =
                    affected(&message, |ifindex| namespace.device_of(ifindex))
                else {
                    return;
                };
                match verdict {
                    Verdict::Look => {
                        look_at.insert((netns, device));
                    }
                    Verdict::Gone => {
                        let reason = format!("its device {} was deleted", device.name);
                        self.lose_device(netns, &device, &reason).await;
                    }
                }
            }
            KernelEvent::PathGone(path) => {
                let gone: Vec<NetnsId> = self
                    .namespaces
                    .values()
                    .filter(|ns| ns.path() == path)
                    .filter(|ns| Netns::identify(&path).ok() != Some(ns.id()))
                    .map(|ns| ns.id())
                    .collect();
                for netns in gone {
                    let reason = format!("its network namespace {} was deleted", path.display());
                    self.lose_namespace(netns, &reason).await;
                }
            }
        }
    }

    /// Puts back what is missing on each device in `look_at`, and tells the faults there.
    pub(super) async fn repair_looked_at(&mut self, look_at: BTreeSet<(NetnsId, DeviceKey)>) {
        for (netns, device) in look_at {
            let Some(namespace) = self.namespaces.get_mut(&netns) else {
                continue;
            };
            if namespace.device(&device).is_none() {
                continue;
            }
            let put_back = match namespace.repair(&self.datapath, &device).await {
                Ok(put_back) => put_back,
                Err(e) => {
                    tracing::error!(dev = %device.name, error = %e, "cannot put back what was removed");
                    continue;
                }
            };
            if put_back.is_empty() {
                continue;
            }
            self.repairs += 1;
            let message = format!("removed by someone else, put back: {}", put_back.join(", "));
            tracing::warn!(dev = %device.name, netns = %namespace.path().display(), what = %message, "repaired");
            let ids: Vec<String> = self
                .faults
                .values()
                .filter(|f| f.netns == netns && f.installed.device == device)
                .map(|f| f.id.clone())
                .collect();
            for id in ids {
                if let Some(fault) = self.faults.get(&id) {
                    let view = self.view(fault, FaultState::Active);
                    self.emit(EventKind::Repaired, &view, Some(message.clone()));
                }
            }
        }
    }

    /// Ends every fault on a device that is gone, as `lost`.
    async fn lose_device(&mut self, netns: NetnsId, device: &DeviceKey, reason: &str) {
        let ids: Vec<String> = self
            .faults
            .values()
            .filter(|f| f.netns == netns && &f.installed.device == device)
            .map(|f| f.id.clone())
            .collect();
        tracing::warn!(dev = %device.name, faults = ids.len(), reason, "faults lost");
        for id in ids {
            self.remove_fault(&id, FaultState::Lost, Some(reason)).await;
        }
        if let Some(namespace) = self.namespaces.get_mut(&netns) {
            for e in namespace.forget_device(device).await {
                tracing::warn!(dev = %device.name, error = %e, "cleaning up after a deleted device");
            }
        }
        self.drop_namespace_if_idle(netns);
    }

    /// Ends every fault in a namespace that is gone, as `lost`: what of ours is still in it
    /// (the namespace lives on while faultd holds it) is removed first, then faultd lets go.
    async fn lose_namespace(&mut self, netns: NetnsId, reason: &str) {
        tracing::warn!(netns = ?netns, reason, "faults lost");
        self.remove_namespace(netns, FaultState::Lost, Some(reason))
            .await;
    }
}

/// The device of ours `message` concerns, and what it calls for; `None` when it concerns
/// nothing of ours. `ours` finds the device whose ifindex (or whose ifb's) is given.
fn affected<'a>(
    message: &RouteNetlinkMessage,
    ours: impl Fn(u32) -> Option<&'a DeviceKey>,
) -> Option<(DeviceKey, Verdict)> {
    let tc = |m: &TcMessage| ours(m.header.index as u32).cloned();
    let link = |m: &LinkMessage| ours(m.header.index).cloned();
    match message {
        RouteNetlinkMessage::DelLink(m) => {
            let device = link(m)?;
            // Our ifb going is a repair; the device itself going is the end of its faults.
            let verdict = if device.ifindex == m.header.index {
                Verdict::Gone
            } else {
                Verdict::Look
            };
            Some((device, verdict))
        }
        RouteNetlinkMessage::DelQueueDiscipline(m)
        | RouteNetlinkMessage::DelTrafficClass(m)
        | RouteNetlinkMessage::DelTrafficFilter(m) => Some((tc(m)?, Verdict::Look)),
        // A qdisc replaced at the root announces the new one only.
        RouteNetlinkMessage::NewQueueDiscipline(m) if u32::from(m.header.parent) == u32::MAX => {
            Some((tc(m)?, Verdict::Look))
        }
        _ => None,
    }
}
