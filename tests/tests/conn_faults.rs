//! Connection faults proven with real clients between two namespaces: `reset` (an established
//! session fails with ECONNRESET at its next send), `reject` (a new connect or a UDP send is
//! refused as by a closed port), `stall` and `reset_after` (a connection's byte budget, then
//! nothing or a reset) and `connections` (which connections a fault touches).

mod support;

use std::{
    io::{ErrorKind, Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use faultline_tests::{
    agent::Agent,
    kernel::{bpf_filter_count, tracked_connections},
    lab::{in_netns, Lab, Side},
    pace,
};
use serde_json::{json, Value};
use support::{apply, get, id_of, revoke};

/// How long a refused or reset connection may take to say so: one round trip on a veth is tens
/// of microseconds; this covers a slow (emulated) machine.
const ANSWER: Duration = Duration::from_secs(2);

/// An echo server in the side owning `addr`: every connection gets back what it sends, until it
/// closes. Its threads end with their connections and the listener with the lab's namespace.
fn echo_server(lab: &Lab, addr: IpAddr, port: u16) {
    let listener = in_netns(lab.ns(lab.side_of(addr)), || {
        TcpListener::bind(SocketAddr::new(addr, port)).expect("bind the echo server")
    });
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// A client connection from `from` to `to:port`.
fn connect(lab: &Lab, from: Side, to: IpAddr, port: u16) -> std::io::Result<TcpStream> {
    let stream = in_netns(lab.ns(from), || {
        TcpStream::connect_timeout(&SocketAddr::new(to, port), pace::scaled(ANSWER))
    })?;
    stream.set_read_timeout(Some(pace::scaled(ANSWER)))?;
    stream.set_write_timeout(Some(pace::scaled(ANSWER)))?;
    Ok(stream)
}

/// One echo round trip on `stream`.
fn round_trip(stream: &mut TcpStream) -> std::io::Result<()> {
    stream.write_all(b"ping")?;
    let mut back = [0u8; 4];
    stream.read_exact(&mut back)?;
    assert_eq!(&back, b"ping");
    Ok(())
}

/// Whether the datapath tracks no connection, polled for a moment: the engine deletes a
/// cleared fault's entries just after it answers.
fn no_tracked_connections(agent: &Agent) -> bool {
    let deadline = Instant::now() + pace::scaled(Duration::from_secs(1));
    loop {
        if tracked_connections(agent.pin_dir()) == 0 {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

fn counters(agent: &Agent, id: &str, direction: &str) -> Value {
    get(agent, id)["counters"][direction].clone()
}

#[test]
fn reset_fails_an_established_session_at_its_next_send_v4_and_v6() {
    let lab = Lab::new();
    let agent = Agent::start();
    for (b, port) in [(IpAddr::V4(lab.b.v4), 6101), (IpAddr::V6(lab.b.v6), 6102)] {
        echo_server(&lab, b, port);
        let mut session = connect(&lab, Side::A, b, port).expect("connect before the fault");
        round_trip(&mut session).expect("the session works before the fault");
        let view = apply(
            &agent,
            json!({"target": {"netns": lab.a.netns, "dev": lab.a.dev,
                   "match": {"proto": "tcp", "dst": [b.to_string()], "dport": [port]}},
                   "reset": {}, "duration": "60s"}),
        );
        let id = id_of(&view);
        let sent = Instant::now();
        let error = round_trip(&mut session).expect_err("the session must fail");
        let onset = sent.elapsed();
        println!("FAULTLINE-MEASURE: reset onset {b}: ECONNRESET {onset:?} after the send");
        assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");
        assert!(onset < pace::scaled(ANSWER), "reset took {onset:?}");
        let egress = counters(&agent, &id, "egress");
        assert!(egress["resets_sent"].as_u64() >= Some(1), "{egress}");
        revoke(&agent, &id);
        let mut after = connect(&lab, Side::A, b, port).expect("connect after revoke");
        round_trip(&mut after).expect("healed after revoke");
    }
    assert_eq!(bpf_filter_count(&lab.a.netns, &lab.a.dev), 0);
}

#[test]
fn reset_with_peer_resets_both_ends() {
    let lab = Lab::new();
    let agent = Agent::start();
    let b = IpAddr::V4(lab.b.v4);
    let listener = in_netns(&lab.b.netns, || {
        TcpListener::bind(SocketAddr::new(b, 6111)).expect("bind")
    });
    let mut client = connect(&lab, Side::A, b, 6111).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    server
        .set_read_timeout(Some(pace::scaled(ANSWER)))
        .expect("timeout");
    client.write_all(b"hello").expect("send before the fault");
    let mut got = [0u8; 5];
    server
        .read_exact(&mut got)
        .expect("receive before the fault");
    // At b's ingress: what a arrives with is answered to both ends.
    let id = id_of(&apply(
        &agent,
        json!({"target": {"netns": lab.b.netns, "dev": lab.b.dev, "direction": "ingress",
               "match": {"proto": "tcp", "sport": [6111]}},
               "reset": {"peer": true}, "duration": "60s"}),
    ));
    client
        .write_all(b"again")
        .expect("the send itself is accepted");
    let mut buf = [0u8; 8];
    let server_error = server.read(&mut buf).expect_err("b's side is reset");
    assert_eq!(server_error.kind(), ErrorKind::ConnectionReset);
    let client_error = client.read(&mut buf).expect_err("a's side is reset");
    assert_eq!(client_error.kind(), ErrorKind::ConnectionReset);
    let ingress = counters(&agent, &id, "ingress");
    assert_eq!(ingress["resets_sent"], 2, "{ingress}");
    revoke(&agent, &id);
}

#[test]
fn reject_refuses_new_connections_and_udp_while_established_sessions_go_on() {
    let lab = Lab::new();
    let agent = Agent::start();
    let port = 6121;
    let (b4, b6) = (IpAddr::V4(lab.b.v4), IpAddr::V6(lab.b.v6));
    echo_server(&lab, b4, port);
    echo_server(&lab, b6, port);
    let mut established = connect(&lab, Side::A, b4, port).expect("connect before the fault");
    round_trip(&mut established).expect("works before the fault");
    let id = id_of(&apply(
        &agent,
        json!({"target": {"netns": lab.a.netns, "dev": lab.a.dev, "connections": "new",
               "match": {"dport": [port]}},
               "reject": {}, "duration": "60s"}),
    ));
    for b in [b4, b6] {
        let refused = connect(&lab, Side::A, b, port).expect_err("a new connection is refused");
        assert_eq!(
            refused.kind(),
            ErrorKind::ConnectionRefused,
            "{b}: {refused}"
        );
        // A connected UDP socket learns of the port unreachable at its next call.
        let socket = in_netns(&lab.a.netns, || {
            let any = if b.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            UdpSocket::bind(any).expect("bind")
        });
        socket.connect(SocketAddr::new(b, port)).expect("connect");
        socket
            .set_read_timeout(Some(pace::scaled(ANSWER)))
            .expect("timeout");
        socket
            .send(b"datagram")
            .expect("the send itself is accepted");
        let error = socket
            .recv(&mut [0u8; 16])
            .expect_err("the port is unreachable");
        assert_eq!(error.kind(), ErrorKind::ConnectionRefused, "{b}: {error}");
    }
    round_trip(&mut established).expect("the established session keeps working");
    let egress = counters(&agent, &id, "egress");
    assert_eq!(
        egress["rejects_sent"], 4,
        "two connects, two datagrams: {egress}"
    );
    revoke(&agent, &id);
    let mut after = connect(&lab, Side::A, b4, port).expect("connect after revoke");
    round_trip(&mut after).expect("healed");
}

#[test]
fn reject_at_ingress_makes_a_local_server_look_closed_to_its_peers() {
    let lab = Lab::new();
    let agent = Agent::start();
    let a = IpAddr::V4(lab.a.v4);
    echo_server(&lab, a, 6131);
    let id = id_of(&apply(
        &agent,
        json!({"target": {"netns": lab.a.netns, "dev": lab.a.dev, "direction": "ingress",
               "match": {"proto": "tcp", "sport": [6131]}},
               "reject": {}, "duration": "60s"}),
    ));
    let refused = connect(&lab, Side::B, a, 6131).expect_err("refused");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{refused}");
    assert_eq!(counters(&agent, &id, "ingress")["rejects_sent"], 1);
    revoke(&agent, &id);
}

#[test]
fn connections_new_and_established_split_a_partition() {
    let lab = Lab::new();
    let agent = Agent::start();
    let b = IpAddr::V4(lab.b.v4);
    let (old_port, new_port) = (6141, 6142);
    echo_server(&lab, b, old_port);
    echo_server(&lab, b, new_port);
    let mut old = connect(&lab, Side::A, b, old_port).expect("connect before the faults");
    round_trip(&mut old).expect("works");
    let spec = |port: u16, connections: &str| {
        json!({"target": {"netns": lab.a.netns, "dev": lab.a.dev, "connections": connections,
               "match": {"proto": "tcp", "dport": [port]}},
               "partition": {}, "duration": "60s"})
    };
    let cut_new = id_of(&apply(&agent, spec(old_port, "new")));
    let cut_old = id_of(&apply(&agent, spec(new_port, "established")));
    // On old_port: the session from before passes, a new connection is cut.
    round_trip(&mut old).expect("an established session passes a `new` partition");
    let error = connect(&lab, Side::A, b, old_port).expect_err("a new connection is cut");
    assert_eq!(error.kind(), ErrorKind::TimedOut, "{error}");
    // On new_port: connections opened under the fault pass an `established` partition.
    let mut fresh = connect(&lab, Side::A, b, new_port).expect("a new connection passes");
    round_trip(&mut fresh).expect("and keeps passing");
    assert!(tracked_connections(agent.pin_dir()) >= 2);
    revoke(&agent, &cut_new);
    revoke(&agent, &cut_old);
    assert_eq!(
        tracked_connections(agent.pin_dir()),
        0,
        "revoke deletes the connections its faults tracked"
    );
}

#[test]
fn connection_faults_leave_nothing_after_clear_and_sigkill() {
    let lab = Lab::new();
    let mut agent = Agent::start();
    let b = IpAddr::V4(lab.b.v4);
    echo_server(&lab, b, 6151);
    let fault = |action: Value| {
        let mut spec = json!({"target": {"netns": lab.a.netns, "dev": lab.a.dev,
               "connections": "new", "match": {"proto": "tcp", "dport": [6151]}},
               "duration": "60s"});
        spec[action["name"].as_str().expect("name")] = action["spec"].clone();
        spec
    };
    apply(&agent, fault(json!({"name": "reset", "spec": {}})));
    let _ = connect(&lab, Side::A, b, 6151).map(|mut s| round_trip(&mut s));
    assert!(tracked_connections(agent.pin_dir()) >= 1);
    let reply = agent.request(json!({"id": 1, "op": "clear"}));
    assert_eq!(reply["ok"], true, "{reply}");
    // A bulk clear answers first and empties the datapath's tables right after.
    assert!(no_tracked_connections(&agent), "clear");
    assert_eq!(bpf_filter_count(&lab.a.netns, &lab.a.dev), 0);

    // A faultd killed and started again takes the fault over, and clears it as any other.
    apply(&agent, fault(json!({"name": "reject", "spec": {}})));
    agent.sigkill();
    let refused = connect(&lab, Side::A, b, 6151).expect_err("the fault outlives faultd");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{refused}");
    let agent = agent.restart();
    let reply = agent.request(json!({"id": 1, "op": "clear"}));
    assert_eq!(reply["ok"], true, "{reply}");
    assert!(no_tracked_connections(&agent), "clear after a restart");
    assert_eq!(bpf_filter_count(&lab.a.netns, &lab.a.dev), 0);
    let mut healed = connect(&lab, Side::A, b, 6151).expect("connect after clear");
    round_trip(&mut healed).expect("healed");
}

#[test]
fn faultctl_reject_and_reset_make_the_faults_the_protocol_describes() {
    let lab = Lab::new();
    let agent = Agent::start();
    let port = 6161;
    let b = IpAddr::V4(lab.b.v4);
    echo_server(&lab, b, port);
    let mut established = connect(&lab, Side::A, b, port).expect("connect before the fault");
    let port_text = port.to_string();
    let target = [
        "--netns",
        lab.a.netns.as_str(),
        "--dev",
        lab.a.dev.as_str(),
        "--proto",
        "tcp",
        "--dport",
        port_text.as_str(),
        "--for",
        "60s",
        "--json",
    ];
    let json_of = |out: std::process::Output| -> Value {
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).expect("faultctl --json prints JSON")
    };
    let rejected =
        json_of(agent.faultctl(&[&["reject", "--connections", "new"], &target[..]].concat()));
    assert_eq!(rejected["fault"]["reject"], json!({}), "{rejected}");
    assert_eq!(rejected["fault"]["target"]["connections"], "new");
    let refused = connect(&lab, Side::A, b, port).expect_err("a new connection is refused");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{refused}");
    round_trip(&mut established).expect("the established session keeps working");
    let id = rejected["id"].as_str().expect("an id");
    let shown = agent.faultctl(&["show", id]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("reject") && text.contains("rejects sent 1"),
        "{text}"
    );
    json_of(agent.faultctl(&["rm", id, "--json"]));

    let reset = json_of(agent.faultctl(&[&["reset", "--peer"], &target[..]].concat()));
    assert_eq!(reset["fault"]["reset"], json!({"peer": true}), "{reset}");
    let error = round_trip(&mut established).expect_err("the session is reset");
    assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");
    json_of(agent.faultctl(&["clear", "--json"]));
    assert_eq!(bpf_filter_count(&lab.a.netns, &lab.a.dev), 0);
}

/// A server on `addr:port` that reads each connection to its end (or until it fails) and
/// adds what it read to the count it returns.
fn counting_server(lab: &Lab, addr: IpAddr, port: u16) -> Arc<AtomicUsize> {
    let listener = in_netns(lab.ns(lab.side_of(addr)), || {
        TcpListener::bind(SocketAddr::new(addr, port)).expect("bind the counting server")
    });
    let received = Arc::new(AtomicUsize::new(0));
    let count = received.clone();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let count = count.clone();
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    count.fetch_add(n, Ordering::SeqCst);
                }
            });
        }
    });
    received
}

