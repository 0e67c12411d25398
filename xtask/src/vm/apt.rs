//! The host tools of the VM stage, from the machine's apt sources. These live here and not
//! in scripts/setup.sh because only this stage needs them.

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::{find_in, SYSTEM_PATH};

/// Commands the VM stage runs on the host, and the package that provides each.
/// (The initramfs is written by xtask itself, so no cpio is needed.)
const HOST_TOOLS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    // Any busybox will do (its libraries are copied along), the static one needs none.
    ("busybox", "busybox-static"),
    ("xz", "xz-utils"),
    ("dpkg-deb", "dpkg"),
];

/// Commands the tests themselves run; scripts/setup.sh installs them.
const TEST_TOOLS: &[&str] = &["ip", "tc", "ping", "socat", "bpftool"];

pub fn ensure_host_tools() -> Result<()> {
    let missing: Vec<&str> = TEST_TOOLS
        .iter()
        .filter(|t| find_in(SYSTEM_PATH, t).is_none())
        .copied()
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing {} (the tests run them): run ./scripts/setup.sh",
            missing.join(", ")
        );
    }
    ensure_tools(HOST_TOOLS)
}

/// Installs the packages of whichever `(command, package)` commands are not on PATH.
pub fn ensure_tools(tools: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<String> = tools
        .iter()
        .filter(|(cmd, _)| find_in(SYSTEM_PATH, cmd).is_none())
        .map(|&(_, pkg)| pkg.to_owned())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    install(missing)
}

fn install(mut missing: Vec<String>) -> Result<()> {
    println!("xtask: installing {}", missing.join(" "));
    let started = Instant::now();
    update()?;
    // qemu-system-x86 needs qemu-utils of its own version. A newer one from elsewhere (seen:
    // a bookworm backport, 10.0, that breaks qemu-system-common < 8) is not downgraded by
    // apt on its own: it has to be asked for by version.
    if missing.iter().any(|p| p == "qemu-system-x86") {
        missing.push(format!("qemu-utils={}", candidate("qemu-system-x86")?));
    }
    // Through `env`: sudo would drop the variable from our environment.
    let mut install = as_root("env")?;
    install
        .args([
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get",
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "--allow-downgrades",
        ])
        .args(&missing);
    run_quiet(&mut install).with_context(|| format!("installing {} failed", missing.join(" ")))?;
    println!(
        "xtask: installed in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The version apt would install of `package`.
fn candidate(package: &str) -> Result<String> {
    let out = Command::new("apt-cache")
        .args(["policy", package])
        .output()
        .context("spawn apt-cache")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| line.trim().strip_prefix("Candidate: "))
        .filter(|version| *version != "(none)")
        .map(str::to_owned)
        .with_context(|| format!("no installable version of {package} in the apt sources"))
}

fn update() -> Result<()> {
    run_quiet(as_root("apt-get")?.args(["update", "-qq"]))
}

/// `prog` run as root: directly when we are root, else through sudo when it exists.
fn as_root(prog: &str) -> Result<Command> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(Command::new(prog));
    }
    if find_in(SYSTEM_PATH, "sudo").is_none() {
        bail!("need root to run {prog}: run as root (sudo is not installed)");
    }
    let mut cmd = Command::new("sudo");
    cmd.arg(prog);
    Ok(cmd)
}

/// Runs `cmd` with its output captured; the output is part of the error if it fails.
fn run_quiet(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("spawn {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
