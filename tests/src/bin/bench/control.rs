//! Control plane: what one change costs, through faultd's socket and as the command-line
//! tools operators would otherwise run, each doing the equivalent (drop one UDP flow to the
//! peer, then take it back).

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use faultline_tests::{agent::Agent, lab::Lab};
use serde_json::{json, Value};

use crate::{
    profile,
    report::{Figure, Stats},
};

const SECTION: &str = "Control plane";

fn loss_fault(lab: &Lab, dst: &str) -> Value {
    json!({"target": {"netns": lab.a.netns, "dev": lab.a.dev,
           "match": {"dst": [dst], "proto": "udp", "dport": [5000]}},
           "loss": {"percent": 5}, "duration": "10m"})
}

/// The `i`th of many distinct remote addresses (10.200.0.0/16 and up).
pub fn far_address(i: usize) -> String {
    format!("10.{}.{}.{}", 200 + i / 65_536, (i / 256) % 256, i % 256)
}

fn pair_ms(agent: &Agent, lab: &Lab, pairs: usize) -> Vec<Duration> {
    let mut conn = agent.connect();
    (0..pairs)
        .map(|i| {
            let start = Instant::now();
            let applied = conn.request(&json!({"id": i, "op": "apply",
                                               "fault": loss_fault(lab, "10.0.0.2/32")}));
            let id = applied["result"]["id"].clone();
            assert_eq!(applied["ok"], true, "{applied}");
            let revoked = conn.request(&json!({"id": i, "op": "revoke", "fault_id": id}));
            assert_eq!(revoked["ok"], true, "{revoked}");
            start.elapsed()
        })
        .collect()
}

