//! Datapath: what rules that match nothing cost the traffic that crosses them. Veth TCP
//! throughput and small-packet UDP rate (iperf3) with faultd's programs holding 1 to 10,000
//! faults on other addresses, against iptables-legacy and nft chains, an nft set and u32
//! filters holding as many DROP rules. Each configured run alternates with a run on an
//! identical lab that has nothing attached, so drift cancels in the ratio.

use std::{
    fmt::Write as _,
    process::{Child, Command, Stdio},
    time::Duration,
};

use faultline_tests::{agent::Agent, lab::Lab};
use serde_json::{json, Value};

use crate::{
    control::far_address,
    report::{Figure, Stats},
};

const SECTION: &str = "Datapath (veth, rules that match nothing)";

struct Iperf {
    server: Child,
}

impl Iperf {
    fn serve(lab: &Lab) -> Iperf {
        let server = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.b.netns,
                "iperf3",
                "-s",
                "-B",
                "10.0.0.2",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn iperf3 server");
        std::thread::sleep(Duration::from_millis(300));
        Iperf { server }
    }
}

impl Drop for Iperf {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// One iperf3 run from side a; returns its JSON report.
fn iperf(lab: &Lab, args: &[&str]) -> Value {
    for _ in 0..5 {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.a.netns,
                "iperf3",
                "-c",
                "10.0.0.2",
                "-J",
            ])
            .args(args)
            .output()
            .expect("spawn iperf3");
        if let Ok(report) = serde_json::from_slice::<Value>(&out.stdout) {
            if report.get("error").is_none() {
                return report;
            }
        }
        // The server is busy finishing the previous test.
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("iperf3 kept failing");
}

fn tcp_gbits(lab: &Lab, seconds: &str) -> f64 {
    iperf(lab, &["-t", seconds])["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e9
}

fn udp_mpps(lab: &Lab, seconds: &str) -> f64 {
    let report = iperf(lab, &["-u", "-b", "0", "-l", "64", "-t", seconds]);
    let sum = &report["end"]["sum"];
    let received =
        sum["packets"].as_f64().unwrap_or(0.0) - sum["lost_packets"].as_f64().unwrap_or(0.0);
    received / sum["seconds"].as_f64().unwrap_or(1.0) / 1e6
}

fn sh(lab: &Lab, args: &[&str], stdin: Option<String>) {
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", lab.a.netns))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        pipe.write_all(text.as_bytes()).expect("write rules");
    }
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[derive(Clone, Copy, Debug)]
enum Rules {
    Nothing,
    Faultd,
    IptablesLegacy,
    NftChain,
    NftSet,
    U32,
}

impl Rules {
    fn name(self, n: usize) -> String {
        match self {
            Rules::Nothing => "nothing attached (second lab, same setup)".into(),
            Rules::Faultd => format!("faultd, {n} non-matching faults"),
            Rules::IptablesLegacy => format!("iptables-legacy, {n} DROP rules"),
            Rules::NftChain => format!("nft chain, {n} DROP rules"),
            Rules::NftSet => format!("nft set lookup, {n} elements"),
            Rules::U32 => format!("tc u32, {n} filters (classid: no act_gact here)"),
        }
    }

    fn install(self, lab: &Lab, agent: &Agent, n: usize) {
        let addrs = (0..n).map(far_address);
        match self {
            Rules::Nothing => {}
            Rules::Faultd => {
                let mut conn = agent.connect();
                for (i, addr) in addrs.enumerate() {
                    let r = conn.request(&json!({"id": i, "op": "apply", "fault": {
                        "target": {"netns": lab.a.netns, "dev": lab.a.dev, "match": {"dst": [format!("{addr}/32")]}},
                        "partition": {}, "duration": "30m"}}));
                    assert_eq!(r["ok"], true, "{r}");
                }
            }
            Rules::IptablesLegacy => {
                let mut rules = String::from("*filter\n");
                for addr in addrs {
                    let _ = writeln!(rules, "-A OUTPUT -d {addr}/32 -j DROP");
                }
                rules.push_str("COMMIT\n");
                sh(lab, &["iptables-legacy-restore"], Some(rules));
            }
            Rules::NftChain => {
                let mut rules = String::from(
                    "table inet flbench {\n chain out {\n  type filter hook output priority 0;\n",
                );
                for addr in addrs {
                    let _ = writeln!(rules, "  ip daddr {addr} drop");
                }
                rules.push_str(" }\n}\n");
                sh(lab, &["nft", "-f", "-"], Some(rules));
            }
            Rules::NftSet => {
                let elements: Vec<String> = addrs.collect();
                let rules = format!(
                    "table inet flbench {{\n set far {{ type ipv4_addr; elements = {{ {} }} }}\n chain out {{\n  type filter hook output priority 0;\n  ip daddr @far drop\n }}\n}}\n",
                    elements.join(", ")
                );
                sh(lab, &["nft", "-f", "-"], Some(rules));
            }
            Rules::U32 => {
                sh(
                    lab,
                    &["tc", "qdisc", "add", "dev", &lab.a.dev, "clsact"],
                    None,
                );
                let mut batch = String::new();
                for addr in addrs {
                    let _ = writeln!(
                        batch,
                        "filter add dev {} egress prio 10 protocol ip u32 match ip dst {addr}/32 classid 1:1",
                        lab.a.dev
                    );
                }
                sh(lab, &["tc", "-batch", "-"], Some(batch));
            }
        }
    }

    fn remove(self, lab: &Lab, agent: &Agent) {
        match self {
            Rules::Nothing => {}
            Rules::Faultd => {
                assert_eq!(agent.request(json!({"id": 1, "op": "clear"}))["ok"], true);
            }
            Rules::IptablesLegacy => sh(lab, &["iptables-legacy", "-F", "OUTPUT"], None),
            Rules::NftChain | Rules::NftSet => {
                sh(lab, &["nft", "delete", "table", "inet", "flbench"], None)
            }
            Rules::U32 => sh(
                lab,
                &["tc", "qdisc", "del", "dev", &lab.a.dev, "clsact"],
                None,
            ),
        }
    }
}

/// kernel.bpf_stats_enabled on while this lives, then as it was.
pub struct BpfStats(String);

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    pub fn enable() -> BpfStats {
        let before = std::fs::read_to_string(STATS_SYSCTL).unwrap_or_else(|_| "0".into());
        let _ = std::fs::write(STATS_SYSCTL, "1");
        BpfStats(before.trim().to_owned())
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(STATS_SYSCTL, &self.0);
    }
}

