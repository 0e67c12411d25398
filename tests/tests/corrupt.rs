//! The corrupt action proven with real traffic between two namespaces: with the checksum
//! recomputed every UDP datagram arrives, the configured share differing from what was sent in
//! exactly the configured number of payload bits, and a TCP stream arrives changed on a
//! connection that stays up; with the checksum broken the receiver gets none of the corrupted.
//!
//! Datagrams are sent two ways, because the datapath treats them differently: a plain send
//! on a veth leaves the checksum to the device (CHECKSUM_PARTIAL, which the peer trusts), a
//! corked send (MSG_MORE, then an empty send) makes the stack compute it in full.

mod support;

use std::{
    collections::HashMap,
    io::{ErrorKind, Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use faultline_tests::{
    agent::Agent,
    kernel::{bpf_filter_count, snmp},
    lab::{in_netns, Lab, Side},
    pace,
};
use nix::sys::socket::{self, sockopt, MsgFlags, SockaddrStorage};
use serde_json::{json, Value};
use support::{apply, get, id_of, revoke};

/// Copies of the sequence number in a datagram: 8 flipped bits leave a majority intact.
const COPIES: usize = 17;
const PAYLOAD: usize = COPIES * 8;
/// Datagrams in flight before the sender waits for the receiver: well under a veth's backlog
/// (netdev_max_backlog, 1000), so nothing is lost on the way.
const WINDOW: u64 = 200;
/// Quiet the receiver must see after the last send before the count is final.
const QUIET: Duration = Duration::from_millis(300);
/// Absorbs what the receiving thread has not read yet.
const RCVBUF: usize = 8 << 20;

fn payload_of(seq: u64) -> [u8; PAYLOAD] {
    let mut out = [0u8; PAYLOAD];
    for copy in out.chunks_exact_mut(8) {
        copy.copy_from_slice(&seq.to_be_bytes());
    }
    out
}

/// The sequence number most copies carry: at most 8 copies can have been changed.
fn seq_of(payload: &[u8]) -> Option<u64> {
    let mut votes: HashMap<[u8; 8], usize> = HashMap::new();
    for copy in payload.chunks_exact(8) {
        *votes.entry(copy.try_into().ok()?).or_default() += 1;
    }
    let (copy, count) = votes.into_iter().max_by_key(|&(_, n)| n)?;
    (count > COPIES / 2).then(|| u64::from_be_bytes(copy))
}

/// How a test sends its datagrams: see the module comment.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Checksum {
    LeftToTheDevice,
    ComputedBySender,
}

/// What the receiver got: for each sequence number, the number of bits its payload differed
/// from what was sent (0 = intact).
struct Received {
    sent: u64,
    flipped_bits: HashMap<u64, u32>,
}

impl Received {
    fn corrupted(&self) -> u64 {
        self.flipped_bits.values().filter(|&&b| b > 0).count() as u64
    }
}

/// Sends `count` datagrams from A to `to:port` and collects what arrives.
fn udp_run(lab: &Lab, to: IpAddr, port: u16, count: u64, checksum: Checksum) -> Received {
    let receiver = in_netns(lab.ns(lab.side_of(to)), || {
        UdpSocket::bind(SocketAddr::new(to, port)).expect("bind the receiver")
    });
    // FORCE: root may exceed net.core.rmem_max, which caps plain SO_RCVBUF.
    socket::setsockopt(&receiver, sockopt::RcvBufForce, &RCVBUF).expect("SO_RCVBUFFORCE");
    receiver
        .set_read_timeout(Some(Duration::from_millis(5)))
        .expect("receive timeout");
    let highest = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (highest, done) = (Arc::clone(&highest), Arc::clone(&done));
        thread::spawn(move || drain(&receiver, &highest, &done))
    };
    let sender = in_netns(lab.ns(Side::A), || {
        let any = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        UdpSocket::bind(any).expect("bind the sender")
    });
    let dst = SocketAddr::new(to, port);
    let dst_storage = SockaddrStorage::from(dst);
    let limit = pace::scaled(Duration::from_secs(1));
    for seq in 0..count {
        let waiting = Instant::now();
        while seq > highest.load(Ordering::Acquire) + WINDOW && waiting.elapsed() < limit {
            thread::sleep(Duration::from_micros(50));
        }
        let payload = payload_of(seq);
        match checksum {
            Checksum::LeftToTheDevice => {
                sender.send_to(&payload, dst).expect("send");
            }
            Checksum::ComputedBySender => {
                let fd = sender.as_raw_fd();
                // nix has no name for MSG_MORE.
                let more = MsgFlags::from_bits_retain(libc::MSG_MORE);
                socket::sendto(fd, &payload, &dst_storage, more).expect("send");
                socket::sendto(fd, &[], &dst_storage, MsgFlags::empty()).expect("flush");
            }
        }
    }
    done.store(true, Ordering::Release);
    let payloads = reader
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    let mut flipped_bits = HashMap::new();
    for payload in payloads {
        assert_eq!(payload.len(), PAYLOAD, "a datagram changed length");
        let seq = seq_of(&payload).expect("a majority of intact copies");
        let bits = payload
            .iter()
            .zip(payload_of(seq))
            .map(|(got, sent)| (got ^ sent).count_ones())
            .sum();
        assert!(
            flipped_bits.insert(seq, bits).is_none(),
            "datagram {seq} arrived twice"
        );
    }
    Received {
        sent: count,
        flipped_bits,
    }
}

