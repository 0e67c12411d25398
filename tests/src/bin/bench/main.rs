//! faultline-bench: what `cargo xtask bench` runs (the xtask builds faultd in release first and
//! points `FAULTLINE_BIN_DIR` at it). Measures faultd side by side with tc, iptables and nft in
//! a lab of network namespaces, and writes bench/results.json and bench/RESULTS.md.
//!
//! `faultline-bench [--quick] [--out DIR] [--only control,datapath,actions,fidelity,netem] [--render]`
//!
//! The netem section needs a kernel with sch_netem, so it runs only when named: `cargo xtask
//! bench --vm` runs it in a guest, which prints its results for the host to keep.
//! `--render` only rewrites RESULTS.md from the results files in DIR.

mod actions;
mod control;
mod datapath;
mod fidelity;
mod netem;
mod profile;
mod report;

use std::{path::PathBuf, process::ExitCode};

use serde_json::json;

fn main() -> ExitCode {
    let mut quick = false;
    let mut out = PathBuf::from("bench");
    let mut only: Option<Vec<String>> = None;
    let mut render_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--render" => render_only = true,
            "--out" => out = args.next().map(PathBuf::from).unwrap_or(out),
            "--only" => {
                only = args
                    .next()
                    .map(|s| s.split(',').map(String::from).collect())
            }
            other => {
                eprintln!("faultline-bench: unknown argument {other:?}\nusage: faultline-bench [--quick] [--out DIR] [--only control,datapath,actions,fidelity,netem] [--render]");
                return ExitCode::from(2);
            }
        }
    }
    if render_only {
        return match report::render(&out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("faultline-bench: rendering {}: {e}", out.display());
                ExitCode::FAILURE
            }
        };
    }
    let wanted = |section: &str| match &only {
        Some(only) => only.iter().any(|s| s == section),
        None => section != "netem",
    };
    let mut figures = Vec::new();
    let mut faultd_pid = None;
    if wanted("control") {
        eprintln!("bench: control plane");
        figures.extend(control::run(quick, &mut faultd_pid));
    }
    if wanted("datapath") {
        eprintln!("bench: datapath");
        figures.extend(datapath::run(quick));
    }
    if wanted("actions") {
        eprintln!("bench: actions");
        figures.extend(actions::run(quick));
    }
    if wanted("fidelity") {
        eprintln!("bench: fidelity");
        figures.extend(fidelity::run(quick));
    }
    if wanted("netem") {
        eprintln!("bench: netem");
        figures.extend(netem::run(quick));
    }
    let machine = machine(quick);
    if let Err(e) = report::write(&out, report::RESULTS, &machine, &figures) {
        eprintln!("faultline-bench: writing {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    let missed: Vec<&str> = figures
        .iter()
        .filter(|f| f.target.as_ref().is_some_and(|(_, met)| !met))
        .map(|f| f.name.as_str())
        .collect();
    eprintln!(
        "bench: wrote {}/RESULTS.md and results.json; {} figures, targets missed: {}",
        out.display(),
        figures.len(),
        if missed.is_empty() {
            "none".into()
        } else {
            missed.join("; ")
        }
    );
    ExitCode::SUCCESS
}

fn machine(quick: bool) -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    json!({
        "date": date,
        "kernel": kernel,
        "cpu": cpu,
        "cpus": std::thread::available_parallelism().map(usize::from).unwrap_or(1),
        "faultd": env!("CARGO_PKG_VERSION"),
        "quick": quick,
        // Set by `cargo xtask bench --vm` when the guest runs under TCG.
        "emulated": std::fs::read_to_string("/proc/cmdline")
            .is_ok_and(|c| c.split_whitespace().any(|w| w == "faultline.emulated=1")),
    })
}
