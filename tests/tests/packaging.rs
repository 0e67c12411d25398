//! What operators install, checked against the binaries it runs: the systemd unit passes
//! `systemd-analyze verify` and keeps its hardening without denying faultd what it needs; the
//! DaemonSet passes Kubernetes' schema and the API server's rules that no schema holds, and
//! mounts the paths faultd uses; both give faultd flags it accepts and exactly the capabilities
//! it keeps; the container build copies a whole workspace and makes the binaries the DaemonSet
//! runs; scripts/install.sh stages every file it installs, and removes them again.
//!
//! The VM stage runs this suite too, in a guest with neither systemd, Python nor cargo: the
//! checks that need them skip there (FAULTLINE_EXPECT_NETEM is set only in the guest), and
//! fail anywhere else when the tool is missing.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicUsize, Ordering},
};

use faultline::policy::Policy;
use faultline_tests::agent::bin_path;
use serde_norway::Value;

/// The workspace manifest, built in: the VM guest has deploy/ and scripts/, not the sources.
const WORKSPACE_MANIFEST: &str = include_str!("../../Cargo.toml");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn in_test_vm() -> bool {
    std::env::var_os("FAULTLINE_EXPECT_NETEM").is_some()
}

/// What faultd keeps of its capabilities (`KEEP` in agent/src/bin/faultd.rs, checked against
/// the running process in guard_rails.rs).
fn faultd_capabilities() -> BTreeSet<String> {
    ["NET_ADMIN", "BPF", "PERFMON", "SYS_ADMIN", "SYS_PTRACE"]
        .map(String::from)
        .into()
}

/// What faultd uses before it drops to `faultd_capabilities`: SYS_RESOURCE lifts
/// RLIMIT_MEMLOCK for kernels before 5.11 (`raise_memlock` in agent/src/bin/faultd.rs).
const AT_START_ONLY: &str = "SYS_RESOURCE";

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// faultd's flag defaults, as its `--help` prints them: the binary's own word on its paths.
fn faultd_defaults() -> BTreeMap<String, String> {
    let help = text(&run(Command::new(bin_path("faultd")).arg("--help")));
    let mut defaults = BTreeMap::new();
    let mut flag = None;
    for line in help.lines().map(str::trim) {
        if line.starts_with("--") {
            flag = line.split_whitespace().next().map(str::to_owned);
        }
        let default = line
            .split_once("[default: ")
            .and_then(|(_, v)| v.split_once(']'));
        if let (Some(flag), Some((value, _))) = (&flag, default) {
            defaults.insert(flag.clone(), value.to_owned());
        }
    }
    defaults
}

/// faultd parses `args` (clap checks every flag and value before it prints the help).
fn assert_faultd_accepts(args: &[&str], whose: &str) {
    let out = run(Command::new(bin_path("faultd")).args(args).arg("--help"));
    assert!(
        out.status.success(),
        "{whose}: faultd {args:?}: {}",
        text(&out)
    );
}

struct TempDir(PathBuf);

impl TempDir {
    /// A fresh directory of its own: tests run side by side.
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("faultline-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---- the systemd unit -------------------------------------------------------------------------

/// Every `Key=value` of the unit, in order.
fn unit_settings(unit: &str) -> BTreeMap<String, Vec<String>> {
    let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            settings
                .entry(key.to_owned())
                .or_default()
                .push(value.to_owned());
        }
    }
    settings
}

fn systemd_analyze_here() -> bool {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        return true;
    }
    assert!(
        in_test_vm(),
        "systemd-analyze is missing (Debian's package systemd)"
    );
    println!("skipped the systemd-analyze checks: not in this guest");
    false
}

