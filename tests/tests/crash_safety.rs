//! No fault outlives its deadline, whatever happens to faultd: SIGKILL at random moments
//! (the reaper takes over), a restart mid-fault (re-adopted with its id and counters), a
//! journal that cannot be trusted (everything of ours swept). Delay faults join the trials
//! where the kernel has netem (the VM stage).

mod support;

use std::{
    collections::BTreeSet,
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use faultline_tests::{
    agent::{Agent, Conn},
    kernel::{bpf_filter_count, leftovers, pins_left},
    lab::{Lab, Side},
    pace,
    traffic::udp_burst,
};
use serde_json::{json, Value};
use support::{apply, get, id_of, list_ids, partition_over};

const PACE: Option<Duration> = Some(Duration::from_micros(50));

fn netem_expected() -> bool {
    std::env::var_os("FAULTLINE_EXPECT_NETEM").is_some()
}

fn partition(lab: &Lab, port: u16, duration: &str) -> Value {
    json!({"target": {"netns": lab.a.netns, "dev": lab.a.dev,
           "match": {"proto": "udp", "dport": [port]}},
           "partition": {}, "duration": duration})
}

fn delivered(lab: &Lab, port: u16) -> u64 {
    udp_burst(lab, Side::A, IpAddr::V4(lab.b.v4), port, 0, 50, PACE).received
}

/// Everything of faultd's in the lab, and its pins.
fn all_leftovers(lab: &Lab, agent: &Agent) -> Vec<String> {
    let mut found = leftovers(&lab.a.netns, &lab.a.dev);
    found.extend(leftovers(&lab.b.netns, &lab.b.dev));
    found.extend(pins_left(agent.pin_dir()));
    found
}

/// Polls until nothing of faultd's is left; returns when that was first seen.
fn wait_clean(lab: &Lab, agent: &Agent, limit: Duration) -> Instant {
    let start = Instant::now();
    loop {
        let found = all_leftovers(lab, agent);
        if found.is_empty() {
            return Instant::now();
        }
        assert!(
            start.elapsed() < limit,
            "still there after {limit:?}: {found:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// What the client knows of one apply it sent.
#[derive(Clone, Debug)]
struct Sent {
    /// The earliest the fault's deadline can be: send time + duration.
    deadline_at_least: Instant,
    duration: Duration,
    /// When faultd's answer came: faultd set the deadline before, so it is at most this plus
    /// the duration.
    acked_at: Option<Instant>,
    /// The fault id, once acknowledged.
    id: Option<String>,
    revoked: bool,
    /// A revoke was sent; if faultd died before answering, it may or may not have happened.
    revoking: bool,
}

/// Applies and revokes faults on one connection until faultd dies or `stop` is set.
fn churn(lab: &Lab, agent: &Agent, stop: &AtomicBool, sent: &Mutex<Vec<Sent>>, seed: u64) {
    let Some(mut conn) = Conn::try_open(agent.socket_path()) else {
        return;
    };
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    while !stop.load(Ordering::Relaxed) {
        let ms = 1000 + next() % 1500;
        let port = 7600 + (next() % 8) as u16;
        let mut fault = partition(lab, port, &format!("{ms}ms"));
        if netem_expected() && next() % 2 == 0 {
            fault = json!({"target": {"netns": lab.a.netns, "dev": lab.a.dev,
                           "direction": if next() % 2 == 0 { "egress" } else { "both" },
                           "match": {"proto": "udp", "dport": [port + 100]}},
                           "netem": {"delay": "10ms"}, "duration": format!("{ms}ms")});
        }
        let index = {
            let mut sent = sent.lock().expect("sent list");
            sent.push(Sent {
                deadline_at_least: Instant::now() + Duration::from_millis(ms),
                duration: Duration::from_millis(ms),
                acked_at: None,
                id: None,
                revoked: false,
                revoking: false,
            });
            sent.len() - 1
        };
        let Some(reply) = conn.try_request(&json!({"id": 1, "op": "apply", "fault": fault})) else {
            return;
        };
        if reply["ok"] != true {
            // Refused: nothing was installed (e.g. a netem class limit); forget it.
            sent.lock().expect("sent list")[index].revoked = true;
            continue;
        }
        let id = id_of(&reply["result"]);
        {
            let mut sent = sent.lock().expect("sent list");
            sent[index].id = Some(id.clone());
            sent[index].acked_at = Some(Instant::now());
        }
        if next() % 4 == 0 {
            sent.lock().expect("sent list")[index].revoking = true;
            let Some(reply) = conn.try_request(&json!({"id": 2, "op": "revoke", "fault_id": id}))
            else {
                return;
            };
            if reply["ok"] == true {
                sent.lock().expect("sent list")[index].revoked = true;
            }
        }
    }
}

#[derive(Debug)]
struct TrialOutcome {
    /// Time from the latest possible deadline to the moment nothing of ours was left.
    overshoot: Duration,
}

/// Every port a churned partition may hold.
const CHURN_PORTS: std::ops::Range<u16> = 7600..7608;

/// One SIGKILL trial; `restart` brings a new faultd up right after the kill.
fn sigkill_trial(seed: u64, restart: bool) -> TrialOutcome {
    let lab = Lab::new();
    let mut agent = Agent::start();
    let stop = AtomicBool::new(false);
    let sent = Mutex::new(Vec::new());
    let killed_at = Mutex::new(Instant::now());
    let kill_after = Duration::from_millis(seed % 400);
    thread::scope(|s| {
        s.spawn(|| churn(&lab, &agent, &stop, &sent, seed | 1));
        thread::sleep(kill_after);
        *killed_at.lock().expect("kill time") = Instant::now();
        let pid = agent.pid();
        // The kill itself must not wait for the churning connection.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("SIGKILL faultd");
        stop.store(true, Ordering::Relaxed);
    });
    agent.sigkill(); // reaps the process
    let sent = sent.into_inner().expect("sent list");
    let killed_at = killed_at.into_inner().expect("kill time");
    // The latest any fault may end: an unanswered apply may have set its deadline up to the
    // moment faultd died.
    let latest = sent
        .iter()
        .filter(|s| !s.revoked)
        .map(|s| s.acked_at.unwrap_or(killed_at) + s.duration)
        .max();

    if restart {
        agent = agent.restart();
        let listed: BTreeSet<String> = list_ids(&agent).into_iter().collect();
        let acked: BTreeSet<String> = sent.iter().filter_map(|s| s.id.clone()).collect();
        let unacked = sent.iter().filter(|s| s.id.is_none() && !s.revoked).count();
        let surely_live: BTreeSet<String> = sent
            .iter()
            .filter(|s| !s.revoking && s.deadline_at_least > Instant::now())
            .filter_map(|s| s.id.clone())
            .collect();
        let unknown: Vec<&String> = listed.difference(&acked).collect();
        assert!(
            unknown.len() <= unacked,
            "listed faults nobody applied: {unknown:?}"
        );
        for id in &listed {
            assert!(
                !sent.iter().any(|s| s.revoked && s.id.as_ref() == Some(id)),
                "revoked fault {id} came back"
            );
        }
        let missing: Vec<&String> = surely_live.difference(&listed).collect();
        assert!(
            missing.is_empty(),
            "live faults not re-adopted: {missing:?}"
        );
        // Re-adoption installs nothing twice: one filter per hook at most, and the ingress
        // steering filter of delay faults.
        assert!(bpf_filter_count(&lab.a.netns, &lab.a.dev) <= 3);
    }

    // Whoever holds the faults now, the kernel stops acting at each deadline by itself; the
    // objects go soon after, which is timed meanwhile.
    if let Some(latest) = latest {
        pace::sleep_until(latest);
    }
    let clean_at = thread::scope(|s| {
        let cleaning = s.spawn(|| wait_clean(&lab, &agent, pace::scaled(Duration::from_secs(10))));
        for port in CHURN_PORTS {
            assert!(
                partition_over(&lab, port),
                "port {port} still cut after every deadline (restart {restart}, killed \
                 {kill_after:?} after the start); applies sent: {sent:#?}"
            );
        }
        cleaning
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    let overshoot = match latest {
        Some(deadline) => clean_at.saturating_duration_since(deadline),
        None => Duration::ZERO,
    };
    if !restart {
        assert!(
            agent.wait_no_reaper(pace::scaled(Duration::from_secs(2))),
            "the reaper exits once its faults are gone"
        );
    }
    TrialOutcome { overshoot }
}

#[test]
fn sigkill_at_random_moments_never_lets_a_fault_outlive_its_deadline() {
    const TRIALS: u64 = 24;
    // A slow machine runs fewer trials at once, so that each keeps its timing.
    let parallel: u64 = if pace::factor() > 4.0 { 2 } else { 4 };
    let outcomes: Mutex<Vec<TrialOutcome>> = Mutex::new(Vec::new());
    let started = Instant::now();
    thread::scope(|s| {
        for lane in 0..parallel {
            let outcomes = &outcomes;
            s.spawn(move || {
                let mut trial = lane;
                while trial < TRIALS {
                    let seed = 0x9e37_79b9_u64.wrapping_mul(trial + 1)
                        ^ started.elapsed().as_nanos() as u64;
                    let outcome = sigkill_trial(seed, trial % 2 == 0);
                    outcomes.lock().expect("outcomes").push(outcome);
                    trial += parallel;
                }
            });
        }
    });
    let outcomes = outcomes.into_inner().expect("outcomes");
    assert_eq!(outcomes.len() as u64, TRIALS);
    let worst = outcomes
        .iter()
        .map(|o| o.overshoot)
        .max()
        .unwrap_or_default();
    println!(
        "FAULTLINE-MEASURE sigkill_trials={TRIALS} worst_cleanup_after_deadline_ms={} netem={}",
        worst.as_millis(),
        netem_expected()
    );
    // Traffic passed at every deadline (each trial checks); the objects follow within a
    // second of it, at this machine's pace.
    let bound = pace::scaled(Duration::from_secs(1));
    assert!(
        worst <= bound,
        "objects of a fault outlived its deadline by {worst:?} (bound {bound:?})"
    );
}

#[test]
fn a_restart_mid_fault_re_adopts_it_with_its_id_and_counters() {
    let lab = Lab::new();
    let mut agent = Agent::start();
    let id = id_of(&apply(&agent, partition(&lab, 7500, "8s")));
    let past_deadline = Instant::now() + Duration::from_secs(8);
    assert_eq!(delivered(&lab, 7500), 0);
    let before = get(&agent, &id)["counters"]["egress"]["dropped_packets"]
        .as_u64()
        .expect("counter");
    assert_eq!(before, 50);
    agent.sigkill();
    let agent = agent.restart();
    assert_eq!(
        list_ids(&agent),
        std::slice::from_ref(&id),
        "the same fault, by id"
    );
    assert_eq!(delivered(&lab, 7500), 0, "and it still holds");
    let view = get(&agent, &id);
    assert_eq!(
        view["counters"]["egress"]["dropped_packets"], 100,
        "counters continue: {view}"
    );
    assert_eq!(
        bpf_filter_count(&lab.a.netns, &lab.a.dev),
        2,
        "no duplicate filters"
    );
    // A new fault on the same device works beside the adopted one.
    let second = id_of(&apply(&agent, partition(&lab, 7501, "30s")));
    assert_eq!(delivered(&lab, 7501), 0);
    assert_eq!(bpf_filter_count(&lab.a.netns, &lab.a.dev), 2);
    support::revoke(&agent, &second);
    // The adopted fault ends at its own deadline, not 8 s after the restart.
    pace::sleep_until(past_deadline);
    assert!(partition_over(&lab, 7500), "still cut after its deadline");
    wait_clean(&lab, &agent, pace::scaled(Duration::from_secs(2)));
}

#[test]
fn after_sigkill_the_reaper_removes_each_fault_at_its_deadline() {
    let lab = Lab::new();
    let mut agent = Agent::start();
    apply(&agent, partition(&lab, 7500, "2s"));
    let past_deadline = Instant::now() + Duration::from_secs(2);
    apply(&agent, partition(&lab, 7501, "60s"));
    agent.sigkill();
    assert_eq!(
        delivered(&lab, 7500),
        0,
        "a crash does not cut the drill short"
    );
    pace::sleep_until(past_deadline);
    assert_eq!(delivered(&lab, 7500), 50, "still cut after its deadline");
    assert_eq!(delivered(&lab, 7501), 0, "the longer fault holds");
    // The reaper removes the ended fault's objects: the 7500 filter's trie entry, that is.
    let removed = Instant::now();
    while faultline_tests::kernel::live_faults_in_kernel(agent.pin_dir()) > 1 {
        assert!(
            removed.elapsed() < pace::scaled(Duration::from_secs(1)),
            "the reaper kept the ended fault"
        );
        thread::sleep(Duration::from_millis(10));
    }
    let reapers = agent.reaper_pids();
    assert_eq!(reapers.len(), 1, "one reaper holds the faults");
    // A new faultd takes the fault back from the reaper.
    let agent = agent.restart();
    let handed_over = Instant::now();
    while agent.reaper_pids().contains(&reapers[0]) {
        assert!(
            handed_over.elapsed() < pace::scaled(Duration::from_secs(2)),
            "the reaper did not hand over"
        );
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(list_ids(&agent).len(), 1);
    assert_eq!(delivered(&lab, 7501), 0);
    let reply = agent.request(json!({"id": 1, "op": "clear"}));
    assert_eq!(reply["ok"], true);
    wait_clean(&lab, &agent, pace::scaled(Duration::from_secs(1)));
}

/// A faultd that dies after journaling a new device but before its fault (the clsact and
/// filter may be in place by then) leaves a journal naming the device and no fault on it:
/// the next faultd removes what it finds there, our clsact included.
#[test]
fn a_device_journaled_without_its_fault_is_released_by_the_next_faultd() {
    let lab = Lab::new();
    let mut agent = Agent::start();
    apply(&agent, partition(&lab, 7500, "60s"));
    agent.sigkill();
    for pid in agent.reaper_pids() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(agent.wait_no_reaper(pace::scaled(Duration::from_secs(2))));
    let log = agent.state_dir().join("journal.log");
    let journal = std::fs::read_to_string(&log).expect("journal");
    let without_faults: String = journal
        .lines()
        .filter(|line| !line.starts_with(r#"{"fault""#))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_ne!(journal, without_faults, "the journal had the fault");
    std::fs::write(&log, without_faults).expect("rewrite journal");
    let agent = agent.restart();
    assert!(list_ids(&agent).is_empty());
    let found = all_leftovers(&lab, &agent);
    assert!(found.is_empty(), "left behind {found:?}");
    assert_eq!(delivered(&lab, 7500), 50, "traffic flows");
}

#[test]
fn a_journal_that_cannot_be_trusted_is_reported_and_everything_of_ours_swept() {
    type Damage = fn(&[u8]) -> Vec<u8>;
    let damages: [(&str, Damage); 3] = [
        ("truncated", |log| log[..log.len() - 20].to_vec()),
        ("garbage", |_| b"\x00\xff\xfe not json at all".to_vec()),
        ("wrong version", |_| {
            b"{\"version\": 99, \"whatever\": true}\n".to_vec()
        }),
    ];
    for (what, damage) in damages {
        let lab = Lab::new();
        let mut agent = Agent::start();
        apply(&agent, partition(&lab, 7500, "60s"));
        apply(
            &agent,
            json!({"target": {"netns": lab.b.netns, "dev": lab.b.dev, "direction": "ingress"},
                   "loss": {"percent": 50}, "duration": "60s"}),
        );
        if netem_expected() {
            apply(
                &agent,
                json!({"target": {"netns": lab.a.netns, "dev": lab.a.dev, "direction": "both"},
                       "netem": {"delay": "20ms"}, "duration": "60s"}),
            );
        }
        agent.sigkill();
        // The reaper dies too, so nothing but the next faultd can clean up.
        for pid in agent.reaper_pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        assert!(agent.wait_no_reaper(pace::scaled(Duration::from_secs(2))));
        let log = agent.state_dir().join("journal.log");
        let intact = std::fs::read(&log).expect("journal");
        std::fs::write(&log, damage(&intact)).expect("damage journal");
        let dir_log = agent.state_dir().with_file_name("faultd.log");
        let agent = agent.restart();
        assert!(list_ids(&agent).is_empty(), "{what}: nothing re-adopted");
        let found = all_leftovers(&lab, &agent);
        assert!(found.is_empty(), "{what}: left behind {found:?}");
        let log = std::fs::read_to_string(&dir_log).unwrap_or_default();
        assert!(
            log.contains("THE JOURNAL CANNOT BE TRUSTED"),
            "{what}: reported loudly:\n{log}"
        );
        assert_eq!(delivered(&lab, 7500), 50, "{what}: traffic flows");
        // And faultd works.
        apply(&agent, partition(&lab, 7500, "30s"));
        assert_eq!(delivered(&lab, 7500), 0);
    }
}

#[test]
fn a_leased_fault_ends_with_its_connection_and_not_after_a_restart() {
    let lab = Lab::new();
    let mut agent = Agent::start();
    let mut controller = agent.connect();
    let leased = controller.request(&json!({"id": 1, "op": "apply", "lease": "connection",
                                            "fault": partition(&lab, 7500, "60s")}));
    assert_eq!(leased["ok"], true, "{leased}");
    assert_eq!(leased["result"]["lease"], "connection");
    let leased = id_of(&leased["result"]);
    let kept = id_of(&apply(&agent, partition(&lab, 7501, "60s")));
    drop(controller);
    let closed = Instant::now();
    while list_ids(&agent).contains(&leased) {
        let bound = pace::scaled(Duration::from_millis(100));
        assert!(
            closed.elapsed() < bound,
            "the leased fault outlived its connection by {bound:?}"
        );
        thread::sleep(Duration::from_millis(2));
    }
    println!(
        "FAULTLINE-MEASURE lease_revoke_ms={:.2}",
        closed.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(
        list_ids(&agent),
        std::slice::from_ref(&kept),
        "other faults stay"
    );
    assert_eq!(delivered(&lab, 7500), 50);
    assert_eq!(delivered(&lab, 7501), 0);

    // A leased fault whose faultd dies is gone once another takes over: its holder's
    // connection died with the first.
    let mut controller = agent.connect();
    let reply = controller.request(&json!({"id": 1, "op": "apply", "lease": "connection",
                                           "fault": partition(&lab, 7502, "60s")}));
    assert_eq!(reply["ok"], true, "{reply}");
    agent.sigkill();
    drop(controller);
    let agent = agent.restart();
    assert_eq!(list_ids(&agent), [kept]);
    assert_eq!(delivered(&lab, 7502), 50);
}

#[test]
fn renew_extends_a_fault_in_the_datapath_too() {
    let lab = Lab::new();
    let agent = Agent::start();
    let applied = Instant::now();
    let id = id_of(&apply(&agent, partition(&lab, 7500, "1s")));
    for duration in ["2h", "soon", "0s"] {
        let reply =
            agent.request(json!({"id": 1, "op": "renew", "fault_id": id, "duration": duration}));
        assert_eq!(reply["error"]["code"], "invalid_value", "{reply}");
        assert_eq!(reply["error"]["field"], "duration");
    }
    let renewed = agent.request(json!({"id": 1, "op": "renew", "fault_id": id, "duration": "3s"}));
    let past_deadline = Instant::now() + Duration::from_secs(3);
    assert_eq!(renewed["ok"], true, "{renewed}");
    assert!(
        renewed["result"]["remaining_ms"]
            .as_u64()
            .expect("remaining")
            > 2000
    );
    // Past the first deadline, surely (applied before `applied` + 1 s), the renewed one
    // holds: at least 3 s after `applied`.
    pace::sleep_until(applied + Duration::from_millis(1500));
    assert_eq!(
        delivered(&lab, 7500),
        0,
        "still cut after the first deadline"
    );
    pace::sleep_until(past_deadline);
    assert!(
        partition_over(&lab, 7500),
        "still cut after the renewed deadline"
    );
    let reply = agent.request(json!({"id": 1, "op": "renew", "fault_id": id, "duration": "5s"}));
    assert_eq!(reply["error"]["code"], "not_found", "{reply}");
}

#[test]
fn the_kill_switch_signal_reverts_everything_and_faultd_carries_on() {
    let lab = Lab::new();
    let agent = Agent::start();
    for count in [1usize, 100, 1000] {
        let mut conn = agent.connect();
        for i in 0..count {
            // One remote address each: no more than 32 faults may overlap one address.
            let dst = format!("10.9.{}.{}/32", i / 256, i % 256);
            let reply = conn.request(&json!({"id": i, "op": "apply", "fault": {
                "target": {"netns": lab.a.netns, "dev": lab.a.dev, "match": {"dst": [dst]}},
                "partition": {}, "duration": "60s"}}));
            assert_eq!(reply["ok"], true, "{reply}");
        }
        let start = Instant::now();
        agent.signal(nix::sys::signal::Signal::SIGUSR1);
        while !list_ids(&agent).is_empty() {
            assert!(
                start.elapsed() < pace::scaled(Duration::from_secs(10)),
                "never cleared"
            );
            thread::sleep(Duration::from_millis(1));
        }
        println!(
            "FAULTLINE-MEASURE kill_switch_faults={count} clear_ms={:.1}",
            start.elapsed().as_secs_f64() * 1e3
        );
        wait_clean(&lab, &agent, pace::scaled(Duration::from_secs(1)));
    }
    // Still serving.
    apply(&agent, partition(&lab, 7500, "30s"));
    assert_eq!(delivered(&lab, 7500), 0);
}
