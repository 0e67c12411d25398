//! Delay faults, which need a kernel with sch_netem (`cargo xtask bench --vm` runs this in a
//! guest): what a delay fault costs to apply and revoke, beside `tc` doing the same by hand,
//! and how close the delay it adds is to the one asked for, beside a plain netem qdisc.

use std::{
    net::IpAddr,
    process::Command,
    time::{Duration, Instant},
};

use faultline_tests::{
    agent::Agent,
    lab::{Lab, Side},
    traffic::ping_rtts,
};
use serde_json::{json, Value};

use crate::report::{Figure, Stats};

const SECTION: &str = "Delay faults (netem)";

fn delay_fault(lab: &Lab, delay: &str) -> Value {
    json!({"target": {"netns": lab.a.netns, "dev": lab.a.dev,
           "match": {"dst": [lab.b.v4.to_string()]}},
           "netem": {"delay": delay}, "duration": "10m"})
}

/// `tc -netns <a> args...`, timed: tc enters the namespace itself, the cheapest way a person
/// or a script reaches a device there.
fn tc(lab: &Lab, args: &[&str]) -> Duration {
    let start = Instant::now();
    let out = Command::new("tc")
        .args(["-netns", &lab.a.netns])
        .args(args)
        .output()
        .expect("spawn tc");
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "tc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

pub fn run(quick: bool) -> Vec<Figure> {
    let lab = Lab::new();
    let agent = Agent::start();
    let hello = agent.request(json!({"id": 0, "op": "hello"}));
    assert_eq!(
        hello["result"]["features"]["netem"], true,
        "this kernel has no netem: run the netem section with `cargo xtask bench --vm`"
    );
    let runs = if quick { 20 } else { 100 };
    let mut figures = Vec::new();
    let dev = lab.a.dev.as_str();

    // The case a drill hits: one delay fault on a quiet device. Its apply attaches the
    // device (clsact, filter) and builds the delay tree (htb root, class, netem, ifb for
    // ingress); its revoke takes all of it away again.
    let mut conn = agent.connect();
    let (mut lone_applies, mut lone_revokes) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let start = Instant::now();
        let applied =
            conn.request(&json!({"id": i, "op": "apply", "fault": delay_fault(&lab, "10ms")}));
        lone_applies.push(start.elapsed());
        assert_eq!(applied["ok"], true, "{applied}");
        let start = Instant::now();
        let revoked =
            conn.request(&json!({"id": i, "op": "revoke", "fault_id": applied["result"]["id"]}));
        lone_revokes.push(start.elapsed());
        assert_eq!(revoked["ok"], true, "{revoked}");
    }
    let lone_apply = Stats::of_durations_ms(&lone_applies);

    // Its parts, to see what limits it: the attachment alone is a lone eBPF fault's apply; the
    // class and netem alone are the apply beside another delay fault (below); what remains is
    // the htb root replacing the device's.
    let mut attaches = Vec::new();
    for i in 0..runs {
        let loss = json!({"target": {"netns": lab.a.netns, "dev": dev,
                          "match": {"dst": [lab.b.v4.to_string()]}},
                          "loss": {"percent": 10}, "duration": "10m"});
        let start = Instant::now();
        let applied = conn.request(&json!({"id": i, "op": "apply", "fault": loss}));
        attaches.push(start.elapsed());
        assert_eq!(applied["ok"], true, "{applied}");
        let revoked =
            conn.request(&json!({"id": i, "op": "revoke", "fault_id": applied["result"]["id"]}));
        assert_eq!(revoked["ok"], true, "{revoked}");
    }

    // A resident fault keeps the htb root on the device, as during a drill with several faults.
    let first = conn.request(&json!({"id": 0, "op": "apply",
        "fault": {"target": {"netns": lab.a.netns, "dev": dev, "match": {"dst": ["10.99.0.1"]}},
                  "netem": {"delay": "1ms"}, "duration": "10m"}}));
    assert_eq!(first["ok"], true, "{first}");

    let (mut applies, mut revokes) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let start = Instant::now();
        let applied =
            conn.request(&json!({"id": i, "op": "apply", "fault": delay_fault(&lab, "10ms")}));
        applies.push(start.elapsed());
        assert_eq!(applied["ok"], true, "{applied}");
        let start = Instant::now();
        let revoked =
            conn.request(&json!({"id": i, "op": "revoke", "fault_id": applied["result"]["id"]}));
        revokes.push(start.elapsed());
        assert_eq!(revoked["ok"], true, "{revoked}");
    }

    // tc needs the device's root to itself.
    let cleared = agent.request(json!({"id": 0, "op": "clear"}));
    assert_eq!(cleared["ok"], true, "{cleared}");

    // By hand, for one flow: a prio root whose third band holds the netem, and a u32 filter
    // sending the flow there (three processes), then the root deleted (one).
    let dst = format!("{}/32", lab.b.v4);
    let (mut tc_flow_adds, mut tc_flow_dels) = (Vec::new(), Vec::new());
    // And the simplest change there is: netem as the device's root, delaying everything.
    let (mut tc_root_adds, mut tc_root_dels) = (Vec::new(), Vec::new());
    // What a tc process costs before it changes anything.
    let mut tc_shows = Vec::new();
    for _ in 0..runs {
        tc_shows.push(tc(&lab, &["qdisc", "show", "dev", dev]));
        tc_flow_adds.push(
            tc(
                &lab,
                &["qdisc", "add", "dev", dev, "root", "handle", "1:", "prio"],
            ) + tc(
                &lab,
                &[
                    "qdisc", "add", "dev", dev, "parent", "1:3", "handle", "30:", "netem", "delay",
                    "10ms",
                ],
            ) + tc(
                &lab,
                &[
                    "filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1",
                    "u32", "match", "ip", "dst", &dst, "flowid", "1:3",
                ],
            ),
        );
        tc_flow_dels.push(tc(&lab, &["qdisc", "del", "dev", dev, "root"]));
        tc_root_adds.push(tc(
            &lab,
            &["qdisc", "add", "dev", dev, "root", "netem", "delay", "10ms"],
        ));
        tc_root_dels.push(tc(&lab, &["qdisc", "del", "dev", dev, "root"]));
    }
    let apply_stats = Stats::of_durations_ms(&applies);
    let tc_flow = Stats::of_durations_ms(&tc_flow_adds);
    let tc_root = Stats::of_durations_ms(&tc_root_adds);
    figures.push(
        Figure::new(
            SECTION,
            "faultd delay fault apply beside another on the device (per flow)",
            "ms",
            apply_stats.clone(),
        )
        .versus(
            "tc per flow (prio + netem + u32: 3 processes)",
            apply_stats.median / tc_flow.median,
        )
        .target("p99 ≤ 5 ms", apply_stats.p99 <= 5.0),
    );
    figures.push(
        Figure::new(
            SECTION,
            "faultd lone delay fault apply, quiet device (attaches, builds htb root + class + netem)",
            "ms",
            lone_apply.clone(),
        )
        .versus(
            "tc per flow (prio + netem + u32: 3 processes)",
            lone_apply.median / tc_flow.median,
        )
        .target("p50 ≤ 5 ms", lone_apply.median <= 5.0),
    );
    figures.push(
        Figure::new(
            SECTION,
            "faultd lone eBPF fault apply, quiet device (the attachment alone: clsact + filter)",
            "ms",
            Stats::of_durations_ms(&attaches),
        )
        .versus(
            "faultd lone delay fault apply",
            Stats::of_durations_ms(&attaches).median / lone_apply.median,
        ),
    );
    figures.push(Figure::new(
        SECTION,
        "faultd lone delay fault revoke (takes the tree and the attachment away)",
        "ms",
        Stats::of_durations_ms(&lone_revokes),
    ));
    let revoke_stats = Stats::of_durations_ms(&revokes);
    let tc_flow_del = Stats::of_durations_ms(&tc_flow_dels);
    figures.push(
        Figure::new(
            SECTION,
            "faultd delay fault revoke",
            "ms",
            revoke_stats.clone(),
        )
        .versus(
            "tc qdisc del root",
            revoke_stats.median / tc_flow_del.median,
        ),
    );
    figures.push(
        Figure::new(
            SECTION,
            "tc per flow: prio + netem + u32 filter (3 processes)",
            "ms",
            tc_flow.clone(),
        )
        .versus("faultd apply", tc_flow.median / apply_stats.median),
    );
    figures.push(
        Figure::new(
            SECTION,
            "tc qdisc add root netem (whole device, 1 process)",
            "ms",
            tc_root.clone(),
        )
        .versus("faultd apply", tc_root.median / apply_stats.median),
    );
    figures.push(Figure::new(
        SECTION,
        "tc qdisc show (1 process that changes nothing: what tc's figures spend before the kernel)",
        "ms",
        Stats::of_durations_ms(&tc_shows),
    ));
    figures.push(Figure::new(
        SECTION,
        "tc qdisc del root",
        "ms",
        Stats::of_durations_ms(&tc_root_dels),
    ));

    figures.extend(accuracy(&lab, &agent, quick));
    figures
}

