//! faultctl: the operator's and drill script's client for faultd.
//!
//! Exit codes (stable, for scripts): 0 success; 1 an unexpected error; 2 a usage error;
//! 3 faultd refused the request (`forbidden` included); 4 faultd cannot be reached or is busy,
//! so trying again later may succeed.

mod fault_args;
mod netem_args;
mod print;
mod run;
mod ssh;

use fault_args::{FaultCmd, LeaseArg, NoCommand};
use print::{parse, print_fault, print_policy, print_table, summary_of};
use run::RunArgs;

use std::{
    io,
    path::PathBuf,
    process::ExitCode,
    sync::mpsc::{self, RecvTimeoutError},
    time::Duration,
};

use clap::{CommandFactory, Parser, Subcommand};
use faultline::{
    control::{
        client::{Client, ClientError},
        metrics, DEFAULT_SOCKET,
    },
    proto::{ErrorCode, FaultView, Plan},
};
use nix::sys::signal::{SigSet, Signal};
use serde_json::{json, Value};

pub(crate) const EXIT_ERROR: u8 = 1;
const EXIT_REJECTED: u8 = 3;
const EXIT_UNREACHABLE: u8 = 4;

/// How often a faultctl holding a leased fault checks that the fault is still active.
const LEASE_POLL: Duration = Duration::from_millis(200);

/// Inject network faults through faultd.
#[derive(Debug, Parser)]
#[command(
    name = "faultctl",
    version,
    after_help = "Exit codes: 0 ok, 1 error, 2 usage, 3 refused by faultd (e.g. forbidden), \
                  4 faultd unreachable or busy (try again later); `run` exits with its \
                  command's status, or 5 when its probe rolled the fault back."
)]
struct Cli {
    /// faultd's socket.
    #[arg(long, global = true, env = "FAULTLINE_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print the protocol's JSON results instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Drive the faultd of a remote host, through `ssh -L` to its --socket (no network
    /// listener needed there). The ssh program is `ssh`, or $FAULTLINE_SSH.
    #[arg(long, global = true, value_name = "[USER@]HOST")]
    ssh: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    #[command(flatten)]
    Fault(FaultCmd<NoCommand>),
    /// Apply a fault, run CMD under it, and revoke it when CMD exits (or on SIGINT/SIGTERM);
    /// exits with CMD's status. `--probe` rolls the fault back when the steady state breaks.
    Run(RunArgs),
    /// List active faults.
    #[command(alias = "list")]
    Ls,
    /// Show one fault with its counters.
    Show { fault_id: String },
    /// Revoke one fault.
    #[command(alias = "revoke")]
    Rm { fault_id: String },
    /// Give a fault DURATION from now (within faultd's maximum), e.g. `renew f1a2b3c4d 30s`.
    Renew { fault_id: String, duration: String },
    /// Revoke every fault (the kill switch).
    Clear,
    /// Print events (applied, expired, revoked, error) as they happen.
    Watch,
    /// Show the agent's version, kernel features, limits and the policy in force.
    Status,
    /// Print a shell completion script, e.g. `faultctl completions bash > /etc/bash_completion.d/faultctl`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (faultctl.1 and one per subcommand) into DIR (`cargo xtask man`).
    #[command(hide = true)]
    Man { dir: PathBuf },
    /// Print Prometheus text metrics: active faults, requests by op and outcome, and each
    /// fault's counters (`--json`: the protocol's `metrics` result).
    Metrics,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // These two need no faultd.
    match &cli.command {
        Cmd::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "faultctl", &mut io::stdout());
            return ExitCode::SUCCESS;
        }
        Cmd::Man { dir } => {
            return match clap_mangen::generate_to(Cli::command(), dir) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("faultctl: writing man pages to {}: {e}", dir.display());
                    ExitCode::from(EXIT_ERROR)
                }
            };
        }
        _ => {}
    }
    // Held until faultctl is done: the connection (and any lease) lives on it.
    let tunnel = match &cli.ssh {
        Some(destination) => ssh::Tunnel::open(destination, &cli.socket).map(Some),
        None => Ok(None),
    };
    let outcome = tunnel.and_then(|tunnel| {
        let socket = tunnel
            .as_ref()
            .map_or(cli.socket.as_path(), ssh::Tunnel::socket);
        Client::connect(socket).and_then(|mut client| execute(&cli, &mut client))
    });
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = match &e {
                ClientError::Connect { .. } => EXIT_UNREACHABLE,
                // Too many connections or idle too long: a retry later may be served.
                ClientError::Rejected(body) if body.code == ErrorCode::Busy => EXIT_UNREACHABLE,
                ClientError::Rejected(_) => EXIT_REJECTED,
                ClientError::Io(_) | ClientError::Protocol(_) => EXIT_ERROR,
            };
            if cli.json {
                let error = match &e {
                    ClientError::Rejected(body) => json!(body),
                    other => json!({"code": "client_error", "message": other.to_string()}),
                };
                println!("{}", json!({"ok": false, "error": error}));
            }
            eprintln!("faultctl: {e}");
            ExitCode::from(code)
        }
    }
}

