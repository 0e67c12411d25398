//! Every fault has a deadline and never outlives it; SIGTERM reverts everything. What happens
//! when faultd is killed or restarted is crash_safety.rs.

mod support;

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use faultline_tests::{
    agent::Agent,
    kernel::{bpf_filter_count, has_clsact},
    lab::{Lab, Side},
    pace,
    traffic::udp_burst,
};
use serde_json::{json, Value};
use support::{apply, id_of, list_ids, partition_over};

const PACE: Option<Duration> = Some(Duration::from_micros(50));

fn partition_for(lab: &Lab, duration: &str) -> Value {
    json!({"target": {"netns": lab.a.netns, "dev": lab.a.dev,
           "match": {"proto": "udp", "dport": [7500]}},
           "partition": {}, "duration": duration})
}

fn delivered(lab: &Lab) -> u64 {
    udp_burst(lab, Side::A, IpAddr::V4(lab.b.v4), 7500, 0, 50, PACE).received
}

#[test]
fn a_fault_ends_on_time_by_itself() {
    let lab = Lab::new();
    let agent = Agent::start();
    let mut events = agent.connect();
    assert_eq!(events.request(&json!({"id": 1, "op": "watch"}))["ok"], true);
    let id = id_of(&apply(&agent, partition_for(&lab, "1500ms")));
    // faultd set the deadline before it answered: 1.5 s from now is surely past it.
    let past_deadline = Instant::now() + Duration::from_millis(1500);
    assert_eq!(delivered(&lab), 0);
    pace::sleep_until(past_deadline);
    assert!(
        partition_over(&lab, 7500),
        "traffic still cut after the fault's deadline"
    );
    let mut kinds = Vec::new();
    while kinds.last().map(String::as_str) != Some("expired") {
        let event = events.recv();
        assert_eq!(event["fault"]["id"], id.as_str());
        kinds.push(event["event"].as_str().expect("event kind").to_owned());
    }
    assert_eq!(kinds, ["applied", "expired"]);
    assert!(list_ids(&agent).is_empty());
    assert!(
        !has_clsact(&lab.a.netns, &lab.a.dev),
        "faultd removed the clsact it added"
    );
}

#[test]
fn sigterm_reverts_everything_and_exits_zero() {
    let lab = Lab::new();
    let mut agent = Agent::start();
    apply(&agent, partition_for(&lab, "60s"));
    apply(
        &agent,
        json!({"target": {"netns": lab.b.netns, "dev": lab.b.dev, "direction": "ingress"},
               "loss": {"percent": 50}, "duration": "60s"}),
    );
    let status = agent.sigterm_and_wait();
    assert!(status.success(), "faultd exited with {status}");
    for peer in [&lab.a, &lab.b] {
        assert!(
            !has_clsact(&peer.netns, &peer.dev),
            "clsact left on {}",
            peer.dev
        );
        assert_eq!(bpf_filter_count(&peer.netns, &peer.dev), 0);
    }
    assert_eq!(delivered(&lab), 50);
}
