//! The Python client (python/, distribution faultd-client) against faultd in a lab: each test
//! makes a lab and its own faultd processes and runs some of python/tests with the venv's
//! pytest (scripts/setup.sh installs it there, editable), describing the lab in the environment
//! (python/tests/lab.py reads it). pytest's output is shown when it fails.
//!
//! The VM stage's guest gets the venv's interpreter and the pytest part of it (xtask/src/vm/
//! guest.rs) and runs the latency part, the issue's tests verbatim on a kernel with netem; the
//! rest is proven here on the host (FAULTLINE_EXPECT_NETEM is set only in the guest). A missing
//! venv fails the tests.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use faultline_tests::{
    agent::{bin_path, Agent},
    kernel::leftovers,
    lab::Lab,
    python::venv_python,
};
use serde_json::json;

/// The second faultd's policy: loss above 50 % is forbidden.
const POLICY: &str = "[limits]\nmax_loss_percent = 50\n";

/// A directory of the test's own, removed on drop (pytest's temporary files go there).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("faultline-py-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs pytest on `files` (relative to python/tests) against a fresh lab and faultd, plus a
/// second faultd with a policy, at most 4 connections and a 1 s idle timeout.
fn pytest(name: &str, files: &[&str]) {
    let python = venv_python().expect("no Python virtual environment: run ./scripts/setup.sh");
    let scratch = Scratch::new(name);
    let policy = scratch.0.join("policy.toml");
    fs::write(&policy, POLICY).expect("write the policy");
    let lab = Lab::new();
    let agent = Agent::start();
    let limited = Agent::start_with(&[
        "--config",
        policy.to_str().expect("utf-8 path"),
        "--max-connections",
        "4",
        "--idle-timeout",
        "1s",
    ]);
    let python_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../python");
    let faultctl = bin_path("faultctl");
    let mut command = Command::new(python);
    command
        .current_dir(&python_dir)
        .args([
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-rA",
            "--basetemp",
        ])
        .arg(scratch.0.join("pytest"))
        .args(files.iter().map(|f| format!("tests/{f}")))
        // No bytecode in the repository.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("FAULTLINE_SOCKET", agent.socket_path())
        .env("FAULTLINE_POLICY_SOCKET", limited.socket_path())
        .env(
            "FAULTLINE_BIN_DIR",
            faultctl.parent().expect("faultctl's directory"),
        );
    for (side, peer) in [("A", &lab.a), ("B", &lab.b)] {
        command
            .env(format!("FAULTLINE_LAB_{side}_NETNS"), &peer.netns)
            .env(format!("FAULTLINE_LAB_{side}_DEV"), &peer.dev)
            .env(format!("FAULTLINE_LAB_{side}_ADDR"), peer.v4.to_string());
    }
    // The plugin's own settings come from each test, not from whoever runs this one.
    for var in [
        "FAULTLINE_DEV",
        "FAULTLINE_NETNS",
        "FAULTLINE_PEER",
        "FAULTLINE_PEER_PORTS",
        "FAULTLINE_PROTO",
        "FAULTLINE_RTO",
        "FAULTLINE_REPORT_DIR",
        "FAULTLINE_HOLD",
        "FAULTLINE_SKIP_UNSUPPORTED",
        "FAULTLINE_SSH",
        "FAULTLINE_SSH_DESTINATION",
    ] {
        command.env_remove(var);
    }
    let out = command.output().expect("run pytest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pytest {files:?}: {}\n--- stdout\n{stdout}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
    for a in [&agent, &limited] {
        let list = a.request(json!({"id": 1, "op": "list"}));
        assert_eq!(list["result"]["faults"], json!([]), "faults left: {list}");
    }
    for peer in [&lab.a, &lab.b] {
        let left = leftovers(&peer.netns, &peer.dev);
        assert!(left.is_empty(), "left in {}: {left:?}", peer.netns);
    }
}

/// Whether this runs in the VM stage's guest, where only the latency part runs.
fn in_guest() -> bool {
    let guest = std::env::var_os("FAULTLINE_EXPECT_NETEM").is_some();
    if guest {
        println!("skipped in the VM: proven on the host stage");
    }
    guest
}

#[test]
fn python_units_conformance_and_packaging() {
    if in_guest() {
        return;
    }
    pytest(
        "units",
        &["test_units.py", "test_conformance.py", "test_packaging.py"],
    );
}

#[test]
fn python_client_ops_refusals_and_counters() {
    if in_guest() {
        return;
    }
    pytest("client", &["test_client.py"]);
}

#[test]
fn python_injector_blocks() {
    if in_guest() {
        return;
    }
    pytest("injector", &["test_injector.py"]);
}

#[test]
fn python_pytest_plugin_runs_the_issues_tests_verbatim() {
    if std::env::var_os("FAULTLINE_EXPECT_NETEM").is_some() {
        // The latency part: on a netem kernel both tests pass and the delay shows in traffic.
        pytest(
            "plugin",
            &["test_plugin.py::test_the_issues_tests_run_verbatim"],
        );
    } else {
        pytest("plugin", &["test_plugin.py"]);
    }
}

#[test]
fn python_chaos_toolkit_extension() {
    if in_guest() {
        return;
    }
    pytest("chaos", &["test_chaos.py"]);
}
