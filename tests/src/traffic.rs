//! Real traffic between the two sides of a lab, counted where it arrives.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sched::{sched_getcpu, sched_setaffinity, CpuSet};
use nix::sys::socket::{setsockopt, sockopt};
use nix::unistd::Pid;

use crate::kernel::snmp;
use crate::lab::{in_netns, Lab, Side};

/// Silence the receiver must observe, once the sender is done, before a burst
/// counts as complete; covers datagrams still in flight or delayed.
const DRAIN_QUIET: Duration = Duration::from_millis(300);
/// Absorbs an unpaced burst of tens of thousands of datagrams, so loss comes
/// from the network and not from a slow reader.
const RCVBUF: usize = 8 << 20;
/// How often background loops notice they were told to stop.
const POLL: Duration = Duration::from_millis(5);
/// First source port of `udp_flows`.
const FLOW_PORT_BASE: u16 = 20_000;
/// How long the echo server waits for a connected client's probe.
const ECHO_WAIT: Duration = Duration::from_secs(2);
const PROBE: &[u8] = b"faultline-probe";

#[derive(Debug, Clone)]
pub struct UdpReport {
    /// Datagrams the sending socket accepted.
    pub sent: u64,
    pub send_errors: u64,
    /// Datagrams that reached the receiving socket, duplicates included.
    pub received: u64,
    /// Sequence numbers (0..count) in arrival order.
    pub received_seqs: Vec<u64>,
}

/// Sends `count` datagrams, each carrying its sequence number, and counts
/// what the side owning `to_addr` receives. `pace` is the mean gap between
/// datagrams; `src_port` 0 picks an ephemeral port.
pub fn udp_burst(
    lab: &Lab,
    from: Side,
    to_addr: IpAddr,
    dst_port: u16,
    src_port: u16,
    count: u64,
    pace: Option<Duration>,
) -> UdpReport {
    let sink = UdpSink::start(lab, to_addr, dst_port);
    let sock = in_netns(lab.ns(from), || udp_bind(unspecified(to_addr), src_port));
    let dst = SocketAddr::new(to_addr, dst_port);
    let (mut sent, mut send_errors) = (0, 0);
    // Pacing against a schedule keeps the mean rate right despite coarse sleeps.
    let mut due = Instant::now();
    for seq in 0..count {
        if let Some(gap) = pace {
            due += gap;
            sleep_until(due);
        }
        match sock.send_to(&seq.to_be_bytes(), dst) {
            Ok(_) => sent += 1,
            Err(_) => send_errors += 1,
        }
    }
    let received_seqs: Vec<u64> = sink.finish().into_iter().map(|(_, seq)| seq).collect();
    UdpReport {
        sent,
        send_errors,
        received: received_seqs.len() as u64,
        received_seqs,
    }
}

/// `n_flows` flows from source ports 20000.. to one receiver, `per_flow`
/// datagrams each, interleaved. Returns (source port, sent, received) per flow.
pub fn udp_flows(
    lab: &Lab,
    from: Side,
    to_addr: IpAddr,
    dst_port: u16,
    n_flows: u16,
    per_flow: u64,
) -> Vec<(u16, u64, u64)> {
    let ports: Vec<u16> = (0..n_flows)
        .map(|i| FLOW_PORT_BASE.checked_add(i).expect("too many flows"))
        .collect();
    let sink = UdpSink::start(lab, to_addr, dst_port);
    let socks: Vec<UdpSocket> = in_netns(lab.ns(from), || {
        ports
            .iter()
            .map(|&p| udp_bind(unspecified(to_addr), p))
            .collect()
    });
    let dst = SocketAddr::new(to_addr, dst_port);
    let mut sent = vec![0; socks.len()];
    for seq in 0..per_flow {
        for (sock, sent) in socks.iter().zip(&mut sent) {
            if sock.send_to(&seq.to_be_bytes(), dst).is_ok() {
                *sent += 1;
            }
        }
    }
    let mut received: HashMap<u16, u64> = HashMap::new();
    for (port, _) in sink.finish() {
        *received.entry(port).or_default() += 1;
    }
    ports
        .into_iter()
        .zip(sent)
        .map(|(p, s)| (p, s, received.get(&p).copied().unwrap_or(0)))
        .collect()
}

/// A receiving socket drained by a background thread into (source port, seq).
struct UdpSink {
    netns: String,
    overflows_before: u64,
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<(u16, u64)>>>,
}

