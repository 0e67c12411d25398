//! Connection faults proven with real clients between two namespaces: `reset` (an established
//! session fails with ECONNRESET at its next send), `reject` (a new connect or a UDP send is
//! refused as by a closed port) and `connections` (which connections a fault touches).

mod support;

use std::{
    io::{ErrorKind, Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
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
