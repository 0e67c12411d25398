//! `faultctl run`: a fault for the lifetime of a command (the runbooks' chaos context). The
//! fault is leased to faultctl's connection and bounded by its duration, so it ends with
//! the command, with a signal, with a failing steady-state probe, or with faultctl itself.

use std::{
    os::unix::process::CommandExt,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use clap::Args;
use faultline::{
    control::client::{Client, ClientError},
    fault::values::parse_duration,
    proto::{ErrorCode, FaultId, FaultView, Lease, Request, Response},
};
use nix::{
    sys::signal::{kill, SigSet},
    unistd::Pid,
};
use serde::Serialize;

use super::{
    answer, fault_args::FaultCmd, print::print_json, print_applied, print_fault, print_plan,
    stop_signals, unexpected, Cli, EXIT_ERROR,
};

/// `run`'s exit code when the probe rolled the fault back (documented with the others).
pub(crate) const EXIT_ROLLED_BACK: u8 = 5;
/// As shells report a command that cannot be found or run.
const EXIT_CANNOT_RUN: u8 = 127;
/// How often the command, signals and probe results are looked at.
const TICK: Duration = Duration::from_millis(20);

#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes: CMD's own (128+N if a signal N ended it); 5 when the probe \
                        rolled the fault back; 127 when CMD cannot be run; otherwise faultctl's \
                        (1 error, 2 usage, 3 refused, 4 unreachable), before CMD starts."
)]
pub(crate) struct RunArgs {
    #[command(subcommand)]
    fault: FaultCmd<Exec>,
    /// Steady-state probe: a shell command that exits 0 while the system is healthy. It runs
    /// every --probe-interval while CMD runs.
    #[arg(long, global = true, value_name = "SHELL-CMD")]
    probe: Option<String>,
    /// Roll the fault back (revoke it) after this many failed probes in a row.
    #[arg(long, global = true, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    abort_after: u32,
    /// Time between the starts of two probes.
    #[arg(long, global = true, default_value = "1s", value_parser = duration_arg)]
    probe_interval: Duration,
    /// A probe still running after this long has failed (and is killed).
    #[arg(long, global = true, default_value = "5s", value_parser = duration_arg)]
    probe_timeout: Duration,
}

/// What `run` runs under the fault.
#[derive(Debug, Args)]
pub(crate) struct Exec {
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

fn duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text)
        .map_err(|e| e.0)
        .and_then(|d| match d.is_zero() {
            true => Err("must be longer than zero".into()),
            false => Ok(d),
        })
}

/// Where the run is: the fault's fate so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Active,
    /// Revoked on a signal.
    Stopped,
    /// Revoked because the probe kept failing.
    RolledBack,
}

pub(crate) fn run(cli: &Cli, client: &mut Client, args: &RunArgs) -> Result<u8, ClientError> {
    let command = &args.fault.then().command;
    let mut request = args.fault.apply_request();
    if request.dry_run {
        // The plan is the answer; nothing is applied, so nothing is run.
        let plan = answer!(client, Request::Apply(request), Response::Plan);
        print_plan(cli, &plan);
        return Ok(0);
    }
    request.lease = Some(Lease::Connection);
    // Before the apply: no signal may end faultctl between the apply and the command.
    let signals = stop_signals()?;
    let applied = answer!(client, Request::Apply(request), Response::Fault);
    let id = applied.id.clone();
    print_applied(cli, &applied);

    let mut child = match unblocked(Command::new(&command[0]).args(&command[1..])).spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("faultctl: cannot run {:?}: {e}", command[0]);
            revoke(client, &id);
            return Ok(EXIT_CANNOT_RUN);
        }
    };
    let probes = args
        .probe
        .as_ref()
        .map(|probe| Probe::start(probe.clone(), args.probe_interval, args.probe_timeout));

    let mut fault = Fault::Active;
    // The fault's final view, from whichever revoke ended it.
    let mut last = None;
    let (mut failed_in_a_row, mut probes_failed, mut probes_run) = (0, 0, 0);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if let Ok(signal) = signals.try_recv() {
            // The command decides how to end; the fault ends now.
            let _ = kill(Pid::from_raw(child.id() as i32), signal);
            if fault == Fault::Active {
                eprintln!("faultctl: {signal}: revoking {id}, waiting for the command");
                last = revoke(client, &id);
                fault = Fault::Stopped;
            }
        }
        let Some(probes) = &probes else {
            thread::sleep(TICK);
            continue;
        };
        match probes.results.recv_timeout(TICK) {
            Ok(passed) => {
                probes_run += 1;
                if passed {
                    failed_in_a_row = 0;
                } else {
                    failed_in_a_row += 1;
                    probes_failed += 1;
                }
            }
            Err(RecvTimeoutError::Timeout) => continue,
            // The probe thread cannot stop on its own; should it, wait like without a probe.
            Err(RecvTimeoutError::Disconnected) => {
                thread::sleep(TICK);
                continue;
            }
        }
        if fault == Fault::Active && failed_in_a_row >= args.abort_after {
            eprintln!(
                "faultctl: steady state lost: the probe failed {failed_in_a_row} times in a row; \
                 rolling back {id}"
            );
            last = revoke(client, &id);
            fault = Fault::RolledBack;
        }
    };

    if fault == Fault::Active {
        last = revoke(client, &id);
    }
    let code = match fault {
        Fault::RolledBack => EXIT_ROLLED_BACK,
        _ => exit_code(status),
    };
    if cli.json {
        print_json(&RunReport {
            run: RunOutcome {
                command,
                exit_code: code,
                command_status: exit_code(status),
                rolled_back: fault == Fault::RolledBack,
                signalled: fault == Fault::Stopped,
                probes_run,
                probes_failed,
                fault: last,
            },
        });
    } else {
        if let Some(view) = last {
            println!("revoked {id}");
            print_fault(cli, &view);
        }
        if fault == Fault::RolledBack {
            println!("rolled back: the steady-state probe failed; exit {EXIT_ROLLED_BACK}");
        }
    }
    Ok(code)
}

