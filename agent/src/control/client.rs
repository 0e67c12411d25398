//! A blocking protocol client: faultctl, the tests and examples talk to faultd through it.

use std::{
    io::{self, BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
};

use serde_json::{json, Value};
use thiserror::Error;

use crate::proto::ErrorBody;

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

    /// Sends `{"op": op, ...args}` and returns the `result` of a successful response.
    pub fn request(&mut self, op: &str, args: Value) -> Result<Value, ClientError> {
        self.next_id += 1;
        let mut request = json!({"id": self.next_id, "op": op});
        if let (Some(request), Value::Object(args)) = (request.as_object_mut(), args) {
            request.extend(args);
        }
        let sent = writeln!(self.writer, "{request}");
        // faultd may have answered and closed before reading (e.g. `busy`): its line says why.
        let response = match (sent, self.read_line()) {
            (_, Ok(response)) => response,
            (Err(e), Err(_)) => return Err(e.into()),
            (Ok(()), Err(e)) => return Err(e),
        };
        // A connection-level refusal answers no request in particular.
        let connection_level = response.get("id") == Some(&Value::Null)
            && response.get("ok") == Some(&Value::Bool(false));
        if !connection_level && response.get("id") != Some(&json!(self.next_id)) {
            return Err(ClientError::Protocol(format!(
                "response for another request: {response}"
            )));
        }
        match response.get("ok") {
            Some(Value::Bool(true)) => Ok(response.get("result").cloned().unwrap_or(Value::Null)),
            Some(Value::Bool(false)) => {
                let error = response.get("error").cloned().unwrap_or(Value::Null);
                Err(ClientError::Rejected(
                    serde_json::from_value(error)
                        .map_err(|e| ClientError::Protocol(e.to_string()))?,
                ))
            }
            _ => Err(ClientError::Protocol(response.to_string())),
        }
    }

    /// Reads the next line (a response or, after `watch`, an event). `None` at end of stream.
    pub fn next_line(&mut self) -> Result<Option<Value>, ClientError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        serde_json::from_str(&line)
            .map(Some)
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    fn read_line(&mut self) -> Result<Value, ClientError> {
        self.next_line()?
            .ok_or_else(|| ClientError::Protocol("faultd closed the connection".into()))
    }
}