/// Runs `args` in the lab's side-a namespace, as an operator would (nsenter + the tool).
fn in_ns(lab: &Lab, args: &[&str]) -> std::process::Output {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", lab.a.netns))
        .args(args)
        .output()
        .expect("spawn nsenter");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn tool_pairs(
    lab: &Lab,
    pairs: usize,
    add: &[&str],
    del: &dyn Fn(&[u8]) -> Vec<String>,
) -> Vec<Duration> {
    (0..pairs)
        .map(|_| {
            let start = Instant::now();
            let out = in_ns(lab, add);
            let del = del(&out.stdout);
            in_ns(lab, &del.iter().map(String::as_str).collect::<Vec<_>>());
            start.elapsed()
        })
        .collect()
}

pub fn run(quick: bool, faultd_pid: &mut Option<u32>) -> Vec<Figure> {
    let lab = Lab::new();
    let agent = Agent::start();
    *faultd_pid = Some(agent.pid());
    let pairs = if quick { 200 } else { 1000 };
    let tool_runs = if quick { 50 } else { 200 };
    let mut figures = Vec::new();

    // What a drill does: one fault at a time, on a device that has no other.
    let lone = pair_ms(&agent, &lab, pairs);
    let lone_tc = tool_pairs(
        &lab,
        tool_runs,
        &[
            "sh",
            "-c",
            &format!(
                "tc qdisc add dev {0} clsact && tc filter add dev {0} egress prio 10 protocol ip \
             u32 match ip dst 10.0.0.2/32 match ip dport 5000 0xffff classid 1:1",
                lab.a.dev
            ),
        ],
        &|_| {
            ["tc", "qdisc", "del", "dev", &lab.a.dev, "clsact"]
                .map(String::from)
                .to_vec()
        },
    );
    let fresh = fresh_namespace_applies(&agent, if quick { 10 } else { 30 });
    let rss_idle = rss_kib(agent.pid());

    // Warm: a fault kept on the device, as during a drill with several.
    let mut conn = agent.connect();
    let first =
        conn.request(&json!({"id": 0, "op": "apply", "fault": loss_fault(&lab, "10.99.0.1/32")}));
    assert_eq!(first["ok"], true, "{first}");
    let cpu_before = cpu_ticks(agent.pid());
    let load_start = Instant::now();

    let usage_before = profile::usage(agent.pid());
    let ours = pair_ms(&agent, &lab, pairs);
    let spent = profile::usage(agent.pid()) - usage_before;
    let ours_stats = Stats::of_durations_ms(&ours);

    // 8 connections at once.
    let concurrent: Vec<Duration> = thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| pair_ms(&agent, &lab, pairs / 8)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("client"))
            .collect()
    });
    let load_wall = load_start.elapsed();
    let cpu_load = cpu_ticks(agent.pid()) - cpu_before;
    let rss_load = rss_kib(agent.pid());
    // What limits it: each request wakes the engine thread and its answer wakes the socket
    // thread again, and on a VM a wake-up that crosses CPUs is dear. On one CPU none does.
    let one_cpu = {
        let _pinned = profile::OneCpu::pin(agent.pid());
        pair_ms(&agent, &lab, pairs)
    };
    let one_cpu_stats = Stats::of_durations_ms(&one_cpu);

    // The equivalent changes as processes. tc uses the clsact that faultd's resident fault
    // keeps on the device; its filter classifies instead of dropping because this kernel
    // has no act_gact (the cost of a change is the same).
    let tc = tool_pairs(
        &lab,
        tool_runs,
        &[
            "tc",
            "filter",
            "add",
            "dev",
            &lab.a.dev,
            "egress",
            "prio",
            "10",
            "protocol",
            "ip",
            "u32",
            "match",
            "ip",
            "dst",
            "10.0.0.2/32",
            "match",
            "ip",
            "dport",
            "5000",
            "0xffff",
            "classid",
            "1:1",
        ],
        &|_| {
            [
                "tc", "filter", "del", "dev", &lab.a.dev, "egress", "prio", "10",
            ]
            .map(String::from)
            .to_vec()
        },
    );
    let rule = [
        "OUTPUT",
        "-d",
        "10.0.0.2/32",
        "-p",
        "udp",
        "--dport",
        "5000",
        "-j",
        "DROP",
    ];
    let mut comparisons = vec![(
        "tc u32 filter add/del (nsenter; classid, no act_gact here)",
        tc,
    )];
    for iptables in ["iptables-legacy", "iptables-nft"] {
        let add: Vec<&str> = [iptables, "-A"].into_iter().chain(rule).collect();
        let durations = tool_pairs(&lab, tool_runs, &add, &|_| {
            [iptables, "-D"]
                .into_iter()
                .chain(rule)
                .map(String::from)
                .collect()
        });
        comparisons.push((
            if iptables == "iptables-legacy" {
                "iptables-legacy -A/-D"
            } else {
                "iptables-nft -A/-D"
            },
            durations,
        ));
    }
    in_ns(&lab, &["nft", "add", "table", "inet", "flbench"]);
    in_ns(
        &lab,
        &[
            "nft",
            "add",
            "chain",
            "inet",
            "flbench",
            "out",
            "{ type filter hook output priority 0; }",
        ],
    );
    let nft = tool_pairs(
        &lab,
        tool_runs,
        &[
            "nft", "--echo", "--handle", "add", "rule", "inet", "flbench", "out", "ip", "daddr",
            "10.0.0.2", "udp", "dport", "5000", "drop",
        ],
        &|out| {
            let text = String::from_utf8_lossy(out);
            let handle = text
                .rsplit("# handle ")
                .next()
                .unwrap_or("")
                .trim()
                .to_owned();
            [
                "nft", "delete", "rule", "inet", "flbench", "out", "handle", &handle,
            ]
            .map(String::from)
            .to_vec()
        },
    );
    in_ns(&lab, &["nft", "delete", "table", "inet", "flbench"]);
    comparisons.push(("nft add/delete rule", nft));

    let fastest = comparisons
        .iter()
        .map(|(name, d)| (*name, Stats::of_durations_ms(d)))
        .min_by(|a, b| a.1.median.total_cmp(&b.1.median))
        .expect("comparisons");
    let lone_stats = Stats::of_durations_ms(&lone);
    let lone_tc_stats = Stats::of_durations_ms(&lone_tc);
    let fastest_lone = if lone_tc_stats.median < fastest.1.median {
        (
            "tc clsact + u32 filter, clsact del (nsenter; 2 processes)",
            lone_tc_stats.clone(),
        )
    } else {
        (fastest.0, fastest.1.clone())
    };
    figures.push(
        Figure::new(
            SECTION,
            "faultd apply + revoke of a lone fault (the only one on its device)",
            "ms",
            lone_stats.clone(),
        )
        .versus(fastest_lone.0, lone_stats.median / fastest_lone.1.median)
        .target(
            "p50 ≤ 1 ms, p99 ≤ 3 ms, ≥ 5× faster than the fastest CLI pair",
            lone_stats.median <= 1.0
                && lone_stats.p99 <= 3.0
                && fastest_lone.1.median / lone_stats.median >= 5.0,
        )
        .note("attaches the device's clsact and filter, and removes them again"),
    );
    figures.push(
        Figure::new(
            SECTION,
            "tc clsact + u32 filter, clsact del (nsenter; 2 processes)",
            "ms",
            lone_tc_stats.clone(),
        )
        .versus(
            "faultd lone apply + revoke",
            lone_tc_stats.median / lone_stats.median,
        ),
    );
    let fresh_stats = Stats::of_durations_ms(&fresh);
    figures.push(
        Figure::new(
            SECTION,
            "faultd first apply in a fresh namespace",
            "ms",
            fresh_stats.clone(),
        )
        .target("p50 ≤ 2 ms", fresh_stats.median <= 2.0)
        .note("connects to the namespace (its one setns), attaches the device"),
    );
    figures.push(
        Figure::new(
            SECTION,
            "faultd apply + revoke, 1 connection, with another fault on the device",
            "ms",
            ours_stats.clone(),
        )
        .versus(fastest.0, ours_stats.median / fastest.1.median)
        .target(
            "p50 ≤ 0.1 ms, p99 ≤ 2 ms",
            ours_stats.median <= 0.1 && ours_stats.p99 <= 2.0,
        ),
    );
    figures.push(
        Figure::new(
            SECTION,
            "faultd on-CPU time per apply + revoke, with another fault on the device",
            "µs",
            Stats::of(vec![spent.cpu.as_secs_f64() * 1e6 / pairs as f64]),
        )
        .note(format!(
            "{:.1} context switches per pair: the socket thread hands each request to the \
             engine thread, which owns the kernel state, and gets the answer back",
            spent.switches as f64 / pairs as f64
        )),
    );
    figures.push(
        Figure::new(
            SECTION,
            "faultd apply + revoke, 1 connection, with another fault on the device, faultd and \
             the client on one CPU",
            "ms",
            one_cpu_stats.clone(),
        )
        .versus(
            "the same across CPUs",
            one_cpu_stats.median / ours_stats.median,
        )
        .note("no wake-up crosses CPUs"),
    );
    let conc = Stats::of_durations_ms(&concurrent);
    figures.push(
        Figure::new(
            SECTION,
            "faultd apply + revoke, 8 connections at once",
            "ms",
            conc.clone(),
        )
        .versus("1 connection", conc.median / ours_stats.median),
    );
    for (name, durations) in &comparisons {
        let stats = Stats::of_durations_ms(durations);
        figures.push(
            Figure::new(SECTION, *name, "ms", stats.clone())
                .versus("faultd apply + revoke", stats.median / ours_stats.median),
        );
    }

    for count in [1usize, 100, 1000] {
        let samples: Vec<Duration> = (0..5)
            .map(|_| {
                let mut conn = agent.connect();
                for i in 0..count {
                    let fault = loss_fault(&lab, &format!("{}/32", far_address(i)));
                    let r = conn.request(&json!({"id": i, "op": "apply", "fault": fault}));
                    assert_eq!(r["ok"], true, "{r}");
                }
                // The cold-start fault stays: clear takes it too, then it is put back.
                // Until the answer is in: how the client parses it is the client's time.
                let start = Instant::now();
                let line = conn.request_line(&json!({"id": 0, "op": "clear"}));
                let took = start.elapsed();
                let r: Value = serde_json::from_str(&line).expect("clear answer");
                assert_eq!(r["ok"], true, "{r}");
                let again = conn.request(
                    &json!({"id": 0, "op": "apply", "fault": loss_fault(&lab, "10.99.0.1/32")}),
                );
                assert_eq!(again["ok"], true);
                took
            })
            .collect();
        let stats = Stats::of_durations_ms(&samples);
        let mut figure = Figure::new(
            SECTION,
            format!(
                "clear of {count} faults (until the answer, with each fault's final view, is in)"
            ),
            "ms",
            stats.clone(),
        );
        if count == 1000 {
            figure = figure.target("≤ 10 ms", stats.median <= 10.0);
        }
        figures.push(figure);
    }

    figures.extend(memory(&agent));

    let hz = 100.0; // USER_HZ
    figures.push(
        Figure::new(
            SECTION,
            "faultd RSS, idle",
            "MiB",
            Stats::of(vec![rss_idle / 1024.0]),
        )
        .target("≤ 30 MiB", rss_idle / 1024.0 <= 30.0),
    );
    figures.push(
        Figure::new(
            SECTION,
            "faultd RSS, after the apply/revoke load",
            "MiB",
            Stats::of(vec![rss_load / 1024.0]),
        )
        .target("≤ 30 MiB", rss_load / 1024.0 <= 30.0),
    );
    figures.push(
        Figure::new(
            SECTION,
            "faultd CPU during the apply/revoke load",
            "% of one CPU",
            Stats::of(vec![cpu_load / hz / load_wall.as_secs_f64() * 100.0]),
        )
        .note(format!(
            "{} pairs in {:.2} s",
            pairs + pairs / 8 * 8,
            load_wall.as_secs_f64()
        )),
    );
    let idle_before = cpu_ticks(agent.pid());
    thread::sleep(Duration::from_secs(2));
    figures.push(Figure::new(
        SECTION,
        "faultd CPU, idle (2 s)",
        "% of one CPU",
        Stats::of(vec![
            (cpu_ticks(agent.pid()) - idle_before) / hz / 2.0 * 100.0,
        ]),
    ));
    figures
}

