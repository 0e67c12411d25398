//! faultd: the per-host agent. Checks its privileges, takes over what an earlier faultd left,
//! starts its reaper, serves the socket; SIGUSR1 reverts every fault (the kill switch) and
//! SIGINT/SIGTERM revert every fault and exit 0.
//!
//! The reaper is this binary again (`--reap`), started by faultd in its own process group. It
//! waits for faultd to go away; if faultd left faults behind (it was killed), the reaper
//! takes them over and removes each at its deadline, then exits. A new faultd takes them
//! back from the reaper.

use std::{
    io::Read,
    path::PathBuf,
    process::{ExitCode, Stdio},
    sync::Arc,
    time::Duration,
};

use anyhow::{bail, Context};
use caps::{CapSet, Capability};
use clap::{Parser, ValueEnum};
use faultline::{
    control::{
        metrics::{self, NotLoopback, RequestCounts},
        ownership,
        server::{self, ServerConfig},
        DEFAULT_SOCKET,
    },
    engine::{self, Command, EngineConfig, EngineHandle, DEFAULT_MAX_FAULTS, MAX_FAULTS_LIMIT},
    fault::{spec::DurationLimits, values::parse_duration},
    policy::{self, Policy},
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
    /// Where faultd keeps its state (the journal of active faults).
    #[arg(long, default_value = "/var/lib/faultline")]
    state_dir: PathBuf,
    /// bpffs directory for the maps a restarted faultd takes over (bpffs is mounted on
    /// /sys/fs/bpf when missing).
    #[arg(long, default_value = "/sys/fs/bpf/faultline")]
    pin_dir: PathBuf,
    /// Policy file (docs/policy.md); a missing file at the default path means no policy.
    #[arg(long, default_value = policy::DEFAULT_PATH)]
    config: PathBuf,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Longest duration a fault may ask for (the policy may lower it).
    #[arg(long, default_value = "1h", value_parser = duration_arg)]
    max_duration: Duration,
    /// Duration of faults that do not name one (by default a duration is required).
    #[arg(long, value_parser = duration_arg)]
    default_duration: Option<Duration>,
    /// Most faults active at once (the policy may lower it).
    #[arg(long, default_value_t = DEFAULT_MAX_FAULTS)]
    max_faults: usize,
    /// Most client connections open at once.
    #[arg(long, default_value_t = ServerConfig::default().max_connections)]
    max_connections: usize,
    /// Close a connection that sends no request for this long (watches excepted).
    #[arg(long, default_value = "10m", value_parser = duration_arg)]
    idle_timeout: Duration,
    /// Serve Prometheus metrics (GET /metrics) on this loopback address, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Run as the reaper of the faultd that started this process (internal).
    #[arg(long, hide = true)]
    reap: bool,
}

fn duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| e.0)
}

const NEEDED: [Capability; 3] = [
    Capability::CAP_NET_ADMIN,
    Capability::CAP_BPF,
    Capability::CAP_SYS_ADMIN,
];

/// What faultd keeps of its capabilities; every other one is dropped, from the bounding set
/// too, before any thread starts (capabilities are per thread), so neither faultd nor the
/// reaper it execs can regain them. Each one, and why:
/// - NET_ADMIN: clsact, filters, qdiscs, ifb links, netlink changes;
/// - BPF, PERFMON: loading and pinning the programs and maps (PERFMON for the verifier's
///   full feature set on tc programs);
/// - SYS_ADMIN: setns into target namespaces, mounting bpffs, the netem probe's namespace;
/// - SYS_PTRACE: opening /proc/PID/ns/net of processes of other users (`pid:N` targets,
///   pods).
const KEEP: [Capability; 5] = [
    Capability::CAP_NET_ADMIN,
    Capability::CAP_BPF,
    Capability::CAP_PERFMON,
    Capability::CAP_SYS_ADMIN,
    Capability::CAP_SYS_PTRACE,
];

fn drop_capabilities() -> anyhow::Result<()> {
    let keep: caps::CapsHashSet = KEEP.into_iter().collect();
    // Needs CAP_SETPCAP, which goes with the rest below.
    for cap in caps::runtime::thread_all_supported() {
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap)? {
            caps::drop(None, CapSet::Bounding, cap)
                .with_context(|| format!("dropping {cap} from the bounding set"))?;
        }
    }
    let held = caps::read(None, CapSet::Permitted)?;
    let kept: caps::CapsHashSet = held.intersection(&keep).copied().collect();
    caps::clear(None, CapSet::Ambient)?;
    caps::clear(None, CapSet::Inheritable)?;
    caps::set(None, CapSet::Effective, &kept)?;
    caps::set(None, CapSet::Permitted, &kept)?;
    Ok(())
}

