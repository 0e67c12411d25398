//! The socket protocol: every op, idempotent apply, pipelining, malformed and oversize input,
//! unknown ops and fields, concurrent clients and `watch`.

mod support;

use std::time::Duration;

use faultline_tests::{
    agent::{bin_path, Agent},
    lab::Lab,
};
use serde_json::{json, Value};
use support::{apply, get, id_of, list_ids};

fn loss_fault(lab: &Lab, port: u16) -> Value {
    json!({"target": {"netns": lab.a.netns, "dev": lab.a.dev,
           "match": {"proto": "udp", "dport": [port]}},
           "loss": {"percent": 10}, "duration": "60s", "label": "protocol test"})
}

#[test]
fn hello_reports_version_features_and_limits() {
    let agent = Agent::start();
    let reply = agent.request(json!({"id": "h", "op": "hello"}));
    assert_eq!(reply["id"], "h");
    assert_eq!(reply["ok"], true);
    let result = &reply["result"];
    assert_eq!(result["protocol"], 1);
    assert_eq!(result["agent"], "faultd");
    assert_eq!(result["features"]["ebpf_tc"], true);
    assert_eq!(result["limits"]["max_line_bytes"], 65536);
    // Every capability the probes try, each found or missing with a reason.
    let capabilities = result["capabilities"].as_object().expect("capabilities");
    assert_eq!(capabilities["ebpf_faults"], json!({"available": true}));
    for name in [
        "egress_delay",
        "ingress_delay",
        "netem_delay",
        "netem_loss",
        "netem_loss_models",
        "netem_duplicate",
        "netem_corrupt",
        "netem_reorder",
        "netem_rate",
        "netem_duplicate_beside_others",
    ] {
        let found = &capabilities[name];
        assert!(
            found["available"] == true || found["missing"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}: {found}"
        );
    }
    assert_eq!(
        result["features"]["netem"],
        capabilities["egress_delay"]["available"]
    );
}

#[test]
fn a_second_faultd_refuses_a_live_socket() {
    let agent = Agent::start();
    let state = std::env::temp_dir().join(format!("faultline-second-{}", std::process::id()));
    let out = std::process::Command::new(bin_path("faultd"))
        .arg("--socket")
        .arg(agent.socket_path())
        .arg("--state-dir")
        .arg(&state)
        .output()
        .expect("run a second faultd");
    let _ = std::fs::remove_dir_all(&state);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another faultd is already serving"));
    assert_eq!(
        agent.request(json!({"id": 1, "op": "hello"}))["ok"],
        true,
        "the first is untouched"
    );
}

#[test]
fn apply_list_get_revoke_clear() {
    let lab = Lab::new();
    let agent = Agent::start();
    let view = apply(&agent, loss_fault(&lab, 8001));
    let id = id_of(&view);
    assert_eq!(view["state"], "active");
    assert_eq!(
        view["fault"]["target"]["direction"], "egress",
        "defaults are filled in"
    );
    assert_eq!(view["fault"]["label"], "protocol test");
    assert!(view["remaining_ms"].as_u64().expect("remaining") > 55_000);
    let second = id_of(&apply(&agent, loss_fault(&lab, 8002)));
    assert_eq!(list_ids(&agent).len(), 2);
    let got = get(&agent, &id);
    assert_eq!(got["counters"]["egress"]["dropped_packets"], 0);
    let revoked = agent.request(json!({"id": 2, "op": "revoke", "fault_id": id}));
    assert_eq!(revoked["result"]["state"], "revoked");
    let missing = agent.request(json!({"id": 3, "op": "get", "fault_id": id}));
    assert_eq!(missing["error"]["code"], "not_found");
    let cleared = agent.request(json!({"id": 4, "op": "clear"}));
    let revoked: Vec<&Value> = cleared["result"]["revoked"]
        .as_array()
        .expect("list")
        .iter()
        .collect();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["id"], second.as_str());
    assert!(list_ids(&agent).is_empty());
}