fn drain(sock: &UdpSocket, highest: &AtomicU64, done: &AtomicBool) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    let mut last = Instant::now();
    loop {
        match sock.recv(&mut buf) {
            Ok(n) => {
                if let Some(seq) = seq_of(&buf[..n]) {
                    highest.fetch_max(seq, Ordering::AcqRel);
                }
                got.push(buf[..n].to_vec());
                last = Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => panic!("UDP receive: {e}"),
        }
        if done.load(Ordering::Acquire) && last.elapsed() >= QUIET {
            return got;
        }
    }
}

fn corrupt_fault(lab: &Lab, to: IpAddr, port: u16, proto: &str, corrupt: Value) -> Value {
    json!({"target": {"netns": lab.a.netns, "dev": lab.a.dev,
           "match": {"proto": proto, "dst": [to.to_string()], "dport": [port]}},
           "corrupt": corrupt, "duration": "60s"})
}

fn egress(agent: &Agent, id: &str) -> Value {
    get(agent, id)["counters"]["egress"].clone()
}

/// |k − np| within 4 σ of a Binomial(n, p) count: several runs are checked, each at 4 σ.
fn assert_binomial(k: u64, n: u64, p: f64, what: &str) {
    let (mean, sd) = (n as f64 * p, (n as f64 * p * (1.0 - p)).sqrt());
    println!(
        "FAULTLINE-MEASURE: corrupt {what}: {k} of {n} corrupted (expected {mean:.0} ± {sd:.1})"
    );
    assert!(
        (k as f64 - mean).abs() <= 4.0 * sd,
        "{what}: {k} of {n} corrupted, expected {mean:.0} ± 4 × {sd:.1}"
    );
}