/// What the kernel charges for the datapath (the maps' and programs' memlock, as faultd reads
/// it from fdinfo) with faults in one namespace and in five, and what it would be with 64 and
/// 128 possible CPUs (each adds the per-CPU maps' values).
fn memory(agent: &Agent) -> Vec<Figure> {
    let read = || {
        let reply = agent.request(json!({"id": 1, "op": "metrics"}));
        let result = &reply["result"];
        let get = |key: &str| {
            result[key]
                .as_u64()
                .unwrap_or_else(|| panic!("{key}: {reply}"))
        };
        (
            get("datapath_memory_bytes"),
            get("datapath_per_cpu_bytes"),
            get("possible_cpus"),
        )
    };
    let mib = |bytes: f64| bytes / (1024.0 * 1024.0);
    let labs: Vec<Lab> = (0..5).map(|_| Lab::new()).collect();
    let mut conn = agent.connect();
    let mut in_namespaces = Vec::new();
    for (i, lab) in labs.iter().enumerate() {
        let applied = conn.request(&json!({"id": i, "op": "apply",
                                           "fault": loss_fault(lab, "10.0.0.2/32")}));
        assert_eq!(applied["ok"], true, "{applied}");
        if i == 0 || i == labs.len() - 1 {
            in_namespaces.push((i + 1, read()));
        }
    }
    let _ = conn.request(&json!({"id": 0, "op": "clear"}));
    let mut figures = Vec::new();
    for (namespaces, (memory, _, cpus)) in &in_namespaces {
        figures.push(
            Figure::new(
                SECTION,
                format!("datapath kernel memory, faults in {namespaces} namespace(s)"),
                "MiB",
                Stats::of(vec![mib(*memory as f64)]),
            )
            .note(format!("{cpus} possible CPUs, read from fdinfo memlock")),
        );
    }
    let (memory, per_cpu, cpus) = in_namespaces[0].1;
    for at in [64u64, 128] {
        let bytes = memory as f64 + (at as f64 - cpus as f64) * per_cpu as f64;
        let mut figure = Figure::new(
            SECTION,
            format!("datapath kernel memory at {at} possible CPUs (computed)"),
            "MiB",
            Stats::of(vec![mib(bytes)]),
        )
        .note(format!("{:.1} KiB per CPU", per_cpu as f64 / 1024.0));
        if at == 128 {
            figure = figure.target("≤ 16 MiB", mib(bytes) <= 16.0);
        }
        figures.push(figure);
    }
    figures
}

/// The first apply in each of `count` namespaces faultd has not seen (each revoked after).
fn fresh_namespace_applies(agent: &Agent, count: usize) -> Vec<Duration> {
    let mut conn = agent.connect();
    (0..count)
        .map(|i| {
            let lab = Lab::new();
            let start = Instant::now();
            let applied = conn.request(&json!({"id": i, "op": "apply",
                                               "fault": loss_fault(&lab, "10.0.0.2/32")}));
            let took = start.elapsed();
            assert_eq!(applied["ok"], true, "{applied}");
            let revoked = conn
                .request(&json!({"id": i, "op": "revoke", "fault_id": applied["result"]["id"]}));
            assert_eq!(revoked["ok"], true, "{revoked}");
            took
        })
        .collect()
}

fn rss_kib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// utime + stime of the process, in clock ticks.
fn cpu_ticks(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the command: state is field 3, utime 14 and stime 15 (1-based).
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    field(14) + field(15)
}
