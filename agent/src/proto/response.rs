//! Answers: the response line around them, the `result` of each op, and the lines of a watch
//! stream. faultd serializes them; clients read them back with `ResponseLine` and
//! `Response::of`, which knows from the request which shape to expect.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Apply, ErrorBody, ErrorCode, Event, FaultView, Plan, Request};

/// One response line as a client reads it: the `result` stays raw until `Response::of`
/// reads it as the answer to the request the id names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResponseLine {
    pub id: Value,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// One response line, serialized straight from the result: going through a `Value` cost
/// 13 µs per fault view, most of the time a `clear` of 1,000 faults took.
pub fn response_line(id: &Value, outcome: Result<Response, ErrorBody>) -> String {
    #[derive(Serialize)]
    struct Line<'a> {
        id: &'a Value,
        ok: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        result: Option<Response>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<ErrorBody>,
    }
    let (result, error) = match outcome {
        Ok(result) => (Some(result), None),
        Err(error) => (None, Some(error)),
    };
    let ok = error.is_none();
    let mut line = serde_json::to_string(&Line {
        id,
        ok,
        result,
        error,
    })
    .unwrap_or_else(|e| {
        let error = ErrorBody::new(
            ErrorCode::Internal,
            format!("cannot encode the answer: {e}"),
        );
        let refusal = Line {
            id,
            ok: false,
            result: None,
            error: Some(error),
        };
        // Plain strings and an id that was JSON already: this one serializes.
        serde_json::to_string(&refusal).unwrap_or_default()
    });
    line.push('\n');
    line
}

/// The `result` of a successful answer: one shape per op, but `apply` with `dry_run`, which
/// answers a plan.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Response {
    Hello(Box<Hello>),
    /// apply, renew, get, revoke.
    Fault(Box<FaultView>),
    Plan(Box<Plan>),
    Faults(FaultList),
    Revoked(Revoked),
    Watching(Watching),
    Metrics(Box<Metrics>),
}

impl Response {
    /// Reads `result` as the answer to `request`.
    pub fn of(request: &Request, result: Value) -> Result<Response, serde_json::Error> {
        use serde_json::from_value;
        Ok(match request {
            Request::Hello => Response::Hello(from_value(result)?),
            Request::Apply(Apply { dry_run: true, .. }) => Response::Plan(from_value(result)?),
            Request::Apply(_) | Request::Renew(_) | Request::Get(_) | Request::Revoke(_) => {
                Response::Fault(from_value(result)?)
            }
            Request::List => Response::Faults(from_value(result)?),
            Request::Clear => Response::Revoked(from_value(result)?),
            Request::Watch => Response::Watching(from_value(result)?),
            Request::Metrics => Response::Metrics(from_value(result)?),
        })
    }
}

/// `list`'s answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultList {
    pub faults: Vec<FaultView>,
}

/// `clear`'s answer: every fault it removed, with its final counters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Revoked {
    pub revoked: Vec<FaultView>,
}

/// `watch`'s answer, before the events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Watching {
    pub watching: bool,
}

/// `hello`'s answer. Fields in name order, as faultd has always written them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub active_faults: usize,
    pub agent: String,
    /// What the kernel showed it can do when faultd started, by capability name.
    pub capabilities: BTreeMap<String, CapabilityReport>,
    /// Older than `capabilities`, kept for existing clients.
    pub features: Features,
    pub kernel: String,
    pub limits: Limits,
    pub policy: PolicySummary,
    pub protocol: u32,
    pub version: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityReport {
    pub available: bool,
    /// Why the kernel lacks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Features {
    /// `capabilities.ebpf_faults`.
    pub ebpf_tc: bool,
    /// `capabilities.egress_delay`.
    pub netem: bool,
}

/// faultd's limits, already combined with the policy's (the stricter wins).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub default_duration: Option<String>,
    pub max_duration: String,
    pub max_faults: usize,
    pub max_line_bytes: usize,
}

/// The policy in force (docs/policy.md); `None` leaves that unrestricted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicySummary {
    pub access: Option<PolicyAccess>,
    /// Where the policy was read from; `None` without a policy file.
    pub file: Option<String>,
    pub limits: PolicyLimits,
    pub protected: Vec<ProtectedEntry>,
    pub targets: PolicyTargets,
    pub windows: Vec<WindowEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyAccess {
    pub gids: Vec<u32>,
    pub read_only_gids: Vec<u32>,
    pub read_only_uids: Vec<u32>,
    pub uids: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyLimits {
    pub default_duration: Option<String>,
    pub max_duration: Option<String>,
    pub max_faults: Option<usize>,
    pub max_loss_percent: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtectedEntry {
    pub cidr: String,
    pub ports: Option<String>,
    pub proto: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyTargets {
    pub devices: Option<Vec<String>>,
    pub namespaces: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowEntry {
    pub days: Vec<String>,
    pub end: String,
    pub start: String,
    pub utc_offset: String,
}

/// `metrics`' answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Requests answered since faultd started, by op and outcome.
    pub requests: Vec<RequestCount>,
    /// The active faults, with their counters.
    pub faults: Vec<FaultView>,
    /// What the datapath costs, and what faultd has put back.
    #[serde(flatten)]
    pub engine: EngineStats,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCount {
    pub op: String,
    /// `ok`, or the error code answered.
    pub code: String,
    pub count: u64,
}

/// What metrics report of the engine beyond the faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStats {
    /// What the kernel charges for the datapath's maps and programs (fdinfo `memlock`).
    pub datapath_memory_bytes: u64,
    /// How much of that each possible CPU adds (the per-CPU maps), and how many there are: on
    /// a host with N CPUs the datapath costs about memory + (N - possible_cpus) × per CPU.
    pub datapath_per_cpu_bytes: u64,
    pub possible_cpus: usize,
    /// Times something of ours that someone else removed was put back.
    pub repairs: u64,
}

/// One line of a watch stream: an event, or word that the reader fell behind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WatchLine {
    Event(Box<Event>),
    Lagged(Lagged),
}

/// `{"event":"lagged","missed":N}`: N events were dropped for a reader too slow to take them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename = "lagged")]
pub struct Lagged {
    pub missed: u64,
}