#[test]
fn recomputed_checksums_deliver_every_datagram_with_exactly_n_bits_flipped() {
    let lab = Lab::new();
    let agent = Agent::start();
    let runs = [
        (
            IpAddr::V4(lab.b.v4),
            7101,
            10_000,
            20.0,
            3,
            Checksum::LeftToTheDevice,
        ),
        (
            IpAddr::V4(lab.b.v4),
            7102,
            10_000,
            10.0,
            1,
            Checksum::ComputedBySender,
        ),
        (
            IpAddr::V6(lab.b.v6),
            7103,
            3_000,
            30.0,
            8,
            Checksum::LeftToTheDevice,
        ),
        (
            IpAddr::V6(lab.b.v6),
            7104,
            3_000,
            30.0,
            2,
            Checksum::ComputedBySender,
        ),
    ];
    for (to, port, count, percent, bits, checksum) in runs {
        let what = format!("{to} {checksum:?} {percent}% {bits} bits");
        let fault = corrupt_fault(
            &lab,
            to,
            port,
            "udp",
            json!({"percent": percent, "bits": bits}),
        );
        let id = id_of(&apply(&agent, fault));
        let started = Instant::now();
        let got = udp_run(&lab, to, port, count, checksum);
        println!(
            "FAULTLINE-MEASURE: corrupt {what}: {count} datagrams in {:?}",
            started.elapsed()
        );
        assert_eq!(got.flipped_bits.len() as u64, got.sent, "{what}: none lost");
        for (seq, flipped) in &got.flipped_bits {
            assert!(
                *flipped == 0 || *flipped == bits,
                "{what}: datagram {seq} differs in {flipped} bits, not {bits}"
            );
        }
        let corrupted = got.corrupted();
        assert_binomial(corrupted, count, percent / 100.0, &what);
        let counters = egress(&agent, &id);
        assert_eq!(
            counters["corrupted_packets"], corrupted,
            "{what}: {counters}"
        );
        assert_eq!(counters["matched_packets"], count, "{what}: {counters}");
        assert_eq!(counters["dropped_packets"], 0, "{what}: {counters}");
        revoke(&agent, &id);
    }
    assert_eq!(bpf_filter_count(&lab.a.netns, &lab.a.dev), 0);
}

#[test]
fn broken_checksums_make_the_receiver_lose_the_corrupted_datagrams() {
    let lab = Lab::new();
    let agent = Agent::start();
    let runs = [
        (
            IpAddr::V4(lab.b.v4),
            7201,
            "Udp:InCsumErrors",
            Checksum::ComputedBySender,
        ),
        (
            IpAddr::V6(lab.b.v6),
            7202,
            "Udp6:InCsumErrors",
            Checksum::ComputedBySender,
        ),
        (
            IpAddr::V4(lab.b.v4),
            7203,
            "Udp:InCsumErrors",
            Checksum::LeftToTheDevice,
        ),
    ];
    let (count, percent) = (5_000, 20.0);
    for (to, port, csum_errors, checksum) in runs {
        let what = format!("{to} {checksum:?} broken");
        let fault = corrupt_fault(
            &lab,
            to,
            port,
            "udp",
            json!({"percent": percent, "bits": 2, "checksum": "broken"}),
        );
        let id = id_of(&apply(&agent, fault));
        let errors_before = snmp(&lab.b.netns).get(csum_errors).copied().unwrap_or(0);
        let got = udp_run(&lab, to, port, count, checksum);
        let errors = snmp(&lab.b.netns).get(csum_errors).copied().unwrap_or(0) - errors_before;
        let counters = egress(&agent, &id);
        let corrupted = counters["corrupted_packets"].as_u64().unwrap_or(0);
        println!("FAULTLINE-MEASURE: corrupt {what}: {corrupted} corrupted, receiver {csum_errors} +{errors}");
        assert_binomial(corrupted, count, percent / 100.0, &what);
        assert_eq!(
            got.corrupted(),
            0,
            "{what}: a corrupted datagram was delivered"
        );
        assert_eq!(
            got.flipped_bits.len() as u64,
            count - corrupted,
            "{what}: {counters}"
        );
        match checksum {
            // The receiving kernel checked and discarded them.
            Checksum::ComputedBySender => {
                assert_eq!(errors, corrupted, "{what}");
                assert_eq!(counters["dropped_packets"], 0, "{what}: {counters}");
            }
            // A partial checksum cannot be broken: the datapath dropped them instead.
            Checksum::LeftToTheDevice => {
                assert_eq!(errors, 0, "{what}");
                assert_eq!(counters["dropped_packets"], corrupted, "{what}: {counters}");
            }
        }
        revoke(&agent, &id);
    }
    assert_eq!(bpf_filter_count(&lab.a.netns, &lab.a.dev), 0);
}

