//! Every fault has a deadline and never outlives it: by itself, after SIGKILL of faultd, and
//! across a restart. SIGTERM reverts everything.

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

/// The new faultd removes an earlier one's inert filters once the journaled deadline (the
/// fault's, plus at most 5 s of slack) has passed.
fn wait_for_no_filters(lab: &Lab) {
    let start = Instant::now();
    while bpf_filter_count(&lab.a.netns, &lab.a.dev) > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "leftover filter never removed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !has_clsact(&lab.a.netns, &lab.a.dev),
        "the clsact faultd added is gone too"
    );
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
fn sigkill_leaves_the_fault_until_its_deadline_and_not_after() {
    let lab = Lab::new();
    let mut agent = Agent::start();
    let applied = Instant::now();
    apply(&agent, partition_for(&lab, "3s"));
    agent.sigkill();
    assert_eq!(delivered(&lab), 0, "a crash does not cut the drill short");
    let healed = wait_until_delivered(&lab, Duration::from_secs(6));
    let at = healed.duration_since(applied);
    assert!(at >= Duration::from_secs(3), "healed early, at {at:?}");
    assert!(
        at < Duration::from_secs(4),
        "healed late, at {at:?}: the kernel deadline holds"
    );
    // The filters (one per hook) are still there, inert, until a faultd cleans up.
    assert_eq!(bpf_filter_count(&lab.a.netns, &lab.a.dev), 2);

    let restarted = agent.restart();
    assert!(list_ids(&restarted).is_empty());
    wait_for_no_filters(&lab);
    // And it works.
    apply(&restarted, partition_for(&lab, "30s"));
    assert_eq!(delivered(&lab), 0);
}

#[test]
fn a_restart_mid_fault_keeps_the_fault_until_its_deadline() {
    let lab = Lab::new();
    let mut agent = Agent::start();
    let applied = Instant::now();
    // Long enough to outlast a restart even on an emulated CPU.
    apply(&agent, partition_for(&lab, "8s"));
    agent.sigkill();
    let restarted = agent.restart();
    assert_eq!(delivered(&lab), 0, "the earlier faultd's fault still holds");
    let healed = wait_until_delivered(&lab, Duration::from_secs(11));
    assert!(healed.duration_since(applied) >= Duration::from_secs(8));
    wait_for_no_filters(&lab);
    drop(restarted);
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
