//! Fidelity: does a fault do what it says? Loss at 100,000 packets against its confidence
//! interval, Gilbert-Elliott burst lengths against the model, and how fast a partition takes
//! hold and lets go around the answer to apply and revoke.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use faultline_tests::{
    agent::Agent,
    lab::{in_netns, Lab, Side},
    traffic::udp_burst,
};
use serde_json::json;

use crate::report::{Figure, Stats};

const SECTION: &str = "Fidelity";

fn loss(lab: &Lab, port: u16, loss: serde_json::Value) -> serde_json::Value {
    json!({"target": {"netns": lab.a.netns, "dev": lab.a.dev, "direction": "egress",
           "match": {"proto": "udp", "dport": [port]}}, "loss": loss, "duration": "10m"})
}

pub fn run(quick: bool) -> Vec<Figure> {
    let lab = Lab::new();
    let agent = Agent::start();
    let packets: u64 = if quick { 20_000 } else { 100_000 };
    let pace = Some(Duration::from_micros(8));
    let mut figures = Vec::new();
    let peer = IpAddr::V4(lab.b.v4);

    for percent in [1.0, 5.0, 20.0, 50.0] {
        let port = 6000 + percent as u16;
        let r = agent.request(
            json!({"id": 1, "op": "apply", "fault": loss(&lab, port, json!({"percent": percent}))}),
        );
        assert_eq!(r["ok"], true, "{r}");
        let report = udp_burst(&lab, Side::A, peer, port, 0, packets, pace);
        assert_eq!(agent.request(json!({"id": 1, "op": "clear"}))["ok"], true);
        let p = percent / 100.0;
        let measured = 1.0 - report.received as f64 / report.sent as f64;
        // 99.9 %: with several loss figures per run, a 95 % interval would miss by chance.
        let sd = (p * (1.0 - p) / report.sent as f64).sqrt();
        let half = 3.29 * sd;
        let within = (measured - p).abs() <= half;
        figures.push(
            Figure::new(
                SECTION,
                format!("loss {percent} %, {} packets: measured loss", report.sent),
                "%",
                Stats::of(vec![measured * 100.0]),
            )
            .note(format!(
                "99.9 % interval of the configured {percent} %: ±{:.3} points; z = {:+.2}",
                half * 100.0,
                (measured - p) / sd
            ))
            .target(
                "measured loss within the configured value's 99.9 % interval",
                within,
            ),
        );
    }

    // Gilbert-Elliott p = 5 %, r = 25 %, loss 100 % in the bad state, 0 % in the good one:
    // burst lengths are geometric with mean 1/r = 4.
    let port = 6100;
    let (p_enter, r_exit): (f64, f64) = (0.05, 0.25);
    let r = agent.request(json!({"id": 1, "op": "apply", "fault": loss(&lab, port,
        json!({"burst": {"p": p_enter * 100.0, "r": r_exit * 100.0}}))}));
    assert_eq!(r["ok"], true, "{r}");
    let report = udp_burst(&lab, Side::A, peer, port, 0, packets, pace);
    assert_eq!(agent.request(json!({"id": 1, "op": "clear"}))["ok"], true);
    let mut received = vec![false; report.sent as usize];
    for seq in &report.received_seqs {
        if let Some(slot) = received.get_mut(*seq as usize) {
            *slot = true;
        }
    }
    let mut bursts = Vec::new();
    let mut run = 0u64;
    for got in received {
        if got {
            if run > 0 {
                bursts.push(run as f64);
            }
            run = 0;
        } else {
            run += 1;
        }
    }
    let mean = bursts.iter().sum::<f64>() / bursts.len().max(1) as f64;
    figures.push(
        Figure::new(
            SECTION,
            "Gilbert-Elliott p=5 % r=25 %: burst length",
            "packets",
            Stats::of(bursts.clone()),
        )
        .note(format!(
            "mean {mean:.2} vs model 1/r = 4; {} bursts",
            bursts.len()
        ))
        .target("mean within 10 % of the model", (mean - 4.0).abs() <= 0.4),
    );
    for k in 1..=4u32 {
        let share = bursts.iter().filter(|&&b| b == f64::from(k)).count() as f64
            / bursts.len().max(1) as f64;
        let model = r_exit * (1.0 - r_exit).powi(k as i32 - 1);
        figures.push(
            Figure::new(
                SECTION,
                format!("Gilbert-Elliott: share of bursts of length {k}"),
                "%",
                Stats::of(vec![share * 100.0]),
            )
            .versus(format!("model {:.1} %", model * 100.0), share / model),
        );
    }

    let (onsets, heals) = partition_edges(&lab, &agent, if quick { 5 } else { 20 });
    figures.push(
        Figure::new(
            SECTION,
            "partition onset: apply answered → first packet dropped",
            "ms",
            Stats::of(onsets),
        )
        .note("negative: dropping began before the answer arrived; packets every 50 µs"),
    );
    figures.push(Figure::new(
        SECTION,
        "partition heal: revoke answered → first packet delivered",
        "ms",
        Stats::of(heals),
    ));
    figures
}

