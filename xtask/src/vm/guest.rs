//! What the guest boots into: /init (busybox), the test runner (the host's bash), the tests,
//! the host's tools at their host paths, the Python venv of the Python client's tests, and the
//! kernel's modules.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::cpio::Archive;
use super::suite::Suite;
use super::{find_in, SYSTEM_PATH};

/// PID 1: mounts, modules, then runs /faultline/run.sh: one of these.
const INIT: &str = include_str!("init.sh");
pub const RUN_TESTS: &str = include_str!("run-tests.sh");
pub const RUN_BENCH: &str = include_str!("run-bench.sh");

/// Commands the guest scripts and the tests run: the host's, so the guest behaves like the host
/// (busybox's ip and tc, for one, know neither netem nor bpf). `sh` too: busybox's sh runs its
/// own applets before PATH, so `sh -c 'ip netns exec ...'` (faultctl run's probe) would get
/// busybox's ip.
const TOOLS: &[&str] = &[
    "bash", "sh", "ip", "tc", "ping", "socat", "timeout", "cat", "sleep", "awk", "grep", "sed",
    "env", "date", "mkdir", "rm", "ls", "head", "tail", "uname", "id", "jq", "seq", "mktemp",
    "install", "dirname", "basename", "bpftool", "df", "openssl",
];
/// Copied when the host has them: handy for future tests, not needed by today's.
const OPTIONAL_TOOLS: &[&str] = &["iperf3", "ss", "nstat"];

/// Files of the source tree that tests read (the fuzz corpus replay, the scripts, the
/// deployment files),
/// copied to the same absolute paths, relative to the workspace root.
const SOURCE_DATA: &[&str] = &[
    "fuzz/corpus",
    "fuzz/hostile",
    "fuzz/hostile-verdicts.txt",
    "scripts",
    "deploy",
    "python",
    "tests/data",
];

/// What the Python client's tests in the guest never import: left out of the interpreter's
/// standard library and the venv's packages (kubernetes-validate alone is 110 MB).
const PYTHON_LEFT_OUT: &[&str] = &[
    "test",
    "site-packages",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pip",
    "setuptools",
    "pkg_resources",
    "kubernetes_validate",
];

/// Where busybox and its applets live: last on PATH, so they only fill gaps.
const BUSYBOX_DIR: &str = "/bb";

