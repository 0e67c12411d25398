//! `targets.namespaces` patterns: which network namespaces faults may target, by name.

use std::fmt;

use super::glob::Glob;
use crate::fault::spec::NetnsRef;

/// How `targets.namespaces` spells faultd's own namespace (a fault with no `netns`).
pub(super) const HOST: &str = "host";

#[derive(Clone, Debug)]
pub(super) enum NamespacePattern {
    /// Only a fault without `netns`; a namespace *named* host is `/run/netns/host`.
    Host,
    Glob(Glob),
}

impl NamespacePattern {
    /// A namespace matches if the pattern matches either of its spellings: as sent on the wire
    /// (`lab-a`, `pid:42`) or as the path faultd opens (`/run/netns/lab-a`, `/proc/42/ns/net`).
    /// Paths are first put in their short form, so `/run/netns/lab-a` is `lab-a` too.
    pub(super) fn matches(&self, netns: Option<&NetnsRef>) -> bool {
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
            Self::Glob(glob) => f.write_str(glob.as_str()),
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