impl UdpSink {
    fn start(lab: &Lab, addr: IpAddr, port: u16) -> UdpSink {
        let netns = lab.ns(lab.side_of(addr)).to_owned();
        let sock = in_netns(&netns, || udp_bind(addr, port));
        // FORCE: root may exceed net.core.rmem_max, which caps plain SO_RCVBUF.
        setsockopt(&sock, sockopt::RcvBufForce, &RCVBUF).expect("set SO_RCVBUFFORCE");
        sock.set_read_timeout(Some(POLL))
            .expect("set receiver read timeout");
        let overflows_before = rx_overflows(&netns);
        let done = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&done);
        let thread = thread::spawn(move || drain(&sock, &stop));
        UdpSink {
            netns,
            overflows_before,
            done,
            thread: Some(thread),
        }
    }

    /// Waits for the receiver to go quiet; panics if it dropped datagrams
    /// itself, since that would be mistaken for loss caused by a fault.
    fn finish(mut self) -> Vec<(u16, u64)> {
        self.done.store(true, Ordering::Release);
        let got = self
            .thread
            .take()
            .expect("finish runs once")
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let overflows = rx_overflows(&self.netns) - self.overflows_before;
        assert_eq!(
            overflows, 0,
            "UDP receiver in {} dropped {overflows} datagrams (socket buffer full): \
             not fault loss; pace the sender",
            self.netns
        );
        got
    }
}

impl Drop for UdpSink {
    /// Lets the drain thread end (and release the namespace) if the sender panicked.
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
    }
}

fn drain(sock: &UdpSocket, done: &AtomicBool) -> Vec<(u16, u64)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    let mut last_rx = Instant::now();
    let mut done_at = None;
    loop {
        match sock.recv_from(&mut buf) {
            Ok((8, peer)) => {
                let seq: [u8; 8] = buf[..8].try_into().expect("8 bytes");
                got.push((peer.port(), u64::from_be_bytes(seq)));
                last_rx = Instant::now();
            }
            Ok(_) => {} // not one of ours
            // EINTR comes without any handler too: a receive timeout (SO_RCVTIMEO) fails with
            // it when the process is stopped and resumed (signal(7)); seen once in CI.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => panic!("UDP receive: {e}"),
        }
        if done.load(Ordering::Acquire) {
            let done_at = *done_at.get_or_insert_with(Instant::now);
            if done_at.max(last_rx).elapsed() >= DRAIN_QUIET {
                return got;
            }
        }
    }
}

/// Receive-side UDP drops in a namespace (v4 and v6). Kernels before 5.11 have no MemErrors.
fn rx_overflows(netns: &str) -> u64 {
    let c = snmp(netns);
    [
        "Udp:RcvbufErrors",
        "Udp:MemErrors",
        "Udp6:RcvbufErrors",
        "Udp6:MemErrors",
    ]
    .iter()
    .filter_map(|k| c.get(*k))
    .sum()
}

/// A TCP listener answering one echo round trip per connection, so a test
/// can probe it repeatedly (e.g. several clients or before/after a fault).
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Listens on `addr:port` in the side owning `addr`.
    pub fn start(lab: &Lab, addr: IpAddr, port: u16) -> EchoServer {
        let listener = tcp_listen(lab, addr, port);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            while !stopped.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((conn, _)) => echo_once(conn),
                    Err(e)
                        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) =>
                    {
                        thread::sleep(POLL)
                    }
                    Err(e) => panic!("echo server accept: {e}"),
                }
            }
        });
        EchoServer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Failures here are what faults cause; the client reports them.
fn echo_once(mut conn: TcpStream) {
    let mut buf = [0u8; 64];
    if conn.set_nonblocking(false).is_ok() && conn.set_read_timeout(Some(ECHO_WAIT)).is_ok() {
        if let Ok(n) = conn.read(&mut buf) {
            let _ = conn.write_all(&buf[..n]);
        }
    }
}

/// Connects from `from` to a listening `EchoServer` and checks one round trip
/// within `timeout`.
pub fn tcp_echo(lab: &Lab, from: Side, to_addr: IpAddr, port: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::new(to_addr, port);
    let deadline = Instant::now() + timeout;
    in_netns(lab.ns(from), || {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, timeout) else {
            return false;
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let mut back = vec![0; PROBE.len()];
        !left.is_zero()
            && s.set_read_timeout(Some(left)).is_ok()
            && s.set_write_timeout(Some(left)).is_ok()
            && s.write_all(PROBE).is_ok()
            && s.read_exact(&mut back).is_ok()
            && back == PROBE
    })
}

/// Whether a TCP connect plus one echo round trip succeeds within `timeout`.
pub fn tcp_connects(lab: &Lab, from: Side, to_addr: IpAddr, port: u16, timeout: Duration) -> bool {
    let _server = EchoServer::start(lab, to_addr, port);
    tcp_echo(lab, from, to_addr, port, timeout)
}

#[derive(Debug, Clone)]
pub struct TcpReport {
    /// Bytes the receiver read before EOF or the timeout.
    pub transferred: usize,
    /// From connect to the receiver seeing EOF (or the timeout).
    pub elapsed: Duration,
    /// Growth of TcpRetransSegs in the sender's namespace meanwhile. Without
    /// faults this is 0 or 1 (a spurious tail-loss probe), so compare against
    /// a small threshold rather than zero.
    pub retransmits: u64,
}

