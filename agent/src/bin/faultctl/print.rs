//! How faultctl shows faults, the status and the policy to a person (`--json` prints the
//! protocol's JSON instead).

use faultline::{control::client::ClientError, proto::FaultView};
use serde_json::{json, Value};

use super::Cli;

pub(crate) fn parse<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, ClientError> {
    serde_json::from_value(value).map_err(|e| ClientError::Protocol(e.to_string()))
}

pub(crate) fn print_fault(cli: &Cli, result: Value) -> Result<(), ClientError> {
    if cli.json {
        println!("{result}");
        return Ok(());
    }
    let view: FaultView = parse(result)?;
    print_table(std::slice::from_ref(&view));
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
    Ok(())
}

/// "loss 20% egress veth0@lab udp dst=10.0.0.2/32" from a fault's wire form.
pub(crate) fn summary_of(fault: &Value) -> String {
    let spec = if fault.get("fault").is_some() {
        &fault["fault"]
    } else {
        fault
    };
    let action = if let Some(netem) = spec["netem"].as_object() {
        let knobs: Vec<String> = netem
            .iter()
            .filter(|(name, _)| name.as_str() != "limit")
            .map(|(name, value)| {
                format!(
                    "{name}={}",
                    value.as_str().map_or(value.to_string(), str::to_owned)
                )
            })
            .collect();
        format!("netem {}", knobs.join(" "))
    } else if let Some(p) = spec["loss"]["percent"].as_f64() {
        format!("loss {p}%")
    } else if spec["loss"]["burst"].is_object() {
        format!("burst-loss {}", spec["loss"]["burst"])
    } else {
        "partition".to_owned()
    };
    let target = &spec["target"];
    let mut place = target["dev"].as_str().unwrap_or("?").to_owned();
    if let Some(ns) = target["netns"].as_str() {
        place = format!("{place}@{ns}");
    }
    let mut parts = vec![
        action,
        target["direction"].as_str().unwrap_or("").to_owned(),
        place,
    ];
    let m = &target["match"];
    if let Some(proto) = m["proto"].as_str().filter(|p| *p != "any") {
        parts.push(proto.to_owned());
    }
    for field in ["src", "dst", "sport", "dport"] {
        if let Some(items) = m[field].as_array().filter(|a| !a.is_empty()) {
            let items: Vec<String> = items
                .iter()
                .map(|v| v.as_str().map_or(v.to_string(), str::to_owned))
                .collect();
            parts.push(format!("{field}={}", items.join(",")));
        }
    }
    if let Some(flows) = target["flows"].as_f64() {
        parts.push(format!("flows={flows}"));
    }
    parts.join(" ")
}

/// The `policy` object of `hello`, as a section of `faultctl status`.
pub(crate) fn print_policy(policy: &Value) {
    if !policy.is_object() {
        println!("policy        not reported by this faultd");
        return;
    }
    let any = |v: &Value| -> String {
        match v {
            Value::Null => "any".to_owned(),
            Value::Array(items) if items.is_empty() => "none".to_owned(),
            Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(", "),
            other => text(other),
        }
    };
    println!(
        "policy        {}",
        policy["file"]
            .as_str()
            .unwrap_or("none (no restrictions beyond faultd's flags)")
    );
    let limits = &policy["limits"];
    let set: Vec<String> = [
        "max_duration",
        "default_duration",
        "max_faults",
        "max_loss_percent",
    ]
    .into_iter()
    .filter(|name| !limits[*name].is_null())
    .map(|name| format!("{name} {}", text(&limits[name])))
    .collect();
    if !set.is_empty() {
        println!("  limits      {}", set.join(", "));
    }
    println!("  devices     {}", any(&policy["targets"]["devices"]));
    println!("  namespaces  {}", any(&policy["targets"]["namespaces"]));
    let protected: Vec<String> = policy["protected"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let mut entry = text(&p["cidr"]);
            if let Some(proto) = p["proto"].as_str() {
                entry = format!("{entry} {proto}");
            }
            if let Some(ports) = p["ports"].as_str() {
                entry = format!("{entry} port {ports}");
            }
            entry
        })
        .collect();
    if !protected.is_empty() {
        println!("  protected   {}", protected.join("; "));
    }
    let windows: Vec<String> = policy["windows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            format!(
                "{} {}-{} {}",
                any(&w["days"]).replace(", ", ","),
                text(&w["start"]),
                text(&w["end"]),
                text(&w["utc_offset"])
            )
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
    let access = &policy["access"];
    if access.is_null() {
        println!("  access      whoever can open the socket");
    } else {
        let ids = |kind: &str| -> Vec<String> {
            ["uids", "gids"]
                .into_iter()
                .filter_map(|ids| {
                    let key = format!("{kind}{ids}");
                    let list = access[key.as_str()].as_array().filter(|l| !l.is_empty())?;
                    Some(format!("{ids} {}", any(&Value::Array(list.clone()))))
                })
                .collect()
        };
        let full = ids("");
        let read_only = ids("read_only_");
        let or = |list: Vec<String>, none: &str| {
            if list.is_empty() {
                none.to_owned()
            } else {
                list.join(", ")
            }
        };
        println!(
            "  access      full: {}; read-only: {}",
            or(full, "root only"),
            or(read_only, "none")
        );
    }
}

/// A JSON value as plain text: strings without their quotes.
fn text(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
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
            summary_of(&json!(f.fault)),
        );
    }
}