/// Polls `count` until it reaches `at_least` or `limit` passes; its value then.
fn wait_for_count(count: &AtomicUsize, at_least: usize, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    while count.load(Ordering::SeqCst) < at_least && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    count.load(Ordering::SeqCst)
}

#[test]
fn stall_lets_exactly_its_budget_through_then_nothing() {
    let lab = Lab::new();
    let agent = Agent::start();
    let port = 6171;
    let budget = 512;
    for b in [IpAddr::V4(lab.b.v4), IpAddr::V6(lab.b.v6)] {
        let received = counting_server(&lab, b, port);
        let id = id_of(&apply(
            &agent,
            json!({"target": {"netns": lab.a.netns, "dev": lab.a.dev,
                   "match": {"proto": "tcp", "dst": [b.to_string()], "dport": [port]}},
                   "stall": {"bytes": budget}, "duration": "60s"}),
        ));
        let mut stream = connect(&lab, Side::A, b, port).expect("the handshake passes");
        // More than the budget, in one write: the kernel may send it as one GSO packet, which
        // is withheld until TCP sends its first segment again on its own.
        stream
            .write_all(&[7u8; 8192])
            .expect("the send is buffered");
        let got = wait_for_count(&received, budget, pace::scaled(Duration::from_secs(5)));
        assert_eq!(got, budget, "{b}: the budget gets through");
        // Retransmissions keep coming (RTO 200 ms, then doubling): none gets further.
        thread::sleep(pace::scaled(Duration::from_millis(600)));
        assert_eq!(
            received.load(Ordering::SeqCst),
            budget,
            "{b}: nothing past it"
        );
        let egress = counters(&agent, &id, "egress");
        assert_eq!(egress["allowed_bytes"], budget, "{b}: {egress}");
        assert!(
            egress["dropped_packets"].as_u64() >= Some(1),
            "{b}: {egress}"
        );
        revoke(&agent, &id);
        // The held data flows once the fault is gone: the connection only hung.
        let got = wait_for_count(&received, 8192, pace::scaled(Duration::from_secs(10)));
        assert_eq!(got, 8192, "{b}: the rest arrives after revoke");
    }
    assert_eq!(bpf_filter_count(&lab.a.netns, &lab.a.dev), 0);
}

