//! The policy file (`/etc/faultline/faultd.toml`, `faultd --config FILE`, docs/policy.md): what
//! faults an operator allows on this host, when, and for whom. This module parses and validates
//! it into typed values and answers questions about a fault or a peer. Pure: it reads the file
//! in `load` and nothing else; it never touches the kernel, and enforcing its answers (refusing a
//! request, installing the protected pass-list) is the caller's job.
//!
//! Here: the policy's types and its answers. `parse`: the file as written and its validation.
//! `glob` and `namespace`: the patterns of `[targets]`. `window`: weekly windows and the
//! calendar arithmetic they need.

mod glob;
mod namespace;
mod parse;
#[cfg(test)]
mod tests;
mod window;

use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use thiserror::Error;

pub use self::glob::Glob;
use self::{
    namespace::{NamespacePattern, HOST},
    parse::parse_text,
    window::{clock, offset_text, unix_seconds, Window},
};
use crate::{
    fault::{
        corrupt::Checksum,
        netem::NetemLoss,
        spec::{Action, FaultSpec, NetnsRef},
        values::{format_duration, Cidr, Percent, PortRange, Proto},
    },
    proto::{
        PolicyAccess, PolicyLimits, PolicySummary, PolicyTargets, ProtectedEntry, WindowEntry,
    },
};

/// Where faultd looks for its policy when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/faultline/faultd.toml";

/// What `parse` calls the text in error messages; `load` uses the file's path instead.
const TEXT_ORIGIN: &str = "policy";

/// Why a policy cannot be used. faultd refuses to start on any of these: running with less
/// protection than the operator wrote down is worse than not running.
#[derive(Debug, Error)]
pub enum PolicyError {
    #[error("cannot read policy file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The text is not TOML.
    #[error("{origin}: line {line}: {message}")]
    Syntax {
        origin: String,
        line: usize,
        message: String,
    },
    /// A key is unknown, of the wrong type, or has a value out of range.
    #[error("{origin}: {key}: {message}{}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Invalid {
        origin: String,
        /// Dotted path of the key, e.g. `limits.max_duration` or `protected[2].cidr`.
        key: String,
        line: Option<usize>,
        message: String,
    },
}

/// Why a fault is refused; `rule` is the stable dotted name of the policy key that forbids it.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{rule}: {message}")]
pub struct Violation {
    pub rule: String,
    pub message: String,
}

impl Violation {
    fn new(rule: &str, message: String) -> Self {
        Self {
            rule: rule.to_owned(),
            message,
        }
    }
}

/// What a peer of the control socket may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Full,
    /// The requests that change nothing only: hello, list, get, watch.
    ReadOnly,
    Denied,
}

/// Traffic no fault may touch; the datapath lets it pass before any fault matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtectedTarget {
    /// Either address of the packet, this host's or the peer's.
    pub cidr: Cidr,
    /// `None`: every protocol.
    pub proto: Option<Proto>,
    /// This host's port or the peer's (either side); `None`: every port.
    pub ports: Option<PortRange>,
}

/// The validated policy. `Default` is "no restrictions beyond faultd's flags", what an absent
/// file means.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    file: Option<PathBuf>,
    default_duration: Option<Duration>,
    max_duration: Option<Duration>,
    max_faults: Option<usize>,
    max_loss: Option<Percent>,
    devices: Option<Vec<Glob>>,
    namespaces: Option<Vec<NamespacePattern>>,
    protected: Vec<ProtectedTarget>,
    windows: Vec<Window>,
    access: Option<AccessRules>,
}

