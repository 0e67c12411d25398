//! Read-only views of kernel state, for "changes nothing" and "leaks nothing"
//! assertions. The agent never uses `tc`; only these observers do.

use std::collections::HashMap;
use std::process::Command;

use crate::lab::in_netns;

/// Qdiscs plus ingress and egress filters of `dev`, as `tc` prints them.
pub fn tc_snapshot(netns: &str, dev: &str) -> String {
    [
        tc(netns, &["qdisc", "show", "dev", dev]),
        tc(netns, &["filter", "show", "dev", dev, "ingress"]),
        tc(netns, &["filter", "show", "dev", dev, "egress"]),
    ]
    .concat()
}

pub fn has_clsact(netns: &str, dev: &str) -> bool {
    tc(netns, &["qdisc", "show", "dev", dev]).contains("qdisc clsact")
}

/// BPF filters on the clsact hooks. Programs attached through TCX links do
/// not show up here (bpftool would be needed for those).
pub fn bpf_filter_count(netns: &str, dev: &str) -> usize {
    ["ingress", "egress"]
        .into_iter()
        .map(|hook| {
            tc(netns, &["filter", "show", "dev", dev, hook])
                .lines()
                .filter(|l| l.contains(" bpf ") && l.contains(" handle "))
                .count()
        })
        .sum()
}

/// Every object of faultd's on `dev` and in its namespace, described; empty when none is
/// left: our bpf filters, a clsact holding nothing else (only faultd adds one in the lab),
/// our htb root or classes, our ifb devices.
pub fn leftovers(netns: &str, dev: &str) -> Vec<String> {
    let mut found = Vec::new();
    let filters = bpf_filter_count(netns, dev);
    if filters > 0 {
        found.push(format!("{filters} bpf filters on {dev}"));
    }
    if has_clsact(netns, dev) {
        found.push(format!("clsact on {dev}"));
    }
    let qdiscs = tc(netns, &["qdisc", "show", "dev", dev]);
    if qdiscs.contains("qdisc htb fa17:") {
        found.push(format!("htb root on {dev}"));
    }
    let links = Command::new("ip")
        .args(["-n", netns, "-o", "link", "show"])
        .output()
        .expect("spawn ip");
    for line in String::from_utf8_lossy(&links.stdout).lines() {
        if let Some(name) = line.split(": ").nth(1).filter(|n| n.starts_with("flifb")) {
            found.push(format!("ifb {name}"));
        }
    }
    found
}

/// Namespaces a faultd's pin root still marks as holding objects of its (one directory each);
/// the datapath's own map pins stay while faultd runs.
pub fn pins_left(pin_root: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(pin_root) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("netns-"))
        .map(|e| e.path().display().to_string())
        .collect()
}

/// Faults live in the kernel under a faultd's pin root: slots of the pinned `fl_faults` map
/// whose deadline has not passed.
pub fn live_faults_in_kernel(pin_root: &std::path::Path) -> usize {
    use aya::maps::{Array, Map, MapData};
    use faultline::{abi::FlFault, kernel::monotonic_ns};
    let now = monotonic_ns();
    let Ok(data) = MapData::from_pin(pin_root.join("fl_faults")) else {
        return 0;
    };
    let faults: Array<MapData, FlFault> =
        Array::try_from(Map::Array(data)).expect("fl_faults is an array");
    faults
        .iter()
        .filter(|f| f.as_ref().is_ok_and(|f| f.deadline_ns > now))
        .count()
}

/// The namespace's SNMP counters (/proc/net/snmp and /proc/net/snmp6), keyed
/// "Proto:Field", e.g. "Tcp:RetransSegs" or "Udp6:RcvbufErrors".
pub fn snmp(netns: &str) -> HashMap<String, u64> {
    // /proc/self/net follows the main thread's namespace, thread-self ours.
    let (v4, v6) = in_netns(netns, || {
        let read = |f| {
            std::fs::read_to_string(format!("/proc/thread-self/net/{f}"))
                .unwrap_or_else(|e| panic!("read /proc/net/{f}: {e}"))
        };
        (read("snmp"), read("snmp6"))
    });
    let mut counters = HashMap::new();
    // snmp: a header line of field names followed by a line of values, per protocol.
    let lines: Vec<&str> = v4.lines().collect();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        let (proto, names) = names.split_once(':').unwrap_or_default();
        let values = values.split_once(':').unwrap_or_default().1;
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(v) = value.parse() {
                counters.insert(format!("{proto}:{name}"), v);
            }
        }
    }
    // snmp6: "Udp6RcvbufErrors   3"; the protocol name ends at its first '6'.
    for line in v6.lines() {
        let mut it = line.split_whitespace();
        if let (Some(key), Some(Ok(v))) = (it.next(), it.next().map(str::parse)) {
            if let Some(i) = key.find('6') {
                counters.insert(format!("{}:{}", &key[..=i], &key[i + 1..]), v);
            }
        }
    }
    counters
}

fn tc(netns: &str, args: &[&str]) -> String {
    let out = Command::new("tc")
        .args(["-n", netns])
        .args(args)
        .output()
        .expect("spawn tc (is iproute2 installed? see scripts/setup.sh)");
    assert!(
        out.status.success(),
        "tc -n {netns} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// TCP connections the faults of a faultd track (entries of its pinned `fl_conns`).
pub fn tracked_connections(pin_root: &std::path::Path) -> usize {
    use aya::maps::{HashMap, Map, MapData};
    use faultline::abi::{FlConn, FlConnKey};
    let Ok(data) = MapData::from_pin(pin_root.join("fl_conns")) else {
        return 0;
    };
    let conns: HashMap<MapData, FlConnKey, FlConn> =
        HashMap::try_from(Map::LruHashMap(data)).expect("fl_conns is an LRU hash");
    conns.keys().filter(Result::is_ok).count()
}
