//! Boots one guest under qemu with a hard deadline, streams its console to stdout and a log,
//! and reads the verdict the guest prints.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

const BOOTED: &str = "FAULTLINE-VM-BOOTED:";
const RESULT: &str = "FAULTLINE-VM-RESULT:";
/// How long a guest that printed its verdict gets to power off before it is killed.
const POWEROFF_GRACE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// KVM only when the CPU advertises virtualization: a /dev/kvm alone is not enough (some
    /// hosts have a paravirtual one that runs only guests built for it; a stock kernel dies
    /// there with "emulation failure").
    pub fn detect() -> Accel {
        let cpu_has_virt = fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| {
            info.lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
        });
        let kvm_usable = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        if cpu_has_virt && kvm_usable {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            Accel::Kvm => &["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg => &["-accel", "tcg,thread=multi", "-cpu", "max"],
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg (no usable KVM)",
        })
    }
}

pub struct Run {
    pub name: &'static str,
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
    pub console_log: PathBuf,
    pub timeout: Duration,
    pub accel: Accel,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
    NoMarker,
    Timeout,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Pass => f.write_str("PASS"),
            Outcome::Fail(n) => write!(f, "FAIL ({n} test binaries failed)"),
            Outcome::NoMarker => write!(f, "FAIL (the guest stopped without a verdict)"),
            Outcome::Timeout => write!(f, "FAIL (timed out, qemu killed)"),
        }
    }
}

pub struct Report {
    pub outcome: Outcome,
    /// From starting qemu to /init's first line.
    pub boot: Option<Duration>,
    pub total: Duration,
}

pub fn run(run: &Run) -> Result<Report> {
    let mut cmd = Command::new("qemu-system-x86_64");
    // q35, not microvm: microvm hangs in most TCG boots with 2 vCPUs (no timer fallback).
    cmd.args(["-M", "q35", "-nodefaults", "-nographic", "-no-reboot"])
        // The guest's root filesystem is its RAM, and gets half of it: 2 GiB holds the
        // initramfs (every test binary, ~650 MB) with room for what the tests write.
        .args(["-smp", "2", "-m", "4G", "-serial", "stdio"])
        .args(run.accel.args())
        .arg("-kernel")
        .arg(&run.vmlinuz)
        .arg("-initrd")
        .arg(&run.initrd)
        // panic=-1 + -no-reboot: a kernel panic ends qemu at once instead of waiting for the
        // timeout. mitigations=off: a throwaway guest, and process spawns ~15% faster under TCG.
        .arg("-append")
        .arg(match run.accel {
            // Labels the benchmark's figures as emulated (the tests measure their pace instead).
            Accel::Tcg => "console=ttyS0 panic=-1 quiet mitigations=off faultline.emulated=1",
            Accel::Kvm => "console=ttyS0 panic=-1 quiet mitigations=off",
        })
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls.
    unsafe {
        cmd.pre_exec(move || {
            // The kernel kills qemu when xtask dies, however it dies (Ctrl-C, SIGKILL, panic):
            // Drop alone would not run on a signal.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // We may have died before the prctl took effect.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(io::Error::other("xtask exited while starting qemu"));
            }
            Ok(())
        });
    }

    let mut log = File::create(&run.console_log)
        .with_context(|| format!("create {}", run.console_log.display()))?;
    let started = Instant::now();
    let mut qemu = Guard(cmd.spawn().context("spawn qemu-system-x86_64")?);
    let (tx, rx) = mpsc::channel();
    if let Some(out) = qemu.0.stdout.take() {
        forward_lines(out, tx.clone());
    }
    if let Some(err) = qemu.0.stderr.take() {
        forward_lines(err, tx);
    }

    let mut deadline = started + run.timeout;
    let (mut boot, mut verdict) = (None, None);
    let timed_out = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                // A closed stdout (e.g. `| head`) must not stop the run; the log keeps it all.
                let _ = writeln!(io::stdout().lock(), "{}| {line}", run.name);
                writeln!(log, "{line}")?;
                if boot.is_none() && line.contains(BOOTED) {
                    boot = Some(started.elapsed());
                }
                if let Some(v) = line.split_once(RESULT).map(|(_, v)| v.trim().to_owned()) {
                    verdict = Some(v);
                    deadline = deadline.min(Instant::now() + POWEROFF_GRACE);
                }
            }
            Err(RecvTimeoutError::Timeout) => break true,
            // Both pipes closed: qemu has exited.
            Err(RecvTimeoutError::Disconnected) => break false,
        }
    };
    qemu.kill();
    let total = started.elapsed();

    let outcome = match verdict.as_deref() {
        Some("PASS") => Outcome::Pass,
        Some(v) => Outcome::Fail(v.trim_start_matches("FAIL").trim().to_owned()),
        None if timed_out => Outcome::Timeout,
        None => Outcome::NoMarker,
    };
    if timed_out && verdict.is_some() {
        eprintln!("vm-test: {}: the guest did not power off; killed", run.name);
    }
    Ok(Report {
        outcome,
        boot,
        total,
    })
}

/// Sends each line of `pipe`, made printable, to `tx`.
fn forward_lines(pipe: impl Read + Send + 'static, tx: mpsc::Sender<String>) {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
            if tx.send(printable(&String::from_utf8_lossy(&buf))).is_err() {
                break;
            }
            buf.clear();
        }
    });
}

/// `line` without control characters and escape sequences: the firmware resets the terminal
/// and turns off line wrapping, which must not reach the user's terminal; and without the
/// serial console's "\r\n" line ends.
fn printable(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            // ESC [ params final-byte (CSI), or ESC + one character.
            '\x1b' => {
                if chars.next() == Some('[') {
                    while chars.next().is_some_and(|c| !('@'..='~').contains(&c)) {}
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Kills qemu when dropped, so no early return leaves it running.
struct Guard(Child);

impl Guard {
    fn kill(&mut self) {
        // Fails only if qemu already exited, which is what we want.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}
