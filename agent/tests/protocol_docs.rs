//! docs/protocol.md against the protocol's types: every JSON example in it is read with the
//! types faultd and faultctl use, and written back the same, so the document, faultd and its
//! clients cannot drift apart. (python/tests holds the Python client to the same examples.)
//!
//! An example is a fenced `json` block: one JSON value, or one JSON value per line. A value
//! with `op` is a request; with `ok`, a response line, read as the answer to the request
//! example before it (their ids match); with `event`, a line of a watch stream; any other,
//! a fault spec.

use faultline::{
    fault::spec::{DurationLimits, FaultSpec, FaultWire},
    proto::{parse_request, Request, Response, ResponseLine, WatchLine},
};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

const PROTOCOL_MD: &str = include_str!("../../docs/protocol.md");

/// The JSON values of every fenced `json` block, with the line each block starts on.
fn examples(markdown: &str) -> Vec<(usize, Value)> {
    let mut examples = Vec::new();
    let mut block: Option<(usize, Vec<&str>)> = None;
    for (number, line) in markdown.lines().enumerate() {
        let fence = line.trim_start();
        match &mut block {
            None if fence == "```json" => block = Some((number + 2, Vec::new())),
            None => {}
            Some((start, lines)) if fence.starts_with("```") => {
                let text = lines.join("\n");
                match serde_json::from_str::<Value>(&text) {
                    Ok(value) => examples.push((*start, value)),
                    Err(_) => {
                        for (offset, line) in lines.iter().enumerate() {
                            let value = serde_json::from_str(line).unwrap_or_else(|e| {
                                panic!("protocol.md:{}: not JSON ({e}): {line}", *start + offset)
                            });
                            examples.push((*start + offset, value));
                        }
                    }
                }
                block = None;
            }
            Some((_, lines)) => lines.push(line),
        }
    }
    examples
}

/// `value` read as `T` and written back: the same JSON, so the type holds every field the
/// document shows.
fn round_trip<T: DeserializeOwned + Serialize>(at: usize, value: &Value) -> T {
    let typed: T = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("protocol.md:{at}: {e}\n{value}"));
    assert_same(
        at,
        &serde_json::to_value(&typed).expect("types serialize"),
        value,
    );
    typed
}

/// The same JSON, where a number is its value: a client may write `20` where faultd writes
/// `20.0`.
fn assert_same(at: usize, written: &Value, example: &Value) {
    fn numbers_as_floats(value: &Value) -> Value {
        match value {
            Value::Number(n) => n.as_f64().map_or(Value::Null, Value::from),
            Value::Array(items) => items.iter().map(numbers_as_floats).collect(),
            Value::Object(fields) => fields
                .iter()
                .map(|(k, v)| (k.clone(), numbers_as_floats(v)))
                .collect(),
            other => other.clone(),
        }
    }
    assert_eq!(
        numbers_as_floats(written),
        numbers_as_floats(example),
        "protocol.md:{at}: written back differently"
    );
}

#[test]
fn every_example_in_protocol_md_reads_with_the_protocol_types() {
    let examples = examples(PROTOCOL_MD);
    let mut last_request: Option<(Value, Request)> = None;
    let (mut requests, mut responses, mut events, mut faults) = (0, 0, 0, 0);
    for (at, value) in &examples {
        if value.get("op").is_some() {
            let line = serde_json::to_vec(value).expect("json");
            let (id, request) = parse_request(&line);
            let request =
                request.unwrap_or_else(|e| panic!("protocol.md:{at}: refused: {e:?}\n{value}"));
            // What a client writes for it is the example, but for the id beside it.
            let mut written = serde_json::to_value(&request).expect("requests serialize");
            if !id.is_null() {
                written["id"] = id.clone();
            }
            assert_same(*at, &written, value);
            last_request = Some((id, request));
            requests += 1;
        } else if value.get("ok").is_some() {
            let line: ResponseLine = round_trip(*at, value);
            if let Some(result) = line.result {
                let Some((id, request)) = &last_request else {
                    panic!("protocol.md:{at}: an answer before any request");
                };
                assert_eq!(&line.id, id, "protocol.md:{at}: answers another request");
                let response = Response::of(request, result.clone())
                    .unwrap_or_else(|e| panic!("protocol.md:{at}: {e}\n{result}"));
                let written = serde_json::to_value(&response).expect("responses serialize");
                assert_same(*at, &written, &result);
            }
            responses += 1;
        } else if value.get("event").is_some() {
            let _: WatchLine = round_trip(*at, value);
            events += 1;
        } else {
            let wire: FaultWire = round_trip(*at, value);
            let limits = DurationLimits {
                default: Some(std::time::Duration::from_secs(30)),
                max: std::time::Duration::from_secs(3600),
            };
            FaultSpec::from_wire(&wire, &limits)
                .unwrap_or_else(|e| panic!("protocol.md:{at}: an invalid fault: {e}"));
            faults += 1;
        }
    }
    println!(
        "protocol.md: {} examples: {requests} requests, {responses} responses, {events} events, \
         {faults} fault specs",
        examples.len()
    );
    assert!(requests >= 10 && responses >= 10 && events >= 1 && faults >= 1);
}
