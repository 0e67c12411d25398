//! Requests: what a client sends (`Serialize`) and what faultd reads (`parse_request`, which
//! keeps the request's id and says which field is wrong).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{ErrorBody, ErrorCode, Lease};
use crate::fault::spec::FaultWire;

/// The ops, by name. `Request::op` gives a request's; the names are the ones `Request`
/// serializes with (a test holds them together).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Hello,
    Apply,
    Renew,
    List,
    Get,
    Revoke,
    Clear,
    Watch,
    Metrics,
}

impl Op {
    pub const ALL: [Op; 9] = [
        Op::Hello,
        Op::Apply,
        Op::Renew,
        Op::List,
        Op::Get,
        Op::Revoke,
        Op::Clear,
        Op::Watch,
        Op::Metrics,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Hello => "hello",
            Op::Apply => "apply",
            Op::Renew => "renew",
            Op::List => "list",
            Op::Get => "get",
            Op::Revoke => "revoke",
            Op::Clear => "clear",
            Op::Watch => "watch",
            Op::Metrics => "metrics",
        }
    }

    pub fn parse(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.as_str() == name)
    }

    /// Whether the op only reads: what a read-only peer may use.
    pub fn is_read_only(self) -> bool {
        match self {
            Op::Hello | Op::List | Op::Get | Op::Watch | Op::Metrics => true,
            Op::Apply | Op::Renew | Op::Revoke | Op::Clear => false,
        }
    }
}

/// One request, without its `id` (which the line carries beside it).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Hello,
    Apply(Apply),
    /// Sets a fault's remaining time to `duration` from now.
    Renew(Renew),
    List,
    Get(FaultId),
    Revoke(FaultId),
    Clear,
    Watch,
    /// Request counts, the active faults' counters and what the datapath costs.
    Metrics,
}

