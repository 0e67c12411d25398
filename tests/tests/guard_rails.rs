//! The guard rails an operator sets around faultd, proven against a real kernel: the policy
//! refuses what it does not allow and installs nothing; protected traffic passes even a
//! partition of everything (counted at the receiver); the socket's peers get what `[access]`
//! grants them by uid; a fault leased to `faultctl --lease connection` lives only while
//! that faultctl runs; and faultd, started as root, keeps only the capabilities it needs.

mod support;

use std::{
    fs,
    io::Read,
    net::IpAddr,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use faultline_tests::{
    agent::{bin_path, Agent, SharedBin},
    kernel::leftovers,
    lab::{Lab, Side},
    pace,
    traffic::{tcp_connects, udp_burst},
};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use serde_json::{json, Value};
use support::{apply, apply_error, id_of, list_ids};

const PACE: Option<Duration> = Some(Duration::from_micros(500));
/// Long enough for a TCP handshake in the lab; what a fault blocks never completes.
const CONNECT: Duration = Duration::from_secs(2);
/// A uid and gid nobody on a test machine uses, given read-only access by the policies below.
const READER: u32 = 65533;
/// `nobody`: in no list of any policy below.
const STRANGER: u32 = 65534;

/// A policy file of one test, removed when dropped.
struct PolicyFile {
    path: PathBuf,
}

impl PolicyFile {
    fn new(test: &str, text: &str) -> PolicyFile {
        let path = std::env::temp_dir().join(format!(
            "faultline-policy-{}-{test}.toml",
            std::process::id()
        ));
        fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        PolicyFile { path }
    }

    fn path(&self) -> &str {
        self.path.to_str().expect("temp paths are UTF-8")
    }
}

impl Drop for PolicyFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn start_with_policy(test: &str, text: &str) -> (PolicyFile, Agent) {
    let policy = PolicyFile::new(test, text);
    let agent = Agent::start_with(&["--config", policy.path()]);
    (policy, agent)
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Asserts `error` is `forbidden` by `rule`.
fn assert_forbidden(error: &Value, rule: &str) {
    assert_eq!(error["code"], "forbidden", "{error}");
    assert_eq!(error["field"], rule, "{error}");
}

fn assert_clean(lab: &Lab) {
    for side in [Side::A, Side::B] {
        for dev in [lab.dev(side), "lo"] {
            let left = leftovers(lab.ns(side), dev);
            assert!(left.is_empty(), "{dev} in {}: {left:?}", lab.ns(side));
        }
    }
}

#[test]
fn the_policy_refuses_what_it_does_not_allow_and_installs_nothing() {
    let lab = Lab::new();
    let text = format!(
        "[limits]\nmax_duration = \"1m\"\nmax_faults = 2\nmax_loss_percent = 50\n\n\
         [targets]\ndevices = [\"fl*\"]\nnamespaces = [\"{}\"]\n",
        lab.a.netns
    );
    let (policy, agent) = start_with_policy("refusals", &text);
    let target = |netns: &str, dev: &str| json!({"netns": netns, "dev": dev});
    let a = target(&lab.a.netns, &lab.a.dev);

    let error = apply_error(
        &agent,
        json!({"target": target(&lab.a.netns, "lo"), "partition": {}, "duration": "10s"}),
    );
    assert_forbidden(&error, "targets.devices");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("\"lo\"")),
        "the message names the device: {error}"
    );
    let error = apply_error(
        &agent,
        json!({"target": target(&lab.b.netns, &lab.b.dev), "partition": {}, "duration": "10s"}),
    );
    assert_forbidden(&error, "targets.namespaces");
    let error = apply_error(
        &agent,
        json!({"target": a, "loss": {"percent": 60}, "duration": "10s"}),
    );
    assert_forbidden(&error, "limits.max_loss_percent");
    // A burst model is bounded by its loss in the bad state (100 unless given), not its mean.
    let error = apply_error(
        &agent,
        json!({"target": a, "loss": {"burst": {"p": 1, "r": 50}}, "duration": "10s"}),
    );
    assert_forbidden(&error, "limits.max_loss_percent");
    // faultd folds the policy's maximum into its own, which the spec is checked against first.
    let error = apply_error(
        &agent,
        json!({"target": a, "partition": {}, "duration": "2m"}),
    );
    let error_over_max = error.clone();
    let by_policy = error["code"] == "forbidden" && error["field"] == "limits.max_duration";
    let by_limit = error["code"] == "invalid_value" && error["field"] == "fault.duration";
    assert!(by_policy || by_limit, "{error}");
    assert!(
        error["message"].as_str().is_some_and(|m| m.contains("1m")),
        "the message names the maximum: {error}"
    );
    assert!(list_ids(&agent).is_empty());
    assert_clean(&lab);

    // faultctl reports a refusal with exit code 3 and the protocol's error.
    let out = agent.faultctl(&[
        "--json",
        "loss",
        "--netns",
        &lab.a.netns,
        "--dev",
        &lab.a.dev,
        "--percent",
        "75",
        "--for",
        "10s",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_forbidden(&json_of(&out)["error"], "limits.max_loss_percent");

    // Within the policy: allowed, up to its max_faults.
    for port in [7100, 7101] {
        apply(
            &agent,
            json!({"target": {"netns": lab.a.netns, "dev": lab.a.dev,
                   "match": {"proto": "udp", "dport": [port]}},
                   "loss": {"percent": 50}, "duration": "1m"}),
        );
    }
    let error = apply_error(
        &agent,
        json!({"target": {"netns": lab.a.netns, "dev": lab.a.dev,
               "match": {"proto": "udp", "dport": [7102]}},
               "loss": {"percent": 5}, "duration": "10s"}),
    );
    assert_eq!(error["code"], "limit_exceeded", "{error}");
    assert_eq!(list_ids(&agent).len(), 2);
    // A renew past the maximum is refused as an apply is: the same code, and the same rule
    // (or the request's own `duration` where the apply's was `fault.duration`).
    let id = &list_ids(&agent)[0];
    let renewed = agent.request(json!({"id": 1, "op": "renew", "fault_id": id, "duration": "2m"}));
    let error = &renewed["error"];
    assert_eq!(error["code"], error_over_max["code"], "{renewed}");
    let field = match error_over_max["field"].as_str() {
        Some("fault.duration") => "duration",
        other => other.unwrap_or_default(),
    };
    assert_eq!(error["field"], field, "{renewed}");
    // Past faultd's own maximum (1h) as well as the policy's: an invalid value, for both.
    let error = apply_error(
        &agent,
        json!({"target": a, "partition": {}, "duration": "2h"}),
    );
    assert_eq!(
        (&error["code"], &error["field"]),
        (&json!("invalid_value"), &json!("fault.duration")),
        "{error}"
    );
    let renewed = agent.request(json!({"id": 1, "op": "renew", "fault_id": id, "duration": "2h"}));
    assert_eq!(
        (&renewed["error"]["code"], &renewed["error"]["field"]),
        (&json!("invalid_value"), &json!("duration")),
        "{renewed}"
    );

    // hello and faultctl status show the policy in force.
    let hello = agent.request(json!({"id": 1, "op": "hello"}));
    let summary = &hello["result"]["policy"];
    assert_eq!(summary["file"], policy.path(), "{hello}");
    assert_eq!(summary["limits"]["max_faults"], 2);
    assert_eq!(summary["limits"]["max_duration"], "1m");
    assert_eq!(summary["targets"]["devices"], json!(["fl*"]));
    assert_eq!(summary["targets"]["namespaces"], json!([lab.a.netns]));
    assert_eq!(summary["access"], Value::Null);
    assert_eq!(hello["result"]["limits"]["max_faults"], 2);
    let status = json_of(&agent.faultctl(&["--json", "status"]));
    assert_eq!(&status["policy"], summary);
    let out = agent.faultctl(&["status"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        format!("policy        {}", policy.path()),
        "max_duration 1m".to_owned(),
        "max_faults 2".to_owned(),
        "max_loss_percent 50".to_owned(),
        "  devices     fl*".to_owned(),
        format!("  namespaces  {}", lab.a.netns),
        "  windows     any time".to_owned(),
        "  access      whoever can open the socket".to_owned(),
    ] {
        assert!(text.contains(&line), "{line:?} not in:\n{text}");
    }
}

#[test]
fn a_window_that_excludes_now_refuses_every_fault() {
    let lab = Lab::new();
    // Two hours from now for an hour, every day: now is outside whatever the date.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let hour = (now / 3600) % 24;
    let (start, end) = ((hour + 2) % 24, (hour + 3) % 24);
    let text = format!("[[windows]]\nstart = \"{start:02}:00\"\nend = \"{end:02}:00\"\n");
    let (_policy, agent) = start_with_policy("window", &text);
    let error = apply_error(
        &agent,
        json!({"target": {"netns": lab.a.netns, "dev": lab.a.dev}, "partition": {},
               "duration": "10s"}),
    );
    assert_forbidden(&error, "windows");
    let message = error["message"].as_str().expect("message");
    assert!(
        message.contains(&format!("{start:02}:00-{end:02}:00")) && message.contains("it is now"),
        "{message}"
    );
    assert!(list_ids(&agent).is_empty());
    assert_clean(&lab);
    let out = agent.faultctl(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let window =
        format!("  windows     mon,tue,wed,thu,fri,sat,sun {start:02}:00-{end:02}:00 +00:00");
    assert!(text.contains(&window), "{window:?} not in:\n{text}");
}

#[test]
fn protected_targets_pass_a_partition_of_everything() {
    let lab = Lab::new();
    let controller = lab.b.v6;
    // The third entry keeps IPv6 neighbour discovery working: a partition of everything would
    // drop the solicitations this host sends to multicast addresses, and with them its way to
    // the controller (ARP is not IP and always passes).
    let text = format!(
        "[[protected]]\ncidr = \"0.0.0.0/0\"\nproto = \"tcp\"\nports = \"22\"\n\n\
         [[protected]]\ncidr = \"{controller}/128\"\n\n\
         [[protected]]\ncidr = \"ff02::/16\"\nproto = \"icmpv6\"\n"
    );
    let (_policy, agent) = start_with_policy("protected", &text);
    let (b4, b6, a6) = (
        IpAddr::V4(lab.b.v4),
        IpAddr::V6(controller),
        IpAddr::V6(lab.a.v6),
    );
    let view = apply(
        &agent,
        json!({"target": {"netns": lab.a.netns, "dev": lab.a.dev, "direction": "both"},
               "partition": {}, "duration": "2m"}),
    );
    let n = 200;

    assert!(
        tcp_connects(&lab, Side::A, b4, 22, Duration::from_secs(5)),
        "ssh (tcp/22) must pass the partition"
    );
    assert!(
        !tcp_connects(&lab, Side::A, b4, 2222, CONNECT),
        "tcp to another port must not pass"
    );
    let udp = udp_burst(&lab, Side::A, b4, 7200, 0, n, PACE);
    assert_eq!(udp.received, 0, "udp must not pass: {udp:?}");
    let udp = udp_burst(&lab, Side::A, b4, 7201, 22, n, PACE);
    assert_eq!(udp.received, 0, "udp from port 22 is not tcp/22: {udp:?}");

    // The controller's address passes whatever the protocol or port, both ways.
    assert!(tcp_connects(
        &lab,
        Side::A,
        b6,
        2222,
        Duration::from_secs(5)
    ));
    let to = udp_burst(&lab, Side::A, b6, 7202, 0, n, PACE);
    assert_eq!(to.received, n, "to the controller: {to:?}");
    let from = udp_burst(&lab, Side::B, a6, 7203, 0, n, PACE);
    assert_eq!(from.received, n, "from the controller: {from:?}");

    // What the partition dropped it counted; what passed protected it did not.
    let counters = &support::get(&agent, &id_of(&view))["counters"];
    let dropped = counters["egress"]["dropped_packets"].as_u64().unwrap_or(0)
        + counters["ingress"]["dropped_packets"].as_u64().unwrap_or(0);
    assert!(dropped >= 2 * n, "{counters}");
    support::revoke(&agent, &id_of(&view));
    let udp = udp_burst(&lab, Side::A, b4, 7204, 0, n, PACE);
    assert_eq!(udp.received, n, "after the revoke: {udp:?}");
    assert_clean(&lab);
}

/// Runs faultctl (a copy other uids can reach) against `agent` as `uid` (its gid the same, no
/// supplementary groups).
fn faultctl_as(faultctl: &SharedBin, agent: &Agent, uid: u32, args: &[&str]) -> Output {
    Command::new(faultctl.path())
        .arg("--socket")
        .arg(agent.socket_path())
        .args(args)
        .uid(uid)
        .gid(uid)
        .output()
        .expect("spawn faultctl")
}

fn faultd_log(agent: &Agent) -> String {
    fs::read_to_string(agent.state_dir().with_file_name("faultd.log")).unwrap_or_default()
}

#[test]
fn access_follows_the_peer_uid() {
    let lab = Lab::new();
    let text = format!("[access]\nuids = [0]\nread_only_uids = [{READER}]\n");
    let (_policy, agent) = start_with_policy("access", &text);
    let faultctl = SharedBin::new("faultctl");
    // faultd makes its socket 0660 root:root; let every uid reach it, so that [access] decides.
    fs::set_permissions(agent.socket_path(), fs::Permissions::from_mode(0o666))
        .expect("chmod the socket");
    let partition = [
        "--json",
        "partition",
        "--netns",
        &lab.a.netns,
        "--dev",
        &lab.a.dev,
        "--for",
        "30s",
    ];

    let out = faultctl_as(&faultctl, &agent, READER, &["--json", "ls"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(json_of(&out)["faults"], json!([]));
    let out = faultctl_as(&faultctl, &agent, READER, &["--json", "status"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        json_of(&out)["policy"]["access"]["read_only_uids"],
        json!([READER])
    );

    let out = faultctl_as(&faultctl, &agent, READER, &partition);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_forbidden(&json_of(&out)["error"], "op");
    assert!(list_ids(&agent).is_empty());
    assert_clean(&lab);

    let out = faultctl_as(&faultctl, &agent, STRANGER, &["--json", "ls"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let error = &json_of(&out)["error"];
    assert_forbidden(error, "op");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains(&STRANGER.to_string())),
        "{error}"
    );

    // Root, in `uids`, may change things; a read-only peer may then see them but not remove them.
    let out = agent.faultctl(&partition);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let id = id_of(&json_of(&out));
    let out = faultctl_as(&faultctl, &agent, READER, &["--json", "show", &id]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for denied in [
        vec!["--json", "rm", &id],
        vec!["--json", "clear"],
        vec!["--json", "renew", &id, "1m"],
    ] {
        let out = faultctl_as(&faultctl, &agent, READER, &denied);
        assert_eq!(out.status.code(), Some(3), "{denied:?}: {out:?}");
        assert_forbidden(&json_of(&out)["error"], "op");
    }
    assert_eq!(list_ids(&agent), vec![id.clone()]);
    support::revoke(&agent, &id);

    let log = faultd_log(&agent);
    for uid in [READER, STRANGER] {
        assert!(
            log.lines()
                .any(|l| l.contains("access denied") && l.contains(&format!("uid={uid}"))),
            "no denial of uid {uid} in the log:\n{log}"
        );
    }
}

/// `faultctl --lease connection ...` in the background, its output captured.
fn leased_faultctl(agent: &Agent, args: &[&str]) -> Child {
    Command::new(bin_path("faultctl"))
        .arg("--socket")
        .arg(agent.socket_path())
        .args(args)
        .args(["--lease", "connection"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn faultctl")
}

/// The one active fault `held` applied, once it is there; what faultctl printed if it never is.
fn wait_for_fault(agent: &Agent, held: &mut Child) -> Value {
    let limit = pace::scaled(Duration::from_secs(10));
    let deadline = Instant::now() + limit;
    loop {
        let reply = agent.request(json!({"id": 1, "op": "list"}));
        if let Some(fault) = reply["result"]["faults"].get(0) {
            return fault.clone();
        }
        if Instant::now() > deadline || held.try_wait().is_ok_and(|s| s.is_some()) {
            let _ = held.kill();
            let (out, err) = outputs(held);
            panic!("no fault appeared within {limit:?}: {reply}\nfaultctl's stdout:\n{out}\nfaultctl's stderr:\n{err}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// What `child` wrote to its piped stdout and stderr, once it has ended.
fn outputs(child: &mut Child) -> (String, String) {
    let _ = child.wait();
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(stdout) = child.stdout.as_mut() {
        let _ = stdout.read_to_string(&mut out);
    }
    if let Some(stderr) = child.stderr.as_mut() {
        let _ = stderr.read_to_string(&mut err);
    }
    (out, err)
}

fn wait_exit(child: &mut Child, limit: Duration) -> (Option<i32>, String) {
    let limit = pace::scaled(limit);
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll faultctl") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let (out, err) = outputs(child);
            panic!("faultctl still running after {limit:?}:\n{out}\n{err}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    if let Some(stdout) = child.stdout.as_mut() {
        let _ = stdout.read_to_string(&mut out);
    }
    (status.code(), out)
}

fn wait_no_fault(agent: &Agent, limit: Duration) {
    let deadline = Instant::now() + pace::scaled(limit);
    while !list_ids(agent).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the leased fault outlived its holder"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

fn signal(child: &Child, signal: Signal) {
    kill(Pid::from_raw(child.id() as i32), signal).expect("signal faultctl");
}

#[test]
fn a_leased_fault_lives_only_while_faultctl_runs() {
    let lab = Lab::new();
    let agent = Agent::start();
    let (ns, dev) = (lab.a.netns.as_str(), lab.a.dev.as_str());
    let b4 = IpAddr::V4(lab.b.v4);
    let partition = [
        "partition",
        "--netns",
        ns,
        "--dev",
        dev,
        "--proto",
        "udp",
        "--dport",
        "7300",
        "--for",
        "1m",
    ];

    // SIGINT: faultctl revokes the fault itself and exits 0.
    let mut held = leased_faultctl(&agent, &partition);
    let fault = wait_for_fault(&agent, &mut held);
    assert_eq!(fault["lease"], "connection", "{fault}");
    let udp = udp_burst(&lab, Side::A, b4, 7300, 0, 100, PACE);
    assert_eq!(
        udp.received, 0,
        "the fault is active while faultctl holds it"
    );
    signal(&held, Signal::SIGINT);
    let (code, out) = wait_exit(&mut held, Duration::from_secs(5));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("revoked {}", id_of(&fault))), "{out}");
    assert!(list_ids(&agent).is_empty());
    assert_clean(&lab);

    // SIGTERM with --json: the apply result, then the revoke result.
    let mut json_args = vec!["--json"];
    json_args.extend(partition);
    let mut held = leased_faultctl(&agent, &json_args);
    let fault = wait_for_fault(&agent, &mut held);
    signal(&held, Signal::SIGTERM);
    let (code, out) = wait_exit(&mut held, Duration::from_secs(5));
    assert_eq!(code, Some(0), "{out}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0]["id"], fault["id"]);
    assert_eq!(lines[1]["state"], "revoked");
    assert!(list_ids(&agent).is_empty());

    // SIGKILL: faultctl can do nothing; faultd revokes the fault as the connection closes.
    let mut held = leased_faultctl(&agent, &partition);
    wait_for_fault(&agent, &mut held);
    signal(&held, Signal::SIGKILL);
    let _ = held.wait();
    wait_no_fault(&agent, Duration::from_secs(2));
    let udp = udp_burst(&lab, Side::A, b4, 7300, 0, 100, PACE);
    assert_eq!(udp.received, 100, "nothing is left of the fault");
    assert_clean(&lab);

    // The fault's own end: faultctl notices within its poll and exits 0 by itself.
    let mut short = partition.to_vec();
    *short.last_mut().expect("duration") = "1s";
    let mut held = leased_faultctl(&agent, &short);
    let fault = wait_for_fault(&agent, &mut held);
    let (code, out) = wait_exit(&mut held, Duration::from_secs(5));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("{} has ended", id_of(&fault))),
        "{out}"
    );
    assert_clean(&lab);
}

#[test]
fn faultctl_renews_a_fault_within_the_maximum() {
    let lab = Lab::new();
    let agent = Agent::start_with(&["--max-duration", "5m"]);
    let view = apply(
        &agent,
        json!({"target": {"netns": lab.a.netns, "dev": lab.a.dev,
               "match": {"proto": "udp", "dport": [7400]}},
               "partition": {}, "duration": "10s"}),
    );
    let id = id_of(&view);
    let out = agent.faultctl(&["--json", "renew", &id, "4m"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let renewed = json_of(&out);
    let remaining = renewed["remaining_ms"].as_u64().expect("remaining_ms");
    assert!((230_000..=240_000).contains(&remaining), "{renewed}");
    let out = agent.faultctl(&["--json", "renew", &id, "6m"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(json_of(&out)["error"]["code"], "invalid_value");
    let out = agent.faultctl(&["--json", "renew", "f00000000", "1m"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(json_of(&out)["error"]["code"], "not_found");
    let out = agent.faultctl(&["renew", &id, "30s"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));
    support::revoke(&agent, &id);
    assert_clean(&lab);
}

/// A capability mask from /proc/PID/status (`CapEff`, `CapPrm`, `CapBnd`, ...).
fn capabilities(pid: u32, set: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{set}:")))
        .expect("capability line")
        .trim();
    u64::from_str_radix(hex, 16).expect("hex mask")
}

#[test]
fn faultd_and_its_reaper_keep_only_the_capabilities_they_need() {
    // NET_ADMIN 12, SYS_PTRACE 19, SYS_ADMIN 21, PERFMON 38, BPF 39.
    let needed: u64 = [12, 19, 21, 38, 39].iter().map(|bit| 1u64 << bit).sum();
    let lab = Lab::new();
    let agent = Agent::start();
    // It still does its work with them: a fault in the lab's namespace.
    let fault = json!({"target": {"netns": lab.a.netns, "dev": lab.a.dev},
                       "partition": {}, "duration": "10s"});
    support::apply(&agent, fault);
    let reapers = agent.reaper_pids();
    assert_eq!(reapers.len(), 1, "{reapers:?}");
    for pid in [agent.pid(), reapers[0] as u32] {
        for set in ["CapEff", "CapPrm", "CapBnd"] {
            assert_eq!(
                capabilities(pid, set),
                needed,
                "{set} of pid {pid}: {:#x}",
                capabilities(pid, set)
            );
        }
        assert_eq!(capabilities(pid, "CapInh"), 0);
        assert_eq!(capabilities(pid, "CapAmb"), 0);
    }
}
