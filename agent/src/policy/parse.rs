//! The policy file as written (`*Wire`, what serde reads) and its validation into a `Policy`:
//! every rejected value is named by its dotted key, e.g. `limits.max_duration` or
//! `protected[2].cidr`, with the line when TOML knows it.

use std::time::Duration;

use serde::Deserialize;

use super::{
    glob::Glob,
    namespace::{NamespacePattern, HOST},
    window::{Window, WindowWire},
    AccessRules, Policy, PolicyError, ProtectedTarget,
};
use crate::{
    abi::MAX_PROTECTED,
    fault::{
        spec::PortWire,
        values::{format_duration, parse_duration, Percent, Proto, ValueError},
    },
};

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

// ---- validation ------------------------------------------------------------------------------

pub(super) fn parse_text(text: &str, origin: &str) -> Result<Policy, PolicyError> {
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
pub(super) type Rejection = (String, String);

pub(super) fn at(key: impl Into<String>) -> impl FnOnce(ValueError) -> Rejection {
    move |e| (key.into(), e.0)
}

pub(super) fn reject<T>(
    key: impl Into<String>,
    message: impl Into<String>,
) -> Result<T, Rejection> {
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
    if wire.protected.len() > MAX_PROTECTED {
        // The datapath's pass-list has this many slots; silently dropping the rest would
        // leave traffic unprotected that the operator meant to protect.
        return reject(
            "protected",
            format!("at most {MAX_PROTECTED} entries (the datapath's pass-list)"),
        );
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
