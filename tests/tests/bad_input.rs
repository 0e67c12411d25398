//! Bad input gets a clear error with a stable code and a field, and changes nothing: the
//! device's qdiscs and filters and faultd's list are the same before and after.

mod support;

use faultline_tests::{agent::Agent, kernel::tc_snapshot, lab::Lab};
use serde_json::{json, Value};
use support::{apply, apply_error, list_ids};

fn with(lab: &Lab, edit: impl FnOnce(&mut Value)) -> Value {
    let mut fault = json!({"target": {"netns": lab.a.netns, "dev": lab.a.dev,
        "match": {"proto": "udp", "dst": ["10.0.0.2/32"], "dport": [9000]}},
        "loss": {"percent": 20}, "duration": "10s"});
    edit(&mut fault);
    fault
}

#[test]
fn every_bad_value_is_refused_and_changes_nothing() {
    let lab = Lab::new();
    let agent = Agent::start();
    // One healthy fault on the device, so "nothing changed" also covers an attached device.
    let kept = apply(
        &agent,
        with(&lab, |f| f["target"]["match"]["dport"] = json!([9999])),
    );
    let before = tc_snapshot(&lab.a.netns, &lab.a.dev);

    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "percent 150",
            with(&lab, |f| f["loss"]["percent"] = json!(150)),
            "invalid_value",
            "fault.loss.percent",
        ),
        (
            "cidr /33",
            with(&lab, |f| {
                f["target"]["match"]["dst"] = json!(["10.0.0.0/33"])
            }),
            "invalid_value",
            "fault.target.match.dst[0]",
        ),
        (
            "port 70000",
            with(&lab, |f| f["target"]["match"]["dport"] = json!([70000])),
            "invalid_value",
            "fault.target.match.dport[0]",
        ),
        (
            "unknown proto",
            with(&lab, |f| f["target"]["match"]["proto"] = json!("sctp")),
            "invalid_value",
            "fault.target.match.proto",
        ),
        (
            "zero duration",
            with(&lab, |f| f["duration"] = json!("0s")),
            "invalid_value",
            "fault.duration",
        ),
        (
            "negative duration",
            with(&lab, |f| f["duration"] = json!("-5s")),
            "invalid_value",
            "fault.duration",
        ),
        (
            "huge duration",
            with(&lab, |f| f["duration"] = json!("100000h")),
            "invalid_value",
            "fault.duration",
        ),
        (
            "missing duration",
            with(&lab, |f| {
                f.as_object_mut().map(|o| o.remove("duration"));
            }),
            "invalid_value",
            "fault.duration",
        ),
        (
            "flows 2",
            with(&lab, |f| f["target"]["flows"] = json!(2)),
            "invalid_value",
            "fault.target.flows",
        ),
        (
            "no device",
            with(&lab, |f| f["target"]["dev"] = json!("nosuchdev0")),
            "device_not_found",
            "fault.target.dev",
        ),
        (
            "no netns",
            with(&lab, |f| f["target"]["netns"] = json!("fl-no-such-netns")),
            "netns_not_found",
            "fault.target.netns",
        ),
        (
            "not a netns",
            with(&lab, |f| f["target"]["netns"] = json!("/etc/hostname")),
            "netns_not_found",
            "fault.target.netns",
        ),
        (
            "unknown field",
            with(&lab, |f| f["target"]["match"]["vlan"] = json!(5)),
            "invalid_request",
            "fault.target.match.vlan",
        ),
        (
            "string percent",
            with(&lab, |f| f["loss"]["percent"] = json!("20")),
            "invalid_request",
            "fault.loss.percent",
        ),
    ];
    for (name, fault, code, field) in cases {
        let error = apply_error(&agent, fault);
        assert_eq!(error["code"], code, "{name}: {error}");
        assert_eq!(error["field"], field, "{name}: {error}");
        assert!(
            !error["message"].as_str().unwrap_or("").is_empty(),
            "{name}: a message"
        );
        assert_eq!(
            tc_snapshot(&lab.a.netns, &lab.a.dev),
            before,
            "{name} changed the device"
        );
        assert_eq!(
            list_ids(&agent),
            [kept["id"].as_str().expect("id")],
            "{name} changed the list"
        );
    }
}

#[test]
fn a_missing_device_on_a_fresh_namespace_leaves_nothing() {
    let lab = Lab::new();
    let agent = Agent::start();
    let before = tc_snapshot(&lab.b.netns, &lab.b.dev);
    let fault = json!({"target": {"netns": lab.b.netns, "dev": "nosuchdev1"},
        "partition": {}, "duration": "10s"});
    assert_eq!(apply_error(&agent, fault)["code"], "device_not_found");
    assert_eq!(tc_snapshot(&lab.b.netns, &lab.b.dev), before);
    assert!(list_ids(&agent).is_empty());
}
