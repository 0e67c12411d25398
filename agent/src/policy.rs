//! The policy file (`/etc/faultline/faultd.toml`, `faultd --config FILE`, docs/policy.md): what
//! faults an operator allows on this host, when, and for whom. This module parses and validates
//! it into typed values and answers questions about a fault or a peer. Pure: it reads the file
//! in `load` and nothing else; it never touches the kernel, and enforcing its answers (refusing a
//! request, installing the protected pass-list) is the caller's job.

use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Deserialize;
use serde_json::{json, Value};
use thiserror::Error;

use crate::fault::{
    netem::NetemLoss,
    spec::{Action, FaultSpec, NetnsRef, PortWire},
    values::{format_duration, parse_duration, Cidr, Percent, PortRange, Proto, ValueError},
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
#[error("policy {rule}: {message}")]
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
    /// hello, list, get, watch and status only.
    ReadOnly,
    Denied,
}

/// Traffic no fault may touch; the datapath lets it pass before any fault matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtectedTarget {
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
        if let Some(max) = self.max_duration {
            if spec.duration > max {
                return Err(Violation::new(
                    "limits.max_duration",
                    format!(
                        "{} exceeds the maximum of {}",
                        format_duration(spec.duration),
                        format_duration(max)
                    ),
                ));
            }
        }
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
    pub fn summary(&self) -> Value {
        json!({
            "file": self.file.as_ref().map(|p| p.display().to_string()),
            "limits": {
                "default_duration": self.default_duration.map(format_duration),
                "max_duration": self.max_duration.map(format_duration),
                "max_faults": self.max_faults,
                "max_loss_percent": self.max_loss.map(Percent::value),
            },
            "targets": {
                "devices": self.devices.as_ref().map(|v| v.iter().map(|g| g.text.clone()).collect::<Vec<_>>()),
                "namespaces": self.namespaces.as_ref().map(|v| v.iter().map(ToString::to_string).collect::<Vec<_>>()),
            },
            "protected": self.protected.iter().map(|p| json!({
                "cidr": p.cidr.to_string(),
                "proto": p.proto.map(Proto::name),
                "ports": p.ports.map(|r| r.to_string()),
            })).collect::<Vec<_>>(),
            "windows": self.windows.iter().map(|w| json!({
                "days": w.day_names(),
                "start": clock(w.start),
                "end": clock(w.end),
                "utc_offset": offset_text(w.offset_secs),
            })).collect::<Vec<_>>(),
            "access": self.access.as_ref().map(|a| json!({
                "uids": a.uids,
                "gids": a.gids,
                "read_only_uids": a.read_only_uids,
                "read_only_gids": a.read_only_gids,
            })),
        })
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
            NetemLoss::GilbertElliott {
                loss_bad,
                loss_good,
                ..
            } => Some((burst(loss_bad, loss_good), "netem burst loss")),
            // Its burst state (3) drops every packet until it leaves.
            NetemLoss::FourState { .. } => Some((100.0, "netem 4-state loss")),
        },
        // A partition is its own kind of fault, allowed or not by the target rules.
        Action::Partition => None,
    }
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