#[test]
fn the_systemd_unit_runs_faultd_with_its_paths_and_capabilities_and_nothing_more() {
    let settings = unit_settings(&read("deploy/systemd/faultd.service"));
    let one = |key: &str| -> &str {
        match settings.get(key).map(Vec::as_slice) {
            Some([value]) => value,
            other => panic!("{key}: {other:?}"),
        }
    };
    let words = |key: &str| -> BTreeSet<&str> { one(key).split_whitespace().collect() };

    let exec: Vec<&str> = one("ExecStart").split_whitespace().collect();
    assert_eq!(exec, ["/usr/local/bin/faultd", "--log-format", "json"]);
    assert_faultd_accepts(&exec[1..], "ExecStart");
    let bounding: BTreeSet<String> = words("CapabilityBoundingSet")
        .into_iter()
        .map(|c| c.trim_start_matches("CAP_").to_owned())
        .collect();
    assert_eq!(bounding, faultd_capabilities());
    assert_eq!(
        one("LimitMEMLOCK"),
        "infinity",
        "kernels before 5.11 charge eBPF maps to RLIMIT_MEMLOCK, and the unit gives faultd no {AT_START_ONLY}"
    );
    assert_eq!(one("KillMode"), "process", "the reaper must outlive faultd");
    assert!(
        one("ExecReload").contains("$MAINPID"),
        "the kill switch signals faultd alone, not its reaper"
    );

    // The paths faultd uses by default are the unit's writable ones.
    let defaults = faultd_defaults();
    let socket_dir = Path::new(&defaults["--socket"])
        .parent()
        .expect("socket dir");
    let state_dir = Path::new(&defaults["--state-dir"]);
    assert!(Path::new(&defaults["--pin-dir"]).starts_with("/sys/fs/bpf"));
    assert_eq!(
        socket_dir,
        Path::new("/run").join(one("RuntimeDirectory")),
        "RuntimeDirectory"
    );
    assert_eq!(
        state_dir,
        Path::new("/var/lib").join(one("StateDirectory")),
        "StateDirectory"
    );
    let writable = words("ReadWritePaths");
    for path in [socket_dir, state_dir, Path::new("/sys/fs/bpf")] {
        assert!(writable.contains(path.to_str().expect("utf-8")), "{path:?}");
    }

    // Hardening that would break faultd stays out.
    for key in [
        "ProtectKernelTunables",
        "PrivateNetwork",
        "ProtectProc",
        "ProcSubset",
        "PrivateUsers",
    ] {
        assert!(!settings.contains_key(key), "{key} breaks faultd");
    }
    assert!(
        words("RestrictNamespaces").contains("net"),
        "setns, unshare"
    );
    assert!(words("RestrictAddressFamilies").is_superset(&["AF_UNIX", "AF_NETLINK"].into()));

    if !systemd_analyze_here() {
        return;
    }
    // A deny-list, and none of its groups holds a call faultd makes.
    let filter = one("SystemCallFilter");
    let denied = filter.strip_prefix('~').expect("a deny-list");
    let needed = [
        "bpf",
        "setns",
        "unshare",
        "mount",
        "capset",
        "perf_event_open",
        "clone",
        "clone3",
        "execve",
    ];
    for group in denied.split_whitespace() {
        let out = run(Command::new("systemd-analyze")
            .arg("syscall-filter")
            .arg(group));
        assert!(out.status.success(), "{group}: {}", text(&out));
        let calls = String::from_utf8_lossy(&out.stdout).into_owned();
        for call in calls.split_whitespace() {
            assert!(!needed.contains(&call), "{group} denies {call}");
        }
    }
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify_and_security() {
    if !systemd_analyze_here() {
        return;
    }
    // verify checks that ExecStart's binary exists: point it at the one just built, through a
    // link in the temporary directory, since the checkout's path may hold a space, which a
    // unit's command line would split on.
    let dir = TempDir::new("unit");
    let staged = dir.0.join("faultd.service");
    let unit = read("deploy/systemd/faultd.service");
    let faultd = dir.0.join("faultd");
    std::os::unix::fs::symlink(bin_path("faultd"), &faultd).expect("link faultd");
    fs::write(
        &staged,
        unit.replace("/usr/local/bin/faultd", &faultd.display().to_string()),
    )
    .expect("write the unit");
    // --man=no: Documentation= names faultctl(1), which install.sh installs, not this host.
    let out = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&staged));
    let complaints = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{complaints}");
    // verify exits 0 on unknown keys and bad values too; it says so on stderr.
    assert!(complaints.trim().is_empty(), "{complaints}");

    // The exposure score (0-10, lower is better) stays where the hardening put it: 3.4.
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=40", "--no-pager"])
        .arg(&staged));
    let report = text(&out);
    let overall = report
        .lines()
        .find(|l| l.contains("Overall exposure"))
        .unwrap_or("no overall exposure line");
    println!("{overall}");
    assert!(out.status.success(), "exposure above 4.0:\n{report}");
}

