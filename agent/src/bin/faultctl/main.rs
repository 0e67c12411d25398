//! faultctl: the operator's and drill script's client for faultd.
//!
//! Exit codes (stable, for scripts): 0 success; 1 an unexpected error; 2 a usage error;
//! 3 faultd refused the request (`forbidden` included); 4 faultd cannot be reached or is busy,
//! so trying again later may succeed.

mod netem_args;
mod print;

use netem_args::{burst_json, NetemArgs};
use print::{parse, print_fault, print_policy, print_table, summary_of};

use std::{
    io,
    path::PathBuf,
    process::ExitCode,
    sync::mpsc::{self, RecvTimeoutError},
    time::Duration,
};

use clap::{Args, Parser, Subcommand, ValueEnum};
use faultline::{
    control::{
        client::{Client, ClientError},
        DEFAULT_SOCKET,
    },
    proto::{ErrorCode, FaultView},
};
use nix::sys::signal::{SigSet, Signal};
use serde_json::{json, Map, Value};

const EXIT_ERROR: u8 = 1;
const EXIT_REJECTED: u8 = 3;
const EXIT_UNREACHABLE: u8 = 4;

/// How often a faultctl holding a leased fault checks that the fault is still active.
const LEASE_POLL: Duration = Duration::from_millis(200);

/// Inject network faults through faultd.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Exit codes: 0 ok, 1 error, 2 usage, 3 refused by faultd (e.g. forbidden), \
                  4 faultd unreachable or busy (try again later)."
)]
struct Cli {
    /// faultd's socket.
    #[arg(long, global = true, env = "FAULTLINE_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print the protocol's JSON results instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Drop a share of the matching packets.
    Loss {
        #[command(flatten)]
        target: TargetArgs,
        /// Percent of packets to drop, uniformly at random.
        #[arg(long, required_unless_present = "burst", conflicts_with = "burst")]
        percent: Option<f64>,
        /// Gilbert-Elliott bursts, as netem's gemodel: P,R[,1-H[,1-K]] in percent.
        #[arg(long, value_name = "P,R[,1-H[,1-K]]", value_parser = burst_json)]
        burst: Option<Value>,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Delay matching packets (netem), optionally with jitter and other impairments.
    Delay {
        #[command(flatten)]
        target: TargetArgs,
        /// Added latency, e.g. 100ms.
        #[arg(long, required = true)]
        delay: Option<String>,
        #[command(flatten)]
        netem: NetemArgs,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Impair matching packets with any combination of netem's knobs.
    Netem {
        #[command(flatten)]
        target: TargetArgs,
        /// Added latency, e.g. 100ms.
        #[arg(long)]
        delay: Option<String>,
        #[command(flatten)]
        netem: NetemArgs,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Drop every matching packet.
    Partition {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        common: CommonArgs,
    },
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
}

#[derive(Debug, Args)]
struct TargetArgs {
    /// Network device to act on.
    #[arg(long)]
    dev: String,
    /// Network namespace: a name under /run/netns, a path, or pid:N.
    #[arg(long)]
    netns: Option<String>,
    /// egress, ingress or both (default: egress for loss, both for partition).
    #[arg(long)]
    direction: Option<String>,
    /// tcp, udp, icmp, icmpv6 or any.
    #[arg(long)]
    proto: Option<String>,
    /// This host's side of the flow (CIDR; repeatable).
    #[arg(long)]
    src: Vec<String>,
    /// The peer's side of the flow (CIDR; repeatable).
    #[arg(long)]
    dst: Vec<String>,
    /// This host's port or range, e.g. 8080 or 9000-9100 (repeatable).
    #[arg(long)]
    sport: Vec<String>,
    /// The peer's port or range (repeatable).
    #[arg(long)]
    dport: Vec<String>,
    /// Fraction of flows affected, chosen by a hash of each flow (0 < F <= 1).
    #[arg(long)]
    flows: Option<f64>,
}

#[derive(Debug, Args)]
struct CommonArgs {
    /// How long the fault lasts, e.g. 30s, 500ms, 2m.
    #[arg(long = "for", value_name = "DURATION")]
    duration: Option<String>,
    /// A free-text label shown in listings.
    #[arg(long)]
    label: Option<String>,
    /// Makes a retried apply idempotent: the same key returns the same fault.
    #[arg(long)]
    key: Option<String>,
    /// `connection`: hold the fault only while faultctl runs. faultctl stays connected until
    /// the fault ends, or until SIGINT/SIGTERM, when it revokes the fault and exits 0; if
    /// faultctl dies, faultd revokes the fault as the connection closes.
    #[arg(long, value_enum, value_name = "connection")]
    lease: Option<LeaseArg>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LeaseArg {
    Connection,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
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

fn run(cli: &Cli) -> Result<(), ClientError> {
    let mut client = Client::connect(&cli.socket)?;
    match &cli.command {
        Cmd::Loss {
            target,
            percent,
            burst,
            common,
        } => {
            let loss = match (percent, burst) {
                (Some(p), _) => json!({"percent": p}),
                (None, Some(burst)) => json!({"burst": burst}),
                (None, None) => unreachable!("clap requires one"),
            };
            apply(cli, &mut client, target, common, "loss", loss)
        }
        Cmd::Partition { target, common } => {
            apply(cli, &mut client, target, common, "partition", json!({}))
        }
        Cmd::Delay {
            target,
            delay,
            netem,
            common,
        }
        | Cmd::Netem {
            target,
            delay,
            netem,
            common,
        } => apply(
            cli,
            &mut client,
            target,
            common,
            "netem",
            netem.to_json(delay.as_ref()),
        ),
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
                println!("features      {}", result["features"]);
                println!("limits        {}", result["limits"]);
                println!("active faults {}", result["active_faults"]);
                print_policy(&result["policy"]);
            }
            Ok(())
        }
    }
}

fn apply(
    cli: &Cli,
    client: &mut Client,
    target: &TargetArgs,
    common: &CommonArgs,
    action: &str,
    action_body: Value,
) -> Result<(), ClientError> {
    let mut matcher = Map::new();
    let mut put = |name: &str, values: &[String]| {
        if !values.is_empty() {
            matcher.insert(name.into(), json!(values));
        }
    };
    put("src", &target.src);
    put("dst", &target.dst);
    put("sport", &target.sport);
    put("dport", &target.dport);
    if let Some(proto) = &target.proto {
        matcher.insert("proto".into(), json!(proto));
    }
    let mut target_json = json!({"dev": target.dev, "match": matcher});
    let mut fault = json!({"target": {}, action: action_body});
    for (name, value) in [
        ("netns", target.netns.as_ref().map(|v| json!(v))),
        ("direction", target.direction.as_ref().map(|v| json!(v))),
        ("flows", target.flows.map(|v| json!(v))),
    ] {
        if let Some(value) = value {
            target_json[name] = value;
        }
    }
    fault["target"] = target_json;
    if let Some(duration) = &common.duration {
        fault["duration"] = json!(duration);
    }
    if let Some(label) = &common.label {
        fault["label"] = json!(label);
    }
    let mut args = json!({"fault": fault});
    if let Some(key) = &common.key {
        args["key"] = json!(key);
    }
    // Taken before the apply, so that no signal can end faultctl between the apply and the hold.
    let signals = match common.lease {
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
    match signals {
        Some(_) if !held => {
            eprintln!("faultctl: {id} already existed without a lease; not holding it");
            Ok(())
        }
        Some(signals) => hold(cli, client, &id, &signals),
        None => Ok(()),
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