impl Request {
    pub fn op(&self) -> Op {
        match self {
            Request::Hello => Op::Hello,
            Request::Apply(_) => Op::Apply,
            Request::Renew(_) => Op::Renew,
            Request::List => Op::List,
            Request::Get(_) => Op::Get,
            Request::Revoke(_) => Op::Revoke,
            Request::Clear => Op::Clear,
            Request::Watch => Op::Watch,
            Request::Metrics => Op::Metrics,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Apply {
    pub fault: Box<FaultWire>,
    /// Makes the apply idempotent: an active fault with this key and the same spec is
    /// answered instead of a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// Validate and plan only: answer the kernel objects the fault would use.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Renew {
    pub fault_id: String,
    pub duration: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultId {
    pub fault_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

/// Parses one request line. The id is returned even when the rest is invalid, so the error
/// response can carry it.
pub fn parse_request(line: &[u8]) -> (Value, Result<Request, ErrorBody>) {
    let mut object = match serde_json::from_slice::<Value>(line) {
        Ok(Value::Object(object)) => object,
        Ok(_) => return (Value::Null, Err(parse_error("a request is a JSON object"))),
        Err(e) => return (Value::Null, Err(parse_error(format!("not JSON: {e}")))),
    };
    let id = object.remove("id").unwrap_or(Value::Null);
    let op = match object.remove("op") {
        Some(Value::String(op)) => op,
        Some(_) => return (id, Err(invalid_op("op must be a string"))),
        None => return (id, Err(invalid_op("missing op"))),
    };
    (id, parse_args(&op, object))
}

fn parse_error(message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(ErrorCode::ParseError, message)
}

fn invalid_op(message: &str) -> ErrorBody {
    ErrorBody::new(ErrorCode::InvalidRequest, message).with_field("op")
}

fn parse_args(name: &str, args: Map<String, Value>) -> Result<Request, ErrorBody> {
    let Some(op) = Op::parse(name) else {
        let ops: Vec<&str> = Op::ALL.iter().map(|op| op.as_str()).collect();
        return Err(ErrorBody::new(
            ErrorCode::UnknownOp,
            format!("unknown op {name:?}; ops are {}", ops.join(", ")),
        )
        .with_field("op"));
    };
    Ok(match op {
        Op::Hello => no_args(args, Request::Hello)?,
        Op::Apply => Request::Apply(args_of(args)?),
        Op::Renew => Request::Renew(args_of(args)?),
        Op::List => no_args(args, Request::List)?,
        Op::Get => Request::Get(args_of(args)?),
        Op::Revoke => Request::Revoke(args_of(args)?),
        Op::Clear => no_args(args, Request::Clear)?,
        Op::Watch => no_args(args, Request::Watch)?,
        Op::Metrics => no_args(args, Request::Metrics)?,
    })
}

fn no_args(args: Map<String, Value>, request: Request) -> Result<Request, ErrorBody> {
    args_of::<NoArgs>(args).map(|_| request)
}

/// The op's arguments, or which of them is wrong (`fault.target.colour`).
fn args_of<T: for<'de> Deserialize<'de>>(args: Map<String, Value>) -> Result<T, ErrorBody> {
    serde_path_to_error::deserialize(Value::Object(args)).map_err(|e| {
        let field = e.path().to_string();
        let body = ErrorBody::new(ErrorCode::InvalidRequest, e.into_inner().to_string());
        // "." is the object itself; "" a key with an empty name, which no field has.
        if field == "." || field.is_empty() {
            body
        } else {
            body.with_field(field)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(line: &str) -> ErrorBody {
        parse_request(line.as_bytes()).1.expect_err("must fail")
    }

    #[test]
    fn parses_every_op() {
        let (id, req) = parse_request(br#"{"id":7,"op":"hello"}"#);
        assert_eq!((id, req), (Value::from(7), Ok(Request::Hello)));
        let (_, req) = parse_request(br#"{"id":"x","op":"revoke","fault_id":"f1"}"#);
        assert_eq!(
            req,
            Ok(Request::Revoke(FaultId {
                fault_id: "f1".into()
            }))
        );
        let (_, req) = parse_request(
            br#"{"op":"apply","key":"k","fault":{"target":{"dev":"e"},"partition":{},"duration":"1s"}}"#,
        );
        assert!(matches!(
            req,
            Ok(Request::Apply(Apply { key: Some(_), .. }))
        ));
        let (_, req) = parse_request(
            br#"{"op":"apply","lease":"connection","fault":{"target":{"dev":"e"},"partition":{}}}"#,
        );
        assert!(matches!(
            req,
            Ok(Request::Apply(Apply {
                lease: Some(Lease::Connection),
                ..
            }))
        ));
        let (_, req) = parse_request(br#"{"op":"renew","fault_id":"f1","duration":"5s"}"#);
        assert!(matches!(req, Ok(Request::Renew(_))));
        for op in ["list", "clear", "watch", "metrics"] {
            assert!(parse_request(format!(r#"{{"op":"{op}"}}"#).as_bytes())
                .1
                .is_ok());
        }
    }

    #[test]
    fn rejects_bad_requests_with_stable_codes() {
        assert_eq!(error_of("{not json").code, ErrorCode::ParseError);
        assert_eq!(error_of("[1,2]").code, ErrorCode::ParseError);
        assert_eq!(error_of(r#"{"id":1}"#).code, ErrorCode::InvalidRequest);
        assert_eq!(error_of(r#"{"op":7}"#).field.as_deref(), Some("op"));
        let unknown = error_of(r#"{"op":"explode"}"#);
        assert_eq!(unknown.code, ErrorCode::UnknownOp);
        assert!(unknown
            .message
            .ends_with("ops are hello, apply, renew, list, get, revoke, clear, watch, metrics"));
        let e = error_of(r#"{"op":"list","verbose":true}"#);
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        let e =
            error_of(r#"{"op":"apply","fault":{"target":{"dev":"e","colour":1},"partition":{}}}"#);
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert_eq!(e.field.as_deref(), Some("fault.target.colour"));
        let e = error_of(r#"{"op":"get","fault_id":5}"#);
        assert_eq!(e.field.as_deref(), Some("fault_id"));
    }

    /// What a client writes is what faultd reads, for every op, under the op's own name.
    #[test]
    fn every_request_reads_back_as_written() {
        let fault: FaultWire = serde_json::from_str(
            r#"{"target":{"dev":"e","match":{"dst":["10.0.0.2"]}},"loss":{"percent":5},"duration":"1s"}"#,
        )
        .expect("fault");
        let id = || FaultId {
            fault_id: "f1".into(),
        };
        let requests = [
            Request::Hello,
            Request::Apply(Apply {
                fault: Box::new(fault),
                key: Some("k".into()),
                lease: Some(Lease::Connection),
                dry_run: true,
            }),
            Request::Renew(Renew {
                fault_id: "f1".into(),
                duration: "5s".into(),
            }),
            Request::List,
            Request::Get(id()),
            Request::Revoke(id()),
            Request::Clear,
            Request::Watch,
            Request::Metrics,
        ];
        assert_eq!(
            requests.iter().map(Request::op).collect::<Vec<_>>(),
            Op::ALL,
            "one request per op"
        );
        for request in requests {
            let line = serde_json::to_vec(&request).expect("serialize");
            let written: Value = serde_json::from_slice(&line).expect("json");
            assert_eq!(written["op"], request.op().as_str());
            assert_eq!(parse_request(&line).1, Ok(request));
        }
    }
}