/// Streams `bytes` over one TCP connection, giving up after `timeout`.
pub fn tcp_bulk(
    lab: &Lab,
    from: Side,
    to_addr: IpAddr,
    port: u16,
    bytes: usize,
    timeout: Duration,
) -> TcpReport {
    let listener = tcp_listen(lab, to_addr, port);
    let deadline = Instant::now() + timeout;
    // Sender and receiver share one CPU so that segments can't overtake each
    // other through different per-CPU backlogs; reordering would cause
    // spurious retransmits indistinguishable from fault-induced ones.
    let cpu = sched_getcpu().expect("getcpu");
    let sink = thread::spawn(move || {
        pin_to_cpu(cpu);
        tcp_sink(&listener, deadline)
    });
    let retrans_before = snmp(lab.ns(from))["Tcp:RetransSegs"];
    let start = Instant::now();
    let addr = SocketAddr::new(to_addr, port);
    in_netns(lab.ns(from), || {
        pin_to_cpu(cpu);
        let Ok(mut s) = TcpStream::connect_timeout(&addr, timeout) else {
            return;
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || s.set_write_timeout(Some(left)).is_err() {
            return;
        }
        let chunk = vec![0xa5; 64 * 1024];
        let mut remaining = bytes;
        while remaining > 0 {
            let n = remaining.min(chunk.len());
            if s.write_all(&chunk[..n]).is_err() {
                return;
            }
            remaining -= n;
        }
        // The kernel keeps delivering queued data after close; the sink sees EOF.
        let _ = s.shutdown(Shutdown::Write);
    });
    let (transferred, end) = sink
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    TcpReport {
        transferred,
        elapsed: end - start,
        retransmits: snmp(lab.ns(from))["Tcp:RetransSegs"] - retrans_before,
    }
}

/// Accepts one connection and reads it to EOF; returns bytes read and when it ended.
fn tcp_sink(listener: &TcpListener, deadline: Instant) -> (usize, Instant) {
    let mut conn = loop {
        match listener.accept() {
            Ok((conn, _)) => break conn,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(POLL)
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return (0, Instant::now()),
            Err(e) => panic!("bulk sink accept: {e}"),
        }
    };
    conn.set_nonblocking(false).expect("blocking bulk socket");
    let mut buf = vec![0; 256 * 1024];
    let mut total = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || conn.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
    (total, Instant::now())
}

/// Round-trip times in ms of `count` pings from one side, sorted; `interval` in seconds as
/// ping takes it ("0.01").
pub fn ping_rtts(lab: &Lab, from: Side, to: IpAddr, count: u32, interval: &str) -> Vec<f64> {
    let count = count.to_string();
    let to = to.to_string();
    let out = lab.exec(
        from,
        &["ping", "-n", "-c", &count, "-i", interval, "-W", "5", &to],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut times: Vec<f64> = text
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("time="))
        .filter_map(|t| t.parse().ok())
        .collect();
    times.sort_by(f64::total_cmp);
    times
}

/// `ping` from one side; returns (transmitted, received) from its summary.
pub fn ping(lab: &Lab, from: Side, to_addr: IpAddr, count: u64, interval: Duration) -> (u64, u64) {
    let (count, interval) = (count.to_string(), format!("{:.3}", interval.as_secs_f64()));
    let to = to_addr.to_string();
    let out = lab.exec(
        from,
        &[
            "ping", "-n", "-q", "-c", &count, "-i", &interval, "-W", "1", &to,
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    // "5 packets transmitted, 4 received, 20% packet loss, time 40ms"
    let summary = stdout.lines().find(|l| l.contains("packets transmitted"));
    let parsed = summary.and_then(|line| {
        let mut fields = line.split(", ").map(|f| f.split(' ').next()?.parse().ok());
        Some((fields.next()??, fields.next()??))
    });
    parsed.unwrap_or_else(|| {
        panic!(
            "no ping summary (is iputils-ping installed? see scripts/setup.sh)\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn udp_bind(addr: IpAddr, port: u16) -> UdpSocket {
    UdpSocket::bind((addr, port)).unwrap_or_else(|e| panic!("bind UDP {addr} port {port}: {e}"))
}

fn tcp_listen(lab: &Lab, addr: IpAddr, port: u16) -> TcpListener {
    let listener = in_netns(lab.ns(lab.side_of(addr)), || {
        TcpListener::bind((addr, port))
            .unwrap_or_else(|e| panic!("listen TCP {addr} port {port}: {e}"))
    });
    // Non-blocking so accept loops can notice deadlines and stop requests.
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    listener
}

fn unspecified(like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    }
}

fn pin_to_cpu(cpu: usize) {
    let mut set = CpuSet::new();
    set.set(cpu).expect("cpu in set");
    sched_setaffinity(Pid::from_raw(0), &set).expect("pin sender thread");
}

fn sleep_until(due: Instant) {
    let now = Instant::now();
    if due > now {
        thread::sleep(due - now);
    }
}
