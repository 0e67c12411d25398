//! The unix socket server: one task per connection, requests answered in order, every state
//! change sent to the engine. It never touches the kernel.

use std::{
    io,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use futures::StreamExt;
use serde_json::Value;
use thiserror::Error;
use tokio::{
    io::AsyncWriteExt,
    net::{unix::OwnedWriteHalf, UnixListener, UnixStream},
    sync::{broadcast, Semaphore},
    time::timeout,
};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tracing::Instrument;

use super::metrics::{self, RequestCounts};
use crate::{
    engine::{Command, ConnectionId, EngineError, EngineHandle},
    fault::values::format_duration,
    policy::{Access, Policy},
    proto::{
        parse_request, response_line, Apply, ErrorBody, ErrorCode, Event, FaultId, FaultList,
        FaultView, Lagged, Lease, Renew, Request, Response, Revoked, WatchLine, Watching,
        MAX_LINE_BYTES,
    },
};

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("another faultd is already serving {0}")]
    AlreadyRunning(PathBuf),
    #[error("cannot listen on {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Binds the socket: creates its directory, replaces a stale socket file, refuses to take over
/// a live one, and sets mode 0660.
pub async fn bind(path: &Path) -> Result<UnixListener, ServerError> {
    let bind_err = |source| ServerError::Bind {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(bind_err)?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(ServerError::AlreadyRunning(path.to_owned()));
        }
        tracing::info!(socket = %path.display(), "replacing a stale socket file");
        std::fs::remove_file(path).map_err(bind_err)?;
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(bind_err)?;
    Ok(listener)
}

/// Limits that keep one client, or many, from hurting the others.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Connections open at once; more are answered `busy` and closed.
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed (a watch is never idle).
    pub idle_timeout: Duration,
    /// A client that does not take a response or event within this long is disconnected.
    pub write_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_connections: 128,
            idle_timeout: Duration::from_secs(600),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// Who is on the other end of a connection, from SO_PEERCRED.
#[derive(Clone, Copy, Debug)]
struct Peer {
    uid: u32,
    pid: i32,
    access: Access,
}

/// Accepts connections until the listener fails; each connection runs in its own task.
pub async fn serve(
    listener: UnixListener,
    engine: EngineHandle,
    policy: Arc<Policy>,
    config: ServerConfig,
    counts: Arc<RequestCounts>,
) {
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let config = Arc::new(config);
    let mut next_connection: ConnectionId = 0;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        next_connection += 1;
        let peer = peer_of(&stream, &policy);
        let span = tracing::info_span!("conn", peer_uid = peer.uid, peer_pid = peer.pid);
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            counts.count("connect", Err(ErrorCode::Busy));
            tokio::spawn(
                refuse(stream, config.max_connections, config.write_timeout).instrument(span),
            );
            continue;
        };
        let connection_id = next_connection;
        let engine = engine.clone();
        let config = config.clone();
        let counts = counts.clone();
        tokio::spawn(
            async move {
                let served = connection(stream, &engine, peer, connection_id, &config, &counts);
                if let Err(e) = served.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                // Whatever ended the connection, its leased faults end with it.
                engine.send(Command::ConnectionClosed(connection_id));
                drop(permit);
            }
            .instrument(span),
        );
    }
}

fn peer_of(stream: &UnixStream, policy: &Policy) -> Peer {
    let Ok(cred) = stream.peer_cred() else {
        return Peer {
            uid: u32::MAX,
            pid: 0,
            access: Access::Denied,
        };
    };
    let pid = cred.pid().unwrap_or(0);
    let mut gids = vec![cred.gid()];
    gids.extend(supplementary_groups(pid));
    Peer {
        uid: cred.uid(),
        pid,
        access: policy.access(cred.uid(), &gids),
    }
}