#[test]
fn a_key_makes_apply_idempotent() {
    let lab = Lab::new();
    let agent = Agent::start();
    let request =
        json!({"id": 1, "op": "apply", "key": "drill-7", "fault": loss_fault(&lab, 8003)});
    let first = agent.request(request.clone());
    let again = agent.request(request);
    assert_eq!(first["result"]["id"], again["result"]["id"]);
    assert_eq!(list_ids(&agent).len(), 1);
    let other = agent.request(
        json!({"id": 2, "op": "apply", "key": "drill-7", "fault": loss_fault(&lab, 8004)}),
    );
    assert_eq!(other["error"]["code"], "conflict");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let agent = Agent::start();
    let mut conn = agent.connect();
    conn.send_raw(b"{\"id\":1,\"op\":\"hello\"}\n{\"id\":2,\"op\":\"list\"}\n{\"id\":3,\"op\":\"nope\"}\n{\"id\":4,\"op\":\"list\"}\n");
    let ids: Vec<Value> = (0..4).map(|_| conn.recv()["id"].clone()).collect();
    assert_eq!(ids, [json!(1), json!(2), json!(3), json!(4)]);
}

#[test]
fn malformed_unknown_and_oversize_input_get_stable_errors() {
    let agent = Agent::start();
    let mut conn = agent.connect();
    conn.send_raw(b"{this is not json\n");
    let reply = conn.recv();
    assert_eq!(
        (reply["ok"].clone(), reply["error"]["code"].clone()),
        (json!(false), json!("parse_error"))
    );
    let reply = conn.request(&json!({"id": 1, "op": "explode"}));
    assert_eq!(reply["error"]["code"], "unknown_op");
    let reply = conn.request(&json!({"id": 2, "op": "list", "verbose": true}));
    assert_eq!(reply["error"]["code"], "invalid_request");
    let reply = conn.request(&json!({"id": 3, "op": "apply", "fault":
        {"target": {"dev": "lo", "colour": "red"}, "partition": {}, "duration": "1s"}}));
    assert_eq!(reply["error"]["code"], "invalid_request");
    assert_eq!(reply["error"]["field"], "fault.target.colour");
    // The connection is still usable after errors.
    assert_eq!(conn.request(&json!({"id": 4, "op": "hello"}))["ok"], true);

    let mut big = vec![b'x'; 70 * 1024];
    big.push(b'\n');
    conn.send_raw(&big);
    let reply = conn.recv();
    assert_eq!(reply["error"]["code"], "line_too_long");
    assert!(
        conn.try_recv().is_none(),
        "the connection is closed after an oversize line"
    );
    // faultd is fine.
    assert_eq!(agent.request(json!({"id": 5, "op": "hello"}))["ok"], true);
}

#[test]
fn two_clients_at_once_and_watch_sees_every_change() {
    let lab = Lab::new();
    let agent = Agent::start();
    let mut watcher = agent.connect();
    assert_eq!(
        watcher.request(&json!({"id": "w", "op": "watch"}))["result"]["watching"],
        true
    );
    let mut one = agent.connect();
    let mut two = agent.connect();
    let a = one.request(&json!({"id": 1, "op": "apply", "fault": loss_fault(&lab, 8005)}));
    let b = two.request(&json!({"id": 1, "op": "apply", "fault": loss_fault(&lab, 8006)}));
    let (a, b) = (a["result"]["id"].clone(), b["result"]["id"].clone());
    one.request(&json!({"id": 2, "op": "revoke", "fault_id": a}));
    let mut short = loss_fault(&lab, 8007);
    short["duration"] = json!("300ms");
    let c = two.request(&json!({"id": 2, "op": "apply", "fault": short}))["result"]["id"].clone();
    std::thread::sleep(Duration::from_millis(500));
    let seen: Vec<(Value, Value)> = (0..5)
        .map(|_| watcher.recv())
        .map(|e| (e["event"].clone(), e["fault"]["id"].clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (json!("applied"), a.clone()),
            (json!("applied"), b.clone()),
            (json!("revoked"), a),
            (json!("applied"), c.clone()),
            (json!("expired"), c),
        ]
    );
}
