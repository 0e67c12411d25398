//! The CLI: applies through flags, prints tables or the protocol's JSON, and documents its exit
//! codes (0 ok, 2 usage, 3 refused by faultd, 4 faultd unreachable).

use std::process::Command;

use faultline_tests::{
    agent::{bin_path, Agent},
    lab::Lab,
};
use serde_json::Value;

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn loss_partition_ls_show_rm_clear() {
    let lab = Lab::new();
    let agent = Agent::start();
    let (ns, dev) = (lab.a.netns.as_str(), lab.a.dev.as_str());
    let out = agent.faultctl(&[
        "--json",
        "loss",
        "--netns",
        ns,
        "--dev",
        dev,
        "--proto",
        "udp",
        "--dst",
        "10.0.0.2",
        "--dport",
        "9000-9100",
        "--percent",
        "5",
        "--for",
        "30s",
        "--label",
        "cli",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let view = json_of(&out);
    let id = view["id"].as_str().expect("id").to_owned();
    assert_eq!(view["fault"]["target"]["match"]["dport"][0], "9000-9100");

    let out = agent.faultctl(&[
        "partition",
        "--netns",
        ns,
        "--dev",
        dev,
        "--dst",
        "fd00::2",
        "--for",
        "30s",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("applied f"));

    let out = agent.faultctl(&["ls"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains(&id) && table.contains("partition both"),
        "{table}"
    );
    let out = agent.faultctl(&["show", &id]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("dropped pkts"));
    assert_eq!(agent.faultctl(&["rm", &id]).status.code(), Some(0));
    let out = agent.faultctl(&["--json", "clear"]);
    assert_eq!(json_of(&out)["revoked"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        json_of(&agent.faultctl(&["--json", "ls"]))["faults"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
}

#[test]
fn exit_codes_tell_usage_refusal_and_unreachable_apart() {
    let lab = Lab::new();
    let agent = Agent::start();
    let usage = agent.faultctl(&["loss", "--percent", "5"]);
    assert_eq!(
        usage.status.code(),
        Some(2),
        "missing --dev is a usage error"
    );

    let refused = agent.faultctl(&[
        "--json",
        "loss",
        "--netns",
        &lab.a.netns,
        "--dev",
        &lab.a.dev,
        "--percent",
        "150",
        "--for",
        "5s",
    ]);
    assert_eq!(refused.status.code(), Some(3));
    let body = json_of(&refused);
    assert_eq!(body["ok"], false);
    assert_eq!(body["error"]["code"], "invalid_value");
    assert_eq!(body["error"]["field"], "fault.loss.percent");

    let unreachable = Command::new(bin_path("faultctl"))
        .args(["--socket", "/nonexistent/faultd.sock", "ls"])
        .output()
        .expect("run faultctl");
    assert_eq!(unreachable.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("cannot reach faultd"));
}
