//! The operator's kit around faults, proven in the lab: `faultctl run` (a fault for the
//! lifetime of a command, with a steady-state probe that rolls it back), metrics (`faultctl
//! metrics`, and faultd's loopback listener), `--dry-run`, `--ssh`, completions and man pages.

mod support;

use std::{
    io::{Read, Write},
    net::{IpAddr, TcpListener, TcpStream},
    os::unix::fs::PermissionsExt,
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use faultline_tests::{
    agent::{bin_path, Agent},
    kernel::tc_snapshot,
    lab::{Lab, Side},
    pace,
    traffic::udp_burst,
};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use serde_json::{json, Value};
use support::{apply, get, list_ids};

/// `faultctl [--json] run partition <a's device, towards b> [extra] -- cmd...`
fn run_partition(agent: &Agent, lab: &Lab, extra: &[&str], cmd: &[&str]) -> Command {
    let mut command = Command::new(bin_path("faultctl"));
    command
        .arg("--socket")
        .arg(agent.socket_path())
        .args(["--json", "run"])
        .args(extra)
        .args(["partition", "--netns", &lab.a.netns, "--dev", &lab.a.dev])
        .args(["--dst", &lab.b.v4.to_string(), "--for", "30s", "--"])
        .args(cmd);
    command
}

/// A ping from a to b that must answer within a second: the steady state, as a command.
fn ping_b(lab: &Lab) -> Vec<String> {
    [
        "ip",
        "netns",
        "exec",
        &lab.a.netns,
        "ping",
        "-n",
        "-c",
        "1",
        "-W",
        "1",
    ]
    .map(String::from)
    .into_iter()
    .chain([lab.b.v4.to_string()])
    .collect()
}

/// The JSON lines faultctl printed: the applied fault, then the run's summary (the command's
/// own output, on the same stdout, left out).
fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn run_holds_the_fault_for_the_command_and_exits_with_its_status() {
    let lab = Lab::new();
    let agent = Agent::start();
    let ping = ping_b(&lab);
    let ping: Vec<&str> = ping.iter().map(String::as_str).collect();

    // The command itself crosses the fault: its ping is dropped, so it fails, and so does run.
    let out = run_partition(&agent, &lab, &[], &ping)
        .output()
        .expect("faultctl");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines[0]["lease"], "connection", "{lines:?}");
    let summary = &lines[1]["run"];
    assert_eq!(summary["exit_code"], 1);
    assert_eq!(summary["rolled_back"], false);
    assert!(summary["fault"]["counters"]["egress"]["dropped_packets"].as_u64() >= Some(1));
    assert!(
        list_ids(&agent).is_empty(),
        "the fault outlived the command"
    );
    // And once the command is done, the path is whole again.
    let after = Command::new(ping[0])
        .args(&ping[1..])
        .status()
        .expect("ping");
    assert!(after.success(), "no answer after the run");

    let out = run_partition(&agent, &lab, &[], &["sh", "-c", "exit 7"])
        .output()
        .expect("faultctl");
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let out = run_partition(&agent, &lab, &[], &["/nonexistent/command"])
        .output()
        .expect("faultctl");
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    assert!(list_ids(&agent).is_empty());
}