/// Before Linux 5.11 the kernel charges eBPF maps to RLIMIT_MEMLOCK (often 64 KiB), not to
/// the cgroup. Raised while CAP_SYS_RESOURCE may still be held (it is dropped next, so aya's own
/// retry could not do it later); the reaper inherits the limit. Harmless on newer kernels,
/// where failing to raise it does not matter either.
fn raise_memlock() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};
    if let Err(e) = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY) {
        let charged_to_memlock = kernel_version().is_some_and(|version| version < (5, 11));
        if !charged_to_memlock {
            return;
        }
        let current = getrlimit(Resource::RLIMIT_MEMLOCK).map_or(0, |(soft, _)| soft);
        tracing::warn!(
            error = %e,
            memlock_bytes = current,
            "cannot raise RLIMIT_MEMLOCK: on kernels before 5.11 the eBPF maps may not fit; \
             give faultd CAP_SYS_RESOURCE or LimitMEMLOCK=infinity"
        );
    }
}

fn check_capabilities() -> anyhow::Result<()> {
    // Kernels before 5.8 know no CAP_BPF: their problem is their age, not faultd's privileges.
    if !caps::runtime::thread_all_supported().contains(&Capability::CAP_BPF) {
        bail!(
            "this kernel ({}) predates CAP_BPF (Linux 5.8); faultline needs Linux 5.10 or later",
            kernel_release()
        );
    }
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
    let outcome = if args.reap { reap(&args) } else { run(&args) };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("faultd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // One thread: the server only parses, forwards to the engine's thread and writes answers;
    // a second worker cost more in cross-thread wake-ups than it gained (measured: issue 5).
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// (major, minor) of the running kernel.
fn kernel_version() -> Option<(u32, u32)> {
    let release = kernel_release();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(str::parse::<u32>);
    Some((numbers.next()?.ok()?, numbers.next()?.ok()?))
}

fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn run(args: &Args) -> anyhow::Result<()> {
    check_capabilities()?;
    raise_memlock();
    drop_capabilities().context("dropping capabilities")?;
    if args.max_faults == 0 || args.max_faults > MAX_FAULTS_LIMIT {
        bail!("--max-faults must be in 1..={MAX_FAULTS_LIMIT}");
    }
    let policy = if args.config == std::path::Path::new(policy::DEFAULT_PATH) {
        Policy::load_or_default(&args.config)
    } else {
        Policy::load(&args.config)
    }
    .context("loading the policy")?;
    // The policy's maximum is the policy's to enforce (`forbidden`, naming the rule); its
    // default stands in for the flag's, within both maximums.
    let (policy_default, policy_max) = policy.durations();
    let max = policy_max.map_or(args.max_duration, |max| max.min(args.max_duration));
    let durations = DurationLimits {
        default: policy_default.or(args.default_duration).map(|d| d.min(max)),
        max: args.max_duration,
    };
    let max_faults = policy
        .max_faults()
        .map_or(args.max_faults, |max| max.min(args.max_faults));
    let policy = Arc::new(policy);
    if let Some(addr) = args.metrics_listen.filter(|a| !a.ip().is_loopback()) {
        return Err(NotLoopback(addr).into());
    }
    runtime()?.block_on(async {
        // Bind before anything else: a second faultd must not touch the first's state.
        let listener = server::bind(&args.socket).await?;
        let metrics_listener = match args.metrics_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("--metrics-listen {addr}"))?,
            ),
            None => None,
        };
        let ownership = ownership::acquire(&args.state_dir)?;
        let config = EngineConfig {
            state_dir: args.state_dir.clone(),
            pin_root: args.pin_dir.clone(),
            durations,
            max_faults,
            fault_slots: args.max_faults,
            policy: policy.clone(),
            exit_when_idle: false,
        };
        let (engine, engine_thread) = engine::spawn(config).context("starting the engine")?;
        // Held open until faultd exits, however it exits: the reaper's signal.
        let _alive = spawn_reaper(args).context("starting the reaper")?;
        tracing::info!(socket = %args.socket.display(), state_dir = %args.state_dir.display(), "faultd ready");

        let server_config = ServerConfig {
            max_connections: args.max_connections,
            idle_timeout: args.idle_timeout,
            ..ServerConfig::default()
        };
        let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        let counts = Arc::new(RequestCounts::default());
        if let Some(listener) = metrics_listener {
            tracing::info!(addr = %listener.local_addr()?, "serving metrics");
            tokio::spawn(metrics::serve_http(listener, engine.clone(), counts.clone()));
        }
        let serving = server::serve(listener, engine.clone(), policy, server_config, counts);
        tokio::pin!(serving);
        tokio::select! {
            () = &mut serving => {}
            () = kill_switch(&engine) => {}
            _ = terminate.recv() => tracing::info!("SIGTERM: reverting every fault"),
            _ = interrupt.recv() => tracing::info!("SIGINT: reverting every fault"),
        }
        let reverted = engine.call(Command::Shutdown).await.context("engine shutdown")?;
        tracing::info!(reverted = reverted.len(), "all faults reverted");
        let _ = std::fs::remove_file(&args.socket);
        engine_thread.join().map_err(|_| anyhow::anyhow!("the engine thread panicked"))?;
        drop(ownership);
        Ok(())
    })
}

