//! What operators install: the systemd unit passes `systemd-analyze verify`, the DaemonSet
//! passes Kubernetes' schema, both grant exactly the capabilities faultd keeps, the container
//! build makes the binaries they run, and scripts/install.sh stages every file it installs.

use std::{
    collections::BTreeSet,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use faultline_tests::agent::bin_path;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The suite also runs in the VM stage's minimal guest, which has neither systemd nor Python.
fn in_test_vm() -> bool {
    std::env::var_os("FAULTLINE_EXPECT_NETEM").is_some()
}

/// What faultd keeps of its capabilities (agent/src/bin/faultd.rs, checked against the
/// process in guard_rails.rs).
fn faultd_capabilities() -> BTreeSet<String> {
    ["NET_ADMIN", "BPF", "PERFMON", "SYS_ADMIN", "SYS_PTRACE"]
        .map(String::from)
        .into()
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("faultline-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_systemd_unit_verifies_and_bounds_faultd_to_its_capabilities() {
    let unit = read("deploy/systemd/faultd.service");
    let bounding: BTreeSet<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("CapabilityBoundingSet")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_owned())
        .collect();
    assert_eq!(bounding, faultd_capabilities());
    assert!(
        unit.contains("KillMode=process"),
        "the reaper must outlive a stop"
    );

    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(in_test_vm(), "systemd-analyze is missing on this host");
        println!("skipped systemd-analyze verify: not in this guest");
        return;
    }
    // verify checks that ExecStart's binary exists: point it at the one just built.
    let dir = TempDir::new("unit");
    let staged = dir.0.join("faultd.service");
    let faultd = bin_path("faultd");
    std::fs::write(
        &staged,
        unit.replace("/usr/local/bin/faultd", &faultd.display().to_string()),
    )
    .expect("write the unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&staged)
        .output()
        .expect("systemd-analyze");
    let complaints = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{complaints}");
    // verify exits 0 on unknown keys and bad values too; it says so on stderr.
    assert!(complaints.trim().is_empty(), "{complaints}");
}

#[test]
fn the_daemonset_passes_the_kubernetes_schema_and_grants_faultds_capabilities() {
    let manifest = read("deploy/k8s/daemonset.yaml");
    let added: BTreeSet<String> = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("add: "))
        .expect("capabilities.add")
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_owned())
        .collect();
    assert_eq!(added, faultd_capabilities());
    for needed in [
        "hostPID: true",
        "hostNetwork: true",
        "mountPropagation: Bidirectional",
    ] {
        assert!(manifest.contains(needed), "{needed}");
    }

    let out = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "--quiet"])
        .arg(repo().join("deploy/k8s/daemonset.yaml"))
        .output();
    let out = match out {
        Ok(out) if out.status.success() || !in_test_vm() => out,
        _ => {
            assert!(in_test_vm(), "python3 is missing");
            println!("skipped the schema check: no python3 in this guest");
            return;
        }
    };
    assert!(
        out.status.success(),
        "kubernetes-validate (installed by scripts/setup.sh): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_container_build_makes_what_the_daemonset_runs() {
    let containerfile = read("deploy/container/Containerfile");
    assert!(containerfile.contains("cargo build --release --locked -p faultline --bins"));
    for bin in ["faultd", "faultctl"] {
        assert!(
            containerfile.contains(&format!("target/release/{bin}")),
            "{bin}"
        );
    }
    let manifest = read("deploy/k8s/daemonset.yaml");
    assert!(manifest.contains("/usr/local/bin/faultctl"));
    assert!(containerfile.contains("/usr/local/bin/"));
}

#[test]
fn install_sh_stages_every_file_and_uninstall_removes_them() {
    let stage = TempDir::new("install");
    // Small stand-ins that run the real binaries: the VM guest's /tmp (its RAM) has no room
    // for copies of debug builds.
    let bins = TempDir::new("install-bins");
    for bin in ["faultd", "faultctl"] {
        let wrapper = bins.0.join(bin);
        std::fs::write(
            &wrapper,
            format!("#!/bin/sh\nexec {} \"$@\"\n", bin_path(bin).display()),
        )
        .expect("write a stand-in");
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let install = |extra: &[&str]| {
        let out = Command::new("bash")
            .arg(repo().join("scripts/install.sh"))
            .args(["--no-build", "--destdir"])
            .arg(&stage.0)
            .args(extra)
            .env("FAULTLINE_BIN_DIR", &bins.0)
            .output()
            .expect("install.sh");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    install(&[]);
    let at = |p: &str| stage.0.join(p.trim_start_matches('/'));
    for file in [
        "/usr/local/bin/faultd",
        "/usr/local/bin/faultctl",
        "/etc/systemd/system/faultd.service",
        "/etc/faultline/faultd.toml",
        "/usr/share/bash-completion/completions/faultctl",
        "/usr/local/share/man/man1/faultctl.1",
        "/usr/local/share/man/man1/faultctl-run.1",
    ] {
        assert!(at(file).is_file(), "{file} was not installed");
    }
    let unit = std::fs::read_to_string(at("/etc/systemd/system/faultd.service")).expect("unit");
    assert!(unit.contains("ExecStart=/usr/local/bin/faultd "), "{unit}");

    install(&["--uninstall"]);
    assert!(!at("/usr/local/bin/faultd").exists());
    assert!(!at("/etc/systemd/system/faultd.service").exists());
    assert!(!at("/usr/local/share/man/man1/faultctl.1").exists());
    // The operator's policy stays.
    assert!(at("/etc/faultline/faultd.toml").is_file());
}