#[test]
fn run_reverts_on_sigint_and_the_command_gets_the_signal() {
    let lab = Lab::new();
    let agent = Agent::start();
    let child = run_partition(&agent, &lab, &[], &["sleep", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("faultctl");
    let deadline = Instant::now() + pace::scaled(Duration::from_secs(10));
    while list_ids(&agent).is_empty() {
        assert!(Instant::now() < deadline, "the fault never appeared");
        thread::sleep(Duration::from_millis(20));
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).expect("SIGINT");
    let started = Instant::now();
    let out = child.wait_with_output().expect("faultctl");
    assert!(
        started.elapsed() < pace::scaled(Duration::from_secs(5)),
        "run did not end"
    );
    // sleep ended by the forwarded SIGINT: 128 + 2.
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let summary = &json_lines(&out)[1]["run"];
    assert_eq!(summary["signalled"], true);
    assert!(list_ids(&agent).is_empty());
}

#[test]
fn a_failing_probe_rolls_the_fault_back_and_run_says_so() {
    let lab = Lab::new();
    let agent = Agent::start();
    let probe = ping_b(&lab).join(" ");
    let extra = [
        "--probe",
        probe.as_str(),
        "--abort-after",
        "2",
        "--probe-interval",
        "200ms",
    ];
    // The command outlives the rollback: it waits (up to 30 s) for the path to come back.
    let script = format!("for i in $(seq 300); do {probe} && exit 0; sleep 0.1; done; exit 1");
    let out = run_partition(&agent, &lab, &extra, &["sh", "-c", &script])
        .output()
        .expect("faultctl");
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let summary = &json_lines(&out)[1]["run"];
    assert_eq!(summary["rolled_back"], true);
    assert_eq!(
        summary["command_status"], 0,
        "the path did not heal after the rollback"
    );
    assert!(summary["probes_failed"].as_u64() >= Some(2), "{summary}");
    assert!(
        stderr(&out).contains("steady state lost"),
        "{}",
        stderr(&out)
    );
    assert!(list_ids(&agent).is_empty());
}

/// One sample of the metrics text: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// The metrics text, parsed.
fn samples(text: &str) -> Vec<Sample> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    scrape
        .samples
        .into_iter()
        .map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                other => panic!("unexpected sample {other:?}"),
            };
            let mut labels: Vec<(String, String)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            labels.sort();
            (s.metric, labels, value)
        })
        .collect()
}

fn value_of(samples: &[Sample], metric: &str, with: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(name, labels, _)| {
            name == metric
                && with
                    .iter()
                    .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| *v)
}

fn http_get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics port");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
}

