//! `cargo xtask vm-test`: the test suites inside qemu guests booting the kernels of
//! [`kernel::KERNELS`], each from an initramfs holding the tests, the host's tools and the
//! kernel's qdisc modules.

pub mod apt;
mod cpio;
mod debian;
mod guest;
pub mod kernel;
mod qemu;
mod suite;

use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::builder::PossibleValuesParser;

use kernel::KERNELS;
use qemu::Outcome;

#[derive(clap::Args)]
pub struct VmTestArgs {
    /// Boot only this kernel of the matrix; repeat for several (default: all of them, one
    /// after the other)
    #[arg(long, value_parser = PossibleValuesParser::new(KERNELS.iter().map(|k| k.name)))]
    kernel: Vec<String>,
    /// Run only tests whose name contains STR (passed on to every test binary); repeat for
    /// several, a test runs when its name contains any of them
    #[arg(long, value_name = "STR")]
    filter: Vec<String>,
    /// Tests each test binary runs at once. 1 by default: under TCG, 2 broke the deadline
    /// tests' timing in 4 of 5 runs (1 in 13 runs with 1, while the host was busy)
    #[arg(long, default_value_t = 1, value_name = "N")]
    test_threads: u32,
    /// Limit per kernel for boot plus tests; qemu is killed when it is reached (e.g. 900, 90s, 20m)
    #[arg(long, default_value = "20m", value_parser = parse_duration)]
    timeout: Duration,
}

pub fn vm_test(args: &VmTestArgs) -> Result<()> {
    let started = Instant::now();
    let kernels: Vec<_> = KERNELS
        .iter()
        .filter(|k| args.kernel.is_empty() || args.kernel.iter().any(|name| name == k.name))
        .collect();

    apt::ensure_host_tools()?;
    let vm_dir = suite::target_dir()?.join("vm");
    let _lock = lock(&vm_dir)?;
    let build_started = Instant::now();
    let suite = suite::build(&vm_dir)?;
    println!(
        "vm-test: built in {:.1}s",
        build_started.elapsed().as_secs_f64()
    );
    let accel = qemu::Accel::detect();
    println!("vm-test: accelerator {accel}");
    let mut archive = debian::Archive::new(&vm_dir.join("apt"))?;

    let mut failed = Vec::new();
    for k in kernels {
        let dir = vm_dir.join(k.name);
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let image = kernel::prepare(k, &vm_dir.join("cache"), &mut archive)?;
        let initrd = dir.join("initramfs.cpio");
        let mut test_args = vec![format!("--test-threads={}", args.test_threads)];
        test_args.extend(args.filter.clone());
        let packed = Instant::now();
        guest::write_initramfs(
            &initrd,
            &suite,
            &image.modules,
            guest::RUN_TESTS,
            &test_args,
        )?;
        let size = fs::metadata(&initrd)?.len();
        println!(
            "vm-test: {}: initramfs {} MB in {:.1}s",
            k.name,
            size >> 20,
            packed.elapsed().as_secs_f64()
        );

        let run = qemu::Run {
            name: k.name,
            vmlinuz: image.vmlinuz,
            initrd,
            console_log: dir.join("console.log"),
            timeout: args.timeout,
            accel,
        };
        let report = qemu::run(&run)?;
        let boot = report
            .boot
            .map_or("never".to_owned(), |t| format!("{:.1}s", t.as_secs_f64()));
        println!(
            "vm-test: {}: {} (boot {boot}, total {:.1}s; log {})",
            k.name,
            report.outcome,
            report.total.as_secs_f64(),
            run.console_log.display()
        );
        if report.outcome != Outcome::Pass {
            failed.push(k.name);
        }
    }

    println!("vm-test: wall time {:.1}s", started.elapsed().as_secs_f64());
    if !failed.is_empty() {
        bail!("vm-test failed on: {}", failed.join(", "));
    }
    Ok(())
}

/// The benchmark's netem section in a guest on the matrix's first kernel: boots the release
/// binaries in `release_dir` with `bench_args`, and returns the results file the guest printed.
pub fn bench(release_dir: &Path, kernel: Option<&str>, bench_args: &[String]) -> Result<String> {
    const RESULTS: &str = "FAULTLINE-BENCH-RESULTS:";
    apt::ensure_host_tools()?;
    let vm_dir = suite::target_dir()?.join("vm");
    let _lock = lock(&vm_dir)?;
    let k = match kernel {
        Some(name) => KERNELS.iter().find(|k| k.name == name),
        None => KERNELS.first(),
    }
    .context("no such kernel in the matrix")?;
    let dir = vm_dir.join(k.name);
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let mut archive = debian::Archive::new(&vm_dir.join("apt"))?;
    let image = kernel::prepare(k, &vm_dir.join("cache"), &mut archive)?;
    let suite = suite::Suite {
        bins: ["faultd", "faultctl", "faultline-bench"]
            .iter()
            .map(|b| release_dir.join(b))
            .collect(),
        tests: Vec::new(),
    };
    let initrd = dir.join("bench-initramfs.cpio");
    guest::write_initramfs(
        &initrd,
        &suite,
        &image.modules,
        guest::RUN_BENCH,
        bench_args,
    )?;
    let run = qemu::Run {
        name: k.name,
        vmlinuz: image.vmlinuz,
        initrd,
        console_log: dir.join("bench-console.log"),
        timeout: Duration::from_secs(20 * 60),
        accel: qemu::Accel::detect(),
    };
    let report = qemu::run(&run)?;
    if report.outcome != Outcome::Pass {
        bail!(
            "the benchmark in the VM: {} (log {})",
            report.outcome,
            run.console_log.display()
        );
    }
    let log = fs::read_to_string(&run.console_log)?;
    log.lines()
        .find_map(|l| {
            l.split_once(RESULTS)
                .map(|(_, json)| json.trim().to_owned())
        })
        .with_context(|| format!("no results in {}", run.console_log.display()))
}

/// Holds target/vm for this run: a second run at the same time would rewrite the initramfs
/// under the first one's guest (seen: the guest died without a verdict). Released on exit.
fn lock(vm_dir: &Path) -> Result<File> {
    fs::create_dir_all(vm_dir).with_context(|| format!("create {}", vm_dir.display()))?;
    let path = vm_dir.join("lock");
    let file = File::create(&path).with_context(|| format!("create {}", path.display()))?;
    if let Err(TryLockError::WouldBlock) = file.try_lock() {
        println!(
            "vm-test: waiting for another vm-test run ({})",
            path.display()
        );
        file.lock()?;
    }
    Ok(file)
}

/// "90", "90s", "20m" or "1h".
fn parse_duration(s: &str) -> Result<Duration> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .with_context(|| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => bail!("bad duration {s:?}: use a number of seconds, or a suffix s, m or h"),
    };
    Ok(Duration::from_secs(secs))
}

/// `prog` found in `dirs`, in order (a lookup independent of the caller's PATH).
fn find_in(dirs: &[&str], prog: &str) -> Option<PathBuf> {
    dirs.iter()
        .map(|d| PathBuf::from(d).join(prog))
        .find(|p| p.is_file())
}

/// Where the host looks for commands; also the guest's PATH, before busybox.
const SYSTEM_PATH: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];