// ---- the file as written ---------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PolicyWire {
    limits: Option<LimitsWire>,
    targets: Option<TargetsWire>,
    #[serde(default)]
    protected: Vec<ProtectedWire>,
    #[serde(default)]
    windows: Vec<WindowWire>,
    access: Option<AccessWire>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsWire {
    default_duration: Option<String>,
    max_duration: Option<String>,
    max_faults: Option<usize>,
    max_loss_percent: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetsWire {
    devices: Option<Vec<String>>,
    namespaces: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProtectedWire {
    cidr: String,
    proto: Option<String>,
    ports: Option<PortWire>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowWire {
    days: Option<Vec<String>>,
    start: String,
    end: String,
    utc_offset: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessWire {
    #[serde(default)]
    uids: Vec<u32>,
    #[serde(default)]
    gids: Vec<u32>,
    #[serde(default)]
    read_only_uids: Vec<u32>,
    #[serde(default)]
    read_only_gids: Vec<u32>,
}

#[derive(Clone, Debug)]
struct AccessRules {
    uids: Vec<u32>,
    gids: Vec<u32>,
    read_only_uids: Vec<u32>,
    read_only_gids: Vec<u32>,
}

// ---- validation ------------------------------------------------------------------------------

fn parse_text(text: &str, origin: &str) -> Result<Policy, PolicyError> {
    let line_of = |span: Option<std::ops::Range<usize>>| {
        span.map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
    };
    let deserializer = toml::Deserializer::parse(text).map_err(|e| PolicyError::Syntax {
        origin: origin.to_owned(),
        line: line_of(e.span()).unwrap_or(1),
        message: e.message().to_owned(),
    })?;
    // serde_path_to_error names the key (`limits.max_fualts`), toml's span gives the line.
    let wire: PolicyWire = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        PolicyError::Invalid {
            origin: origin.to_owned(),
            key,
            line: line_of(inner.span()),
            message: inner.message().to_owned(),
        }
    })?;
    validate(wire).map_err(|(key, message)| PolicyError::Invalid {
        origin: origin.to_owned(),
        key,
        line: None,
        message,
    })
}

/// A rejected value: (dotted key, why).
type Rejection = (String, String);

fn at(key: impl Into<String>) -> impl FnOnce(ValueError) -> Rejection {
    move |e| (key.into(), e.0)
}

fn reject<T>(key: impl Into<String>, message: impl Into<String>) -> Result<T, Rejection> {
    Err((key.into(), message.into()))
}

fn validate(wire: PolicyWire) -> Result<Policy, Rejection> {
    let mut policy = Policy::default();
    if let Some(limits) = wire.limits {
        let duration = |key: &str, text: &Option<String>| -> Result<Option<Duration>, Rejection> {
            let Some(text) = text else { return Ok(None) };
            let d = parse_duration(text).map_err(at(format!("limits.{key}")))?;
            if d.is_zero() {
                return reject(format!("limits.{key}"), "must be longer than zero");
            }
            Ok(Some(d))
        };
        policy.default_duration = duration("default_duration", &limits.default_duration)?;
        policy.max_duration = duration("max_duration", &limits.max_duration)?;
        if let (Some(default), Some(max)) = (policy.default_duration, policy.max_duration) {
            if default > max {
                return reject(
                    "limits.default_duration",
                    format!(
                        "{} exceeds max_duration {}",
                        format_duration(default),
                        format_duration(max)
                    ),
                );
            }
        }
        if limits.max_faults == Some(0) {
            // Zero would make faultd a status page; say so with [access] read-only lists.
            return reject("limits.max_faults", "must be at least 1");
        }
        policy.max_faults = limits.max_faults;
        policy.max_loss = limits
            .max_loss_percent
            .map(Percent::new)
            .transpose()
            .map_err(at("limits.max_loss_percent"))?;
    }
    if let Some(targets) = wire.targets {
        policy.devices = patterns("targets.devices", targets.devices, Glob::new)?;
        policy.namespaces = patterns("targets.namespaces", targets.namespaces, |text| {
            if text == HOST {
                Ok(NamespacePattern::Host)
            } else {
                Glob::new(text).map(NamespacePattern::Glob)
            }
        })?;
    }
    policy.protected = wire
        .protected
        .iter()
        .enumerate()
        .map(|(i, p)| protected(&format!("protected[{i}]"), p))
        .collect::<Result<_, _>>()?;
    policy.windows = wire
        .windows
        .iter()
        .enumerate()
        .map(|(i, w)| Window::from_wire(&format!("windows[{i}]"), w))
        .collect::<Result<_, _>>()?;
    if let Some(a) = wire.access {
        // Listing an id twice is a mistake whichever list was meant; say so rather than guess.
        for (full, read_only, key) in [
            (&a.uids, &a.read_only_uids, "uid"),
            (&a.gids, &a.read_only_gids, "gid"),
        ] {
            if let Some(id) = full.iter().find(|id| read_only.contains(id)) {
                return reject(
                    format!("access.read_only_{key}s"),
                    format!("{key} {id} is also in access.{key}s"),
                );
            }
        }
        policy.access = Some(AccessRules {
            uids: a.uids,
            gids: a.gids,
            read_only_uids: a.read_only_uids,
            read_only_gids: a.read_only_gids,
        });
    }
    Ok(policy)
}

fn patterns<T>(
    key: &str,
    texts: Option<Vec<String>>,
    compile: impl Fn(&str) -> Result<T, ValueError>,
) -> Result<Option<Vec<T>>, Rejection> {
    let Some(texts) = texts else { return Ok(None) };
    if texts.is_empty() {
        // An empty allow-list forbids every fault, which is never what the operator meant.
        return reject(key, "is empty; leave the key out to allow any");
    }
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| compile(text).map_err(at(format!("{key}[{i}]"))))
        .collect::<Result<_, _>>()
        .map(Some)
}

fn protected(key: &str, wire: &ProtectedWire) -> Result<ProtectedTarget, Rejection> {
    let cidr = wire.cidr.parse().map_err(at(format!("{key}.cidr")))?;
    let proto = match &wire.proto {
        None => None,
        Some(text) => match text.parse().map_err(at(format!("{key}.proto")))? {
            Proto::Any => None,
            proto => Some(proto),
        },
    };
    let ports = match &wire.ports {
        None => None,
        Some(port) => {
            if !matches!(proto, None | Some(Proto::Tcp | Proto::Udp)) {
                return reject(format!("{key}.ports"), "ports need proto tcp, udp or none");
            }
            let text = match port {
                PortWire::Number(n) => n.to_string(),
                PortWire::Text(t) => t.clone(),
            };
            Some(text.parse().map_err(at(format!("{key}.ports")))?)
        }
    };
    Ok(ProtectedTarget { cidr, proto, ports })
}

// ---- namespaces ------------------------------------------------------------------------------

/// How `targets.namespaces` spells faultd's own namespace (a fault with no `netns`).
const HOST: &str = "host";

#[derive(Clone, Debug)]
enum NamespacePattern {
    /// Only a fault without `netns`; a namespace *named* host is `/run/netns/host`.
    Host,
    Glob(Glob),
}

impl NamespacePattern {
    /// A namespace matches if the pattern matches either of its spellings: as sent on the wire
    /// (`lab-a`, `pid:42`) or as the path faultd opens (`/run/netns/lab-a`, `/proc/42/ns/net`).
    /// Paths are first put in their short form, so `/run/netns/lab-a` is `lab-a` too.
    fn matches(&self, netns: Option<&NetnsRef>) -> bool {
        let glob = match (self, netns) {
            (Self::Host, None) => return true,
            (Self::Host, Some(_)) | (Self::Glob(_), None) => return false,
            (Self::Glob(glob), Some(_)) => glob,
        };
        let Some(netns) = netns.and_then(canonical) else {
            return false;
        };
        let path = netns.path();
        glob.matches(&netns.to_wire()) || path.to_str().is_some_and(|p| glob.matches(p))
    }
}

impl fmt::Display for NamespacePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Host => f.write_str(HOST),
            Self::Glob(glob) => f.write_str(&glob.text),
        }
    }
}