/// `runner` is what /init runs (`RUN_TESTS` or `RUN_BENCH`), with `args` one per line in
/// /faultline/test-args.
pub fn write_initramfs(
    out: &Path,
    suite: &Suite,
    modules: &[(String, Vec<u8>)],
    runner: &str,
    test_args: &[String],
) -> Result<()> {
    let mut a = Archive::default();
    for dir in ["/proc", "/sys", "/dev", "/run", "/tmp", "/root"] {
        a.dir(dir);
    }
    // The kernel opens it for PID 1's stdio before anything could mount devtmpfs.
    a.char_dev("/dev/console", 5, 1);
    a.bytes("/init", 0o755, INIT);
    a.bytes("/faultline/run.sh", 0o755, runner);
    etc(&mut a);
    busybox(&mut a)?;

    for tool in TOOLS {
        let path = find_in(SYSTEM_PATH, tool)
            .with_context(|| format!("{tool} not found on this host: run ./scripts/setup.sh"))?;
        a.host_exe(&path)?;
    }
    for path in OPTIONAL_TOOLS
        .iter()
        .filter_map(|t| find_in(SYSTEM_PATH, t))
    {
        a.host_exe(&path)?;
    }
    // iproute2's configuration and tc's netem distribution tables (under a multiarch dir on Debian).
    for dir in iproute2_dirs()? {
        a.host_tree(&dir)?;
    }

    for (i, (name, ko)) in modules.iter().enumerate() {
        // The numeric prefix keeps the load order in the shell's sorted glob.
        a.bytes(
            format!("/faultline/modules/{i:02}-{name}.ko"),
            0o644,
            ko.as_slice(),
        );
    }

    for bin in &suite.bins {
        a.host_exe(bin)?;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask lives in the workspace")?;
    for data in SOURCE_DATA {
        let path = workspace.join(data);
        if path.is_dir() {
            a.host_tree(&path)?;
        } else if path.is_file() {
            a.host_path(&path)?;
        }
    }
    let venv = python(&mut a, workspace)?;
    a.bytes("/faultline/venv", 0o644, path_str(&venv)?);
    let mut list = String::new();
    for t in &suite.tests {
        a.host_exe(&t.exe)?;
        a.host_path(&t.package_dir)?;
        let (dir, exe) = (path_str(&t.package_dir)?, path_str(&t.exe)?);
        list.push_str(&format!("{}\t{dir}\t{exe}\n", t.name));
    }
    a.bytes("/faultline/tests", 0o644, list);
    a.bytes("/faultline/bin-dir", 0o644, path_str(&suite.bin_dir()?)?);
    if test_args.iter().any(|a| a.contains('\n')) {
        bail!("test arguments cannot contain newlines");
    }
    // One per line, for the runner's `mapfile`.
    a.bytes("/faultline/test-args", 0o644, test_args.join("\n"));
    a.bytes(
        "/faultline/path",
        0o644,
        SYSTEM_PATH.join(":") + ":" + BUSYBOX_DIR,
    );

    a.write(out)
}

/// The Python virtual environment scripts/setup.sh made (`$FAULTLINE_VENV` or target/venv),
/// with the interpreter it runs and its standard library, at their host paths; returns the
/// venv's path. The guest runs the Python client's latency tests with it
/// (tests/tests/python_client.rs).
fn python(a: &mut Archive, workspace: &Path) -> Result<PathBuf> {
    let venv = std::env::var_os("FAULTLINE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target/venv"));
    let python = venv.join("bin/python");
    let out = Command::new(&python)
        .args([
            "-c",
            "import os, sys, sysconfig; p = sysconfig.get_paths(); \
             print(os.path.realpath(sys._base_executable), p['stdlib'], p['purelib'], sep='\\n')",
        ])
        .output()
        .with_context(|| format!("run {}: run ./scripts/setup.sh", python.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let paths = String::from_utf8(out.stdout).context("the interpreter's paths are not UTF-8")?;
    let [interpreter, stdlib, packages] = paths.lines().collect::<Vec<_>>()[..] else {
        bail!("unexpected answer from {}: {paths:?}", python.display());
    };
    let keep = |path: &Path| {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        !PYTHON_LEFT_OUT.contains(&name) && !name.starts_with("config-")
    };
    a.host_exe(Path::new(interpreter))?;
    a.host_path(&python)?;
    a.host_path(&venv.join("pyvenv.cfg"))?;
    a.host_tree_where(Path::new(stdlib), &keep)?;
    a.host_tree_where(Path::new(packages), &keep)?;
    // Extension modules bring their libraries (ctypes: libffi, which the tests' lab uses).
    let extensions = Path::new(stdlib).join("lib-dynload");
    for entry in
        fs::read_dir(&extensions).with_context(|| format!("read {}", extensions.display()))?
    {
        a.libraries_of(&entry?.path())?;
    }
    Ok(venv)
}

/// Just enough for tools that look up users and hosts.
fn etc(a: &mut Archive) {
    a.bytes("/etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/bash\n");
    a.bytes("/etc/group", 0o644, "root:x:0:\n");
    a.bytes("/etc/hosts", 0o644, "127.0.0.1 localhost\n::1 localhost\n");
    a.bytes(
        "/etc/nsswitch.conf",
        0o644,
        "passwd: files\ngroup: files\nhosts: files\n",
    );
}

/// busybox at /bb/busybox, with a symlink per applet (known on the host: `busybox --list`).
fn busybox(a: &mut Archive) -> Result<()> {
    let host = find_in(SYSTEM_PATH, "busybox").context("busybox not installed")?;
    let out = Command::new(&host)
        .arg("--list")
        .output()
        .context("spawn busybox --list")?;
    if !out.status.success() {
        bail!("busybox --list failed ({})", out.status);
    }
    let dir = PathBuf::from(BUSYBOX_DIR);
    a.host_file_at(dir.join("busybox"), &host)?;
    a.libraries_of(&host)?;
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        if applet != "busybox" {
            a.symlink(dir.join(applet), "busybox");
        }
    }
    Ok(())
}

fn iproute2_dirs() -> Result<Vec<PathBuf>> {
    let mut dirs = vec![PathBuf::from("/etc/iproute2"), PathBuf::from("/usr/lib/tc")];
    for entry in fs::read_dir("/usr/lib")? {
        dirs.push(entry?.path().join("tc"));
    }
    Ok(dirs.into_iter().filter(|d| d.is_dir()).collect())
}

fn path_str(p: &Path) -> Result<String> {
    let s = p
        .to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))?;
    if s.contains(['\t', '\n']) {
        bail!("{s:?}: tabs and newlines are not supported in paths");
    }
    Ok(s.to_owned())
}