/// At ingress (on the receiving side's device) the same holds: recomputed checksums deliver
/// every datagram, broken ones are discarded by the stack above the hook.
#[test]
fn at_ingress_recomputed_deliver_and_broken_are_discarded() {
    let lab = Lab::new();
    let agent = Agent::start();
    let b = IpAddr::V4(lab.b.v4);
    let runs = [
        (7501, "recompute", Checksum::LeftToTheDevice),
        (7502, "recompute", Checksum::ComputedBySender),
        (7503, "broken", Checksum::ComputedBySender),
        (7504, "broken", Checksum::LeftToTheDevice),
    ];
    let (count, percent, bits) = (3_000, 30.0, 2);
    for (port, checksum_mode, sent_as) in runs {
        let what = format!("ingress {checksum_mode} {sent_as:?}");
        // On B: this host's port is the receiver's, the peer is A.
        let fault = json!({"target": {"netns": lab.b.netns, "dev": lab.b.dev,
            "direction": "ingress",
            "match": {"proto": "udp", "dst": [lab.a.v4.to_string()], "sport": [port]}},
            "corrupt": {"percent": percent, "bits": bits, "checksum": checksum_mode},
            "duration": "60s"});
        let id = id_of(&apply(&agent, fault));
        let errors_before = snmp(&lab.b.netns)["Udp:InCsumErrors"];
        let got = udp_run(&lab, b, port, count, sent_as);
        let errors = snmp(&lab.b.netns)["Udp:InCsumErrors"] - errors_before;
        let counters = get(&agent, &id)["counters"]["ingress"].clone();
        let corrupted = counters["corrupted_packets"].as_u64().unwrap_or(0);
        assert_binomial(corrupted, count, percent / 100.0, &what);
        if checksum_mode == "recompute" {
            assert_eq!(got.flipped_bits.len() as u64, count, "{what}: none lost");
            assert_eq!(got.corrupted(), corrupted, "{what}: {counters}");
            assert!(got.flipped_bits.values().all(|&f| f == 0 || f == bits));
        } else {
            assert_eq!(
                got.corrupted(),
                0,
                "{what}: a corrupted datagram was delivered"
            );
            assert_eq!(got.flipped_bits.len() as u64, count - corrupted, "{what}");
            let discarded_by_stack = if sent_as == Checksum::ComputedBySender {
                corrupted
            } else {
                0
            };
            assert_eq!(errors, discarded_by_stack, "{what}: {counters}");
        }
        revoke(&agent, &id);
    }
    assert_eq!(bpf_filter_count(&lab.b.netns, &lab.b.dev), 0);
}

/// Sends each payload from A to `to:port` (with UDP GSO segments of `segment` bytes when
/// given) and returns what arrives, in order, once the receiver has been quiet for a moment.
fn udp_exchange(
    lab: &Lab,
    to: IpAddr,
    port: u16,
    payloads: &[Vec<u8>],
    segment: Option<u16>,
) -> Vec<Vec<u8>> {
    let receiver = in_netns(lab.ns(lab.side_of(to)), || {
        UdpSocket::bind(SocketAddr::new(to, port)).expect("bind the receiver")
    });
    socket::setsockopt(&receiver, sockopt::RcvBufForce, &RCVBUF).expect("SO_RCVBUFFORCE");
    receiver
        .set_read_timeout(Some(pace::scaled(QUIET)))
        .expect("receive timeout");
    let sender = in_netns(lab.ns(Side::A), || {
        let any = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        UdpSocket::bind(any).expect("bind the sender")
    });
    if let Some(size) = segment {
        socket::setsockopt(&sender, sockopt::UdpGsoSegment, &i32::from(size)).expect("UDP_SEGMENT");
    }
    let (mut got, mut buf) = (Vec::new(), vec![0u8; 65536]);
    let (mut expected, mut received) = (0, 0);
    for payload in payloads {
        sender
            .send_to(payload, SocketAddr::new(to, port))
            .expect("send");
        // One send at a time, its datagrams read before the next: nothing can overflow. A
        // datagram that never comes ends the wait after the receive timeout.
        expected += payload.len();
        while received < expected {
            let Ok(n) = receiver.recv(&mut buf) else {
                break;
            };
            got.push(buf[..n].to_vec());
            received += n;
        }
    }
    got
}

