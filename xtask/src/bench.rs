//! `cargo xtask bench`: installs what the benchmarks compare with (iperf3, iptables, nft),
//! builds faultd and the bench in release, and runs it in a lab of network namespaces. It
//! writes bench/results.json and bench/RESULTS.md. Not part of the test command.

use std::{path::Path, process::Command, time::Instant};

use anyhow::{bail, Context, Result};

use crate::vm::apt;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Fewer samples and shorter runs (about 3 minutes), for a check that it all works.
    #[arg(long)]
    quick: bool,
    /// Only these sections: control, datapath, fidelity (comma-separated).
    #[arg(long)]
    only: Option<String>,
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
    let mut run = Command::new(release.join("faultline-bench"));
    run.current_dir(root)
        .env("FAULTLINE_BIN_DIR", &release)
        // Per-fault logging would time the log file, not faultd.
        .env("FAULTD_LOG", "warn")
        .args(["--out", &args.out]);
    if args.quick {
        run.arg("--quick");
    }
    if let Some(only) = &args.only {
        run.args(["--only", only]);
    }
    let status = run.status().context("spawn faultline-bench")?;
    if !status.success() {
        bail!("faultline-bench failed ({status})");
    }
    println!("bench: done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
