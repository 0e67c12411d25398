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

use fault_args::{FaultCmd, NoCommand};
use print::{print_fault, print_json, print_policy, print_table, summary_of};
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
    proto::{
        ErrorBody, ErrorCode, FaultId, FaultList, FaultView, Hello, Plan, Renew, Request, Response,
        Revoked, WatchLine,
    },
};
use nix::sys::signal::{SigSet, Signal};
use serde::Serialize;

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
                print_json(&Failure::of(&e));
            }
            eprintln!("faultctl: {e}");
            ExitCode::from(code)
        }
    }
}

/// What `--json` prints when faultctl fails: faultd's refusal as it came, or what went wrong
/// on this side under the code `client_error`.
#[derive(Serialize)]
struct Failure {
    ok: bool,
    error: FailureBody,
}

#[derive(Serialize)]
#[serde(untagged)]
enum FailureBody {
    Refused(ErrorBody),
    Client { code: &'static str, message: String },
}

impl Failure {
    fn of(error: &ClientError) -> Failure {
        let error = match error {
            ClientError::Rejected(body) => FailureBody::Refused(body.clone()),
            other => FailureBody::Client {
                code: "client_error",
                message: other.to_string(),
            },
        };
        Failure { ok: false, error }
    }
}

/// The answer faultd must give to `request`; any other is a protocol error.
macro_rules! answer {
    ($client:expr, $request:expr, $shape:path) => {{
        let request = $request;
        match $client.call(&request)? {
            $shape(answer) => answer,
            other => return Err(unexpected(&request, &other)),
        }
    }};
}
pub(crate) use answer;

pub(crate) fn unexpected(request: &Request, answer: &Response) -> ClientError {
    ClientError::Protocol(format!(
        "faultd answered {} with {answer:?}",
        request.op().as_str()
    ))
}

/// Runs the command; the exit code is 0 but for `run`, which exits with its command's.
fn execute(cli: &Cli, client: &mut Client) -> Result<u8, ClientError> {
    let fault_id = |id: &str| FaultId {
        fault_id: id.to_owned(),
    };
    match &cli.command {
        Cmd::Run(args) => return run::run(cli, client, args),
        Cmd::Completions { .. } | Cmd::Man { .. } => unreachable!("answered before connecting"),
        Cmd::Fault(fault) => apply(cli, client, fault)?,
        Cmd::Ls => {
            let list: FaultList = answer!(client, Request::List, Response::Faults);
            if cli.json {
                print_json(&list);
            } else {
                print_table(&list.faults);
            }
        }
        Cmd::Show { fault_id: id } => {
            let view = answer!(client, Request::Get(fault_id(id)), Response::Fault);
            print_fault(cli, &view);
        }
        Cmd::Rm { fault_id: id } => {
            let view = answer!(client, Request::Revoke(fault_id(id)), Response::Fault);
            print_fault(cli, &view);
        }
        Cmd::Renew { fault_id, duration } => {
            let request = Request::Renew(Renew {
                fault_id: fault_id.clone(),
                duration: duration.clone(),
            });
            let view = answer!(client, request, Response::Fault);
            print_fault(cli, &view);
        }
        Cmd::Clear => {
            let cleared: Revoked = answer!(client, Request::Clear, Response::Revoked);
            if cli.json {
                print_json(&cleared);
            } else {
                println!("revoked {} fault(s)", cleared.revoked.len());
            }
        }
        Cmd::Watch => {
            answer!(client, Request::Watch, Response::Watching);
            while let Some(line) = client.next_event()? {
                match line {
                    line if cli.json => print_json(&line),
                    WatchLine::Event(event) => println!(
                        "{} {} {} {}",
                        json_name(&event.event),
                        event.fault.id,
                        summary_of(&event.fault.fault),
                        event.message.as_deref().unwrap_or("")
                    ),
                    WatchLine::Lagged(lagged) => {
                        println!("lagged: {} events missed", lagged.missed)
                    }
                }
            }
        }
        Cmd::Metrics => {
            let metrics = answer!(client, Request::Metrics, Response::Metrics);
            if cli.json {
                print_json(&metrics);
            } else {
                print!("{}", metrics::render(&metrics));
            }
        }
        Cmd::Status => {
            let hello = answer!(client, Request::Hello, Response::Hello);
            if cli.json {
                print_json(&hello);
            } else {
                print_status(&hello);
            }
        }
    }
    Ok(0)
}

/// An enum as the wire names it (`applied`, `expired`).
fn json_name(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => "?".to_owned(),
    }
}

