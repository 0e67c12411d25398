//! The properties the `request` fuzz target checks on every input, shared with
//! `agent/tests/fuzz_corpus.rs`, which replays the checked-in corpus under plain `cargo test`.
//! Both include this file with `#[path]`; it uses only the public API of `faultline`.
//!
//! One input is one request line as faultd's socket reads it (see `check`). It goes through the
//! same public functions the server uses (`proto::parse_request`, `FaultSpec::from_wire`,
//! `EngineError::to_body`, `proto::response_line`) and, for a valid fault, the pure compilation
//! to the datapath's values (`plan::fault_value`, `plan::prefix_keys`, `PrefixIndex`,
//! `netem_options_with`). Nothing here lists the protocol's ops, so new ops are covered as soon
//! as `parse_request` knows them; only `apply` is looked into further.

// Each includer uses a different part.
#![allow(dead_code)]

use std::time::Duration;

use faultline::{
    engine::EngineError,
    fault::{
        plan::{self, PrefixIndex},
        spec::{Action, DurationLimits, FaultSpec, FaultWire},
    },
    kernel::netem::{netem_options_with, Psched},
    proto::{
        parse_request, response_line, Apply, ErrorBody, ErrorCode, Plan, Request, Response,
        Watching, MAX_LINE_BYTES,
    },
};
use serde_json::Value;

/// faultd's defaults: `--max-duration 1h`, no `--default-duration`. Verdicts use these.
pub const FAULTD_DEFAULTS: DurationLimits = DurationLimits {
    default: None,
    max: Duration::from_secs(3600),
};

/// A permissive configuration, checked as well: a default duration and a day's maximum.
pub const PERMISSIVE: DurationLimits = DurationLimits {
    default: Some(Duration::from_secs(30)),
    max: Duration::from_secs(86_400),
};

/// What faultd does with one request line, as far as it can be known without a kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A blank line: faultd ignores it and does not answer.
    Ignored,
    /// Not UTF-8: faultd closes the connection without an answer.
    Closed,
    /// The request reaches the engine (and, for `apply`, the kernel). The name is the
    /// `Request` variant's.
    Accepted(String),
    /// Refused before anything is changed, with this code and field.
    Refused {
        code: ErrorCode,
        field: Option<String>,
    },
}

impl Verdict {
    /// One word for listings: `accepted:Apply`, `invalid_value`, `closed`, ...
    pub fn code_name(&self) -> String {
        match self {
            Self::Ignored => "ignored".to_owned(),
            Self::Closed => "closed".to_owned(),
            Self::Accepted(op) => format!("accepted:{op}"),
            Self::Refused { code, .. } => code_name(*code),
        }
    }

    /// The field for listings: `-` for none, `""` for an empty one.
    pub fn field_name(&self) -> String {
        match self {
            Self::Refused {
                field: Some(field), ..
            } if field.is_empty() => "\"\"".to_owned(),
            Self::Refused {
                field: Some(field), ..
            } => field.clone(),
            _ => "-".to_owned(),
        }
    }
}

/// The wire name of an error code (`invalid_value`, ...).
pub fn code_name(code: ErrorCode) -> String {
    match serde_json::to_value(code) {
        Ok(Value::String(name)) => name,
        other => panic!("error code {code:?} serialises as {other:?}, not a string"),
    }
}

/// Runs every check on `input`, one line as faultd's line codec delivers it (a trailing `\n`
/// is dropped; a `\n` inside is kept and left to the JSON parser), and says what faultd would
/// answer. Panics when a property does not hold.
pub fn check(input: &[u8]) -> Verdict {
    let line = input.strip_suffix(b"\n").unwrap_or(input);
    // The codec measures the line (with any `\r`) before it decodes it.
    if line.len() > MAX_LINE_BYTES {
        // faultd never parses it, but parse_request must cope with any length.
        check_parsed(line);
        let error = ErrorBody::new(
            ErrorCode::LineTooLong,
            format!("request lines are limited to {MAX_LINE_BYTES} bytes; closing"),
        );
        check_response(&Value::Null, Err(error));
        return Verdict::Refused {
            code: ErrorCode::LineTooLong,
            field: None,
        };
    }
    let Ok(text) = std::str::from_utf8(line) else {
        // faultd's codec closes the connection; parse_request alone must still refuse it.
        let verdict = check_parsed(line);
        assert!(
            matches!(
                verdict,
                Verdict::Refused {
                    code: ErrorCode::ParseError,
                    ..
                }
            ),
            "invalid UTF-8 got {verdict:?}"
        );
        return Verdict::Closed;
    };
    let text = text.strip_suffix('\r').unwrap_or(text);
    let verdict = check_parsed(text.as_bytes());
    if text.trim().is_empty() {
        return Verdict::Ignored;
    }
    verdict
}

/// `parse_request` and what follows it for one line's bytes.
fn check_parsed(line: &[u8]) -> Verdict {
    let (id, request) = parse_request(line);
    let request = match request {
        Ok(request) => request,
        Err(error) => {
            assert!(
                matches!(
                    error.code,
                    ErrorCode::ParseError | ErrorCode::InvalidRequest | ErrorCode::UnknownOp
                ),
                "parse_request answered {error:?}"
            );
            if error.code == ErrorCode::ParseError {
                assert_eq!(id, Value::Null, "a parse error carries no id");
            }
            check_response(&id, Err(error.clone()));
            return Verdict::Refused {
                code: error.code,
                field: error.field,
            };
        }
    };
    if let Request::Apply(Apply { fault, .. }) = &request {
        // The permissive configuration only has to hold the properties.
        let _ = check_fault(fault, &PERMISSIVE);
        let outcome = check_fault(fault, &FAULTD_DEFAULTS).map(|fault| {
            Response::Plan(Box::new(Plan {
                dry_run: true,
                fault,
                objects: Vec::new(),
            }))
        });
        check_response(&id, outcome.clone());
        if let Err(error) = outcome {
            return Verdict::Refused {
                code: error.code,
                field: error.field,
            };
        }
    } else {
        check_response(&id, Ok(Response::Watching(Watching { watching: true })));
    }
    Verdict::Accepted(variant_name(&request))
}

