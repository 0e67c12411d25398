//! scripts/drill.sh, the runbook drills, against the lab it makes itself: detection and
//! recovery measured with real traffic, every report in the shape docs/drills.md documents,
//! and the exit codes for a pass, a missed RTO, a usage error and an unsupported fault.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use faultline_tests::{
    agent::{bin_path, Agent},
    lab::require_root,
};
use serde_json::{json, Value};

struct Reports(PathBuf);

impl Reports {
    fn new(test: &str) -> Reports {
        Reports(std::env::temp_dir().join(format!("faultline-drill-{}-{test}", std::process::id())))
    }

    fn read(&self, name: &str) -> Value {
        let path = self.0.join(name);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
}

impl Drop for Reports {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn drill(reports: &Reports, args: &[&str]) -> Output {
    require_root();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/drill.sh");
    let bins = bin_path("faultd")
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    Command::new("bash")
        .arg(script)
        .args(args)
        .arg("--output-dir")
        .arg(&reports.0)
        .env("FAULTLINE_BIN_DIR", bins)
        .output()
        .expect("run drill.sh")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Checks a value against a shape: `"string"`, `"number"`, `"number|null"`, `"array"`,
/// `"integer"`, or an object of shapes (every key required, no other key).
fn assert_shape(value: &Value, shape: &Value, at: &str) {
    match shape {
        Value::Object(fields) => {
            let object = value
                .as_object()
                .unwrap_or_else(|| panic!("{at}: not an object: {value}"));
            for (key, inner) in fields {
                let field = object
                    .get(key)
                    .unwrap_or_else(|| panic!("{at}.{key} is missing"));
                assert_shape(field, inner, &format!("{at}.{key}"));
            }
            for key in object.keys() {
                assert!(fields.contains_key(key), "{at}.{key} is not documented");
            }
        }
        Value::String(kinds) => {
            let ok = kinds.split('|').any(|kind| match kind {
                "string" => value.is_string(),
                "number" => value.is_number(),
                "integer" => value.is_u64(),
                "null" => value.is_null(),
                "array" => value.is_array(),
                _ => panic!("bad shape {kind}"),
            });
            assert!(ok, "{at} is {value}, not {kinds}");
        }
        _ => panic!("bad shape {shape}"),
    }
}

/// The scenario report, as docs/drills.md documents it.
fn assert_report(report: &Value) {
    let shape = json!({
        "scenario": "string",
        "kind": "string",
        "execution": {"started_at": "string", "ended_at": "string", "duration_s": "number",
                      "target": "string", "fault_ids": "array", "faultctl_args": "array"},
        "metrics": {"detection_s": "number|null", "recovery_s": "number|null",
                    "probes_total": "integer", "probes_failed": "integer", "probe": "string",
                    "probe_interval_s": "number"},
        "validation": {"rto_s": "number", "verdict": "string", "reason": "string"},
    });
    assert_shape(report, &shape, "report");
    let verdict = report["validation"]["verdict"].as_str().unwrap_or_default();
    assert!(
        ["pass", "fail", "unsupported", "aborted"].contains(&verdict),
        "verdict {verdict}"
    );
}

fn assert_summary(summary: &Value, scenarios: usize) {
    let shape = json!({
        "drill": {"started_at": "string", "ended_at": "string", "mode": "string",
                  "seed": "integer", "rto_s": "number", "target": "string", "probe": "string"},
        "scenarios": "array",
        "counts": {"pass": "integer", "fail": "integer", "unsupported": "integer",
                   "aborted": "integer"},
        "verdict": "string",
    });
    assert_shape(summary, &shape, "summary");
    let entries = summary["scenarios"].as_array().expect("scenarios");
    assert_eq!(entries.len(), scenarios);
    for entry in entries {
        let shape = json!({"scenario": "string", "verdict": "string",
                           "detection_s": "number|null", "recovery_s": "number|null",
                           "report": "string"});
        assert_shape(entry, &shape, "summary.scenarios[]");
    }
}

#[test]
fn a_partition_drill_measures_detection_and_recovery() {
    let reports = Reports::new("partition");
    let out = drill(
        &reports,
        &["--scenarios", "partition-3s", "--duration", "2s"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = reports.read("partition-3s.json");
    assert_report(&report);
    assert_eq!(report["validation"]["verdict"], "pass", "{report}");
    let detection = report["metrics"]["detection_s"].as_f64().expect("detected");
    let recovery = report["metrics"]["recovery_s"].as_f64().expect("recovered");
    // A probe fails once its 1 s connect timeout runs out; the heal is seen at once.
    assert!(
        detection > 0.0 && detection <= 2.0,
        "detection {detection} s"
    );
    assert!(recovery <= 1.0, "recovery {recovery} s after the heal");
    assert!(report["metrics"]["probes_failed"].as_u64() >= Some(1));
    let summary = reports.read("summary.json");
    assert_summary(&summary, 1);
    assert_eq!(summary["verdict"], "pass");
    assert_eq!(summary["counts"]["pass"], 1);
    assert!(
        stderr(&out).contains("partition-3s"),
        "no scorecard: {}",
        stderr(&out)
    );
}

#[test]
fn a_recovery_beyond_the_rto_fails_the_drill() {
    let reports = Reports::new("rto");
    let out = drill(
        &reports,
        &["--scenarios", "loss-50", "--duration", "1s", "--rto", "0"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = reports.read("loss-50.json");
    assert_report(&report);
    assert_eq!(report["validation"]["verdict"], "fail", "{report}");
    let summary = reports.read("summary.json");
    assert_summary(&summary, 1);
    assert_eq!(summary["verdict"], "fail");
}

#[test]
fn usage_errors_exit_2_and_run_nothing() {
    let reports = Reports::new("usage");
    for args in [
        &["--scenarios", "no-such-scenario"][..],
        &["--rto", "soon"],
        &["--mode", "chaotic"],
        &["--target", "--dev eth0"],
    ] {
        let out = drill(&reports, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    assert!(!reports.0.join("summary.json").exists());
}

#[test]
fn a_latency_drill_runs_where_netem_exists_and_is_unsupported_elsewhere() {
    let netem = {
        let agent = Agent::start();
        agent.request(json!({"id": 1, "op": "hello"}))["result"]["features"]["netem"] == true
    };
    let reports = Reports::new("latency");
    let out = drill(
        &reports,
        &["--scenarios", "latency-100ms", "--duration", "2s"],
    );
    let report = reports.read("latency-100ms.json");
    assert_report(&report);
    if netem {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(report["validation"]["verdict"], "pass", "{report}");
    } else {
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert_eq!(report["validation"]["verdict"], "unsupported", "{report}");
        assert_eq!(reports.read("summary.json")["verdict"], "incomplete");
    }
}

#[test]
fn the_connection_and_payload_drills_fail_the_echo_probe_and_recover() {
    let reports = Reports::new("connection");
    let scenarios = [
        "exchange-reset",
        "api-timeout",
        "tls-handshake-failure",
        "corrupt-feed",
    ];
    let out = drill(
        &reports,
        &["--scenarios", &scenarios.join(","), "--duration", "2s"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for name in scenarios {
        let report = reports.read(&format!("{name}.json"));
        assert_report(&report);
        assert_eq!(report["validation"]["verdict"], "pass", "{report}");
        // Each fault cut the lab's echo exchange: detected while it held, healed after.
        assert!(
            report["metrics"]["detection_s"].as_f64().is_some(),
            "{report}"
        );
        assert!(
            report["metrics"]["recovery_s"].as_f64().is_some(),
            "{report}"
        );
    }
    assert_eq!(reports.read("summary.json")["counts"]["pass"], 4);
}
