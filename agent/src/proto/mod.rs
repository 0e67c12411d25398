//! The wire contract of faultd's socket, protocol version 1 (docs/protocol.md); `renew`,
//! leases and the `forbidden`/`busy` codes are additions within version 1.
//!
//! JSON Lines over a unix stream socket: one request object per line, one response line per
//! request, in order. `watch` turns the connection into a stream of event lines.
//!
//! Every type here is the one definition of its part of the wire: faultd reads requests and
//! writes answers with them, and faultctl (through `control::client`) writes requests and
//! reads answers with them.

mod request;
mod response;
mod views;

pub use request::{parse_request, Apply, FaultId, Op, Renew, Request};
pub use response::{
    response_line, CapabilityReport, EngineStats, FaultList, Features, Hello, Lagged, Limits,
    Metrics, PolicyAccess, PolicyLimits, PolicySummary, PolicyTargets, ProtectedEntry,
    RequestCount, Response, ResponseLine, Revoked, WatchLine, Watching, WindowEntry,
};
pub use views::{
    Counters, DirectionCounters, Event, EventKind, FaultState, FaultView, Plan, PlannedObject,
};

use serde::{Deserialize, Serialize};

pub const PROTOCOL_VERSION: u32 = 1;
/// Longest request line accepted; longer ones get `line_too_long` and the connection closes.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Stable error codes: clients match on these, never on messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The line is not a JSON object.
    ParseError,
    /// A field is unknown, missing or of the wrong type.
    InvalidRequest,
    UnknownOp,
    /// A field has the right type but a value out of range.
    InvalidValue,
    /// No fault with that id.
    NotFound,
    NetnsNotFound,
    DeviceNotFound,
    /// The kernel lacks something the fault needs.
    Unsupported,
    /// A limit of the agent or the datapath would be exceeded.
    LimitExceeded,
    /// An apply reused a `key` with a different fault.
    Conflict,
    LineTooLong,
    /// The policy, or the caller's access, does not allow it; the message names the rule.
    Forbidden,
    /// An agent limit on connections or idle time closed the connection.
    Busy,
    /// The kernel refused a change; nothing was left half-applied.
    KernelError,
    Internal,
}

impl ErrorCode {
    /// The code as it is on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ParseError => "parse_error",
            Self::InvalidRequest => "invalid_request",
            Self::UnknownOp => "unknown_op",
            Self::InvalidValue => "invalid_value",
            Self::NotFound => "not_found",
            Self::NetnsNotFound => "netns_not_found",
            Self::DeviceNotFound => "device_not_found",
            Self::Unsupported => "unsupported",
            Self::LimitExceeded => "limit_exceeded",
            Self::Conflict => "conflict",
            Self::LineTooLong => "line_too_long",
            Self::Forbidden => "forbidden",
            Self::Busy => "busy",
            Self::KernelError => "kernel_error",
            Self::Internal => "internal",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

/// What holds a fault besides its deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lease {
    /// The fault is revoked when the connection that applied it closes.
    Connection,
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn error_codes_read_as_on_the_wire() {
        use ErrorCode::*;
        for code in [
            ParseError,
            InvalidRequest,
            UnknownOp,
            InvalidValue,
            NotFound,
            NetnsNotFound,
            DeviceNotFound,
            Unsupported,
            LimitExceeded,
            Conflict,
            LineTooLong,
            Forbidden,
            Busy,
            KernelError,
            Internal,
        ] {
            assert_eq!(
                serde_json::to_value(code).ok(),
                Some(Value::from(code.as_str()))
            );
        }
    }

    #[test]
    fn the_id_survives_errors() {
        let (id, _) = parse_request(br#"{"id":{"n":1},"op":"nope"}"#);
        assert_eq!(id, serde_json::json!({"n": 1}));
        let line = response_line(&id, Err(ErrorBody::new(ErrorCode::UnknownOp, "x")));
        assert!(line.ends_with('\n'));
        let read: ResponseLine = serde_json::from_str(&line).expect("a response line");
        assert_eq!((read.id, read.ok), (id, false));
        assert_eq!(read.error.map(|e| e.code), Some(ErrorCode::UnknownOp));
    }
}