/// The RTT a delay adds (median of pings minus the median without it), through faultd and
/// through a plain netem root, for a few delays.
fn accuracy(lab: &Lab, agent: &Agent, quick: bool) -> Vec<Figure> {
    let to = IpAddr::V4(lab.b.v4);
    let count = if quick { 20 } else { 100 };
    let rtts = || ping_rtts(lab, Side::A, to, count, "0.02");
    rtts(); // the first packets pay for neighbour resolution
    let mut figures = Vec::new();
    for delay_ms in [1.0, 10.0, 100.0] {
        let delay = format!("{delay_ms}ms");
        let baseline = rtts();
        let applied =
            agent.request(json!({"id": 1, "op": "apply", "fault": delay_fault(lab, &delay)}));
        assert_eq!(applied["ok"], true, "{applied}");
        let ours = rtts();
        agent.request(json!({"id": 2, "op": "revoke", "fault_id": applied["result"]["id"]}));
        tc(
            lab,
            &[
                "qdisc", "add", "dev", &lab.a.dev, "root", "netem", "delay", &delay,
            ],
        );
        let theirs = rtts();
        tc(lab, &["qdisc", "del", "dev", &lab.a.dev, "root"]);

        let base = Stats::of(baseline).median;
        let added = |samples: Vec<f64>| Stats::of(samples.into_iter().map(|s| s - base).collect());
        let (ours, theirs) = (added(ours), added(theirs));
        figures.push(
            Figure::new(
                SECTION,
                format!("RTT added by a {delay} faultd delay"),
                "ms",
                ours.clone(),
            )
            .versus("plain netem root", ours.median / theirs.median)
            .note(format!(
                "configured {delay}; baseline RTT {base:.3} ms subtracted"
            )),
        );
        figures.push(
            Figure::new(
                SECTION,
                format!("RTT added by a {delay} netem root (tc)"),
                "ms",
                theirs,
            )
            .note(format!("configured {delay}")),
        );
    }
    figures
}
