//! A blocking protocol client, typed by `proto`: faultctl talks to faultd through it.

use std::{
    io::{self, BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
};

use serde::Serialize;
use serde_json::Value;
use thiserror::Error;

use crate::proto::{ErrorBody, Request, Response, ResponseLine, WatchLine};

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot reach faultd at {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("connection to faultd failed: {0}")]
    Io(#[from] io::Error),
    #[error("faultd sent something that is not a protocol response: {0}")]
    Protocol(String),
    #[error("{}{}", .0.message, .0.field.as_ref().map(|f| format!(" (field {f})")).unwrap_or_default())]
    Rejected(ErrorBody),
}

#[derive(Debug)]
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_owned(),
            source,
        })?;
        let writer = stream.try_clone()?;
        Ok(Self {
            reader: BufReader::new(stream),
            writer,
            next_id: 0,
        })
    }

    /// Sends `request` and returns the `result` of a successful answer, read as the answer
    /// to that request.
    pub fn call(&mut self, request: &Request) -> Result<Response, ClientError> {
        #[derive(Serialize)]
        struct Line<'a> {
            id: u64,
            #[serde(flatten)]
            request: &'a Request,
        }
        self.next_id += 1;
        let id = self.next_id;
        let line = serde_json::to_string(&Line { id, request })
            .map_err(|e| ClientError::Protocol(format!("cannot encode the request: {e}")))?;
        let sent = writeln!(self.writer, "{line}");
        // faultd may have answered and closed before reading (e.g. `busy`): its line says why.
        let response: ResponseLine = match (sent, self.read_line()) {
            (_, Ok(response)) => response,
            (Err(e), Err(_)) => return Err(e.into()),
            (Ok(()), Err(e)) => return Err(e),
        };
        // A connection-level refusal answers no request in particular.
        let connection_level = response.id.is_null() && !response.ok;
        if !connection_level && response.id != id {
            return Err(ClientError::Protocol(format!(
                "response for another request (id {})",
                response.id
            )));
        }
        match (response.ok, response.error) {
            (true, _) => {
                Response::of(request, response.result.unwrap_or(Value::Null)).map_err(|e| {
                    ClientError::Protocol(format!("a {} answer: {e}", request.op().as_str()))
                })
            }
            (false, Some(error)) => Err(ClientError::Rejected(error)),
            (false, None) => Err(ClientError::Protocol("a refusal without an error".into())),
        }
    }

    /// Reads the next line of a watch stream. `None` at end of stream.
    pub fn next_event(&mut self) -> Result<Option<WatchLine>, ClientError> {
        self.next_line()
    }

    fn next_line<T: serde::de::DeserializeOwned>(&mut self) -> Result<Option<T>, ClientError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        serde_json::from_str(&line)
            .map(Some)
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    fn read_line(&mut self) -> Result<ResponseLine, ClientError> {
        self.next_line()?
            .ok_or_else(|| ClientError::Protocol("faultd closed the connection".into()))
    }
}