/// The short form of a namespace reference, or `None` for a path no pattern should match: one
/// with `.` or `..` or empty components could name anything while looking like an allowed path.
fn canonical(netns: &NetnsRef) -> Option<NetnsRef> {
    let NetnsRef::Path(path) = netns else {
        return Some(netns.clone());
    };
    let text = path.to_str()?;
    let parts: Vec<&str> = text.strip_prefix('/')?.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return None;
    }
    Some(match parts.as_slice() {
        ["run", "netns", name] => NetnsRef::Named((*name).to_owned()),
        ["proc", pid, "ns", "net"] => match pid.parse() {
            Ok(pid) => NetnsRef::Pid(pid),
            Err(_) => netns.clone(),
        },
        _ => netns.clone(),
    })
}

// ---- globs -----------------------------------------------------------------------------------

/// A shell-style pattern: `*` any run of characters, `?` one character, `[abc]`, `[a-z]`,
/// `[!a-z]` one of (or none of) a set, `\x` a literal x. As in paths, no wildcard matches `/`,
/// so `/run/netns/lab-*` cannot reach outside /run/netns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    text: String,
    tokens: Vec<Token>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Literal(char),
    One,
    Star,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Glob {
    pub fn new(text: &str) -> Result<Self, ValueError> {
        let bad = |why: &str| ValueError(format!("{text:?} is not a valid pattern: {why}"));
        if text.is_empty() {
            return Err(bad("empty"));
        }
        let mut tokens = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                '*' => Token::Star,
                '?' => Token::One,
                '\\' => Token::Literal(chars.next().ok_or_else(|| bad("ends in \\"))?),
                '[' => {
                    let negated = chars.next_if(|&c| c == '!' || c == '^').is_some();
                    let mut ranges = Vec::new();
                    loop {
                        let first = match chars.next() {
                            None => return Err(bad("[ without ]")),
                            // A ] first in the set is a member, as in fnmatch.
                            Some(']') if !ranges.is_empty() => break,
                            Some('\\') => chars.next().ok_or_else(|| bad("ends in \\"))?,
                            Some(c) => c,
                        };
                        let last = if chars.next_if_eq(&'-').is_some() {
                            match chars.next() {
                                None => return Err(bad("[ without ]")),
                                Some(']') => {
                                    // A trailing - is a member: `[a-]`.
                                    ranges.push((first, first));
                                    ranges.push(('-', '-'));
                                    break;
                                }
                                Some('\\') => chars.next().ok_or_else(|| bad("ends in \\"))?,
                                Some(c) => c,
                            }
                        } else {
                            first
                        };
                        if last < first {
                            return Err(bad(&format!("range {first}-{last} is backwards")));
                        }
                        ranges.push((first, last));
                    }
                    Token::Class { negated, ranges }
                }
                c => Token::Literal(c),
            });
        }
        Ok(Self {
            text: text.to_owned(),
            tokens,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn matches(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        // reach[j]: the tokens seen so far can match chars[..j]. Quadratic at worst, and the
        // inputs are interface names and paths.
        let mut reach = vec![false; chars.len() + 1];
        reach[0] = true;
        for token in &self.tokens {
            let mut next = vec![false; chars.len() + 1];
            for j in 0..=chars.len() {
                next[j] = match token {
                    Token::Star => reach[j] || (j > 0 && next[j - 1] && chars[j - 1] != '/'),
                    _ => j > 0 && reach[j - 1] && token.matches_one(chars[j - 1]),
                };
            }
            reach = next;
        }
        reach[chars.len()]
    }
}

impl Token {
    fn matches_one(&self, c: char) -> bool {
        match self {
            Self::Literal(l) => *l == c,
            Self::One => c != '/',
            Self::Star => false,
            Self::Class { negated, ranges } => {
                c != '/' && ranges.iter().any(|&(a, b)| (a..=b).contains(&c)) != *negated
            }
        }
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

// ---- time windows ----------------------------------------------------------------------------

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const LONG_DAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];
const MINUTES_PER_DAY: u16 = 24 * 60;

/// A weekly window in which faults may be applied. `days` are the days the window *starts*
/// on, so a window from 22:00 to 06:00 on fri runs into saturday morning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Window {
    /// Bit d set: weekday d is on, monday = 0.
    days: u8,
    /// Minutes after local midnight; start inclusive, end exclusive, end may be 24:00.
    start: u16,
    end: u16,
    /// Local time = UTC + offset.
    offset_secs: i32,
}

impl Window {
    fn from_wire(key: &str, wire: &WindowWire) -> Result<Self, Rejection> {
        let days = match &wire.days {
            None => 0x7f,
            Some(names) if names.is_empty() => {
                return reject(
                    format!("{key}.days"),
                    "is empty; leave it out for every day",
                )
            }
            Some(names) => names.iter().try_fold(0u8, |set, name| {
                let lower = name.to_ascii_lowercase();
                match (0..7).find(|&d| DAYS[d] == lower || LONG_DAYS[d] == lower) {
                    Some(d) => Ok(set | 1 << d),
                    None => reject(
                        format!("{key}.days"),
                        format!("{name:?} is not a day (mon, tue, wed, thu, fri, sat, sun)"),
                    ),
                }
            })?,
        };
        let start = minute_of_day(&wire.start, false).map_err(at(format!("{key}.start")))?;
        let end = minute_of_day(&wire.end, true).map_err(at(format!("{key}.end")))?;
        if start == end {
            return reject(
                format!("{key}.end"),
                "equals start; use 00:00 to 24:00 for a whole day",
            );
        }
        let offset_secs = match &wire.utc_offset {
            None => 0,
            Some(text) => parse_offset(text).map_err(at(format!("{key}.utc_offset")))?,
        };
        Ok(Self {
            days,
            start,
            end,
            offset_secs,
        })
    }

    fn contains(&self, unix_secs: i64) -> bool {
        let (day, minute) = local_time(unix_secs, self.offset_secs);
        let on = |d: u8| self.days & (1 << d) != 0;
        if self.start < self.end {
            on(day) && (self.start..self.end).contains(&minute)
        } else {
            // Wraps midnight: the evening part is on its own day, the morning part belongs to
            // the window that started the day before.
            (on(day) && minute >= self.start) || (on((day + 6) % 7) && minute < self.end)
        }
    }

    fn day_names(&self) -> Vec<String> {
        (0..7u8)
            .filter(|d| self.days & (1 << d) != 0)
            .map(|d| DAYS[usize::from(d)].to_owned())
            .collect()
    }

    /// The local time in this window's offset, for messages.
    fn local_now(&self, unix_secs: i64) -> String {
        let (day, minute) = local_time(unix_secs, self.offset_secs);
        format!(
            "{} {} {}",
            DAYS[usize::from(day)],
            clock(minute),
            offset_text(self.offset_secs)
        )
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}-{} {}",
            self.day_names().join(","),
            clock(self.start),
            clock(self.end),
            offset_text(self.offset_secs)
        )
    }
}