/// SIGUSR1 reverts every fault and faultd carries on: the kill switch for whoever cannot
/// reach the socket. Returns only if the handler cannot be installed.
async fn kill_switch(engine: &EngineHandle) {
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
        tracing::error!("cannot install the SIGUSR1 kill switch");
        return std::future::pending().await;
    };
    while usr1.recv().await.is_some() {
        match engine.call(Command::Clear).await {
            Ok(reverted) => tracing::warn!(
                reverted = reverted.len(),
                "SIGUSR1: kill switch, every fault reverted"
            ),
            Err(e) => tracing::error!(error = %e, "SIGUSR1: kill switch failed"),
        }
    }
}

/// Starts the reaper with the read end of a pipe whose write end (returned) only this
/// process holds: the reaper sees end-of-file when faultd is gone, however it went.
fn spawn_reaper(args: &Args) -> anyhow::Result<std::io::PipeWriter> {
    use std::os::unix::process::CommandExt;
    let (reader, writer) = std::io::pipe()?;
    let log_format = match args.log_format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    std::process::Command::new("/proc/self/exe")
        .arg("--reap")
        .arg("--state-dir")
        .arg(&args.state_dir)
        .arg("--pin-dir")
        .arg(&args.pin_dir)
        .args(["--log-format", log_format])
        .stdin(reader)
        .stdout(Stdio::null())
        // Its own process group: a Ctrl-C meant for faultd must not kill the reaper too.
        .process_group(0)
        .spawn()?;
    Ok(writer)
}

fn reap(args: &Args) -> anyhow::Result<()> {
    // Our parent is the faultd we watch over, until it dies.
    let parent = nix::unistd::getppid().as_raw();
    let mut rest = Vec::new();
    // Returns at end-of-file: faultd has exited, cleanly or not.
    let _ = std::io::stdin().read_to_end(&mut rest);
    let Some(ownership) = ownership::try_acquire_for_reaper(&args.state_dir, parent)? else {
        tracing::debug!("a new faultd owns the state; the reaper has nothing to do");
        return Ok(());
    };
    tracing::debug!("faultd is gone; the reaper takes over what it left");
    let config = EngineConfig {
        state_dir: args.state_dir.clone(),
        pin_root: args.pin_dir.clone(),
        durations: DurationLimits {
            default: None,
            max: args.max_duration,
        },
        // The pinned maps of the faultd it watches over keep their size.
        max_faults: MAX_FAULTS_LIMIT,
        fault_slots: MAX_FAULTS_LIMIT,
        policy: Arc::new(Policy::default()),
        exit_when_idle: true,
    };
    runtime()?.block_on(async {
        let (engine, engine_thread) = engine::spawn(config).context("starting the engine")?;
        let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        let mut hand_over = signal(SignalKind::user_defined2()).context("SIGUSR2 handler")?;
        let finished = tokio::task::spawn_blocking(move || engine_thread.join());
        tokio::pin!(finished);
        tokio::select! {
            _ = &mut finished => return Ok(()),
            _ = hand_over.recv() => { let _ = engine.call(Command::HandOver).await; }
            _ = terminate.recv() => { let _ = engine.call(Command::Shutdown).await; }
            _ = interrupt.recv() => { let _ = engine.call(Command::Shutdown).await; }
        }
        let _ = finished.await;
        drop(ownership);
        Ok(())
    })
}
