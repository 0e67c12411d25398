//! examples/remote_drill.py, the Python client of the socket protocol, against test faultd
//! processes (each standing for a host's agent, reached through its socket): it partitions the
//! lab's sides, holds and renews leased faults past their first deadline, prints their counters,
//! reports refusals with code, message and field, and leaves nothing behind however it ends.

mod support;

use std::{
    net::IpAddr,
    path::Path,
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use faultline_tests::{
    agent::Agent,
    lab::{require_root, Lab, Side},
    traffic::tcp_connects,
};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use serde_json::{json, Value};
use support::list_ids;

const APPEAR: Duration = Duration::from_secs(10);
const BLOCKED_PROBE: Duration = Duration::from_millis(500);

/// The example run by python3, killed if a test fails half-way.
struct Drill {
    child: Option<Child>,
}

impl Drill {
    /// None, with the reason printed, when this system has no python3: the VM stage's guest
    /// has none; everywhere else it is part of the setup, and its absence fails the test.
    fn start(args: &[&str]) -> Option<Drill> {
        require_root();
        let found = Command::new("python3").arg("--version").output().is_ok();
        if !found {
            assert!(
                std::env::var_os("FAULTLINE_EXPECT_NETEM").is_some(),
                "python3 is missing (scripts/setup.sh installs it)"
            );
            println!("skipped: no python3 in this guest");
            return None;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/remote_drill.py");
        let child = Command::new("python3")
            .arg("-B")
            .arg(script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the example");
        Some(Drill { child: Some(child) })
    }

    fn signal(&self, signal: Signal) {
        let child = self.child.as_ref().expect("running");
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
        kill(pid, signal).expect("signal the example");
    }

    /// Waits for the example to exit; its output.
    fn finish(mut self) -> Output {
        let child = self.child.take().expect("running");
        child.wait_with_output().expect("wait for the example")
    }
}

impl Drop for Drill {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The active faults' views.
fn faults(agent: &Agent) -> Vec<Value> {
    let reply = agent.request(json!({"id": 1, "op": "list"}));
    assert_eq!(reply["ok"], true, "list refused: {reply}");
    reply["result"]["faults"]
        .as_array()
        .expect("faults")
        .clone()
}

/// Waits for the example's one fault on `agent`, and returns its view.
fn wait_for_fault(agent: &Agent) -> Value {
    let deadline = Instant::now() + APPEAR;
    loop {
        if let [view] = faults(agent).as_slice() {
            return view.clone();
        }
        assert!(Instant::now() < deadline, "the partition never appeared");
        thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for_none(agent: &Agent, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !list_ids(agent).is_empty() {
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
    true
}

/// The final counters the example printed for `host` when it revoked `fault_id`:
/// "A: revoked f1234abcd; dropped 3 out / 2 in" gives (3, 2).
fn revoked_drops(stdout: &str, host: &str, fault_id: &str) -> (u64, u64) {
    let prefix = format!("{host}: revoked {fault_id}; dropped ");
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line:\n{stdout}"));
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match numbers[..] {
        [out, into] => (out, into),
        _ => panic!("malformed counters: {line:?}"),
    }
}

fn unix_ms_now() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    u64::try_from(since.as_millis()).expect("fits u64")
}

#[test]
fn one_socket_partition_renewed_past_its_deadline_then_revoked() {
    let lab = Lab::new();
    let agent = Agent::start();
    let socket = agent.socket_path().to_str().expect("utf-8 path").to_owned();
    let (a, b) = (IpAddr::V4(lab.a.v4), IpAddr::V4(lab.b.v4));
    let Some(drill) = Drill::start(&[
        "--a-socket",
        &socket,
        "--peer",
        &lab.b.v4.to_string(),
        "--dev",
        &lab.a.dev,
        "--netns",
        &lab.a.netns,
        "--for",
        "2s",
        "--hold",
        "5",
        "--renew-every",
        "0.5",
        "--drill-id",
        "examples-test",
    ]) else {
        return;
    };

    let view = wait_for_fault(&agent);
    let id = view["id"].as_str().expect("id").to_owned();
    assert_eq!(view["lease"], "connection", "{view}");
    assert_eq!(view["key"], "examples-test-A", "{view}");
    assert_eq!(view["fault"]["duration"], "2s", "{view}");
    // Both directions: a's packets to b leave no trace, b's to a are dropped on arrival.
    assert!(
        !tcp_connects(&lab, Side::A, b, 7310, BLOCKED_PROBE),
        "a reached b"
    );
    assert!(
        !tcp_connects(&lab, Side::B, a, 7311, BLOCKED_PROBE),
        "b reached a"
    );

    // Past the deadline of the apply, only the renews keep the fault.
    let first_deadline = view["expires_at_unix_ms"].as_u64().expect("deadline");
    thread::sleep(Duration::from_millis(
        (first_deadline + 300).saturating_sub(unix_ms_now()),
    ));
    assert_eq!(
        list_ids(&agent),
        [id.as_str()],
        "the renews did not hold it"
    );
    assert!(
        !tcp_connects(&lab, Side::A, b, 7312, BLOCKED_PROBE),
        "a reached b after the first deadline"
    );

    let out = drill.finish();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(stdout.contains("A: faultd "), "{stdout}");
    assert!(stdout.contains("protocol 1"), "{stdout}");
    assert!(stdout.contains(&format!("A: {id} renewed")), "{stdout}");
    let (dropped_out, dropped_in) = revoked_drops(&stdout, "A", &id);
    assert!(
        dropped_out > 0 && dropped_in > 0,
        "counters {dropped_out} out / {dropped_in} in:\n{stdout}"
    );
    assert!(list_ids(&agent).is_empty());
    assert!(tcp_connects(&lab, Side::A, b, 7313, Duration::from_secs(2)));
}

#[test]
fn two_sockets_partition_both_hosts_from_each_other() {
    let lab = Lab::new();
    // Two faultd processes, each with its own socket, state dir and pin dir, as on two hosts.
    let (host_a, host_b) = (Agent::start(), Agent::start());
    let (a_socket, b_socket) = (
        host_a
            .socket_path()
            .to_str()
            .expect("utf-8 path")
            .to_owned(),
        host_b
            .socket_path()
            .to_str()
            .expect("utf-8 path")
            .to_owned(),
    );
    let Some(drill) = Drill::start(&[
        "--a-socket",
        &a_socket,
        "--a-addr",
        &lab.a.v4.to_string(),
        "--b-socket",
        &b_socket,
        "--b-addr",
        &lab.b.v4.to_string(),
        "--dev",
        &lab.a.dev,
        "--netns",
        &lab.a.netns,
        "--b-dev",
        &lab.b.dev,
        "--b-netns",
        &lab.b.netns,
        "--for",
        "5s",
        "--hold",
        "3",
        "--renew-every",
        "0.5",
    ]) else {
        return;
    };

    let (view_a, view_b) = (wait_for_fault(&host_a), wait_for_fault(&host_b));
    assert_eq!(view_a["fault"]["target"]["match"]["dst"][0], "10.0.0.2/32");
    assert_eq!(view_b["fault"]["target"]["match"]["dst"][0], "10.0.0.1/32");
    let (a, b) = (IpAddr::V4(lab.a.v4), IpAddr::V4(lab.b.v4));
    assert!(
        !tcp_connects(&lab, Side::A, b, 7320, BLOCKED_PROBE),
        "a reached b"
    );
    assert!(
        !tcp_connects(&lab, Side::B, a, 7321, BLOCKED_PROBE),
        "b reached a"
    );

    let out = drill.finish();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for (host, view) in [("A", &view_a), ("B", &view_b)] {
        let id = view["id"].as_str().expect("id");
        assert!(
            stdout.contains(&format!("{host}: {id} renewed")),
            "{stdout}"
        );
        // Each side drops its own SYNs to the other at egress.
        let (dropped_out, _) = revoked_drops(&stdout, host, id);
        assert!(dropped_out > 0, "{host} dropped nothing:\n{stdout}");
    }
    assert!(list_ids(&host_a).is_empty() && list_ids(&host_b).is_empty());
    assert!(tcp_connects(&lab, Side::A, b, 7322, Duration::from_secs(2)));
    assert!(tcp_connects(&lab, Side::B, a, 7323, Duration::from_secs(2)));
}

#[test]
fn a_stopped_or_killed_controller_leaves_nothing() {
    let lab = Lab::new();
    let agent = Agent::start();
    let socket = agent.socket_path().to_str().expect("utf-8 path").to_owned();
    let peer = lab.b.v4.to_string();
    // A long hold and deadline: only the example's revoke, or the lease, can end the fault.
    let args = [
        "--a-socket",
        &socket,
        "--peer",
        &peer,
        "--dev",
        &lab.a.dev,
        "--netns",
        &lab.a.netns,
        "--for",
        "1m",
        "--hold",
        "60",
    ];

    // Ctrl-C: the example revokes what it applied, prints the counters, exits 128 + SIGINT.
    let Some(drill) = Drill::start(&args) else {
        return;
    };
    let id = wait_for_fault(&agent)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    drill.signal(Signal::SIGINT);
    let out = drill.finish();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    revoked_drops(&String::from_utf8_lossy(&out.stdout), "A", &id);
    assert!(list_ids(&agent).is_empty());

    // SIGKILL: nothing revokes but the lease, as the dead process's connection closes.
    let drill = Drill::start(&args).expect("python3 was there a moment ago");
    wait_for_fault(&agent);
    drill.signal(Signal::SIGKILL);
    let out = drill.finish();
    assert_eq!(out.status.code(), None, "{}", text(&out));
    assert!(
        wait_for_none(&agent, Duration::from_secs(5)),
        "the lease did not end the fault: {:?}",
        list_ids(&agent)
    );
    let b = IpAddr::V4(lab.b.v4);
    assert!(tcp_connects(&lab, Side::A, b, 7330, Duration::from_secs(2)));
}

#[test]
fn a_refusal_is_reported_with_its_code_message_and_field() {
    let lab = Lab::new();
    let agent = Agent::start();
    let socket = agent.socket_path().to_str().expect("utf-8 path").to_owned();
    let Some(drill) = Drill::start(&[
        "--a-socket",
        &socket,
        "--peer",
        &lab.b.v4.to_string(),
        "--dev",
        "flnosuchdev0",
        "--netns",
        &lab.a.netns,
        "--hold",
        "1",
    ]) else {
        return;
    };
    let out = drill.finish();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // 3: refused by faultd, as faultctl.
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(stderr.contains("faultd refused apply"), "{stderr}");
    assert!(stderr.contains("code:    device_not_found"), "{stderr}");
    assert!(stderr.contains("flnosuchdev0"), "{stderr}");
    assert!(stderr.contains("field:   fault.target.dev"), "{stderr}");
    assert!(list_ids(&agent).is_empty());
}