/// The peer's supplementary groups, from /proc (SO_PEERCRED carries only the primary one).
fn supplementary_groups(pid: i32) -> Vec<u32> {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .map(|groups| {
            groups
                .split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

async fn refuse(mut stream: UnixStream, max: usize, write_timeout: Duration) {
    tracing::warn!(max, "refusing a connection: too many open");
    let error = ErrorBody::new(
        ErrorCode::Busy,
        format!("faultd serves at most {max} connections at once; try again later"),
    );
    let line = response_line(&Value::Null, Err(error));
    let _ = timeout(write_timeout, stream.write_all(line.as_bytes())).await;
}

async fn connection(
    stream: UnixStream,
    engine: &EngineHandle,
    peer: Peer,
    connection_id: ConnectionId,
    config: &ServerConfig,
    counts: &RequestCounts,
) -> io::Result<()> {
    let (read, write) = stream.into_split();
    let mut write = TimedWriter {
        inner: write,
        timeout: config.write_timeout,
    };
    let mut lines = FramedRead::new(read, LinesCodec::new_with_max_length(MAX_LINE_BYTES));
    loop {
        let Ok(next) = timeout(config.idle_timeout, lines.next()).await else {
            let error = ErrorBody::new(
                ErrorCode::Busy,
                format!(
                    "no request for {}; closing",
                    format_duration(config.idle_timeout)
                ),
            );
            write.line(&response_line(&Value::Null, Err(error))).await?;
            return Ok(());
        };
        let Some(line) = next else {
            return Ok(());
        };
        let line = match line {
            Ok(line) => line,
            Err(LinesCodecError::MaxLineLengthExceeded) => {
                let error = ErrorBody::new(
                    ErrorCode::LineTooLong,
                    format!("request lines are limited to {MAX_LINE_BYTES} bytes; closing"),
                );
                write.line(&response_line(&Value::Null, Err(error))).await?;
                return Ok(());
            }
            Err(LinesCodecError::Io(e)) => return Err(e),
        };
        if line.trim().is_empty() {
            continue;
        }
        let (id, request) = parse_request(line.as_bytes());
        let op = request.as_ref().map_or("invalid", |r| r.op().as_str());
        let request = request.and_then(|r| authorize(r, peer));
        if request == Ok(Request::Watch) {
            counts.count(op, Ok(()));
            let events = engine.subscribe();
            write
                .line(&response_line(
                    &id,
                    Ok(Response::Watching(Watching { watching: true })),
                ))
                .await?;
            return watch(events, lines, write).await;
        }
        let outcome = match request {
            Ok(request) => dispatch(engine, request, connection_id, counts).await,
            Err(error) => Err(error),
        };
        counts.count(op, outcome.as_ref().map(|_| ()).map_err(|e| e.code));
        match &outcome {
            Err(error) => {
                tracing::info!(op, code = ?error.code, message = %error.message, "request refused")
            }
            // Who changed what: the span carries the peer's uid and pid.
            Ok(Response::Fault(view)) if op != "get" => {
                tracing::info!(op, fault_id = %view.id, "request done")
            }
            Ok(Response::Revoked(Revoked { revoked })) => {
                tracing::info!(op, faults = revoked.len(), "request done")
            }
            Ok(_) => {}
        }
        write.line(&response_line(&id, outcome)).await?;
    }
}

/// Checks the peer may make `request`; denials are logged with the peer (the span carries it).
fn authorize(request: Request, peer: Peer) -> Result<Request, ErrorBody> {
    let allowed = match peer.access {
        Access::Full => true,
        Access::ReadOnly => request.op().is_read_only(),
        Access::Denied => false,
    };
    if allowed {
        return Ok(request);
    }
    let op = request.op().as_str();
    tracing::warn!(op, uid = peer.uid, pid = peer.pid, "access denied");
    let what = if peer.access == Access::ReadOnly {
        "may only read (hello, list, get, watch, metrics)"
    } else {
        "is not allowed to use faultd"
    };
    Err(ErrorBody::new(
        ErrorCode::Forbidden,
        format!(
            "access: uid {} {what}; see [access] in the policy",
            peer.uid
        ),
    )
    .with_field("op"))
}

/// Writes whole lines, giving up on a client that does not read them in time.
struct TimedWriter {
    inner: OwnedWriteHalf,
    timeout: Duration,
}

impl TimedWriter {
    async fn line(&mut self, line: &str) -> io::Result<()> {
        match timeout(self.timeout, self.inner.write_all(line.as_bytes())).await {
            Ok(written) => written,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client does not read its responses",
            )),
        }
    }
}

async fn dispatch(
    engine: &EngineHandle,
    request: Request,
    connection_id: ConnectionId,
    counts: &RequestCounts,
) -> Result<Response, ErrorBody> {
    let fault = |outcome: Result<FaultView, EngineError>| {
        outcome.map(|view| Response::Fault(Box::new(view)))
    };
    let outcome = match request {
        Request::Hello => return Ok(Response::Hello(Box::new(engine.hello()))),
        Request::Apply(Apply {
            fault: wire,
            dry_run: true,
            ..
        }) => engine
            .call(|reply| Command::Plan { fault: wire, reply })
            .await
            .map(|plan| Response::Plan(Box::new(plan))),
        Request::Apply(Apply {
            fault: wire,
            key,
            lease,
            dry_run: false,
        }) => {
            let lease = lease.map(|Lease::Connection| connection_id);
            fault(
                engine
                    .call(|reply| Command::Apply {
                        fault: wire,
                        key,
                        lease,
                        reply,
                    })
                    .await,
            )
        }
        Request::Renew(Renew { fault_id, duration }) => fault(
            engine
                .call(|reply| Command::Renew {
                    fault_id,
                    duration,
                    reply,
                })
                .await,
        ),
        Request::List => engine
            .call(Command::List)
            .await
            .map(|faults| Response::Faults(FaultList { faults })),
        Request::Get(FaultId { fault_id }) => {
            fault(engine.call(|reply| Command::Get { fault_id, reply }).await)
        }
        Request::Revoke(FaultId { fault_id }) => fault(
            engine
                .call(|reply| Command::Revoke { fault_id, reply })
                .await,
        ),
        Request::Clear => engine
            .call(Command::Clear)
            .await
            .map(|revoked| Response::Revoked(Revoked { revoked })),
        Request::Metrics => metrics::snapshot(engine, counts)
            .await
            .map(|metrics| Response::Metrics(Box::new(metrics))),
        Request::Watch => unreachable!("handled by the connection loop"),
    };
    outcome.map_err(|e| e.to_body())
}

/// Streams events until the client closes. Further requests on a watching connection are
/// ignored; a client that reads too slowly is told how many events it missed (the queue
/// between the engine and each watcher is bounded), and one that stops reading is dropped.
async fn watch(
    mut events: broadcast::Receiver<Event>,
    mut lines: FramedRead<tokio::net::unix::OwnedReadHalf, LinesCodec>,
    mut write: TimedWriter,
) -> io::Result<()> {
    loop {
        tokio::select! {
            event = events.recv() => {
                let line = match event {
                    Ok(event) => WatchLine::Event(Box::new(event)),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        WatchLine::Lagged(Lagged { missed })
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                };
                let line = serde_json::to_string(&line).map_err(io::Error::other)?;
                write.line(&format!("{line}\n")).await?;
            }
            line = lines.next() => {
                if !matches!(line, Some(Ok(_))) {
                    return Ok(());
                }
            }
        }
    }
}