/// Bits in which `got` differs from `sent`, by byte offset.
fn differing_bits(got: &[u8], sent: &[u8]) -> Vec<(usize, u32)> {
    got.iter()
        .zip(sent)
        .enumerate()
        .filter(|(_, (g, s))| g != s)
        .map(|(i, (g, s))| (i, (g ^ s).count_ones()))
        .collect()
}

/// A datagram larger than the MTU leaves in IPv4 fragments: the first fragment's payload is
/// corrupted (its checksum covers the whole datagram), the later ones pass untouched.
#[test]
fn fragmented_datagrams_are_corrupted_in_their_first_fragment() {
    let lab = Lab::new();
    let agent = Agent::start();
    let (b, port, bits) = (IpAddr::V4(lab.b.v4), 7701, 4);
    let id = id_of(&apply(
        &agent,
        corrupt_fault(&lab, b, port, "udp", json!({"percent": 100, "bits": bits})),
    ));
    // 1500-byte MTU: the first fragment carries 1480 bytes of the datagram, 8 of them its
    // UDP header.
    let first_fragment_payload = 1472;
    let payloads: Vec<Vec<u8>> = (0..50u8)
        .map(|n| (0..4000u32).map(|i| (i % 253) as u8 ^ n).collect())
        .collect();
    let got = udp_exchange(&lab, b, port, &payloads, None);
    assert_eq!(got.len(), payloads.len(), "every datagram arrives");
    for (got, sent) in got.iter().zip(&payloads) {
        let differing = differing_bits(got, sent);
        assert_eq!(
            differing.iter().map(|(_, n)| n).sum::<u32>(),
            bits,
            "{differing:?}"
        );
        assert!(
            differing.iter().all(|(at, _)| *at < first_fragment_payload),
            "a later fragment changed: {differing:?}"
        );
    }
    let counters = egress(&agent, &id);
    assert_eq!(
        counters["corrupted_packets"], 50,
        "one per datagram: {counters}"
    );
    revoke(&agent, &id);
    assert_eq!(bpf_filter_count(&lab.a.netns, &lab.a.dev), 0);
}

/// A UDP GSO send is one packet at the hook: its first segment is corrupted, the others arrive
/// intact, each with a checksum computed when the packet is split.
#[test]
fn a_gso_packet_is_corrupted_in_its_first_segment() {
    let lab = Lab::new();
    let agent = Agent::start();
    let (b, port, bits) = (IpAddr::V4(lab.b.v4), 7702, 3);
    let id = id_of(&apply(
        &agent,
        corrupt_fault(&lab, b, port, "udp", json!({"percent": 100, "bits": bits})),
    ));
    let (segment, segments) = (200u16, 8);
    let payloads: Vec<Vec<u8>> = (0..20u8)
        .map(|n| {
            (0..u32::from(segment) * segments)
                .map(|i| (i % 251) as u8 ^ n)
                .collect()
        })
        .collect();
    let got = udp_exchange(&lab, b, port, &payloads, Some(segment));
    let sent: Vec<&[u8]> = payloads
        .iter()
        .flat_map(|p| p.chunks(usize::from(segment)))
        .collect();
    assert_eq!(got.len(), sent.len(), "every segment arrives as a datagram");
    for (i, (got, sent)) in got.iter().zip(&sent).enumerate() {
        let flipped: u32 = differing_bits(got, sent).iter().map(|(_, n)| n).sum();
        let first = i % segments as usize == 0;
        assert_eq!(flipped, if first { bits } else { 0 }, "segment {i}");
    }
    assert_eq!(egress(&agent, &id)["corrupted_packets"], 20);
    revoke(&agent, &id);
    assert_eq!(bpf_filter_count(&lab.a.netns, &lab.a.dev), 0);
}

