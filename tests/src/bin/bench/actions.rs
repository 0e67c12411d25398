//! Actions: what each fault action costs a packet it acts on, beside loss, and how soon a reset
//! reaches the application. The cost is faultd's programs' run time per run (bpf_stats) while
//! traffic the fault matches crosses the lab: UDP datagrams for the actions that act on UDP,
//! a TCP stream or short TCP exchanges for the TCP-only ones.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use faultline_tests::{
    agent::Agent,
    lab::{in_netns, Lab, Side},
    traffic::{tcp_bulk, udp_burst, EchoServer},
};
use serde_json::{json, Value};

use crate::{
    datapath::{per_run, prog_stats, BpfStats},
    report::{Figure, Stats},
};

const SECTION: &str = "Actions (cost per program run on matching traffic; reset onset)";

/// The traffic a case sends through its fault.
#[derive(Clone, Copy)]
enum Traffic {
    /// 8-byte UDP datagrams, a to b.
    Udp,
    /// One TCP stream of 64 MiB, a to b.
    TcpStream,
    /// Short TCP exchanges: connect, send a byte, see the answer (or the reset).
    TcpExchanges,
}

pub fn run(quick: bool) -> Vec<Figure> {
    let lab = Lab::new();
    let agent = Agent::start();
    let _stats = BpfStats::enable();
    let b = IpAddr::V4(lab.b.v4);
    let datagrams = if quick { 5_000 } else { 50_000 };
    let exchanges = if quick { 200 } else { 1_000 };
    let cases: [(&str, Value, Traffic); 8] = [
        ("loss 20 %", json!({"loss": {"percent": 20}}), Traffic::Udp),
        ("partition", json!({"partition": {}}), Traffic::Udp),
        (
            "corrupt 100 %, 1 bit, checksum recomputed",
            json!({"corrupt": {"percent": 100}}),
            Traffic::Udp,
        ),
        (
            "corrupt 100 %, 8 bits, checksum recomputed",
            json!({"corrupt": {"percent": 100, "bits": 8}}),
            Traffic::Udp,
        ),
        (
            "reject (a port unreachable per datagram)",
            json!({"reject": {}}),
            Traffic::Udp,
        ),
        (
            "stall, budget never reached (connection tracked per segment)",
            json!({"stall": {"bytes": i32::MAX}}),
            Traffic::TcpStream,
        ),
        (
            "loss 20 % on the same short TCP exchanges (for reset's comparison)",
            json!({"loss": {"percent": 20}}),
            Traffic::TcpExchanges,
        ),
        (
            "reset (the handshake's last ACK answered with a RST)",
            json!({"reset": {}}),
            Traffic::TcpExchanges,
        ),
    ];
    let mut figures = Vec::new();
    for (i, (name, action, traffic)) in cases.into_iter().enumerate() {
        let port = 7400 + i as u16;
        let proto = match traffic {
            Traffic::Udp => "udp",
            Traffic::TcpStream | Traffic::TcpExchanges => "tcp",
        };
        let mut spec = json!({"target": {"netns": lab.a.netns, "dev": lab.a.dev,
            "direction": "egress",
            "match": {"proto": proto, "dst": [b.to_string()], "dport": [port]}},
            "duration": "10m"});
        for (key, value) in action.as_object().into_iter().flatten() {
            spec[key] = value.clone();
        }
        let applied = agent.request(json!({"id": 1, "op": "apply", "fault": spec}));
        assert_eq!(applied["ok"], true, "{name}: {applied}");
        let before = prog_stats(agent.pid());
        match traffic {
            Traffic::Udp => {
                udp_burst(&lab, Side::A, b, port, 0, datagrams, None);
            }
            Traffic::TcpStream => {
                let report = tcp_bulk(&lab, Side::A, b, port, 64 << 20, Duration::from_secs(60));
                assert_eq!(report.transferred, 64 << 20, "{name}: the stream passes");
            }
            Traffic::TcpExchanges => short_exchanges(&lab, b, port, exchanges),
        }
        let after = prog_stats(agent.pid());
        let id = applied["result"]["id"].as_str().unwrap_or_default();
        agent.request(json!({"id": 2, "op": "revoke", "fault_id": id}));
        figures.extend(per_run(SECTION, format!("per run: {name}"), before, after));
    }
    figures.push(reset_onset(&agent, &lab, if quick { 10 } else { 50 }));
    figures
}

/// `count` times: connect from a to b's `port`, send a byte, read until the answer or an
/// error (a reset fault's RST: the handshake's last ACK already gets one, so the server may
/// never see the connection).
fn short_exchanges(lab: &Lab, b: IpAddr, port: u16, count: usize) {
    let listener = in_netns(&lab.b.netns, || {
        TcpListener::bind(SocketAddr::new(b, port)).expect("bind")
    });
    listener.set_nonblocking(true).expect("nonblocking");
    let done = Arc::new(AtomicBool::new(false));
    let stop = Arc::clone(&done);
    // A connection per thread: a reset one never gets its byte, and must not hold up the rest.
    let server = thread::spawn(move || {
        while !stop.load(Ordering::Acquire) {
            let Ok((mut conn, _)) = listener.accept() else {
                thread::sleep(Duration::from_millis(1));
                continue;
            };
            thread::spawn(move || {
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut byte = [0u8; 1];
                if conn.read(&mut byte).is_ok_and(|n| n == 1) {
                    let _ = conn.write_all(&byte);
                }
            });
        }
    });
    in_netns(&lab.a.netns, || {
        for _ in 0..count {
            let Ok(mut stream) = TcpStream::connect(SocketAddr::new(b, port)) else {
                continue;
            };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            let _ = stream.write_all(&[1]);
            let _ = stream.read(&mut [0u8; 1]);
        }
    });
    done.store(true, Ordering::Release);
    let _ = server.join();
}

/// From a reset fault's apply answered to the application's ECONNRESET at its next send,
/// on a session established before the fault.
fn reset_onset(agent: &Agent, lab: &Lab, samples: usize) -> Figure {
    let b = IpAddr::V4(lab.b.v4);
    let port = 7450;
    let _server = EchoServer::start(lab, b, port);
    let mut conn = agent.connect();
    let mut onsets = Vec::with_capacity(samples);
    for i in 0..samples {
        let mut session = in_netns(&lab.a.netns, || {
            TcpStream::connect(SocketAddr::new(b, port)).expect("connect")
        });
        session
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let spec = json!({"target": {"netns": lab.a.netns, "dev": lab.a.dev,
            "match": {"proto": "tcp", "dst": [b.to_string()], "dport": [port]}},
            "reset": {}, "duration": "1m"});
        let applied = conn.request(&json!({"id": i, "op": "apply", "fault": spec}));
        let answered = Instant::now();
        let failed = session
            .write_all(b"ping")
            .and_then(|()| session.read(&mut [0u8; 4]));
        let onset = answered.elapsed();
        assert!(failed.is_err(), "the session was not reset: {failed:?}");
        onsets.push(onset);
        let id = applied["result"]["id"].as_str().unwrap_or_default();
        conn.request(&json!({"id": i, "op": "revoke", "fault_id": id}));
    }
    Figure::new(
        SECTION,
        "reset onset: apply answered → ECONNRESET at the next send",
        "ms",
        Stats::of_durations_ms(&onsets),
    )
    .note("an established session; one send after the answer")
}