// ---- the DaemonSet ----------------------------------------------------------------------------

fn manifest_documents() -> Vec<Value> {
    let manifest = read("deploy/k8s/daemonset.yaml");
    let mut documents = vec![String::new()];
    for line in manifest.lines() {
        if line == "---" {
            documents.push(String::new());
        } else {
            let current = documents.last_mut().expect("one document at least");
            current.push_str(line);
            current.push('\n');
        }
    }
    documents
        .iter()
        .map(|d| serde_norway::from_str(d).unwrap_or_else(|e| panic!("daemonset.yaml: {e}")))
        .collect()
}

fn of_kind<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    documents
        .iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_sequence()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Two rules of the API server's validation that a schema cannot express, so that
/// kubernetes-validate passes what `kubectl apply` then refuses.
fn api_server_refusals(container: &Value) -> Vec<String> {
    let name = container["name"].as_str().unwrap_or("?");
    let security = &container["securityContext"];
    let privileged = security["privileged"].as_bool() == Some(true);
    let mut refusals = Vec::new();
    for mount in container["volumeMounts"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        if mount["mountPropagation"] == "Bidirectional" && !privileged {
            refusals.push(format!(
                "{name}: Bidirectional mount propagation is available only to privileged containers"
            ));
        }
    }
    // The server compares with "CAP_SYS_ADMIN" only; the rule is the same however spelled.
    let sys_admin = strings(&security["capabilities"]["add"])
        .iter()
        .any(|c| c.trim_start_matches("CAP_") == "SYS_ADMIN");
    if security["allowPrivilegeEscalation"].as_bool() == Some(false) && (privileged || sys_admin) {
        refusals.push(format!(
            "{name}: allowPrivilegeEscalation false with privileged or SYS_ADMIN"
        ));
    }
    refusals
}

#[test]
fn the_daemonset_passes_the_kubernetes_schema() {
    // The guest's copy of the venv leaves kubernetes-validate out (110 MB); the schema does
    // not depend on the kernel, and the host stage checks it.
    if in_test_vm() {
        println!("skipped the schema check in the VM: the host stage makes it");
        return;
    }
    let python = faultline_tests::python::venv_python()
        .expect("no Python environment: run scripts/setup.sh");
    // The newest schema kubernetes-validate has, and the oldest the manifest is for
    // (securityContext.appArmorProfile is 1.30's).
    for version in [None, Some("1.30.0")] {
        let mut command = Command::new(&python);
        command.args(["-m", "kubernetes_validate", "--strict", "--quiet"]);
        if let Some(version) = version {
            command.args(["--kubernetes-version", version]);
        }
        let out = run(command.arg(repo().join("deploy/k8s/daemonset.yaml")));
        assert!(
            out.status.success(),
            "kubernetes-validate {version:?} (scripts/setup.sh installs it): {}",
            text(&out)
        );
    }
}