fn print_status(hello: &Hello) {
    println!("faultd {} (protocol {})", hello.version, hello.protocol);
    println!("kernel        {}", hello.kernel);
    println!("capabilities  (what this kernel showed it can do, at faultd's start)");
    for (name, found) in &hello.capabilities {
        match &found.missing {
            None if found.available => println!("  {name:<31} yes"),
            missing => println!("  {name:<31} no: {}", missing.as_deref().unwrap_or("?")),
        }
    }
    let limits = &hello.limits;
    println!(
        "limits        max_duration {}, default_duration {}, max_faults {}, max_line_bytes {}",
        limits.max_duration,
        limits.default_duration.as_deref().unwrap_or("none"),
        limits.max_faults,
        limits.max_line_bytes
    );
    println!("active faults {}", hello.active_faults);
    print_policy(&hello.policy);
}

fn apply(cli: &Cli, client: &mut Client, fault: &FaultCmd<NoCommand>) -> Result<(), ClientError> {
    let request = fault.apply_request();
    if request.dry_run {
        let plan = answer!(client, Request::Apply(request), Response::Plan);
        print_plan(cli, &plan);
        return Ok(());
    }
    // Taken before the apply, so that no signal can end faultctl between the apply and the hold.
    let signals = request.lease.map(|_| stop_signals()).transpose()?;
    let view = answer!(client, Request::Apply(request), Response::Fault);
    // A `key` replay returns the fault applied earlier, which this connection may not hold.
    let held = view.lease.is_some();
    print_applied(cli, &view);
    match signals {
        Some(_) if !held => {
            eprintln!(
                "faultctl: {} already existed without a lease; not holding it",
                view.id
            );
            Ok(())
        }
        Some(signals) => hold(cli, client, &view.id, &signals),
        None => Ok(()),
    }
}

/// A dry run's answer: the fault as faultd would apply it, and the kernel objects it would use.
fn print_plan(cli: &Cli, plan: &Plan) {
    if cli.json {
        print_json(plan);
        return;
    }
    println!(
        "dry run: would apply {} for {}; nothing was changed",
        summary_of(&plan.fault),
        plan.fault.duration.as_deref().unwrap_or("?")
    );
    for object in &plan.objects {
        let state = if object.exists { "exists" } else { "create" };
        println!("  {state:<7} {:<12} {}", object.kind, object.name);
    }
}

/// "applied f1a2b3c4d partition ... for 30s", or the JSON.
fn print_applied(cli: &Cli, view: &FaultView) {
    if cli.json {
        print_json(view);
    } else {
        println!(
            "applied {} {} for {}",
            view.id,
            summary_of(&view.fault),
            view.fault.duration.as_deref().unwrap_or_default()
        );
    }
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
    let this = || FaultId {
        fault_id: id.to_owned(),
    };
    loop {
        match signals.recv_timeout(LEASE_POLL) {
            Ok(signal) => {
                return match client.call(&Request::Revoke(this())) {
                    Ok(Response::Fault(view)) => {
                        if !cli.json {
                            println!("{signal}: revoked {id}");
                        }
                        print_fault(cli, &view);
                        Ok(())
                    }
                    Ok(other) => Err(unexpected(&Request::Revoke(this()), &other)),
                    Err(e) if not_found(&e) => Ok(()),
                    Err(e) => Err(e),
                };
            }
            Err(RecvTimeoutError::Timeout) => {}
            // The signal thread could not wait (it cannot fail on a valid set): poll on.
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(LEASE_POLL),
        }
        match client.call(&Request::Get(this())) {
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
