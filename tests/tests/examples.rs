//! examples/remote_drill.py, the Python client of the socket protocol, against two faultd
//! processes (each standing for a host's agent, reached through its socket): it partitions
//! the lab's two sides from each other, holds and renews leased faults, and leaves nothing.

mod support;

use std::{
    net::IpAddr,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use faultline_tests::{
    agent::Agent,
    lab::{Lab, Side},
    traffic::tcp_connects,
};
use support::list_ids;

fn python3() -> Option<Command> {
    let found = Command::new("python3").arg("--version").output().is_ok();
    // The VM stage's guest has no Python; everywhere else it is part of the setup.
    assert!(
        found || std::env::var_os("FAULTLINE_EXPECT_NETEM").is_some(),
        "python3 is missing"
    );
    found.then(|| Command::new("python3"))
}

#[test]
fn remote_drill_partitions_two_hosts_and_leaves_nothing() {
    let Some(mut python) = python3() else {
        println!("skipped: no python3 in this guest");
        return;
    };
    let lab = Lab::new();
    let (host_a, host_b) = (Agent::start(), Agent::start());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/remote_drill.py");
    let child = python
        .arg(script)
        .arg("--a-socket")
        .arg(host_a.socket_path())
        .args(["--a-addr", &lab.a.v4.to_string()])
        .arg("--b-socket")
        .arg(host_b.socket_path())
        .args(["--b-addr", &lab.b.v4.to_string()])
        .args(["--dev", &lab.a.dev, "--netns", &lab.a.netns])
        .args(["--b-dev", &lab.b.dev, "--b-netns", &lab.b.netns])
        .args(["--for", "20s", "--hold", "3", "--renew-every", "0.5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the example");

    let deadline = Instant::now() + Duration::from_secs(10);
    while list_ids(&host_a).is_empty() || list_ids(&host_b).is_empty() {
        assert!(Instant::now() < deadline, "the partition never appeared");
        thread::sleep(Duration::from_millis(20));
    }
    let b = IpAddr::V4(lab.b.v4);
    let a = IpAddr::V4(lab.a.v4);
    let timeout = Duration::from_millis(500);
    assert!(
        !tcp_connects(&lab, Side::A, b, 7300, timeout),
        "a reached b"
    );
    assert!(
        !tcp_connects(&lab, Side::B, a, 7301, timeout),
        "b reached a"
    );

    let out = child.wait_with_output().expect("the example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for host in ["A", "B"] {
        assert!(stdout.contains(&format!("{host}: renewed")), "{stdout}");
        assert!(stdout.contains(&format!("{host}: revoked")), "{stdout}");
    }
    assert!(list_ids(&host_a).is_empty() && list_ids(&host_b).is_empty());
    assert!(tcp_connects(&lab, Side::A, b, 7302, Duration::from_secs(2)));
}
