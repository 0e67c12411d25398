//! How faultctl shows faults, the status and the policy to a person (`--json` prints the
//! protocol's JSON instead).

use faultline::{
    fault::{
        netem::NetemWire,
        spec::{FaultWire, PortWire},
    },
    proto::{FaultView, PolicySummary},
};
use serde::Serialize;

use super::Cli;

/// A protocol value as one line of JSON (`--json`).
pub(crate) fn print_json(value: &impl Serialize) {
    match serde_json::to_string(value) {
        Ok(line) => println!("{line}"),
        // Every protocol type is plain data: this cannot happen.
        Err(e) => eprintln!("faultctl: cannot print JSON: {e}"),
    }
}

pub(crate) fn print_fault(cli: &Cli, view: &FaultView) {
    if cli.json {
        print_json(view);
        return;
    }
    print_table(std::slice::from_ref(view));
    let c = view.counters;
    println!();
    println!(
        "{:<8} {:>12} {:>14} {:>12} {:>14}",
        "", "matched pkts", "matched bytes", "dropped pkts", "dropped bytes"
    );
    for (name, d) in [("egress", c.egress), ("ingress", c.ingress)] {
        println!(
            "{name:<8} {:>12} {:>14} {:>12} {:>14}",
            d.matched_packets, d.matched_bytes, d.dropped_packets, d.dropped_bytes
        );
    }
    for (name, d) in [("egress", c.egress), ("ingress", c.ingress)] {
        if d.resets_sent + d.rejects_sent > 0 {
            println!(
                "{name:<8} resets sent {}, rejects sent {}",
                d.resets_sent, d.rejects_sent
            );
        }
        if d.allowed_bytes > 0 {
            println!("{name:<8} bytes allowed before a stall {}", d.allowed_bytes);
        }
        if d.corrupted_packets > 0 {
            println!("{name:<8} corrupted pkts {}", d.corrupted_packets);
        }
    }
}

/// "loss 20% egress veth0@lab udp dst=10.0.0.2/32".
pub(crate) fn summary_of(fault: &FaultWire) -> String {
    let action = if let Some(netem) = &fault.netem {
        format!("netem {}", netem_knobs(netem).join(" "))
    } else if let Some(loss) = &fault.loss {
        match (loss.percent, &loss.burst) {
            (Some(p), _) => format!("loss {p}%"),
            (None, Some(burst)) => format!("burst-loss {}", json_text(burst)),
            (None, None) => "loss".to_owned(),
        }
    } else if let Some(reset) = &fault.reset {
        let peer = if reset.peer == Some(true) {
            " +peer"
        } else {
            ""
        };
        format!("reset{peer}")
    } else if fault.reject.is_some() {
        "reject".to_owned()
    } else if let Some(stall) = &fault.stall {
        format!("stall after {} bytes", stall.bytes)
    } else if let Some(after) = &fault.reset_after {
        let peer = if after.peer == Some(true) {
            " +peer"
        } else {
            ""
        };
        format!("reset{peer} after {} bytes", after.bytes)
    } else if let Some(corrupt) = &fault.corrupt {
        let mut text = format!("corrupt {}%", corrupt.percent.unwrap_or_default());
        if let Some(bits) = corrupt.bits {
            text += &format!(" {bits}bit");
        }
        if let Some(checksum) = &corrupt.checksum {
            text += &format!(" checksum={checksum}");
        }
        text
    } else {
        "partition".to_owned()
    };
    let target = &fault.target;
    let mut place = target.dev.clone();
    if let Some(ns) = &target.netns {
        place = format!("{place}@{ns}");
    }
    let mut parts = vec![action, target.direction.clone().unwrap_or_default(), place];
    if let Some(m) = &target.matcher {
        if let Some(proto) = m.proto.as_ref().filter(|p| *p != "any") {
            parts.push(proto.clone());
        }
        let port = |p: &PortWire| match p {
            PortWire::Number(n) => n.to_string(),
            PortWire::Text(t) => t.clone(),
        };
        for (field, items) in [
            ("src", m.src.clone()),
            ("dst", m.dst.clone()),
            ("sport", m.sport.iter().map(port).collect()),
            ("dport", m.dport.iter().map(port).collect()),
        ] {
            if !items.is_empty() {
                parts.push(format!("{field}={}", items.join(",")));
            }
        }
    }
    if let Some(flows) = target.flows {
        parts.push(format!("flows={flows}"));
    }
    if let Some(connections) = &target.connections {
        parts.push(format!("connections={connections}"));
    }
    parts.join(" ")
}