/// run_time_ns and run_cnt summed over faultd's programs (kernel.bpf_stats_enabled).
pub fn prog_stats(pid: u32) -> (f64, f64) {
    let mut total = (0.0, 0.0);
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return total;
    };
    for fd in fds.filter_map(Result::ok) {
        let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
        if !info.contains("prog_type:") {
            continue;
        }
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        total.0 += field("run_time_ns:");
        total.1 += field("run_cnt:");
    }
    total
}

/// The programs' mean cost per run between two `prog_stats` readings, as a figure; none when
/// they did not run.
pub fn per_run(
    section: &'static str,
    name: String,
    before: (f64, f64),
    after: (f64, f64),
) -> Option<Figure> {
    let runs = after.1 - before.1;
    (runs > 0.0).then(|| {
        let ns = (after.0 - before.0) / runs;
        Figure::new(section, name, "ns", Stats::of(vec![ns])).note(format!(
            "bpf_stats run_time_ns / run_cnt over {runs:.0} runs"
        ))
    })
}

pub fn run(quick: bool) -> Vec<Figure> {
    let lab = Lab::new();
    let base = Lab::new();
    // Slots for the 10,000 rules (the default is 1,024 faults).
    let agent = Agent::start_with(&["--max-faults", "16384"]);
    let _servers = (Iperf::serve(&lab), Iperf::serve(&base));
    let (rounds, seconds) = if quick { (1, "1") } else { (3, "2") };
    let sizes: &[usize] = if quick {
        &[1, 10_000]
    } else {
        &[1, 1_000, 10_000]
    };
    let _stats = BpfStats::enable();

    let mut configs = vec![(Rules::Nothing, 0)];
    for rules in [
        Rules::Faultd,
        Rules::IptablesLegacy,
        Rules::NftChain,
        Rules::NftSet,
        Rules::U32,
    ] {
        configs.extend(sizes.iter().map(|&n| (rules, n)));
    }
    let mut figures = Vec::new();
    for (rules, n) in configs {
        rules.install(&lab, &agent, n);
        let before = prog_stats(agent.pid());
        let (mut tcp, mut udp) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let ours = tcp_gbits(&lab, seconds);
            let baseline = tcp_gbits(&base, seconds);
            tcp.push((ours, baseline));
            let ours = udp_mpps(&lab, seconds);
            let baseline = udp_mpps(&base, seconds);
            udp.push((ours, baseline));
        }
        let after = prog_stats(agent.pid());
        rules.remove(&lab, &agent);
        let name = rules.name(n);
        for (what, unit, runs, target) in [
            ("TCP throughput", "Gbit/s", &tcp, true),
            ("UDP 64-byte rate", "Mpps", &udp, false),
        ] {
            let ratio = runs.iter().map(|(a, b)| a / b).sum::<f64>() / runs.len() as f64;
            let mut figure = Figure::new(
                SECTION,
                format!("{what}: {name}"),
                unit,
                Stats::of(runs.iter().map(|(a, _)| *a).collect()),
            )
            .versus("nothing attached, interleaved", ratio);
            if target && matches!(rules, Rules::Faultd) && n == 10_000 {
                figure = figure.target("≥ 97 % of the no-program baseline", ratio >= 0.97);
            }
            figures.push(figure);
        }
        if matches!(rules, Rules::Faultd) {
            let cost = per_run(
                SECTION,
                format!("per-packet program cost: {name}"),
                before,
                after,
            );
            figures.extend(cost.map(|f| {
                let met = f.stats.median <= 150.0;
                f.target("≤ 150 ns", met)
            }));
        }
    }
    figures
}
