//! The fixtures on their own, without faultd: a clean lab must deliver
//! everything, or fault tests built on it would measure nothing.

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use faultline_tests::kernel::{bpf_filter_count, has_clsact, tc_snapshot};
use faultline_tests::traffic::{
    ping, tcp_bulk, tcp_connects, tcp_echo, udp_burst, udp_flows, EchoServer,
};
use faultline_tests::{Lab, Side};

fn netns_list() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn udp_burst_arrives_complete_v4_and_v6() {
    let lab = Lab::new();
    for to in [IpAddr::V4(lab.b.v4), IpAddr::V6(lab.b.v6)] {
        let r = udp_burst(&lab, Side::A, to, 9000, 0, 1000, None);
        assert_eq!((r.sent, r.send_errors, r.received), (1000, 0, 1000), "{to}");
        let mut seqs = r.received_seqs;
        seqs.sort_unstable();
        assert!(
            seqs.iter().copied().eq(0..1000),
            "{to}: every seq exactly once"
        );
    }
}

#[test]
fn udp_burst_large_and_paced() {
    let lab = Lab::new();
    let r = udp_burst(&lab, Side::B, lab.a.v4.into(), 9001, 4242, 50_000, None);
    assert_eq!(r.received, 50_000, "unpaced 50k burst");
    let r = udp_burst(
        &lab,
        Side::B,
        lab.a.v6.into(),
        9001,
        4242,
        200,
        Some(Duration::from_micros(50)),
    );
    assert_eq!(r.received, 200, "paced burst");
}

#[test]
fn udp_flows_all_arrive() {
    let lab = Lab::new();
    let flows = udp_flows(&lab, Side::A, lab.b.v4.into(), 9002, 50, 100);
    assert_eq!(flows.len(), 50);
    for (port, sent, received) in flows {
        assert!((20_000..20_050).contains(&port));
        assert_eq!((sent, received), (100, 100), "flow from port {port}");
    }
}

#[test]
fn tcp_works_both_families() {
    let lab = Lab::new();
    let t = Duration::from_secs(2);
    assert!(tcp_connects(&lab, Side::A, lab.b.v4.into(), 8080, t));
    assert!(tcp_connects(&lab, Side::B, lab.a.v6.into(), 8080, t));
    // Nothing listening: refused, not hung.
    assert!(!tcp_echo(&lab, Side::A, lab.b.v4.into(), 8081, t));

    let server = EchoServer::start(&lab, lab.b.v4.into(), 7000);
    for _ in 0..3 {
        assert!(tcp_echo(&lab, Side::A, lab.b.v4.into(), 7000, t));
    }
    drop(server);

    let r = tcp_bulk(
        &lab,
        Side::A,
        lab.b.v6.into(),
        5001,
        8 << 20,
        Duration::from_secs(10),
    );
    assert_eq!(r.transferred, 8 << 20, "{r:?}");
}

#[test]
fn ping_both_families() {
    let lab = Lab::new();
    let i = Duration::from_millis(10);
    assert_eq!(ping(&lab, Side::A, lab.b.v4.into(), 5, i), (5, 5));
    assert_eq!(ping(&lab, Side::B, lab.a.v6.into(), 5, i), (5, 5));
}

#[test]
fn fresh_lab_has_no_tc_state() {
    let lab = Lab::new();
    for side in [Side::A, Side::B] {
        let (ns, dev) = (lab.ns(side), lab.dev(side));
        assert!(!has_clsact(ns, dev));
        assert_eq!(bpf_filter_count(ns, dev), 0);
        assert!(
            tc_snapshot(ns, dev).contains("qdisc noqueue"),
            "veth default qdisc"
        );
    }
}

#[test]
fn drop_removes_namespaces_even_on_panic() {
    let lab = Lab::new();
    let names = [lab.a.netns.clone(), lab.b.netns.clone()];
    assert!(names.iter().all(|n| netns_list().contains(n.as_str())));
    let panicked = std::thread::spawn(move || {
        let _lab = lab;
        panic!("test body failed");
    })
    .join();
    assert!(panicked.is_err());
    let after = netns_list();
    for n in &names {
        assert!(!after.contains(n.as_str()), "{n} left behind");
    }
}
