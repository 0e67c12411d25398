//! `cargo xtask bench`: installs what the benchmarks compare with (iperf3, iptables, nft),
//! builds faultd and the bench in release, and runs it in a lab of network namespaces. It
//! writes bench/results.json and bench/RESULTS.md. With `--vm`, delay faults are measured too,
//! in a VM booted on a kernel with netem (bench/vm-results.json). Not part of the test command.

use std::{fs, path::Path, process::Command, time::Instant};

use anyhow::{bail, Context, Result};

use clap::builder::PossibleValuesParser;

use crate::vm::{apt, kernel::KERNELS};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Fewer samples and shorter runs (about 3 minutes), for a check that it all works.
    #[arg(long)]
    quick: bool,
    /// Only these sections: control, datapath, actions, fidelity, vm (comma-separated).
    #[arg(long)]
    only: Option<String>,
    /// Also measure delay faults (netem) in a VM, as `cargo xtask vm-test` boots one.
    #[arg(long)]
    vm: bool,
    /// The VM's kernel (default: the oldest of the matrix, where attaching costs the most).
    #[arg(long, value_parser = PossibleValuesParser::new(KERNELS.iter().map(|k| k.name)))]
    vm_kernel: Option<String>,
    /// Where to write results.json and RESULTS.md.
    #[arg(long, default_value = "bench")]
    out: String,
}

const TOOLS: &[(&str, &str)] = &[
    ("iperf3", "iperf3"),
    ("iptables-legacy", "iptables"),
    ("nft", "nftables"),
    ("nsenter", "util-linux"),
];

pub fn bench(args: &BenchArgs) -> Result<()> {
    apt::ensure_tools(TOOLS)?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask lives in the workspace")?;
    let started = Instant::now();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--workspace",
            "--exclude",
            "xtask",
            "--bins",
        ])
        .current_dir(root)
        .status()
        .context("spawn cargo build")?;
    if !built.success() {
        bail!("cargo build --release failed");
    }
    let release = root.join("target/release");
    let sections: Vec<&str> = match &args.only {
        Some(only) => only.split(',').collect(),
        None if args.vm => vec!["control", "datapath", "actions", "fidelity", "vm"],
        None => vec!["control", "datapath", "actions", "fidelity"],
    };
    let host: Vec<&str> = sections.iter().copied().filter(|s| *s != "vm").collect();
    let bench = |extra: &[&str]| {
        let mut run = Command::new(release.join("faultline-bench"));
        run.current_dir(root)
            .env("FAULTLINE_BIN_DIR", &release)
            // Per-fault logging would time the log file, not faultd.
            .env("FAULTD_LOG", "warn")
            .args(["--out", &args.out])
            .args(extra);
        let status = run.status().context("spawn faultline-bench")?;
        if !status.success() {
            bail!("faultline-bench failed ({status})");
        }
        Ok(())
    };
    if !host.is_empty() {
        let only = host.join(",");
        let mut extra = vec!["--only", &only];
        if args.quick {
            extra.push("--quick");
        }
        bench(&extra)?;
    }
    if sections.contains(&"vm") {
        let mut guest_args = vec!["--only".to_owned(), "netem".to_owned()];
        if args.quick {
            guest_args.push("--quick".into());
        }
        let results = crate::vm::bench(&release, args.vm_kernel.as_deref(), &guest_args)?;
        let results: serde_json::Value =
            serde_json::from_str(&results).context("the guest's results")?;
        let out = root.join(&args.out);
        fs::create_dir_all(&out)?;
        fs::write(
            out.join("vm-results.json"),
            serde_json::to_string_pretty(&results)? + "\n",
        )?;
        bench(&["--render"])?;
    }
    println!("bench: done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
