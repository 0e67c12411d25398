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

use crate::report::{Figure, Stats};

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

    // Cold: the first fault in a namespace loads and verifies the programs.
    let mut conn = agent.connect();
    let start = Instant::now();
    let first =
        conn.request(&json!({"id": 0, "op": "apply", "fault": loss_fault(&lab, "10.99.0.1/32")}));
    let cold = start.elapsed();
    assert_eq!(first["ok"], true, "{first}");
    figures.push(
        Figure::new(
            SECTION,
            "first apply in a namespace (load + verify + attach)",
            "ms",
            Stats::of_durations_ms(&[cold]),
        )
        .note("once per namespace; the fault kept below keeps the datapath loaded"),
    );
    let rss_idle = rss_kib(agent.pid());
    let cpu_before = cpu_ticks(agent.pid());
    let load_start = Instant::now();

    let ours = pair_ms(&agent, &lab, pairs);
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
    figures.push(
        Figure::new(
            SECTION,
            "faultd apply + revoke, 1 connection",
            "ms",
            ours_stats.clone(),
        )
        .versus(fastest.0, ours_stats.median / fastest.1.median)
        .target(
            "p50 ≤ 0.3 ms, p99 ≤ 2 ms, ≥ 20× faster than the fastest CLI pair",
            ours_stats.median <= 0.3
                && ours_stats.p99 <= 2.0
                && fastest.1.median / ours_stats.median >= 20.0,
        ),
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
        let samples: Vec<Duration> = (0..3)
            .map(|_| {
                let mut conn = agent.connect();
                for i in 0..count {
                    let fault = loss_fault(&lab, &format!("{}/32", far_address(i)));
                    let r = conn.request(&json!({"id": i, "op": "apply", "fault": fault}));
                    assert_eq!(r["ok"], true, "{r}");
                }
                // The cold-start fault stays: clear takes it too, then it is put back.
                let start = Instant::now();
                let r = conn.request(&json!({"id": 0, "op": "clear"}));
                let took = start.elapsed();
                assert_eq!(r["ok"], true);
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
            format!("clear of {count} faults"),
            "ms",
            stats.clone(),
        );
        if count == 1000 {
            figure = figure.target("≤ 10 ms", stats.median <= 10.0);
        }
        figures.push(figure);
    }

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