/// Streams numbered datagrams every 50 µs across a partition applied and revoked `times`
/// times; returns (onset, heal) offsets in ms relative to the answers.
fn partition_edges(lab: &Lab, agent: &Agent, times: usize) -> (Vec<f64>, Vec<f64>) {
    let port = 6200;
    let sink = in_netns(&lab.b.netns, || {
        UdpSocket::bind(SocketAddr::new(IpAddr::V4(lab.b.v4), port)).expect("bind")
    });
    sink.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let source = in_netns(&lab.a.netns, || UdpSocket::bind("0.0.0.0:0").expect("bind"));
    let stop = AtomicBool::new(false);
    let epoch = Instant::now();
    let gap = Duration::from_micros(50);
    let (mut onsets, mut heals) = (Vec::new(), Vec::new());
    thread::scope(|s| {
        let sender = s.spawn(|| {
            let mut seq: u64 = 0;
            let dst = SocketAddr::new(IpAddr::V4(lab.b.v4), port);
            while !stop.load(Ordering::Relaxed) {
                let _ = source.send_to(&seq.to_be_bytes(), dst);
                seq += 1;
                let due = epoch + gap * seq as u32;
                while Instant::now() < due {
                    std::hint::spin_loop();
                }
            }
        });
        let receiver = s.spawn(|| {
            let mut got = Vec::new();
            let mut buf = [0u8; 8];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(8) = sink.recv(&mut buf) {
                    got.push(u64::from_be_bytes(buf));
                }
            }
            got
        });
        let mut conn = agent.connect();
        let mut edges = Vec::new();
        for _ in 0..times {
            thread::sleep(Duration::from_millis(30));
            let r = conn.request(&json!({"id": 1, "op": "apply", "fault": {
                "target": {"netns": lab.a.netns, "dev": lab.a.dev, "direction": "egress",
                           "match": {"proto": "udp", "dport": [port]}},
                "partition": {}, "duration": "1m"}}));
            let applied = epoch.elapsed();
            thread::sleep(Duration::from_millis(30));
            let r2 = conn.request(&json!({"id": 2, "op": "revoke", "fault_id": r["result"]["id"]}));
            let revoked = epoch.elapsed();
            assert_eq!(r2["ok"], true, "{r2}");
            edges.push((applied, revoked));
        }
        thread::sleep(Duration::from_millis(30));
        stop.store(true, Ordering::Relaxed);
        sender.join().expect("sender");
        let mut got = receiver.join().expect("receiver");
        got.sort_unstable();
        let sent_at = |seq: u64| (gap * seq as u32).as_secs_f64() * 1e3;
        for (applied, revoked) in edges {
            let (a, v) = (applied.as_secs_f64() * 1e3, revoked.as_secs_f64() * 1e3);
            // The last delivered packet sent before the revoke answer ends the onset side…
            let last_before = got.iter().copied().rfind(|&s| sent_at(s) < v - 1.0);
            let first_after = got
                .iter()
                .copied()
                .find(|&s| sent_at(s) > a + 1.0 && sent_at(s) >= v - 20.0);
            if let Some(last) = last_before {
                onsets.push(sent_at(last + 1) - a);
            }
            if let Some(first) = first_after {
                heals.push(sent_at(first) - v);
            }
        }
    });
    (onsets, heals)
}
