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
    traffic::udp_burst,
};
use serde_json::{json, Value};
use support::{apply, id_of, list_ids};

const PACE: Option<Duration> = Some(Duration::from_micros(50));

fn partition_for(lab: &Lab, duration: &str) -> Value {
    json!({"target": {"netns": lab.a.netns, "dev": lab.a.dev,
           "match": {"proto": "udp", "dport": [7500]}},
           "partition": {}, "duration": duration})
}

fn delivered(lab: &Lab) -> u64 {
    udp_burst(lab, Side::A, IpAddr::V4(lab.b.v4), 7500, 0, 50, PACE).received
}

/// Polls until traffic passes again; returns when it did.
fn wait_until_delivered(lab: &Lab, limit: Duration) -> Instant {
    let start = Instant::now();
    while delivered(lab) != 50 {
        assert!(start.elapsed() < limit, "traffic still cut after {limit:?}");
    }
    Instant::now()
}

#[test]
fn a_fault_ends_on_time_by_itself() {
    let lab = Lab::new();
    let agent = Agent::start();
    let mut events = agent.connect();
    assert_eq!(events.request(&json!({"id": 1, "op": "watch"}))["ok"], true);
    let applied = Instant::now();
    let id = id_of(&apply(&agent, partition_for(&lab, "1500ms")));
    assert_eq!(delivered(&lab), 0);
    let healed = wait_until_delivered(&lab, Duration::from_secs(5));
    let late = healed.duration_since(applied);
    assert!(
        late < Duration::from_millis(2_600),
        "healed {late:?} after a 1.5 s fault"
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