/// `HH:MM` (or `H:MM`) as minutes after midnight; `24:00` only where it may be an end.
fn minute_of_day(text: &str, is_end: bool) -> Result<u16, ValueError> {
    let bad = || ValueError(format!("{text:?} is not a time of day like 09:00 or 17:30"));
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    let digits = |s: &str, len: std::ops::RangeInclusive<usize>| {
        if len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse::<u16>().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let (h, m) = (digits(h, 1..=2)?, digits(m, 2..=2)?);
    let minute = h * 60 + m;
    if m >= 60 || minute > MINUTES_PER_DAY || (minute == MINUTES_PER_DAY && !is_end) {
        return Err(bad());
    }
    Ok(minute)
}

/// `+HH:MM`, `-HH:MM` or `Z`, as seconds east of UTC.
fn parse_offset(text: &str) -> Result<i32, ValueError> {
    let bad = || {
        ValueError(format!(
            "{text:?} is not a UTC offset like +02:00 or -05:30"
        ))
    };
    if text == "Z" {
        return Ok(0);
    }
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') => (-1, &text[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let two_digits = |s: &str| {
        if s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse::<i32>().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let (h, m) = (two_digits(h)?, two_digits(m)?);
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(sign * (h * 3600 + m * 60))
}

fn offset_text(secs: i32) -> String {
    let sign = if secs < 0 { '-' } else { '+' };
    let minutes = secs.unsigned_abs() / 60;
    format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

fn clock(minute: u16) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

/// Whole seconds since the epoch, rounded down (also before 1970, which only a broken clock
/// reports, but a broken clock must not panic the agent).
fn unix_seconds(now: SystemTime) -> i64 {
    match now.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let up = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
            i64::try_from(up).map_or(i64::MIN, |s| -s)
        }
    }
}