/// `delay=100ms jitter=10ms loss={"percent":1.0}`: each knob set, as the wire has it.
fn netem_knobs(netem: &NetemWire) -> Vec<String> {
    let serde_json::Value::Object(knobs) = serde_json::to_value(netem).unwrap_or_default() else {
        return Vec::new();
    };
    knobs
        .iter()
        .filter(|(name, _)| name.as_str() != "limit")
        .map(|(name, value)| {
            format!(
                "{name}={}",
                value.as_str().map_or(value.to_string(), str::to_owned)
            )
        })
        .collect()
}

fn json_text(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// The `policy` object of `hello`, as a section of `faultctl status`.
pub(crate) fn print_policy(policy: &PolicySummary) {
    let any = |list: &Option<Vec<String>>| match list {
        None => "any".to_owned(),
        Some(items) if items.is_empty() => "none".to_owned(),
        Some(items) => items.join(", "),
    };
    println!(
        "policy        {}",
        policy
            .file
            .as_deref()
            .unwrap_or("none (no restrictions beyond faultd's flags)")
    );
    let limits = &policy.limits;
    let set: Vec<String> = [
        ("max_duration", limits.max_duration.clone()),
        ("default_duration", limits.default_duration.clone()),
        ("max_faults", limits.max_faults.map(|n| n.to_string())),
        (
            "max_loss_percent",
            limits.max_loss_percent.map(|p| json_text(&p)),
        ),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some(format!("{name} {}", value?)))
    .collect();
    if !set.is_empty() {
        println!("  limits      {}", set.join(", "));
    }
    println!("  devices     {}", any(&policy.targets.devices));
    println!("  namespaces  {}", any(&policy.targets.namespaces));
    let protected: Vec<String> = policy
        .protected
        .iter()
        .map(|p| {
            let mut entry = p.cidr.clone();
            if let Some(proto) = &p.proto {
                entry = format!("{entry} {proto}");
            }
            if let Some(ports) = &p.ports {
                entry = format!("{entry} port {ports}");
            }
            entry
        })
        .collect();
    if !protected.is_empty() {
        println!("  protected   {}", protected.join("; "));
    }
    let windows: Vec<String> = policy
        .windows
        .iter()
        .map(|w| {
            let days = if w.days.is_empty() {
                "none".to_owned()
            } else {
                w.days.join(",")
            };
            format!("{days} {}-{} {}", w.start, w.end, w.utc_offset)
        })
        .collect();
    println!(
        "  windows     {}",
        if windows.is_empty() {
            "any time".to_owned()
        } else {
            windows.join("; ")
        }
    );
    match &policy.access {
        None => println!("  access      whoever can open the socket"),
        Some(access) => {
            let ids = |uids: &[u32], gids: &[u32]| -> Vec<String> {
                [("uids", uids), ("gids", gids)]
                    .into_iter()
                    .filter(|(_, ids)| !ids.is_empty())
                    .map(|(name, ids)| {
                        let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
                        format!("{name} {}", ids.join(", "))
                    })
                    .collect()
            };
            let or = |list: Vec<String>, none: &str| {
                if list.is_empty() {
                    none.to_owned()
                } else {
                    list.join(", ")
                }
            };
            println!(
                "  access      full: {}; read-only: {}",
                or(ids(&access.uids, &access.gids), "root only"),
                or(ids(&access.read_only_uids, &access.read_only_gids), "none")
            );
        }
    }
}

pub(crate) fn print_table(faults: &[FaultView]) {
    println!(
        "{:<10} {:>9} {:>10} {:>10}  {:<16} FAULT",
        "ID", "REMAINING", "DROP-EGR", "DROP-ING", "LABEL"
    );
    for f in faults {
        println!(
            "{:<10} {:>9} {:>10} {:>10}  {:<16} {}",
            f.id,
            format!("{:.1}s", f.remaining_ms as f64 / 1000.0),
            f.counters.egress.dropped_packets,
            f.counters.ingress.dropped_packets,
            f.fault.label.as_deref().unwrap_or("-"),
            summary_of(&f.fault),
        );
    }
}
