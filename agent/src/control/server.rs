//! The unix socket server: one task per connection, requests answered in order, every state
//! change sent to the engine. It never touches the kernel.

use std::{
    io,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use futures::StreamExt;
use serde_json::{json, Value};
use thiserror::Error;
use tokio::{
    io::AsyncWriteExt,
    net::{unix::OwnedWriteHalf, UnixListener, UnixStream},
    sync::broadcast,
};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tracing::Instrument;

use crate::{
    engine::{Command, EngineError, EngineHandle},
    proto::{parse_request, response_line, ErrorBody, ErrorCode, Request, MAX_LINE_BYTES},
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

/// Accepts connections until the listener fails; each connection runs in its own task.
pub async fn serve(listener: UnixListener, engine: EngineHandle) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let (uid, pid) = stream
                    .peer_cred()
                    .map(|c| (c.uid(), c.pid().unwrap_or(0)))
                    .unwrap_or((u32::MAX, 0));
                let span = tracing::info_span!("conn", peer_uid = uid, peer_pid = pid);
                let engine = engine.clone();
                tokio::spawn(
                    async move {
                        if let Err(e) = connection(stream, engine).await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(stream: UnixStream, engine: EngineHandle) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = FramedRead::new(read, LinesCodec::new_with_max_length(MAX_LINE_BYTES));
    while let Some(line) = lines.next().await {
        let line = match line {
            Ok(line) => line,
            Err(LinesCodecError::MaxLineLengthExceeded) => {
                let error = ErrorBody::new(
                    ErrorCode::LineTooLong,
                    format!("request lines are limited to {MAX_LINE_BYTES} bytes; closing"),
                );
                write
                    .write_all(response_line(&Value::Null, Err(error)).as_bytes())
                    .await?;
                return Ok(());
            }
            Err(LinesCodecError::Io(e)) => return Err(e),
        };
        if line.trim().is_empty() {
            continue;
        }
        let (id, request) = parse_request(line.as_bytes());
        let op = request.as_ref().map(op_name).unwrap_or("invalid");
        if request == Ok(Request::Watch) {
            let events = engine.subscribe();
            write
                .write_all(response_line(&id, Ok(json!({"watching": true}))).as_bytes())
                .await?;
            return watch(events, lines, write).await;
        }
        let outcome = match request {
            Ok(request) => dispatch(&engine, request).await,
            Err(error) => Err(error),
        };
        if let Err(error) = &outcome {
            tracing::info!(op, code = ?error.code, message = %error.message, "request refused");
        }
        write
            .write_all(response_line(&id, outcome).as_bytes())
            .await?;
    }
    Ok(())
}

fn op_name(request: &Request) -> &'static str {
    match request {
        Request::Hello => "hello",
        Request::Apply { .. } => "apply",
        Request::List => "list",
        Request::Get { .. } => "get",
        Request::Revoke { .. } => "revoke",
        Request::Clear => "clear",
        Request::Watch => "watch",
    }
}

async fn dispatch(engine: &EngineHandle, request: Request) -> Result<Value, ErrorBody> {
    match request {
        Request::Hello => engine.call(Command::Hello).await.map_err(|e| e.to_body()),
        Request::Apply { fault, key } => to_value(
            engine
                .call(|reply| Command::Apply { fault, key, reply })
                .await,
        ),
        Request::List => {
            to_value(engine.call(Command::List).await).map(|faults| json!({"faults": faults}))
        }
        Request::Get { fault_id } => {
            to_value(engine.call(|reply| Command::Get { fault_id, reply }).await)
        }
        Request::Revoke { fault_id } => to_value(
            engine
                .call(|reply| Command::Revoke { fault_id, reply })
                .await,
        ),
        Request::Clear => {
            to_value(engine.call(Command::Clear).await).map(|faults| json!({"revoked": faults}))
        }
        Request::Watch => unreachable!("handled by the connection loop"),
    }
}

fn to_value<T: serde::Serialize>(outcome: Result<T, EngineError>) -> Result<Value, ErrorBody> {
    let value = outcome.map_err(|e| e.to_body())?;
    serde_json::to_value(value).map_err(|e| ErrorBody::new(ErrorCode::Internal, e.to_string()))
}

/// Streams events until the client closes. Further requests on a watching connection are
/// ignored; a client that reads too slowly is told how many events it missed.
async fn watch(
    mut events: broadcast::Receiver<crate::proto::Event>,
    mut lines: FramedRead<tokio::net::unix::OwnedReadHalf, LinesCodec>,
    mut write: OwnedWriteHalf,
) -> io::Result<()> {
    loop {
        tokio::select! {
            event = events.recv() => {
                let line = match event {
                    Ok(event) => serde_json::to_string(&event).map_err(io::Error::other)?,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        json!({"event": "lagged", "missed": missed}).to_string()
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                };
                write.write_all(format!("{line}\n").as_bytes()).await?;
            }
            line = lines.next() => {
                if !matches!(line, Some(Ok(_))) {
                    return Ok(());
                }
            }
        }
    }
}