/// Runs the command; the exit code is 0 but for `run`, which exits with its command's.
fn execute(cli: &Cli, client: &mut Client) -> Result<u8, ClientError> {
    let done = match &cli.command {
        Cmd::Run(args) => return run::run(cli, client, args),
        Cmd::Completions { .. } | Cmd::Man { .. } => unreachable!("answered before connecting"),
        Cmd::Fault(fault) => apply(cli, client, fault),
        Cmd::Ls => {
            let result = client.request("list", json!({}))?;
            if cli.json {
                println!("{result}");
            } else {
                let faults: Vec<FaultView> =
                    parse(result.get("faults").cloned().unwrap_or_default())?;
                print_table(&faults);
            }
            Ok(())
        }
        Cmd::Show { fault_id } => {
            let result = client.request("get", json!({"fault_id": fault_id}))?;
            print_fault(cli, result)
        }
        Cmd::Rm { fault_id } => {
            let result = client.request("revoke", json!({"fault_id": fault_id}))?;
            print_fault(cli, result)
        }
        Cmd::Renew { fault_id, duration } => {
            let result =
                client.request("renew", json!({"fault_id": fault_id, "duration": duration}))?;
            print_fault(cli, result)
        }
        Cmd::Clear => {
            let result = client.request("clear", json!({}))?;
            if cli.json {
                println!("{result}");
            } else {
                let faults: Vec<FaultView> =
                    parse(result.get("revoked").cloned().unwrap_or_default())?;
                println!("revoked {} fault(s)", faults.len());
            }
            Ok(())
        }
        Cmd::Watch => {
            client.request("watch", json!({}))?;
            while let Some(event) = client.next_line()? {
                if cli.json {
                    println!("{event}");
                } else {
                    let fault = &event["fault"];
                    println!(
                        "{} {} {} {}",
                        event["event"].as_str().unwrap_or("?"),
                        fault["id"].as_str().unwrap_or("?"),
                        summary_of(fault),
                        event["message"].as_str().unwrap_or("")
                    );
                }
            }
            Ok(())
        }
        Cmd::Metrics => {
            let result = client.request("metrics", json!({}))?;
            if cli.json {
                println!("{result}");
            } else {
                print!("{}", metrics::render(&parse(result)?));
            }
            Ok(())
        }
        Cmd::Status => {
            let result = client.request("hello", json!({}))?;
            if cli.json {
                println!("{result}");
            } else {
                println!(
                    "faultd {} (protocol {})",
                    result["version"].as_str().unwrap_or("?"),
                    result["protocol"]
                );
                println!("kernel        {}", result["kernel"].as_str().unwrap_or("?"));
                println!("capabilities  (what this kernel showed it can do, at faultd's start)");
                if let Some(found) = result["capabilities"].as_object() {
                    for (name, found) in found {
                        match found["missing"].as_str() {
                            None => println!("  {name:<31} yes"),
                            Some(missing) => println!("  {name:<31} no: {missing}"),
                        }
                    }
                }
                println!("limits        {}", result["limits"]);
                println!("active faults {}", result["active_faults"]);
                print_policy(&result["policy"]);
            }
            Ok(())
        }
    };
    done.map(|()| 0)
}