#[test]
fn the_daemonset_keeps_the_api_servers_rules_and_mounts_what_faultd_uses() {
    let documents = manifest_documents();
    let namespace = of_kind(&documents, "Namespace");
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "privileged",
        "host namespaces and hostPath volumes are outside the baseline standard"
    );
    let pod = &of_kind(&documents, "DaemonSet")["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true, "faults on the node's devices");
    assert_eq!(pod["hostPID"], true, "pid:N names a pod's namespace");

    let init = pod["initContainers"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    let containers = pod["containers"].as_sequence().expect("containers");
    let refusals: Vec<String> = init
        .iter()
        .chain(containers)
        .flat_map(api_server_refusals)
        .collect();
    assert!(refusals.is_empty(), "{refusals:#?}");

    let faultd = containers
        .iter()
        .find(|c| c["name"] == "faultd")
        .expect("the faultd container");
    assert!(
        faultd["command"].is_null(),
        "the image's entrypoint is faultd"
    );
    let args = strings(&faultd["args"]);
    assert_faultd_accepts(&args, "the DaemonSet's args");
    let unit = unit_settings(&read("deploy/systemd/faultd.service"));
    assert_eq!(
        (
            faultd["resources"]["limits"]["memory"].as_str(),
            unit["MemoryMax"].as_slice()
        ),
        (Some("128Mi"), ["128M".to_owned()].as_slice()),
        "one memory limit for RSS and the datapath's kernel memory, in both"
    );
    let security = &faultd["securityContext"];
    assert_ne!(security["privileged"], true);
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    let added: BTreeSet<String> = strings(&security["capabilities"]["add"])
        .into_iter()
        .map(str::to_owned)
        .collect();
    let mut expected = faultd_capabilities();
    expected.insert(AT_START_ONLY.to_owned());
    assert_eq!(added, expected);

    // Where faultd keeps its socket, journal, pins and policy, the node's paths are mounted.
    let defaults = faultd_defaults();
    let config = args
        .iter()
        .position(|a| *a == "--config")
        .map_or(defaults["--config"].as_str(), |i| args[i + 1]);
    let config = Path::new(config);
    let volume = |mount_path: &Path| -> (&Value, &Value) {
        let mount = faultd["volumeMounts"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|m| m["mountPath"].as_str().map(Path::new) == Some(mount_path))
            .unwrap_or_else(|| panic!("nothing mounted on {mount_path:?}"));
        let volume = pod["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == mount["name"])
            .unwrap_or_else(|| panic!("no volume {:?}", mount["name"]));
        (mount, volume)
    };
    let bpffs = Path::new("/sys/fs/bpf");
    assert!(Path::new(&defaults["--pin-dir"]).starts_with(bpffs));
    for node_path in [
        Path::new(&defaults["--socket"])
            .parent()
            .expect("socket dir"),
        Path::new(&defaults["--state-dir"]),
        bpffs,
    ] {
        let (_, volume) = volume(node_path);
        assert_eq!(
            volume["hostPath"]["path"].as_str().map(Path::new),
            Some(node_path),
            "{volume:?}"
        );
    }
    // The pins are the node's: an init container mounts bpffs there and propagates it.
    let (bpffs_mount, _) = volume(bpffs);
    assert!(
        init.iter().any(|c| {
            c["volumeMounts"]
                .as_sequence()
                .into_iter()
                .flatten()
                .any(|m| {
                    m["name"] == bpffs_mount["name"] && m["mountPropagation"] == "Bidirectional"
                })
        }),
        "no init container mounts bpffs for the node"
    );
    // The policy comes from the ConfigMap, and it is one faultd starts with.
    let (_, policy_volume) = volume(config.parent().expect("config dir"));
    let config_map = of_kind(&documents, "ConfigMap");
    assert_eq!(
        policy_volume["configMap"]["name"],
        config_map["metadata"]["name"]
    );
    let file = config.file_name().and_then(|f| f.to_str()).expect("name");
    let policy = config_map["data"][file].as_str().expect("the policy file");
    if let Err(e) = Policy::parse(policy) {
        panic!("the ConfigMap's {file}: {e}");
    }

    // The liveness probe is a faultctl command that exists.
    let probe = strings(&faultd["livenessProbe"]["exec"]["command"]);
    assert_eq!(probe, ["/usr/local/bin/faultctl", "status"]);
    let out = run(Command::new(bin_path("faultctl")).args(["status", "--help"]));
    assert!(out.status.success(), "{}", text(&out));
}

// ---- the container build ----------------------------------------------------------------------

/// The workspace's members, from `members = [...]` in the root manifest.
fn workspace_members() -> Vec<String> {
    let line = WORKSPACE_MANIFEST
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("members");
    line.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_container_build_copies_the_workspace_and_makes_what_the_daemonset_runs() {
    let containerfile = read("deploy/container/Containerfile");
    let instructions: Vec<Vec<&str>> = containerfile
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    // What the build stage copies from the checkout: COPY SRC... DEST.
    let copied: BTreeSet<&str> = instructions
        .iter()
        .filter(|i| i[0] == "COPY" && !i[1].starts_with("--from"))
        .flat_map(|i| i[1..i.len() - 1].iter().copied())
        .collect();
    assert!(
        !copied.contains("."),
        "not the whole checkout: its target/ goes along"
    );
    // agent/build.rs compiles ../ebpf.
    let mut needed: BTreeSet<String> = ["Cargo.toml", "Cargo.lock", "ebpf"]
        .map(String::from)
        .into();
    needed.extend(workspace_members());
    let missing: Vec<&String> = needed
        .iter()
        .filter(|n| !copied.contains(n.as_str()))
        .collect();
    assert!(missing.is_empty(), "the build does not copy {missing:?}");
    assert!(containerfile.contains("cargo build --release --locked -p faultline --bins"));
    // The runtime stage: both binaries in /usr/local/bin, faultd the entrypoint.
    let last_copy = instructions.iter().rfind(|i| i[0] == "COPY").expect("COPY");
    assert_eq!(last_copy[1], "--from=build");
    let names: BTreeSet<&str> = last_copy[2..last_copy.len() - 1]
        .iter()
        .map(|p| p.rsplit('/').next().unwrap_or(p))
        .collect();
    assert_eq!(names, ["faultctl", "faultd"].into());
    assert_eq!(last_copy.last(), Some(&"/usr/local/bin/"));
    assert!(containerfile.contains(r#"ENTRYPOINT ["/usr/local/bin/faultd"]"#));

    // What the build copies is a workspace of its own, with a lock that needs no change.
    let Some(cargo) = std::env::var_os("CARGO") else {
        assert!(in_test_vm(), "run this under cargo test");
        println!("skipped loading the build's workspace: no cargo in this guest");
        return;
    };
    let context = TempDir::new("container-context");
    for path in &copied {
        copy_tree(&repo().join(path), &context.0.join(path));
    }
    // Offline, and for this platform only: a fresh machine's crate cache holds what building
    // here downloaded, not the Windows or Android crates the lock also lists.
    let platform = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let out = run(Command::new(cargo)
        .args(["metadata", "--locked", "--offline", "--format-version", "1"])
        .args(["--filter-platform", &platform])
        .arg("--manifest-path")
        .arg(context.0.join("Cargo.toml"))
        .stdout(std::process::Stdio::null()));
    assert!(out.status.success(), "{}", text(&out));
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        fs::create_dir_all(to).unwrap_or_else(|e| panic!("{to:?}: {e}"));
        for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("{from:?}: {e}")) {
            let entry = entry.expect("dir entry");
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        fs::copy(from, to).unwrap_or_else(|e| panic!("{from:?} -> {to:?}: {e}"));
    }
}

// ---- scripts/install.sh -----------------------------------------------------------------------

/// Small stand-ins that run the real binaries: the VM guest's /tmp (its RAM) has no room for
/// copies of debug builds.
fn stand_in_binaries() -> TempDir {
    let bins = TempDir::new("install-bins");
    for bin in ["faultd", "faultctl"] {
        let wrapper = bins.0.join(bin);
        fs::write(
            &wrapper,
            format!("#!/bin/sh\nexec {} \"$@\"\n", sh_quote(&bin_path(bin))),
        )
        .expect("write a stand-in");
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    bins
}

/// `path` as one word of a shell command, whatever characters it has.
fn sh_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// Runs install.sh with `args`, staged under `stage` (never the real system), and returns its
/// standard output.
fn install_sh(stage: &Path, bins: &Path, args: &[&str]) -> String {
    let out = run(Command::new("bash")
        .arg(repo().join("scripts/install.sh"))
        .arg("--destdir")
        .arg(stage)
        .args(args)
        .env("FAULTLINE_BIN_DIR", bins));
    assert!(out.status.success(), "install.sh {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn install_sh_stages_every_file_keeps_the_policy_and_uninstall_removes_them() {
    let stage = TempDir::new("install");
    let bins = stand_in_binaries();
    let at = |p: &str| stage.0.join(p.trim_start_matches('/'));
    for prefix in ["/usr/local", "/opt/faultline"] {
        install_sh(&stage.0, &bins.0, &["--no-build", "--prefix", prefix]);
        for file in [
            "bin/faultd",
            "bin/faultctl",
            "share/bash-completion/completions/faultctl",
            "share/man/man1/faultctl.1",
            "share/man/man1/faultctl-run.1",
        ] {
            let path = at(&format!("{prefix}/{file}"));
            assert!(path.is_file(), "{path:?} was not installed");
        }
        assert!(at("/etc/faultline/faultd.toml").is_file());
        let unit = fs::read_to_string(at("/etc/systemd/system/faultd.service")).expect("unit");
        assert!(
            unit.contains(&format!(
                "\nExecStart={prefix}/bin/faultd --log-format json\n"
            )),
            "{unit}"
        );

        // An operator's policy is theirs: a second install leaves it.
        let policy = at("/etc/faultline/faultd.toml");
        fs::write(&policy, "# the operator's\n").expect("edit the policy");
        install_sh(&stage.0, &bins.0, &["--no-build", "--prefix", prefix]);
        assert_eq!(
            fs::read_to_string(&policy).expect("policy"),
            "# the operator's\n"
        );

        install_sh(&stage.0, &bins.0, &["--uninstall", "--prefix", prefix]);
        for file in ["bin/faultd", "bin/faultctl", "share/man/man1/faultctl.1"] {
            assert!(!at(&format!("{prefix}/{file}")).exists(), "{file} stayed");
        }
        assert!(!at("/etc/systemd/system/faultd.service").exists());
        assert!(policy.is_file(), "the policy stays");
    }
}

#[test]
fn install_sh_dry_run_prints_the_steps_and_does_none() {
    let dir = TempDir::new("install-dry");
    let stage = dir.0.join("stage");
    let bins = stand_in_binaries();
    let printed = install_sh(&stage, &bins.0, &["--dry-run", "--no-build"]);
    assert!(!stage.exists(), "a dry run made {stage:?}");
    let faultd = stage.join("usr/local/bin");
    for step in [
        format!(
            "+ install -m 0755 {0}/faultd {0}/faultctl",
            bins.0.display()
        ),
        format!("{}/", faultd.display()),
        format!(
            "{}",
            stage.join("etc/systemd/system/faultd.service").display()
        ),
    ] {
        assert!(printed.contains(&step), "{step:?} not in:\n{printed}");
    }
    // Without --no-build it would set up and build: printed, not run.
    let printed = install_sh(&stage, &bins.0, &["--dry-run"]);
    assert!(printed.contains(
        "+ ./scripts/setup.sh --build-only\n+ cargo build --release -p faultline --bins\n"
    ));
    assert!(!stage.exists());
}