#[test]
fn reset_after_resets_the_connection_once_its_budget_is_spent() {
    let lab = Lab::new();
    let agent = Agent::start();
    let port = 6181;
    let b = IpAddr::V4(lab.b.v4);
    let received = counting_server(&lab, b, port);
    let id = id_of(&apply(
        &agent,
        json!({"target": {"netns": lab.a.netns, "dev": lab.a.dev,
               "match": {"proto": "tcp", "dport": [port]}},
               "reset_after": {"bytes": 300}, "duration": "60s"}),
    ));
    let mut stream = connect(&lab, Side::A, b, port).expect("the handshake passes");
    stream.write_all(&[1u8; 200]).expect("within the budget");
    assert_eq!(
        wait_for_count(&received, 200, pace::scaled(ANSWER)),
        200,
        "within the budget"
    );
    stream
        .write_all(&[2u8; 1000])
        .expect("the send is buffered");
    let error = stream
        .read(&mut [0u8; 16])
        .expect_err("the connection is reset");
    assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");
    assert_eq!(received.load(Ordering::SeqCst), 300, "exactly the budget");
    let egress = counters(&agent, &id, "egress");
    assert_eq!(egress["allowed_bytes"], 300, "{egress}");
    assert!(egress["resets_sent"].as_u64() >= Some(1), "{egress}");
    revoke(&agent, &id);
}

