//! Clients that are broken, slow, many or hostile: faultd stays up, keeps serving a
//! well-behaved client, and its fault table stays exactly what is in the kernel.

mod support;

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::Shutdown,
    os::unix::net::UnixStream,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use faultline_tests::{
    agent::{Agent, Conn},
    kernel::live_faults_in_kernel,
    lab::Lab,
    pace,
};
use serde_json::{json, Value};
use support::list_ids;

/// One `hello` on a fresh connection, timed.
fn hello_latency(agent: &Agent) -> Duration {
    let start = Instant::now();
    let reply = agent.request(json!({"id": 1, "op": "hello"}));
    assert_eq!(reply["ok"], true, "{reply}");
    start.elapsed()
}

/// A partition on one remote address: client `c`'s `n`th fault.
fn fault_for(lab: &Lab, c: usize, n: usize) -> Value {
    json!({"target": {"netns": lab.a.netns, "dev": lab.a.dev,
           "match": {"dst": [format!("10.{}.{}.{}/32", 100 + c / 200, c % 200, n % 250)]}},
           "partition": {}, "duration": "60s"})
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn fifty_clients_of_two_hundred_mixed_ops_leave_the_table_equal_to_the_kernel() {
    const CLIENTS: usize = 50;
    const OPS: usize = 200;
    let lab = Lab::new();
    let agent = Agent::start();
    let done = AtomicBool::new(false);
    let latencies = Mutex::new(Vec::new());
    let expected = Mutex::new(BTreeSet::new());
    let started = Instant::now();
    thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                let latency = hello_latency(&agent);
                latencies.lock().expect("latencies").push(latency);
                thread::sleep(Duration::from_millis(10));
            }
        });
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (lab, agent, expected) = (&lab, &agent, &expected);
                s.spawn(move || {
                    let mut conn = agent.connect();
                    let mut mine: Vec<String> = Vec::new();
                    for n in 0..OPS {
                        // 30 % apply, 25 % revoke, 15 % get, 28 % hello and 2 % list: a
                        // controller's status poll, of every active fault with its counters.
                        let request = match (n * 7 + c) % 100 {
                            0..=29 => json!({"id": n, "op": "apply", "fault": fault_for(lab, c, n)}),
                            30..=54 if !mine.is_empty() => {
                                json!({"id": n, "op": "revoke", "fault_id": mine.remove(n % mine.len())})
                            }
                            55..=69 if !mine.is_empty() => {
                                json!({"id": n, "op": "get", "fault_id": mine[n % mine.len()]})
                            }
                            98 | 99 => json!({"id": n, "op": "list"}),
                            _ => json!({"id": n, "op": "hello"}),
                        };
                        let reply = conn.request(&request);
                        assert_eq!(reply["ok"], true, "{request} -> {reply}");
                        assert_eq!(reply["id"], n, "answers come in order");
                        if request["op"] == "apply" {
                            mine.push(reply["result"]["id"].as_str().expect("id").to_owned());
                        }
                    }
                    expected.lock().expect("expected").extend(mine);
                })
            })
            .collect();
        for client in clients {
            client.join().expect("client thread");
        }
        done.store(true, Ordering::Relaxed);
    });
    let elapsed = started.elapsed();
    let expected = expected.into_inner().expect("expected");
    let listed: BTreeSet<String> = list_ids(&agent).into_iter().collect();
    assert_eq!(listed, expected, "no lost or duplicated faults");
    assert_eq!(
        live_faults_in_kernel(agent.pin_dir()),
        listed.len(),
        "the kernel holds exactly the listed faults"
    );
    let mut latencies = latencies.into_inner().expect("latencies");
    latencies.sort();
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    println!(
        "FAULTLINE-MEASURE concurrency clients={CLIENTS} ops={} seconds={:.2} ops_per_s={:.0} \
         active_at_end={} hello_p50_ms={:.2} hello_p99_ms={:.2} hello_max_ms={:.2}",
        CLIENTS * OPS,
        elapsed.as_secs_f64(),
        (CLIENTS * OPS) as f64 / elapsed.as_secs_f64(),
        listed.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    // 2 CPUs shared by 50 clients and faultd.
    let bound = pace::scaled(Duration::from_millis(250));
    assert!(p99 < bound, "hello p99 {p99:?} under load");
    let reply = agent.request(json!({"id": 1, "op": "clear"}));
    assert_eq!(reply["ok"], true);
    assert_eq!(live_faults_in_kernel(agent.pin_dir()), 0);
}