impl Policy {
    /// Reads and validates a policy file; a missing file is an error (see `load_or_default`).
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut policy = parse_text(&text, &path.display().to_string())?;
        policy.file = Some(path.to_owned());
        Ok(policy)
    }

    /// Like `load`, but a file that does not exist is the default policy: for the default path,
    /// which most hosts never create. A path the operator named should go through `load`.
    pub fn load_or_default(path: &Path) -> Result<Self, PolicyError> {
        match Self::load(path) {
            Err(PolicyError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(Self::default())
            }
            other => other,
        }
    }

    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        parse_text(text, TEXT_ORIGIN)
    }

    /// The file this policy was loaded from, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Most faults active at once; the caller takes the smaller of this and its flag.
    pub fn max_faults(&self) -> Option<usize> {
        self.max_faults
    }

    /// (default, max) fault durations; the caller takes the stricter of these and its flags.
    pub fn durations(&self) -> (Option<Duration>, Option<Duration>) {
        (self.default_duration, self.max_duration)
    }

    pub fn protected(&self) -> &[ProtectedTarget] {
        &self.protected
    }

    /// Whether a fault may last `duration` (from now): at apply, and at each renew.
    pub fn check_duration(&self, duration: Duration) -> Result<(), Violation> {
        match self.max_duration {
            Some(max) if duration > max => Err(Violation::new(
                "limits.max_duration",
                format!(
                    "{} exceeds the maximum of {}",
                    format_duration(duration),
                    format_duration(max)
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Whether `spec` may be applied at `now`. Checks the target, the loss maximum, the duration
    /// maximum and the time windows, in that order, and reports the first rule broken.
    pub fn check_fault(&self, spec: &FaultSpec, now: SystemTime) -> Result<(), Violation> {
        let target = &spec.target;
        if let Some(devices) = &self.devices {
            let dev = target.dev.as_str();
            if !devices.iter().any(|g| g.matches(dev)) {
                return Err(Violation::new(
                    "targets.devices",
                    format!("device {dev:?} is not one of {}", list(devices)),
                ));
            }
        }
        if let Some(patterns) = &self.namespaces {
            if !patterns.iter().any(|p| p.matches(target.netns.as_ref())) {
                let name = target
                    .netns
                    .as_ref()
                    .map_or_else(|| HOST.to_owned(), NetnsRef::to_wire);
                return Err(Violation::new(
                    "targets.namespaces",
                    format!("namespace {name:?} is not one of {}", list(patterns)),
                ));
            }
        }
        if let (Some(max), Some((worst, what))) = (self.max_loss, worst_loss(&spec.action)) {
            if worst > max.value() {
                return Err(Violation::new(
                    "limits.max_loss_percent",
                    format!("{what} of {worst}% exceeds the maximum of {}%", max.value()),
                ));
            }
        }
        self.check_duration(spec.duration)?;
        if !self.windows.is_empty() {
            let secs = unix_seconds(now);
            if !self.windows.iter().any(|w| w.contains(secs)) {
                return Err(Violation::new(
                    "windows",
                    format!(
                        "faults are allowed only {}; it is now {}",
                        list(&self.windows),
                        self.windows[0].local_now(secs)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// What a peer with this uid and these groups (primary and supplementary) may do. Without an
    /// `[access]` table the socket's file mode is the only gate, as before policies existed.
    pub fn access(&self, uid: u32, gids: &[u32]) -> Access {
        let Some(rules) = &self.access else {
            return Access::Full;
        };
        let any_gid = |list: &[u32]| gids.iter().any(|g| list.contains(g));
        if uid == 0 || rules.uids.contains(&uid) || any_gid(&rules.gids) {
            Access::Full
        } else if rules.read_only_uids.contains(&uid) || any_gid(&rules.read_only_gids) {
            Access::ReadOnly
        } else {
            Access::Denied
        }
    }

    /// The policy in force, for `faultctl status`: null means "not restricted by the policy".
    pub fn summary(&self) -> PolicySummary {
        PolicySummary {
            access: self.access.as_ref().map(|a| PolicyAccess {
                gids: a.gids.clone(),
                read_only_gids: a.read_only_gids.clone(),
                read_only_uids: a.read_only_uids.clone(),
                uids: a.uids.clone(),
            }),
            file: self.file.as_ref().map(|p| p.display().to_string()),
            limits: PolicyLimits {
                default_duration: self.default_duration.map(format_duration),
                max_duration: self.max_duration.map(format_duration),
                max_faults: self.max_faults,
                max_loss_percent: self.max_loss.map(Percent::value),
            },
            protected: self
                .protected
                .iter()
                .map(|p| ProtectedEntry {
                    cidr: p.cidr.to_string(),
                    ports: p.ports.map(|r| r.to_string()),
                    proto: p.proto.map(|proto| proto.name().to_owned()),
                })
                .collect(),
            targets: PolicyTargets {
                devices: self
                    .devices
                    .as_ref()
                    .map(|v| v.iter().map(|g| g.as_str().to_owned()).collect()),
                namespaces: self
                    .namespaces
                    .as_ref()
                    .map(|v| v.iter().map(ToString::to_string).collect()),
            },
            windows: self
                .windows
                .iter()
                .map(|w| WindowEntry {
                    days: w.day_names(),
                    end: clock(w.end),
                    start: clock(w.start),
                    utc_offset: offset_text(w.offset_secs),
                })
                .collect(),
        }
    }
}

/// The highest loss probability a fault's action can reach, and what it is called. For burst
/// models that is the loss in the bad state, not the long-run mean: the policy bounds how hard a
/// fault may hit, and a burst at 100% is an outage for its length whatever the mean.
fn worst_loss(action: &Action) -> Option<(f64, &'static str)> {
    let burst = |bad: Percent, good: Percent| bad.value().max(good.value());
    match action {
        Action::Loss(p) => Some((p.value(), "loss")),
        Action::BurstLoss(ge) => Some((burst(ge.loss_bad, ge.loss_good), "burst loss")),
        Action::Netem(netem) => match netem.loss? {
            NetemLoss::Random(chance) => Some((chance.percent.value(), "netem loss")),
            NetemLoss::GilbertElliott(ge) => {
                Some((burst(ge.loss_bad, ge.loss_good), "netem burst loss"))
            }
            // Its burst state (3) drops every packet until it leaves.
            NetemLoss::FourState { .. } => Some((100.0, "netem 4-state loss")),
        },
        // Corrupted packets with a broken checksum are discarded by the receiving kernel: to
        // the application that is loss. With the checksum recomputed everything is delivered.
        Action::Corrupt(c) => match c.checksum {
            Checksum::Broken => Some((c.percent.value(), "corrupt with broken checksums")),
            Checksum::Recompute => None,
        },
        // A partition, a reset, a reject and a stall are faults of their own kind, with no
        // rate to bound: allowed or not by the target rules (and never on protected traffic,
        // which the datapath passes before any fault looks at it).
        Action::Partition | Action::Reset { .. } | Action::Reject | Action::Stall { .. } => None,
    }
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `[access]` table, validated.
#[derive(Clone, Debug)]
struct AccessRules {
    uids: Vec<u32>,
    gids: Vec<u32>,
    read_only_uids: Vec<u32>,
    read_only_gids: Vec<u32>,
}
