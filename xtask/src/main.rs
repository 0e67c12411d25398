//! Project automation, run as `cargo xtask <command>` (alias in .cargo/config.toml).

mod bench;
mod man;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "faultline project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the unit tests and the privileged suite inside a VM for each kernel of the matrix.
    ///
    /// The host kernel lacks netem and fq and cannot load modules, so latency faults can only
    /// be tested on a kernel we boot ourselves (qemu, TCG). Needs apt for the first run.
    VmTest(vm::VmTestArgs),
    /// Benchmarks faultd side by side with tc, iptables and nft (bench/RESULTS.md).
    Bench(bench::BenchArgs),
    /// Writes faultctl's man pages (target/man by default).
    Man(man::ManArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::VmTest(args) => vm::vm_test(&args),
        Command::Bench(args) => bench::bench(&args),
        Command::Man(args) => man::man(&args),
    }
}