#[test]
fn slow_readers_half_closes_and_vanishing_clients_do_not_hurt_anyone_else() {
    let lab = Lab::new();
    let agent = Agent::start();

    // A client that pipelines thousands of requests and never reads: faultd's replies back up
    // into its own connection only.
    let mut slow = UnixStream::connect(agent.socket_path()).expect("connect");
    slow.set_write_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let flood = "{\"op\":\"list\"}\n".repeat(20_000);
    let _ = slow.write_all(flood.as_bytes());
    for _ in 0..20 {
        assert!(hello_latency(&agent) < pace::scaled(Duration::from_millis(500)));
    }

    // Half-closed: the request is answered, then the connection ends cleanly.
    let mut half = UnixStream::connect(agent.socket_path()).expect("connect");
    half.write_all(b"{\"id\":9,\"op\":\"hello\"}\n")
        .expect("write");
    half.shutdown(Shutdown::Write).expect("half-close");
    let mut answer = String::new();
    half.read_to_string(&mut answer).expect("read to end");
    let reply: Value = serde_json::from_str(answer.trim()).expect("one JSON line");
    assert_eq!(reply["id"], 9);
    assert_eq!(reply["ok"], true);

    // A client that sends an apply and vanishes: the fault is whole, listed and in the kernel.
    let mut gone = UnixStream::connect(agent.socket_path()).expect("connect");
    let apply = json!({"id": 1, "op": "apply", "fault": fault_for(&lab, 0, 0)});
    gone.write_all(format!("{apply}\n").as_bytes())
        .expect("write");
    drop(gone);
    let start = Instant::now();
    while list_ids(&agent).is_empty() {
        assert!(
            start.elapsed() < pace::scaled(Duration::from_secs(2)),
            "the apply was lost"
        );
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(live_faults_in_kernel(agent.pin_dir()), 1);

    // A half-sent line, then gone: nothing happens.
    let mut partial = UnixStream::connect(agent.socket_path()).expect("connect");
    partial
        .write_all(b"{\"id\":1,\"op\":\"apply\",\"fault\":{\"target\"")
        .expect("write");
    drop(partial);
    thread::sleep(Duration::from_millis(50));
    assert_eq!(list_ids(&agent).len(), 1);
    drop(slow);
    assert!(hello_latency(&agent) < pace::scaled(Duration::from_millis(500)));
}

#[test]
fn a_flood_of_connections_is_capped_and_answered_busy() {
    let agent = Agent::start_with(&["--max-connections", "64"]);
    // Below the cap: every connection is served, and a newcomer too.
    let held: Vec<Conn> = (0..60).map(|_| agent.connect()).collect();
    assert!(hello_latency(&agent) < pace::scaled(Duration::from_millis(500)));
    // Past the cap: the extra connections are told why and closed; faultd stays up.
    let extra: Vec<UnixStream> = (0..40)
        .map(|_| UnixStream::connect(agent.socket_path()).expect("the socket accepts"))
        .collect();
    let mut busy = 0;
    for mut stream in extra {
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        if let Ok(reply) = serde_json::from_str::<Value>(answer.trim()) {
            if reply["error"]["code"] == "busy" {
                busy += 1;
            }
        }
    }
    assert!(
        busy >= 36,
        "only {busy} of 40 connections past the cap were told busy"
    );
    drop(held);
    let start = Instant::now();
    while agent.try_request(json!({"id": 1, "op": "hello"})).is_none() {
        assert!(
            start.elapsed() < pace::scaled(Duration::from_secs(2)),
            "never served again"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn an_idle_connection_is_closed_but_a_watch_is_not() {
    let agent = Agent::start_with(&["--idle-timeout", "300ms"]);
    let mut idle = agent.connect();
    let mut watcher = agent.connect();
    assert_eq!(
        watcher.request(&json!({"id": 1, "op": "watch"}))["ok"],
        true
    );
    thread::sleep(Duration::from_millis(600));
    let notice = idle.try_recv().expect("a notice before closing");
    assert_eq!(notice["error"]["code"], "busy", "{notice}");
    assert!(idle.try_recv().is_none(), "then closed");
    let lab = Lab::new();
    support::apply(&agent, fault_for(&lab, 0, 0));
    let event = watcher.recv();
    assert_eq!(
        event["event"], "applied",
        "the watch outlived the idle timeout"
    );
}
