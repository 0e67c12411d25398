//! faultd: the per-host agent. Checks its privileges, starts the engine, serves the socket, and
//! on SIGINT/SIGTERM reverts every fault before exiting 0.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{bail, Context};
use caps::{CapSet, Capability};
use clap::{Parser, ValueEnum};
use faultline::{
    control::{server, DEFAULT_SOCKET},
    engine::{self, Command, EngineConfig, DEFAULT_MAX_FAULTS},
    fault::{spec::DurationLimits, values::parse_duration},
};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// The faultline agent: injects network faults at kernel speed, controlled over a unix socket.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Unix socket to serve the protocol on.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Where faultd keeps its state (the attachment journal).
    #[arg(long, default_value = "/var/lib/faultline")]
    state_dir: PathBuf,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Longest duration a fault may ask for.
    #[arg(long, default_value = "1h", value_parser = duration_arg)]
    max_duration: Duration,
    /// Duration of faults that do not name one (by default a duration is required).
    #[arg(long, value_parser = duration_arg)]
    default_duration: Option<Duration>,
    /// Most faults active at once.
    #[arg(long, default_value_t = DEFAULT_MAX_FAULTS)]
    max_faults: usize,
}

fn duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| e.0)
}

const NEEDED: [Capability; 3] = [
    Capability::CAP_NET_ADMIN,
    Capability::CAP_BPF,
    Capability::CAP_SYS_ADMIN,
];

fn check_capabilities() -> anyhow::Result<()> {
    let missing: Vec<String> = NEEDED
        .into_iter()
        .filter(|cap| !caps::has_cap(None, CapSet::Effective, *cap).unwrap_or(false))
        .map(|cap| cap.to_string())
        .collect();
    if !missing.is_empty() {
        bail!(
            "faultd needs root or these capabilities, which it lacks: {}",
            missing.join(", ")
        );
    }
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FAULTD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("faultd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    check_capabilities()?;
    if args.max_faults == 0 || args.max_faults > DEFAULT_MAX_FAULTS {
        bail!("--max-faults must be in 1..={DEFAULT_MAX_FAULTS}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        // Bind before starting the engine: a second faultd must not touch the first's state.
        let listener = server::bind(&args.socket).await?;
        let config = EngineConfig {
            state_dir: args.state_dir.clone(),
            durations: DurationLimits { default: args.default_duration, max: args.max_duration },
            max_faults: args.max_faults,
        };
        let (engine, engine_thread) = engine::spawn(config).context("starting the engine")?;
        tracing::info!(socket = %args.socket.display(), state_dir = %args.state_dir.display(), "faultd ready");

        let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        tokio::select! {
            () = server::serve(listener, engine.clone()) => {}
            _ = terminate.recv() => tracing::info!("SIGTERM: reverting every fault"),
            _ = interrupt.recv() => tracing::info!("SIGINT: reverting every fault"),
        }
        let reverted = engine.call(Command::Shutdown).await.context("engine shutdown")?;
        tracing::info!(reverted = reverted.len(), "all faults reverted");
        let _ = std::fs::remove_file(&args.socket);
        engine_thread.join().map_err(|_| anyhow::anyhow!("the engine thread panicked"))?;
        Ok(())
    })
}