/// `openssl s_server` in B with the lab's certificate (tests/data/tls), killed on drop.
struct TlsServer(Child);

impl TlsServer {
    fn start(lab: &Lab, port: u16) -> TlsServer {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/tls");
        let accept = format!("{}:{port}", lab.b.v4);
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.b.netns,
                "openssl",
                "s_server",
                "-quiet",
            ])
            .args(["-accept", &accept, "-cert"])
            .arg(dir.join("lab.crt"))
            .arg("-key")
            .arg(dir.join("lab.key"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn openssl s_server");
        TlsServer(child)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `openssl s_client` from A to B's `port`, given `limit` (killed then, as `timeout` does:
/// exit status 124); its status and how long it ran.
fn tls_handshake(lab: &Lab, port: u16, limit: Duration) -> (Option<i32>, Duration) {
    let connect = format!("{}:{port}", lab.b.v4);
    let limit = format!("{:.1}", limit.as_secs_f64());
    let started = Instant::now();
    let status = Command::new("ip")
        .args(["netns", "exec", &lab.a.netns, "timeout", &limit])
        .args(["openssl", "s_client", "-brief", "-connect", &connect])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl s_client");
    (status.code(), started.elapsed())
}

/// A handshake that succeeds, tried until the server listens.
fn wait_for_tls(lab: &Lab, port: u16) {
    let deadline = Instant::now() + pace::scaled(Duration::from_secs(10));
    while tls_handshake(lab, port, pace::scaled(ANSWER)).0 != Some(0) {
        assert!(Instant::now() < deadline, "openssl s_server never answered");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_tls_handshake_hangs_under_stall_and_is_reset_under_reset_after() {
    let lab = Lab::new();
    let agent = Agent::start();
    // The ClientHello fits in 512 bytes; the server's first flight (certificate and all) does
    // not, so the handshake stops there.
    let limit = pace::scaled(Duration::from_secs(3));
    for (port, action) in [
        (6191, json!({"stall": {"bytes": 512}})),
        (6192, json!({"reset_after": {"bytes": 512}})),
    ] {
        let _server = TlsServer::start(&lab, port);
        wait_for_tls(&lab, port);
        // Longer than the hung handshake is given, however slow the machine.
        let mut spec = json!({"target": {"netns": lab.a.netns, "dev": lab.a.dev,
               "match": {"proto": "tcp", "dport": [port]}}, "duration": "30m"});
        let name = if action.get("stall").is_some() {
            "stall"
        } else {
            "reset_after"
        };
        spec[name] = action[name].clone();
        let id = id_of(&apply(&agent, spec));
        let (status, took) = tls_handshake(&lab, port, limit);
        if name == "stall" {
            assert_eq!(status, Some(124), "the handshake hangs until killed");
        } else {
            assert!(
                status != Some(0) && status != Some(124) && took < limit,
                "the handshake fails at once: {status:?} after {took:?}"
            );
            let ingress = counters(&agent, &id, "ingress");
            assert!(ingress["resets_sent"].as_u64() >= Some(1), "{ingress}");
        }
        revoke(&agent, &id);
    }
}