#[test]
fn metrics_count_requests_and_match_the_faults_counters() {
    let lab = Lab::new();
    // A free loopback port for the listener (released just before faultd binds it).
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let agent = Agent::start_with(&["--metrics-listen", &addr]);
    let view = apply(
        &agent,
        json!({"target": {"netns": lab.a.netns, "dev": lab.a.dev,
                          "match": {"dst": [lab.b.v4.to_string()], "proto": "udp"}},
               "partition": {}, "duration": "30s", "label": "metrics \"test\""}),
    );
    let id = view["id"].as_str().expect("id").to_owned();
    let sent = udp_burst(&lab, Side::A, IpAddr::V4(lab.b.v4), 9000, 0, 50, None);
    assert_eq!(sent.received, 0);
    let refused = agent.request(json!({"id": 1, "op": "get", "fault_id": "fnothere"}));
    assert_eq!(refused["ok"], false);

    let out = agent.faultctl(&["metrics"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let parsed = samples(&text);
    let shown = get(&agent, &id)["counters"]["egress"].clone();
    let fault = [("fault_id", id.as_str()), ("direction", "egress")];
    for counter in ["matched_packets", "dropped_packets", "dropped_bytes"] {
        assert_eq!(
            value_of(&parsed, &format!("faultline_fault_{counter}_total"), &fault),
            shown[counter].as_f64(),
            "{counter} differs from `show`:\n{text}"
        );
    }
    assert!(shown["dropped_packets"].as_u64() >= Some(50));
    assert_eq!(value_of(&parsed, "faultline_active_faults", &[]), Some(1.0));
    let requests = "faultline_requests_total";
    assert_eq!(
        value_of(&parsed, requests, &[("op", "apply"), ("code", "ok")]),
        Some(1.0)
    );
    assert_eq!(
        value_of(&parsed, requests, &[("op", "get"), ("code", "not_found")]),
        Some(1.0)
    );
    assert!(
        text.contains(r#"label="metrics \"test\"""#),
        "label not escaped:\n{text}"
    );

    // The same text over HTTP, for a scraper.
    let response = http_get(&addr, "/metrics");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let scraped = samples(body);
    assert_eq!(
        value_of(&scraped, "faultline_fault_dropped_packets_total", &fault),
        shown["dropped_packets"].as_f64()
    );
    assert!(http_get(&addr, "/").starts_with("HTTP/1.1 404"));
}

#[test]
fn metrics_are_served_on_loopback_only() {
    let dir = std::env::temp_dir().join(format!("faultline-metrics-{}", std::process::id()));
    let out = Command::new(bin_path("faultd"))
        .arg("--socket")
        .arg(dir.join("faultd.sock"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--metrics-listen", "0.0.0.0:9464"])
        .output()
        .expect("faultd");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("only a loopback address"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn ssh_reaches_a_remote_faultd_through_a_forwarded_socket() {
    let agent = Agent::start();
    let dir = std::env::temp_dir().join(format!("faultline-ssh-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let _cleanup = RemoveOnDrop(dir.clone());
    // Stands in for ssh: records its arguments and forwards `-L LOCAL:REMOTE` as ssh would.
    let fake_ssh = dir.join("ssh");
    let args_file = dir.join("args");
    std::fs::write(
        &fake_ssh,
        format!(
            "#!/bin/bash\nprintf '%s\\n' \"$@\" > {args}\n\
             for a in \"$@\"; do [ \"$prev\" = -L ] && fwd=$a; prev=$a; done\n\
             exec socat UNIX-LISTEN:\"${{fwd%%:*}}\",fork UNIX-CONNECT:\"${{fwd#*:}}\"\n",
            args = args_file.display()
        ),
    )
    .expect("write the fake ssh");
    std::fs::set_permissions(&fake_ssh, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let out = Command::new(bin_path("faultctl"))
        .env("FAULTLINE_SSH", &fake_ssh)
        .args(["--ssh", "root@host-a", "--json", "--socket"])
        .arg(agent.socket_path())
        .arg("status")
        .output()
        .expect("faultctl");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let hello: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(hello["agent"], "faultd");
    let args = std::fs::read_to_string(&args_file).expect("the fake ssh ran");
    let args: Vec<&str> = args.lines().collect();
    assert_eq!(args.last(), Some(&"root@host-a"), "{args:?}");
    assert!(args.contains(&"ExitOnForwardFailure=yes"), "{args:?}");
    let forward = args[args.iter().position(|a| *a == "-L").expect("-L") + 1];
    let local = forward.split(':').next().unwrap_or_default();
    assert!(forward.ends_with(&format!(":{}", agent.socket_path().display())));
    assert!(
        !std::path::Path::new(local).exists(),
        "the local socket was left behind"
    );

    // An ssh that fails: faultd is unreachable (exit 4).
    let out = Command::new(bin_path("faultctl"))
        .env("FAULTLINE_SSH", "false")
        .args(["--ssh", "nobody@nowhere", "status"])
        .output()
        .expect("faultctl");
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn completions_and_man_pages_come_from_the_cli_definition() {
    let out = Command::new(bin_path("faultctl"))
        .args(["completions", "bash"])
        .output()
        .expect("faultctl");
    assert_eq!(out.status.code(), Some(0));
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(
        script.contains("complete -F") && script.contains("partition"),
        "{script}"
    );

    let dir = std::env::temp_dir().join(format!("faultline-man-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(dir.clone());
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out = Command::new(bin_path("faultctl"))
        .arg("man")
        .arg(&dir)
        .output()
        .expect("faultctl");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let page = std::fs::read_to_string(dir.join("faultctl-run.1")).expect("faultctl-run.1");
    assert!(
        page.contains(".TH faultctl-run") && page.contains("abort\\-after"),
        "{page}"
    );
}

#[test]
fn a_dry_run_lists_the_kernel_objects_and_changes_nothing() {
    let lab = Lab::new();
    let agent = Agent::start();
    let (ns, dev) = (lab.a.netns.as_str(), lab.a.dev.as_str());
    let before = tc_snapshot(ns, dev);
    let dry_run = |extra: &[&str]| {
        let args = [
            &["--json", "partition", "--netns", ns, "--dev", dev][..],
            &["--dst", "10.9.0.0/16", "--for", "30s", "--dry-run"],
            extra,
        ]
        .concat();
        let out = agent.faultctl(&args);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        serde_json::from_slice::<Value>(&out.stdout).expect("JSON")
    };
    let kinds_of = |plan: &Value| -> Vec<(String, bool)> {
        plan["objects"]
            .as_array()
            .expect("objects")
            .iter()
            .map(|o| {
                (
                    o["kind"].as_str().unwrap_or("?").to_owned(),
                    o["exists"] == true,
                )
            })
            .collect()
    };
    let plan = dry_run(&[]);
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["fault"]["target"]["match"]["dst"][0], "10.9.0.0/16");
    let kinds = kinds_of(&plan);
    let create = |kind: &str| (kind.to_owned(), false);
    for expected in ["fault_slot", "clsact", "tc_filter", "trie_entry"] {
        assert!(kinds.contains(&create(expected)), "{expected}: {kinds:?}");
    }
    // The programs are loaded once, when faultd starts; a partition tracks no connection.
    for absent in ["bpf_programs", "connection_entries"] {
        assert!(
            !kinds.iter().any(|(k, _)| k == absent),
            "{absent}: {kinds:?}"
        );
    }
    // A stall counts its budget per connection.
    let out = agent.faultctl(&[
        "--json",
        "stall",
        "--netns",
        ns,
        "--dev",
        dev,
        "--dport",
        "443",
        "--bytes",
        "512",
        "--for",
        "30s",
        "--dry-run",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stall = serde_json::from_slice::<Value>(&out.stdout).expect("JSON");
    let kinds = kinds_of(&stall);
    assert!(kinds.contains(&create("connection_entries")), "{kinds:?}");
    assert_eq!(
        tc_snapshot(ns, dev),
        before,
        "the dry run changed the device"
    );
    assert!(list_ids(&agent).is_empty());

    // With a fault in place, the filters and clsact it installed are shared, not created.
    apply(
        &agent,
        json!({"target": {"netns": ns, "dev": dev, "match": {"dst": ["10.8.0.1"]}},
               "partition": {}, "duration": "30s"}),
    );
    let installed = tc_snapshot(ns, dev);
    let kinds = kinds_of(&dry_run(&[]));
    assert!(kinds.contains(&("clsact".to_owned(), true)), "{kinds:?}");
    assert_eq!(tc_snapshot(ns, dev), installed);
    assert_eq!(list_ids(&agent).len(), 1);

    // A dry run is checked like an apply: a missing device is refused the same way.
    let out = agent.faultctl(&[
        "partition",
        "--netns",
        ns,
        "--dev",
        "nodev0",
        "--for",
        "5s",
        "--dry-run",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("nodev0"));
}

#[test]
fn json_logs_name_the_fault_and_the_peer_that_changed_it() {
    let lab = Lab::new();
    let agent = Agent::start_with(&["--log-format", "json"]);
    let view = apply(
        &agent,
        json!({"target": {"netns": lab.a.netns, "dev": lab.a.dev}, "partition": {}, "duration": "30s"}),
    );
    let id = view["id"].as_str().expect("id").to_owned();
    let log = std::fs::read_to_string(agent.state_dir().with_file_name("faultd.log")).expect("log");
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(!lines.is_empty(), "no JSON log lines:\n{log}");
    let done = lines
        .iter()
        .find(|l| l["message"] == "request done" && l["fault_id"] == id.as_str())
        .unwrap_or_else(|| panic!("no `request done` line for {id}:\n{log}"));
    assert_eq!(done["op"], "apply");
    assert_eq!(done["span"]["peer_uid"], 0, "{done}");
    assert!(done["span"]["peer_pid"].as_u64() > Some(0), "{done}");
}