/// What `run --json` prints when the command is done.
#[derive(Serialize)]
struct RunReport<'a> {
    run: RunOutcome<'a>,
}

#[derive(Serialize)]
struct RunOutcome<'a> {
    command: &'a [String],
    /// faultctl's own exit code.
    exit_code: u8,
    command_status: u8,
    rolled_back: bool,
    signalled: bool,
    probes_run: u32,
    probes_failed: u32,
    /// The fault's final view; `null` if it had ended by itself.
    fault: Option<FaultView>,
}

/// Revokes `id`; its final view, or `None` if it had already ended (at its deadline) or the
/// revoke failed. A failure is reported, not returned: the command still runs, and the fault
/// is leased, so faultd revokes it anyway when this connection closes.
fn revoke(client: &mut Client, id: &str) -> Option<FaultView> {
    let request = Request::Revoke(FaultId {
        fault_id: id.to_owned(),
    });
    match client.call(&request) {
        Ok(Response::Fault(view)) => Some(*view),
        Ok(other) => {
            eprintln!("faultctl: revoking {id}: {}", unexpected(&request, &other));
            None
        }
        Err(ClientError::Rejected(body)) if body.code == ErrorCode::NotFound => None,
        Err(e) => {
            eprintln!("faultctl: revoking {id}: {e}");
            None
        }
    }
}

fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(EXIT_ERROR),
        (None, Some(signal)) => 128u8.saturating_add(u8::try_from(signal).unwrap_or(0)),
        (None, None) => EXIT_ERROR,
    }
}

/// Runs the probe (`sh -c`) every interval on a thread of its own, reporting each outcome.
struct Probe {
    results: Receiver<bool>,
}

impl Probe {
    fn start(probe: String, interval: Duration, timeout: Duration) -> Probe {
        let (sender, results) = mpsc::channel();
        thread::spawn(move || loop {
            let started = Instant::now();
            let passed = run_probe(&probe, timeout);
            if !passed {
                eprintln!("faultctl: probe failed: {probe}");
            }
            if sender.send(passed).is_err() {
                return;
            }
            thread::sleep(interval.saturating_sub(started.elapsed()));
        });
        Probe { results }
    }
}

fn run_probe(probe: &str, timeout: Duration) -> bool {
    let spawned = unblocked(&mut Command::new("sh"))
        .args(["-c", probe])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn();
    let Ok(mut child) = spawned else {
        return false;
    };
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            _ => {
                kill_and_reap(&mut child);
                return false;
            }
        }
    }
}

/// `command` with no signal blocked: a child inherits faultctl's mask, in which SIGINT and
/// SIGTERM wait for faultctl's own handling, and would never reach the command.
fn unblocked(command: &mut Command) -> &mut Command {
    // SAFETY: between fork and exec, only sigprocmask (async-signal-safe) runs.
    unsafe {
        command.pre_exec(|| {
            SigSet::empty()
                .thread_set_mask()
                .map_err(std::io::Error::from)
        })
    }
}

fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