fn apply(cli: &Cli, client: &mut Client, fault: &FaultCmd<NoCommand>) -> Result<(), ClientError> {
    let mut args = fault.apply_args();
    if fault.common().dry_run {
        return print_plan(cli, client.request("apply", args)?);
    }
    // Taken before the apply, so that no signal can end faultctl between the apply and the hold.
    let signals = match fault.common().lease {
        Some(LeaseArg::Connection) => {
            args["lease"] = json!("connection");
            Some(stop_signals()?)
        }
        None => None,
    };
    let result = client.request("apply", args)?;
    let id = result["id"].as_str().unwrap_or_default().to_owned();
    // A `key` replay returns the fault applied earlier, which this connection may not hold.
    let held = result["lease"] == "connection";
    print_applied(cli, result)?;
    match signals {
        Some(_) if !held => {
            eprintln!("faultctl: {id} already existed without a lease; not holding it");
            Ok(())
        }
        Some(signals) => hold(cli, client, &id, &signals),
        None => Ok(()),
    }
}

/// A dry run's answer: the fault as faultd would apply it, and the kernel objects it would use.
fn print_plan(cli: &Cli, result: Value) -> Result<(), ClientError> {
    if cli.json {
        println!("{result}");
        return Ok(());
    }
    let plan: Plan = parse(result)?;
    println!(
        "dry run: would apply {} for {}; nothing was changed",
        summary_of(&json!(plan.fault)),
        plan.fault.duration.as_deref().unwrap_or("?")
    );
    for object in &plan.objects {
        let state = if object.exists { "exists" } else { "create" };
        println!("  {state:<7} {:<12} {}", object.kind, object.name);
    }
    Ok(())
}

/// "applied f1a2b3c4d partition ... for 30s", or the JSON.
fn print_applied(cli: &Cli, result: Value) -> Result<(), ClientError> {
    if cli.json {
        println!("{result}");
    } else {
        let view: FaultView = parse(result)?;
        println!(
            "applied {} {} for {}",
            view.id,
            summary_of(&json!(view.fault)),
            view.fault.duration.unwrap_or_default()
        );
    }
    Ok(())
}

/// SIGINT and SIGTERM, blocked in this thread (and the threads it starts later) and delivered
/// on a channel instead of ending the process.
fn stop_signals() -> Result<mpsc::Receiver<Signal>, ClientError> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block().map_err(io::Error::from)?;
    let (sender, receiver) = mpsc::channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            while let Ok(signal) = set.wait() {
                if sender.send(signal).is_err() {
                    return;
                }
            }
        })?;
    Ok(receiver)
}

/// Keeps the connection, and with it a leased fault, until the fault ends or a signal comes.
/// faultd would revoke the fault anyway when the connection closes; the explicit revoke on a
/// signal reports the final counters and leaves nothing to the order of events in faultd.
fn hold(
    cli: &Cli,
    client: &mut Client,
    id: &str,
    signals: &mpsc::Receiver<Signal>,
) -> Result<(), ClientError> {
    if !cli.json {
        eprintln!("faultctl: holding {id} until it ends; Ctrl-C revokes it");
    }
    let not_found =
        |e: &ClientError| matches!(e, ClientError::Rejected(b) if b.code == ErrorCode::NotFound);
    loop {
        match signals.recv_timeout(LEASE_POLL) {
            Ok(signal) => {
                return match client.request("revoke", json!({"fault_id": id})) {
                    Ok(view) => {
                        if !cli.json {
                            println!("{signal}: revoked {id}");
                        }
                        print_fault(cli, view)
                    }
                    Err(e) if not_found(&e) => Ok(()),
                    Err(e) => Err(e),
                };
            }
            Err(RecvTimeoutError::Timeout) => {}
            // The signal thread could not wait (it cannot fail on a valid set): poll on.
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(LEASE_POLL),
        }
        match client.request("get", json!({"fault_id": id})) {
            Ok(_) => {}
            Err(e) if not_found(&e) => {
                if !cli.json {
                    println!("{id} has ended");
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
}