/// (weekday with monday = 0, minute of the day) at `unix_secs` in local time UTC + offset.
fn local_time(unix_secs: i64, offset_secs: i32) -> (u8, u16) {
    let local = unix_secs.saturating_add(i64::from(offset_secs));
    let days = local.div_euclid(86_400);
    // 1970-01-01 was a thursday, weekday 3 counting from monday.
    let weekday = (days + 3).rem_euclid(7) as u8;
    let minute = (local.rem_euclid(86_400) / 60) as u16;
    (weekday, minute)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::spec::{DurationLimits, FaultWire};

    const FULL: &str = r#"
[limits]
default_duration = "30s"
max_duration = "10m"
max_faults = 100
max_loss_percent = 50

[targets]
devices = ["eth*", "veth*"]
namespaces = ["host", "/run/netns/lab-*", "pid:*"]

[[protected]]
cidr = "10.0.0.0/8"
proto = "tcp"
ports = "22"

[[protected]]
cidr = "fd00::/8"
ports = "1000-2000"

[[protected]]
cidr = "192.168.1.1"

[[windows]]
days = ["mon","tue","wed","thu","fri"]
start = "09:00"
end = "17:00"
utc_offset = "+00:00"

[access]
uids = [0, 1000]
gids = [50]
read_only_uids = [1001]
read_only_gids = [60]
"#;

    /// 2024-01-01, a monday, 00:00 UTC.
    const MONDAY: u64 = 1_704_067_200;

    /// `day` days after monday 2024-01-01 (0 = mon), at hh:mm UTC.
    fn utc(day: u64, hour: u64, minute: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(MONDAY + day * 86_400 + hour * 3600 + minute * 60)
    }

    fn policy(text: &str) -> Policy {
        Policy::parse(text).unwrap_or_else(|e| panic!("{text}\n→ {e}"))
    }

    /// (key, line) of a policy that must be rejected.
    fn rejected(text: &str) -> (String, Option<usize>) {
        match Policy::parse(text) {
            Err(PolicyError::Invalid { key, line, .. }) => (key, line),
            other => panic!("{text}\n→ {other:?}"),
        }
    }

    fn key_of(text: &str) -> String {
        rejected(text).0
    }

    fn fault(json: &str) -> FaultSpec {
        let wire: FaultWire = serde_json::from_str(json).expect("wire json");
        let limits = DurationLimits {
            default: Some(Duration::from_secs(60)),
            max: Duration::from_secs(86_400),
        };
        FaultSpec::from_wire(&wire, &limits).expect("valid spec")
    }

    fn loss(percent: u32) -> FaultSpec {
        fault(&format!(
            r#"{{"target":{{"dev":"eth0"}},"loss":{{"percent":{percent}}}}}"#
        ))
    }

    fn on(netns: Option<&str>, dev: &str) -> FaultSpec {
        let netns = netns.map_or(String::new(), |n| format!(r#","netns":"{n}""#));
        fault(&format!(
            r#"{{"target":{{"dev":"{dev}"{netns}}},"partition":{{}}}}"#
        ))
    }

    fn rule(policy: &Policy, spec: &FaultSpec, now: SystemTime) -> Option<String> {
        policy.check_fault(spec, now).err().map(|v| v.rule)
    }

    #[test]
    fn full_example_parses_into_typed_values() {
        let p = policy(FULL);
        assert_eq!(
            p.durations(),
            (
                Some(Duration::from_secs(30)),
                Some(Duration::from_secs(600))
            )
        );
        assert_eq!(p.max_faults(), Some(100));
        assert_eq!(p.max_loss.map(Percent::value), Some(50.0));
        let protected = p.protected();
        assert_eq!(protected.len(), 3);
        assert_eq!(protected[0].cidr.to_string(), "10.0.0.0/8");
        assert_eq!(protected[0].proto, Some(Proto::Tcp));
        assert_eq!(
            protected[0].ports.map(|r| (r.first(), r.last())),
            Some((22, 22))
        );
        assert_eq!(protected[1].proto, None);
        assert_eq!(
            protected[1].ports.map(|r| r.to_string()),
            Some("1000-2000".into())
        );
        assert_eq!(protected[2].cidr.to_string(), "192.168.1.1/32");
        assert_eq!(protected[2].ports, None);
        assert_eq!(
            p.windows,
            vec![Window {
                days: 0b001_1111,
                start: 9 * 60,
                end: 17 * 60,
                offset_secs: 0
            }]
        );
        assert_eq!(p.file(), None);
    }

    #[test]
    fn deployed_example_parses() {
        let p = policy(include_str!("../../deploy/faultd.toml"));
        assert_eq!(p.max_duration, Some(Duration::from_secs(600)));
        assert!(p
            .protected()
            .iter()
            .all(|t| t.ports.map(PortRange::first) == Some(22)));
    }

    #[test]
    fn empty_policy_restricts_nothing() {
        let p = policy("");
        assert_eq!(p.durations(), (None, None));
        assert_eq!(p.max_faults(), None);
        assert!(p.protected().is_empty());
        assert_eq!(p.access(1234, &[]), Access::Full);
        let burst =
            fault(r#"{"target":{"dev":"wlan0","netns":"x"},"loss":{"burst":{"p":1,"r":5}}}"#);
        assert_eq!(p.check_fault(&burst, utc(5, 3, 0)), Ok(()));
        let s = p.summary();
        assert_eq!(s["limits"]["max_duration"], Value::Null);
        assert_eq!(s["targets"]["devices"], Value::Null);
        assert_eq!(s["access"], Value::Null);
        assert_eq!(s["windows"], json!([]));
    }

    #[test]
    fn unknown_keys_are_named() {
        assert_eq!(
            rejected("[limits]\nmax_fualts = 3\n"),
            ("limits.max_fualts".into(), Some(2))
        );
        assert_eq!(key_of("[limit]\nmax_faults = 3\n"), "limit");
        assert_eq!(
            key_of(
                "[[protected]]\ncidr = \"10.0.0.0/8\"\n[[protected]]\ncidr = \"::/0\"\nport = 22\n"
            ),
            "protected[1].port"
        );
        assert_eq!(
            key_of("[[windows]]\nstart=\"09:00\"\nend=\"10:00\"\ntz=\"CET\"\n"),
            "windows[0].tz"
        );
        assert_eq!(key_of("[access]\nuid = [0]\n"), "access.uid");
        assert_eq!(key_of("[targets]\ndevice = [\"eth0\"]\n"), "targets.device");
        let message = Policy::parse("[limits]\nmax_fualts = 3\n")
            .expect_err("unknown")
            .to_string();
        assert!(
            message.contains("max_fualts") && message.contains("line 2"),
            "{message}"
        );
    }

    #[test]
    fn wrong_types_and_syntax_are_rejected() {
        assert_eq!(
            rejected("[limits]\nmax_faults = -3\n"),
            ("limits.max_faults".into(), Some(2))
        );
        assert_eq!(
            key_of("[limits]\nmax_duration = 30\n"),
            "limits.max_duration"
        );
        assert_eq!(key_of("[access]\nuids = [\"root\"]\n"), "access.uids[0]");
        match Policy::parse("[limits]\nmax_faults = 1\n[limits\n") {
            Err(PolicyError::Syntax { line, .. }) => assert_eq!(line, 3),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_values_are_rejected_with_their_key() {
        let cases = [
            (
                "[limits]\nmax_loss_percent = 150",
                "limits.max_loss_percent",
            ),
            ("[limits]\nmax_loss_percent = 0", "limits.max_loss_percent"),
            (
                "[limits]\nmax_duration = \"10 parsecs\"",
                "limits.max_duration",
            ),
            ("[limits]\nmax_duration = \"0s\"", "limits.max_duration"),
            (
                "[limits]\ndefault_duration = \"1h\"\nmax_duration = \"10m\"",
                "limits.default_duration",
            ),
            ("[limits]\nmax_faults = 0", "limits.max_faults"),
            (
                "[targets]\ndevices = [\"eth0\", \"eth[\"]",
                "targets.devices[1]",
            ),
            ("[targets]\ndevices = [\"eth[z-a]\"]", "targets.devices[0]"),
            ("[targets]\ndevices = [\"eth\\\\\"]", "targets.devices[0]"),
            ("[targets]\ndevices = []", "targets.devices"),
            ("[targets]\nnamespaces = [\"\"]", "targets.namespaces[0]"),
            ("[[protected]]\ncidr = \"10.0.0.1/8\"", "protected[0].cidr"),
            ("[[protected]]\ncidr = \"10.0.0.0/33\"", "protected[0].cidr"),
            (
                "[[protected]]\ncidr = \"::/0\"\nproto = \"sctp\"",
                "protected[0].proto",
            ),
            (
                "[[protected]]\ncidr = \"::/0\"\nports = \"0\"",
                "protected[0].ports",
            ),
            (
                "[[protected]]\ncidr = \"::/0\"\nports = 70000",
                "protected[0].ports",
            ),
            (
                "[[protected]]\ncidr = \"::/0\"\nproto = \"icmp\"\nports = 7",
                "protected[0].ports",
            ),
            (
                "[[windows]]\nstart = \"25:00\"\nend = \"10:00\"",
                "windows[0].start",
            ),
            (
                "[[windows]]\nstart = \"24:00\"\nend = \"10:00\"",
                "windows[0].start",
            ),
            (
                "[[windows]]\nstart = \"9\"\nend = \"10:00\"",
                "windows[0].start",
            ),
            (
                "[[windows]]\nstart = \"09:00\"\nend = \"10:60\"",
                "windows[0].end",
            ),
            (
                "[[windows]]\nstart = \"09:00\"\nend = \"9:00\"",
                "windows[0].end",
            ),
            (
                "[[windows]]\nstart = \"09:00\"\nend = \"10:00\"\ndays = [\"funday\"]",
                "windows[0].days",
            ),
            (
                "[[windows]]\nstart = \"09:00\"\nend = \"10:00\"\ndays = []",
                "windows[0].days",
            ),
            (
                "[[windows]]\nstart = \"09:00\"\nend = \"10:00\"\nutc_offset = \"CET\"",
                "windows[0].utc_offset",
            ),
            (
                "[[windows]]\nstart = \"09:00\"\nend = \"10:00\"\nutc_offset = \"+24:00\"",
                "windows[0].utc_offset",
            ),
            ("[[windows]]\nstart = \"09:00\"", "windows[0]"),
            (
                "[access]\nuids = [1000]\nread_only_uids = [1000]",
                "access.read_only_uids",
            ),
            (
                "[access]\ngids = [7]\nread_only_gids = [7]",
                "access.read_only_gids",
            ),
        ];
        for (text, key) in cases {
            assert_eq!(key_of(text), key, "{text}");
        }
        let message = Policy::parse("[[protected]]\ncidr = \"10.0.0.1/8\"")
            .expect_err("host bits")
            .to_string();
        assert_eq!(
            message,
            "policy: protected[0].cidr: 10.0.0.1/8 has host bits set; the network is 10.0.0.0/8"
        );
    }

    #[test]
    fn globs() {
        let cases = [
            ("eth*", "eth0", true),
            ("eth*", "eth", true),
            ("eth*", "veth0", false),
            ("veth?", "veth1", true),
            ("veth?", "veth10", false),
            ("*", "", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("en[ops]*", "enp0s3", true),
            ("en[ops]*", "enx0", false),
            ("eth[0-3]", "eth2", true),
            ("eth[0-3]", "eth4", false),
            ("eth[!0-3]", "eth4", true),
            ("eth[^0-3]", "eth1", false),
            ("x[]a]", "x]", true),
            ("x[a-]", "x-", true),
            ("lit\\*", "lit*", true),
            ("lit\\*", "litX", false),
            ("/run/netns/lab-*", "/run/netns/lab-a", true),
            ("/run/netns/lab-*", "/run/netns/lab-a/x", false),
            ("/run/netns/?", "/run/netns//", false),
            ("a[/]b", "a/b", false),
            ("**", "abc", true),
        ];
        for (pattern, text, want) in cases {
            let glob = Glob::new(pattern).expect("valid pattern");
            assert_eq!(glob.matches(text), want, "{pattern} ~ {text}");
        }
        for bad in ["", "[", "[!", "a[b", "x\\", "[z-a]", "[a\\"] {
            assert!(Glob::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn devices_and_namespaces() {
        let p = policy(
            "[targets]\ndevices = [\"eth*\", \"veth*\"]\n\
             namespaces = [\"host\", \"/run/netns/lab-*\", \"pid:*\"]",
        );
        let now = utc(0, 12, 0);
        assert_eq!(rule(&p, &on(None, "eth0"), now), None);
        assert_eq!(
            rule(&p, &on(None, "wlan0"), now).as_deref(),
            Some("targets.devices")
        );
        for allowed in ["lab-a", "/run/netns/lab-b", "pid:42", "/proc/42/ns/net"] {
            assert_eq!(
                rule(&p, &on(Some(allowed), "veth0"), now),
                None,
                "{allowed}"
            );
        }
        for refused in [
            "prod",
            "/run/netns/prod",
            "/run/netns/lab-a/../../../proc/1/ns/net",
            "/run/netns/./lab-a",
            "/run//netns/lab-a",
            "/var/run/netns/lab-a",
        ] {
            assert_eq!(
                rule(&p, &on(Some(refused), "veth0"), now).as_deref(),
                Some("targets.namespaces"),
                "{refused}"
            );
        }
        // "host" is faultd's own namespace, not one named host; and a glob never matches it.
        let p = policy("[targets]\nnamespaces = [\"host\"]");
        assert_eq!(
            rule(&p, &on(Some("host"), "eth0"), now).as_deref(),
            Some("targets.namespaces")
        );
        let p = policy("[targets]\nnamespaces = [\"*\"]");
        assert_eq!(
            rule(&p, &on(None, "eth0"), now).as_deref(),
            Some("targets.namespaces")
        );
        assert_eq!(rule(&p, &on(Some("host"), "eth0"), now), None);
        let v = p
            .check_fault(&on(None, "eth0"), now)
            .expect_err("host not allowed");
        assert_eq!(v.message, r#"namespace "host" is not one of *"#);
    }

    #[test]
    fn loss_maximum_covers_every_loss_model() {
        let p = policy("[limits]\nmax_loss_percent = 50");
        let now = utc(0, 0, 0);
        let target = r#""target":{"dev":"eth0"}"#;
        let allowed = [
            r#""loss":{"percent":50}"#,
            r#""loss":{"burst":{"p":1,"r":10,"loss_bad":40}}"#,
            r#""netem":{"loss":{"percent":10}}"#,
            r#""netem":{"delay":"100ms"}"#,
            r#""netem":{"loss":{"burst":{"p":1,"r":10,"loss_bad":50,"loss_good":1}}}"#,
            r#""partition":{}"#,
        ];
        for action in allowed {
            assert_eq!(
                rule(&p, &fault(&format!("{{{target},{action}}}")), now),
                None,
                "{action}"
            );
        }
        let refused = [
            r#""loss":{"percent":50.5}"#,
            r#""loss":{"burst":{"p":1,"r":10}}"#,
            r#""loss":{"burst":{"p":1,"r":10,"loss_bad":10,"loss_good":60}}"#,
            r#""netem":{"delay":"10ms","loss":{"percent":60}}"#,
            r#""netem":{"loss":{"burst":{"p":1,"r":10,"loss_bad":90}}}"#,
            r#""netem":{"loss":{"state4":{"p13":1}}}"#,
        ];
        for action in refused {
            assert_eq!(
                rule(&p, &fault(&format!("{{{target},{action}}}")), now).as_deref(),
                Some("limits.max_loss_percent"),
                "{action}"
            );
        }
        let v = p.check_fault(&loss(60), now).expect_err("too much");
        assert_eq!(
            v.to_string(),
            "policy limits.max_loss_percent: loss of 60% exceeds the maximum of 50%"
        );
    }

    #[test]
    fn duration_maximum() {
        let p = policy("[limits]\nmax_duration = \"10m\"");
        let spec = |d: &str| {
            fault(&format!(
                r#"{{"target":{{"dev":"eth0"}},"partition":{{}},"duration":"{d}"}}"#
            ))
        };
        assert_eq!(rule(&p, &spec("10m"), utc(0, 0, 0)), None);
        let v = p
            .check_fault(&spec("11m"), utc(0, 0, 0))
            .expect_err("too long");
        assert_eq!(v.rule, "limits.max_duration");
        assert_eq!(v.message, "11m exceeds the maximum of 10m");
    }

    #[test]
    fn weekday_windows() {
        let p = policy(
            "[[windows]]\ndays = [\"mon\",\"Tuesday\",\"wed\",\"thu\",\"fri\"]\n\
             start = \"09:00\"\nend = \"17:00\"",
        );
        let spec = loss(1);
        assert_eq!(rule(&p, &spec, utc(0, 9, 0)), None);
        assert_eq!(rule(&p, &spec, utc(4, 16, 59)), None);
        for (day, h, m) in [(0, 8, 59), (0, 17, 0), (5, 10, 0), (6, 12, 0), (7, 3, 0)] {
            assert_eq!(
                rule(&p, &spec, utc(day, h, m)).as_deref(),
                Some("windows"),
                "{day} {h}:{m}"
            );
        }
        let v = p.check_fault(&spec, utc(5, 10, 7)).expect_err("saturday");
        assert_eq!(
            v.message,
            "faults are allowed only mon,tue,wed,thu,fri 09:00-17:00 +00:00; it is now sat 10:07 +00:00"
        );
        // A second window adds to the first.
        let p = policy(
            "[[windows]]\ndays = [\"mon\"]\nstart = \"09:00\"\nend = \"17:00\"\n\
             [[windows]]\ndays = [\"sat\"]\nstart = \"00:00\"\nend = \"24:00\"",
        );
        assert_eq!(rule(&p, &spec, utc(5, 0, 0)), None);
        assert_eq!(rule(&p, &spec, utc(5, 23, 59)), None);
        assert_eq!(rule(&p, &spec, utc(6, 0, 0)).as_deref(), Some("windows"));
    }

    #[test]
    fn windows_may_wrap_midnight() {
        let p = policy("[[windows]]\ndays = [\"fri\"]\nstart = \"22:00\"\nend = \"06:00\"");
        let spec = loss(1);
        assert_eq!(rule(&p, &spec, utc(4, 22, 0)), None, "fri evening");
        assert_eq!(
            rule(&p, &spec, utc(5, 5, 59)),
            None,
            "sat morning belongs to fri"
        );
        assert_eq!(rule(&p, &spec, utc(5, 6, 0)).as_deref(), Some("windows"));
        assert_eq!(
            rule(&p, &spec, utc(4, 5, 0)).as_deref(),
            Some("windows"),
            "thu's night"
        );
        assert_eq!(
            rule(&p, &spec, utc(5, 22, 30)).as_deref(),
            Some("windows"),
            "sat evening"
        );
        // Every day: sunday night runs into monday morning.
        let p = policy("[[windows]]\nstart = \"22:00\"\nend = \"06:00\"");
        assert_eq!(rule(&p, &spec, utc(7, 1, 0)), None);
        assert_eq!(rule(&p, &spec, utc(7, 12, 0)).as_deref(), Some("windows"));
    }

    #[test]
    fn windows_use_their_offset() {
        let p = policy(
            "[[windows]]\ndays = [\"mon\"]\nstart = \"09:00\"\nend = \"17:00\"\nutc_offset = \"+02:00\"",
        );
        let spec = loss(1);
        assert_eq!(rule(&p, &spec, utc(0, 7, 30)), None, "09:30 local");
        assert_eq!(
            rule(&p, &spec, utc(0, 15, 30)).as_deref(),
            Some("windows"),
            "17:30 local"
        );
        // UTC tuesday 01:30 is monday 20:30 at -05:00.
        let p = policy(
            "[[windows]]\ndays = [\"mon\"]\nstart = \"20:00\"\nend = \"23:00\"\nutc_offset = \"-05:00\"",
        );
        assert_eq!(rule(&p, &spec, utc(1, 1, 30)), None);
        assert_eq!(rule(&p, &spec, utc(0, 21, 0)).as_deref(), Some("windows"));
        let v = p
            .check_fault(&spec, utc(0, 21, 0))
            .expect_err("16:00 local");
        assert!(
            v.message.ends_with("it is now mon 16:00 -05:00"),
            "{}",
            v.message
        );
        assert_eq!(parse_offset("+05:30"), Ok(19_800));
        assert_eq!(parse_offset("Z"), Ok(0));
        assert_eq!(offset_text(-19_800), "-05:30");
    }

    #[test]
    fn calendar_arithmetic() {
        assert_eq!(local_time(0, 0), (3, 0), "1970-01-01 00:00 was a thursday");
        assert_eq!(
            local_time(-1, 0),
            (2, 1439),
            "a second earlier, wednesday 23:59"
        );
        assert_eq!(local_time(MONDAY as i64, 0), (0, 0));
        assert_eq!(local_time(MONDAY as i64, -60), (6, 1439));
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_millis(1500)), -2);
        assert_eq!(unix_seconds(utc(0, 0, 1)), MONDAY as i64 + 60);
    }

    #[test]
    fn access_decisions() {
        let absent = policy("[limits]\nmax_faults = 5");
        assert_eq!(
            absent.access(1000, &[1000]),
            Access::Full,
            "socket mode is the gate"
        );
        let p = policy(FULL);
        assert_eq!(p.access(0, &[]), Access::Full);
        assert_eq!(p.access(1000, &[]), Access::Full);
        assert_eq!(p.access(2000, &[7, 50]), Access::Full);
        assert_eq!(p.access(1001, &[]), Access::ReadOnly);
        assert_eq!(p.access(2000, &[60]), Access::ReadOnly);
        assert_eq!(
            p.access(1001, &[50]),
            Access::Full,
            "full group outranks read-only uid"
        );
        assert_eq!(p.access(2000, &[2000]), Access::Denied);
        let only_root = policy("[access]");
        assert_eq!(only_root.access(0, &[]), Access::Full);
        assert_eq!(
            only_root.access(1, &[0]),
            Access::Denied,
            "gid 0 is not uid 0"
        );
    }

    #[test]
    fn summary_renders_the_policy() {
        let s = policy(FULL).summary();
        assert_eq!(
            s["limits"],
            json!({"default_duration": "30s", "max_duration": "10m", "max_faults": 100,
                   "max_loss_percent": 50.0})
        );
        assert_eq!(
            s["targets"],
            json!({"devices": ["eth*", "veth*"], "namespaces": ["host", "/run/netns/lab-*", "pid:*"]})
        );
        assert_eq!(
            s["protected"][0],
            json!({"cidr": "10.0.0.0/8", "proto": "tcp", "ports": "22"})
        );
        assert_eq!(
            s["protected"][2],
            json!({"cidr": "192.168.1.1/32", "proto": null, "ports": null})
        );
        assert_eq!(
            s["windows"][0],
            json!({"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:00",
                   "utc_offset": "+00:00"})
        );
        assert_eq!(s["access"]["read_only_gids"], json!([60]));
        assert_eq!(s["file"], Value::Null);
    }

    #[test]
    fn load_names_the_file() {
        let dir =
            std::env::temp_dir().join(format!("faultline-policy-test-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let good = dir.join("good.toml");
        fs::write(&good, "[limits]\nmax_faults = 3\n").expect("write");
        let p = Policy::load(&good).expect("loads");
        assert_eq!(p.max_faults(), Some(3));
        assert_eq!(p.file(), Some(good.as_path()));
        assert_eq!(p.summary()["file"], json!(good.display().to_string()));

        let bad = dir.join("bad.toml");
        fs::write(&bad, "[limits]\nmax_faults = 3\nmax_loss = 5\n").expect("write");
        let message = Policy::load(&bad).expect_err("unknown key").to_string();
        assert!(
            message.starts_with(&format!(
                "{}: limits.max_loss: unknown field",
                bad.display()
            )),
            "{message}"
        );
        assert!(message.ends_with("(line 3)"), "{message}");

        let missing = dir.join("missing.toml");
        assert!(matches!(
            Policy::load(&missing),
            Err(PolicyError::Read { .. })
        ));
        let default = Policy::load_or_default(&missing).expect("absent file is no policy");
        assert_eq!(default.max_faults(), None);
        assert!(matches!(
            Policy::load_or_default(&bad),
            Err(PolicyError::Invalid { .. })
        ));
        fs::remove_dir_all(&dir).expect("clean up");
    }
}
