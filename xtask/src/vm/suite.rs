//! Builds what the guest runs, on the host: the workspace binaries and every test executable.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::Value;

pub struct Suite {
    /// faultd and faultctl; the tests find them through FAULTLINE_BIN_DIR (their directory).
    pub bins: Vec<PathBuf>,
    pub tests: Vec<TestExe>,
}

pub struct TestExe {
    /// "faultline (lib)", "ebpf_faults (test)", ...
    pub name: String,
    pub exe: PathBuf,
    /// Where `cargo test` would run it from.
    pub package_dir: PathBuf,
}

impl Suite {
    pub fn bin_dir(&self) -> Result<PathBuf> {
        let first = self.bins.first().context("no workspace binaries")?;
        Ok(first.parent().context("binary path")?.to_owned())
    }
}

/// Builds into target/vm/build with optimized dependencies. Under TCG a guest runs ~15x
/// slower than the host: with unoptimized dependencies (aya, mostly) faultd's first apply took
/// 3-4.5 s there (0.3 s on the host), longer than the 1.5 s fault a deadline test times;
/// optimized, 0.9 s. The workspace's own code keeps the dev profile's debug assertions; debug
/// info is line tables only everywhere, since the initramfs (every test binary) lives in the
/// guest's RAM and /tmp shares it. A target dir of its own leaves the host's target/debug alone.
pub fn build(vm_dir: &Path) -> Result<Suite> {
    let build_dir = vm_dir.join("build");
    let build_dir = build_dir.to_str().context("target dir is not UTF-8")?;
    // xtask is excluded: it is the one running, and has no tests for the guest.
    let common = [
        "--workspace",
        "--exclude",
        "xtask",
        "--target-dir",
        build_dir,
        "--config",
        "profile.dev.package.\"*\".opt-level=2",
        // Backtraces keep file:line; the initramfs (the guest's RAM) shrinks several-fold.
        "--config",
        "profile.dev.package.\"*\".debug=\"line-tables-only\"",
        "--config",
        "profile.dev.debug=\"line-tables-only\"",
    ];
    let bins = artifacts("build", &[&common[..], &["--bins"]].concat())?
        .into_iter()
        .map(|a| a.exe)
        .collect();
    // Doc tests need rustdoc and stay on the host.
    let mut tests = artifacts("test", &[&common[..], &["--no-run"]].concat())?;
    tests.retain(|a| a.test);
    // Unit tests (lib, bin) first, then integration tests; by name within each.
    tests.sort_by(|a, b| (a.kind == "test", &a.target).cmp(&(b.kind == "test", &b.target)));
    let tests = tests
        .into_iter()
        .map(|a| TestExe {
            name: format!("{} ({})", a.target, a.kind),
            exe: a.exe,
            package_dir: a.package_dir,
        })
        .collect();
    Ok(Suite { bins, tests })
}

struct Artifact {
    target: String,
    kind: String,
    test: bool,
    exe: PathBuf,
    package_dir: PathBuf,
}

/// Runs `cargo <cmd> <args>` and returns the executables it produced, from its JSON messages.
fn artifacts(cmd: &str, args: &[&str]) -> Result<Vec<Artifact>> {
    let out = cargo()
        .arg(cmd)
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("spawn cargo {cmd}"))?;
    if !out.status.success() {
        bail!("cargo {cmd} {} failed ({})", args.join(" "), out.status);
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let msg: Value = serde_json::from_str(line).context("cargo's JSON message")?;
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(exe) = msg["executable"].as_str() else {
            continue;
        };
        let str_of = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let manifest = PathBuf::from(str_of(&msg["manifest_path"]));
        found.push(Artifact {
            target: str_of(&msg["target"]["name"]),
            kind: str_of(&msg["target"]["kind"][0]),
            test: msg["profile"]["test"] == true,
            exe: PathBuf::from(exe),
            package_dir: manifest.parent().context("manifest path")?.to_owned(),
        });
    }
    Ok(found)
}

pub fn target_dir() -> Result<PathBuf> {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("spawn cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed ({})", out.status);
    }
    let meta: Value = serde_json::from_slice(&out.stdout).context("cargo metadata's JSON")?;
    let dir = meta["target_directory"]
        .as_str()
        .context("no target_directory in cargo metadata")?;
    Ok(PathBuf::from(dir))
}

/// The cargo that runs us (set by `cargo run`), so toolchain overrides carry over.
fn cargo() -> Command {
    Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}
