//! faultd's view equals the kernel's when the world changes under a fault: what someone else
//! removes of ours is put back (event `repaired`), a fault whose device or namespace is deleted
//! ends as `lost` (event `lost`, with the reason), within 100 ms (at this machine's pace), and
//! the traffic says so.

mod support;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    process::Command,
    time::{Duration, Instant},
};

use faultline_tests::{
    agent::{Agent, Conn},
    kernel::{bpf_filter_count, has_clsact, leftovers, tc_snapshot},
    lab::{Lab, Side},
    pace,
    traffic::udp_burst,
};
use serde_json::{json, Value};
use support::{apply, id_of, list_ids};

const PACE: Option<Duration> = Some(Duration::from_micros(50));

fn delivered(lab: &Lab, port: u16) -> u64 {
    udp_burst(lab, Side::A, IpAddr::V4(lab.b.v4), port, 0, 50, PACE).received
}

fn partition(lab: &Lab, port: u16) -> Value {
    json!({"target": {"netns": lab.a.netns, "dev": lab.a.dev, "direction": "both",
           "match": {"proto": "udp", "dport": [port]}},
           "partition": {}, "duration": "2m"})
}

/// A connection watching faultd's events.
fn watching(agent: &Agent) -> Conn {
    let mut events = agent.connect();
    assert_eq!(events.request(&json!({"id": 1, "op": "watch"}))["ok"], true);
    events
}

/// The next event of `kind` about fault `id`, and when it came; events of other kinds are
/// passed over.
fn next_event(events: &mut Conn, kind: &str, id: &str) -> (Value, Instant) {
    loop {
        let event = events.recv();
        if event["event"] == kind && event["fault"]["id"] == id {
            return (event, Instant::now());
        }
    }
}

fn run(cmd: &[&str]) -> Instant {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Instant::now()
}

fn within_bound(what: &str, took: Duration) {
    let bound = pace::scaled(Duration::from_millis(100));
    println!(
        "FAULTLINE-MEASURE: {what}: {:.1} ms",
        took.as_secs_f64() * 1e3
    );
    assert!(took <= bound, "{what} took {took:?} (bound {bound:?})");
}

#[test]
fn a_clsact_someone_deletes_is_put_back_and_the_partition_holds() {
    let lab = Lab::new();
    let agent = Agent::start();
    let id = id_of(&apply(&agent, partition(&lab, 7700)));
    assert_eq!(delivered(&lab, 7700), 0);
    let mut events = watching(&agent);
    let (ns, dev) = (lab.a.netns.as_str(), lab.a.dev.as_str());
    let deleted = run(&["tc", "-n", ns, "qdisc", "del", "dev", dev, "clsact"]);
    let (event, at) = next_event(&mut events, "repaired", &id);
    within_bound("repair of a deleted clsact", at - deleted);
    let message = event["message"].as_str().unwrap_or_default();
    assert!(message.contains("clsact"), "{event}");
    assert_eq!(event["fault"]["state"], "active");
    assert!(has_clsact(ns, dev), "{}", tc_snapshot(ns, dev));
    assert_eq!(bpf_filter_count(ns, dev), 2, "{}", tc_snapshot(ns, dev));
    assert_eq!(delivered(&lab, 7700), 0, "the partition holds again");
    assert_eq!(list_ids(&agent), std::slice::from_ref(&id));
    // One filter alone, too.
    let deleted = run(&[
        "tc", "-n", ns, "filter", "del", "dev", dev, "egress", "pref", "1", "handle", "0xfa17",
        "bpf",
    ]);
    let (_, at) = next_event(&mut events, "repaired", &id);
    within_bound("repair of a deleted filter", at - deleted);
    assert_eq!(bpf_filter_count(ns, dev), 2, "{}", tc_snapshot(ns, dev));
    assert_eq!(delivered(&lab, 7700), 0);
    let metrics = agent.request(json!({"id": 1, "op": "metrics"}));
    assert_eq!(metrics["result"]["repairs"], 2, "{metrics}");
    // Put back, it goes with the fault like the rest.
    support::revoke(&agent, &id);
    assert!(leftovers(ns, dev).is_empty(), "{:?}", leftovers(ns, dev));
    assert_eq!(delivered(&lab, 7700), 50);
}

#[test]
fn a_fault_whose_device_is_deleted_ends_lost() {
    let lab = Lab::new();
    let agent = Agent::start();
    let id = id_of(&apply(&agent, partition(&lab, 7701)));
    let kept = id_of(&apply(
        &agent,
        json!({"target": {"netns": lab.b.netns, "dev": lab.b.dev}, "partition": {},
               "duration": "2m"}),
    ));
    let mut events = watching(&agent);
    // The veth pair goes whole: b's end, and its fault, with it.
    let deleted = run(&["ip", "-n", &lab.a.netns, "link", "del", &lab.a.dev]);
    // The two ends go in one batch, announced in either order.
    let mut lost = BTreeMap::new();
    while lost.len() < 2 {
        let event = events.recv();
        let fault = event["fault"]["id"].as_str().unwrap_or_default().to_owned();
        if event["event"] == "lost" && [&id, &kept].contains(&&fault) {
            lost.insert(fault, (event, Instant::now()));
        }
    }
    let (event, at) = &lost[&id];
    within_bound("a deleted device's fault ending", *at - deleted);
    assert_eq!(event["fault"]["state"], "lost");
    let message = event["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&lab.a.dev) && message.contains("deleted"),
        "{event}"
    );
    let (event, _) = &lost[&kept];
    assert!(event["message"]
        .as_str()
        .unwrap_or_default()
        .contains(&lab.b.dev));
    assert!(list_ids(&agent).is_empty());
    let reply = agent.request(json!({"id": 1, "op": "get", "fault_id": id}));
    assert_eq!(reply["error"]["code"], "not_found");
    assert_eq!(
        faultline_tests::kernel::live_faults_in_kernel(agent.pin_dir()),
        0
    );
}

#[test]
fn a_fault_whose_namespace_is_deleted_ends_lost_and_lets_it_go() {
    let lab = Lab::new();
    let agent = Agent::start();
    let id = id_of(&apply(&agent, partition(&lab, 7702)));
    assert_eq!(delivered(&lab, 7702), 0);
    let mut events = watching(&agent);
    let deleted = run(&["ip", "netns", "del", &lab.a.netns]);
    let (event, at) = next_event(&mut events, "lost", &id);
    within_bound("a deleted namespace's fault ending", at - deleted);
    let message = event["message"].as_str().unwrap_or_default();
    assert!(message.contains(&lab.a.netns), "{event}");
    assert!(list_ids(&agent).is_empty());
    // faultd no longer holds the namespace: it is destroyed, and b's end of the pair with it.
    let start = Instant::now();
    loop {
        let links = Command::new("ip")
            .args(["-n", &lab.b.netns, "-o", "link", "show", "dev", &lab.b.dev])
            .output()
            .expect("ip");
        if !links.status.success() {
            break;
        }
        assert!(
            start.elapsed() < pace::scaled(Duration::from_secs(5)),
            "the deleted namespace lives on: its veth is still up in b"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        faultline_tests::kernel::live_faults_in_kernel(agent.pin_dir()),
        0
    );
}