#[test]
fn a_tcp_stream_arrives_corrupted_on_a_connection_that_stays_up() {
    let lab = Lab::new();
    let agent = Agent::start();
    let (b, port) = (IpAddr::V4(lab.b.v4), 7301);
    let listener = in_netns(&lab.b.netns, || {
        TcpListener::bind(SocketAddr::new(b, port)).expect("bind")
    });
    let mut client = in_netns(&lab.a.netns, || {
        TcpStream::connect(SocketAddr::new(b, port)).expect("connect")
    });
    let (mut server, _) = listener.accept().expect("accept");
    server
        .set_read_timeout(Some(pace::scaled(Duration::from_secs(10))))
        .expect("timeout");
    let id = id_of(&apply(
        &agent,
        corrupt_fault(&lab, b, port, "tcp", json!({"percent": 50})),
    ));
    let sent: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let writer = {
        let sent = sent.clone();
        thread::spawn(move || {
            for chunk in sent.chunks(16 << 10) {
                client.write_all(chunk).expect("send");
            }
            client
        })
    };
    let mut got = vec![0u8; sent.len()];
    server
        .read_exact(&mut got)
        .expect("the whole stream arrives");
    let client = writer.join().expect("writer");
    let flipped: u32 = got
        .iter()
        .zip(&sent)
        .map(|(g, s)| (g ^ s).count_ones())
        .sum();
    let corrupted = egress(&agent, &id)["corrupted_packets"]
        .as_u64()
        .unwrap_or(0);
    println!("FAULTLINE-MEASURE: corrupt tcp: {flipped} bits differ in 4 MiB; {corrupted} segments corrupted");
    assert!(flipped > 0, "the stream arrived intact");
    // A corrupted retransmission of data already received changes nothing.
    assert!(
        u64::from(flipped) <= corrupted,
        "{flipped} bits, {corrupted} corrupted"
    );
    revoke(&agent, &id);
    // The connection is still up: a round trip after the fault.
    let mut client = client;
    client.write_all(b"after").expect("send after");
    let mut after = [0u8; 5];
    server.read_exact(&mut after).expect("receive after");
    assert_eq!(&after, b"after");
    assert_eq!(bpf_filter_count(&lab.a.netns, &lab.a.dev), 0);
}

#[test]
fn faultctl_corrupt_applies_and_shows_the_counter_in_show_and_metrics() {
    let lab = Lab::new();
    let agent = Agent::start();
    let b = IpAddr::V4(lab.b.v4);
    let out = agent.faultctl(&[
        "corrupt",
        "--netns",
        &lab.a.netns,
        "--dev",
        &lab.a.dev,
        "--proto",
        "udp",
        "--dst",
        &b.to_string(),
        "--dport",
        "7401",
        "--percent",
        "100",
        "--bits",
        "2",
        "--checksum",
        "recompute",
        "--for",
        "60s",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = agent.request(json!({"id": 1, "op": "list"}));
    let id = listed["result"]["faults"][0]["id"]
        .as_str()
        .expect("one fault")
        .to_owned();
    let got = udp_run(&lab, b, 7401, 10, Checksum::LeftToTheDevice);
    assert_eq!(got.corrupted(), 10);
    let shown = agent.faultctl(&["show", &id]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("corrupt 100% 2bit checksum=recompute"),
        "{text}"
    );
    assert!(text.contains("corrupted pkts 10"), "{text}");
    let metrics = agent.faultctl(&["metrics"]);
    let text = String::from_utf8_lossy(&metrics.stdout);
    let series = text
        .lines()
        .find(|l| {
            l.starts_with("faultline_fault_corrupted_packets_total{")
                && l.contains(&format!("fault_id=\"{id}\""))
                && l.contains("direction=\"egress\"")
        })
        .unwrap_or_else(|| panic!("no corrupted_packets series:\n{text}"));
    assert!(series.contains("kind=\"corrupt\""), "{series}");
    assert!(series.ends_with(" 10"), "{series}");
    revoke(&agent, &id);
    assert_eq!(bpf_filter_count(&lab.a.netns, &lab.a.dev), 0);
}
