//! Helpers shared by the privileged suites: protocol calls that must succeed, and statistics.

#![allow(dead_code, reason = "each suite uses a different subset")]

use std::{net::IpAddr, time::Duration};

use faultline_tests::{
    agent::Agent,
    lab::{Lab, Side},
    traffic::udp_burst,
};
use serde_json::{json, Value};

/// Applies `fault`; panics with faultd's answer if refused. Returns the fault's view.
pub fn apply(agent: &Agent, fault: Value) -> Value {
    let reply = agent.request(json!({"id": 1, "op": "apply", "fault": fault}));
    assert_eq!(reply["ok"], true, "apply refused: {reply}");
    reply["result"].clone()
}

/// Applies `fault` expecting a refusal; returns the error object.
pub fn apply_error(agent: &Agent, fault: Value) -> Value {
    let reply = agent.request(json!({"id": 1, "op": "apply", "fault": fault}));
    assert_eq!(reply["ok"], false, "apply accepted: {reply}");
    reply["error"].clone()
}

pub fn revoke(agent: &Agent, id: &str) -> Value {
    let reply = agent.request(json!({"id": 1, "op": "revoke", "fault_id": id}));
    assert_eq!(reply["ok"], true, "revoke refused: {reply}");
    reply["result"].clone()
}

pub fn get(agent: &Agent, id: &str) -> Value {
    let reply = agent.request(json!({"id": 1, "op": "get", "fault_id": id}));
    assert_eq!(reply["ok"], true, "get refused: {reply}");
    reply["result"].clone()
}

pub fn list_ids(agent: &Agent) -> Vec<String> {
    let reply = agent.request(json!({"id": 1, "op": "list"}));
    assert_eq!(reply["ok"], true, "list refused: {reply}");
    reply["result"]["faults"]
        .as_array()
        .expect("faults array")
        .iter()
        .map(|f| f["id"].as_str().expect("id").to_owned())
        .collect()
}

pub fn id_of(view: &Value) -> String {
    view["id"].as_str().expect("fault id").to_owned()
}

/// The 99.9 % interval of a Binomial(n, p) count (normal approximation, z = 3.29).
pub fn binomial_999(n: u64, p: f64) -> (f64, f64) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (mean - 3.29 * sd, mean + 3.29 * sd)
}

/// Whether a partition of UDP from a to b's `port` is over: of 50 datagrams a millisecond
/// apart, more than half arrive (a partition passes none). Not all: when the last fault on a
/// device ends, its clsact qdisc goes, and the kernel drops the device's packets for the
/// moment that takes (`qdisc_graft` deactivates the device), which may fall in the burst.
pub fn partition_over(lab: &Lab, port: u16) -> bool {
    let to = IpAddr::V4(lab.b.v4);
    let report = udp_burst(
        lab,
        Side::A,
        to,
        port,
        0,
        50,
        Some(Duration::from_millis(1)),
    );
    report.received > 25
}