/// The variant's name from its Debug form, so that new ops need no change here.
fn variant_name(request: &Request) -> String {
    let debug = format!("{request:?}");
    debug
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Validation, normalisation and compilation of one fault. The `Ok` value is what an
/// apply's result would carry as its `fault`.
fn check_fault(wire: &FaultWire, limits: &DurationLimits) -> Result<FaultWire, ErrorBody> {
    let spec = match FaultSpec::from_wire(wire, limits) {
        Ok(spec) => spec,
        Err(error) => {
            assert!(
                error.field == "fault" || error.field.starts_with("fault."),
                "spec error field {:?}",
                error.field
            );
            assert!(!error.message.is_empty(), "spec error without a message");
            // As the engine turns it into a wire error.
            let body = EngineError::from(error).to_body();
            assert_eq!(body.code, ErrorCode::InvalidValue, "{body:?}");
            return Err(body);
        }
    };
    let normal = spec.to_wire();
    match FaultSpec::from_wire(&normal, limits) {
        Ok(again) => {
            assert_eq!(
                again, spec,
                "the normalised form validates to another spec\nwire: {wire:?}\nnormalised: {normal:?}"
            );
            assert_eq!(
                again.to_wire(),
                normal,
                "normalisation is not idempotent\nwire: {wire:?}"
            );
        }
        Err(e) => panic!(
            "the normalised form of a valid fault is refused: {e}\nwire: {wire:?}\nnormalised: {normal:?}"
        ),
    }
    // The normalised form travels as JSON: in responses, the journal, and a client's retry of
    // an apply with the same key (which must compare equal).
    let json = serde_json::to_string(&normal).expect("a normalised fault serialises");
    let back: FaultWire = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("normalised JSON does not parse back: {e}\n{json}"));
    assert_eq!(back, normal, "normalised JSON does not round-trip: {json}");
    if let Err(e) = FaultSpec::from_wire(&back, limits) {
        panic!("normalised JSON is refused: {e}\n{json}");
    }
    compile(&spec);
    Ok(normal)
}

/// The datapath's values for a valid spec: nothing may panic or be silently dropped.
fn compile(spec: &FaultSpec) {
    let value = plan::fault_value(spec, 0x9e37_79b9);
    let (m, t) = (&value.match_, &spec.target.matcher);
    assert_ne!(m.hooks, 0, "a fault that acts at no hook");
    // fault_value copies with zip: validation must have capped every list to its slots.
    assert!(t.src.len() <= m.local.len(), "src does not fit the slots");
    assert!(t.sport.len() <= m.local_ports.len(), "sport does not fit");
    assert!(t.dport.len() <= m.remote_ports.len(), "dport does not fit");
    assert_eq!(usize::from(m.local_cidr_count), t.src.len());
    assert_eq!(usize::from(m.local_port_count), t.sport.len());
    assert_eq!(usize::from(m.remote_port_count), t.dport.len());
    if let Some(flows) = spec.target.flows {
        assert!(
            flows.value() >= 1.0 || m.flow_threshold > 0,
            "flows {} selects nothing",
            flows.value()
        );
    }

    let keys = plan::prefix_keys(spec, 7);
    assert!(!keys.is_empty(), "a fault with no trie key");
    assert!(keys.len() <= t.dst.len().max(1));
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "keys sorted, unique");
    assert!(keys.iter().all(|k| k.attachment == 7 && k.len <= 128));
    let mut index = PrefixIndex::default();
    let added = index.insert(1, &keys).expect("one fault always fits");
    assert_eq!(added.set.len(), keys.len());
    let removed = index.remove(1, &keys);
    assert_eq!(
        removed.delete, keys,
        "removing the only fault frees its keys"
    );
    assert!(removed.set.is_empty());

    if let Action::Netem(netem) = &spec.action {
        let options = netem_options_with(netem, &Psched::LINUX);
        assert!(options.len() >= 24, "netem options without tc_netem_qopt");
    }
}

/// A response line is one line of JSON that says what was meant.
fn check_response(id: &Value, outcome: Result<Response, ErrorBody>) {
    if let Err(error) = &outcome {
        assert!(!error.message.is_empty(), "an error without a message");
        assert!(
            error.field.as_deref() != Some(""),
            "an empty field: {error:?}"
        );
    }
    let expected = outcome.clone();
    let line = response_line(id, outcome);
    let body = line
        .strip_suffix('\n')
        .expect("a response line ends in \\n");
    assert!(
        !body.contains(['\n', '\r']),
        "a response spans lines: {body:?}"
    );
    let response: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("a response is not JSON ({e}): {body:?}"));
    let object = response.as_object().expect("a response is an object");
    assert!(
        &object["id"] == id,
        "the id came back as {} instead of {id}",
        object["id"]
    );
    match expected {
        Ok(result) => {
            assert_eq!(object["ok"], Value::Bool(true));
            let result = serde_json::to_value(result).expect("a response serializes");
            assert_eq!(object["result"], result);
        }
        Err(error) => {
            assert_eq!(object["ok"], Value::Bool(false));
            let back: ErrorBody = serde_json::from_value(object["error"].clone())
                .unwrap_or_else(|e| panic!("the error does not parse back ({e}): {body}"));
            assert_eq!(back, error);
        }
    }
}
