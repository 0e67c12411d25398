//! Metrics: what faultd has answered and what its faults have done, as the `metrics` op's
//! JSON and as Prometheus text (`faultctl metrics`, and `faultd --metrics-listen` on a
//! loopback port, for a node exporter or an agent to scrape).

use std::{collections::BTreeMap, fmt::Write as _, net::SocketAddr, sync::Mutex, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::timeout,
};

use crate::{
    engine::{Command, EngineError, EngineHandle},
    proto::{DirectionCounters, ErrorCode, FaultView, Metrics, RequestCount},
};

/// Requests answered since faultd started, by op and outcome (`ok` or the error code).
#[derive(Debug, Default)]
pub struct RequestCounts(Mutex<BTreeMap<(&'static str, &'static str), u64>>);

impl RequestCounts {
    pub fn count(&self, op: &'static str, outcome: Result<(), ErrorCode>) {
        let code = outcome.err().map_or("ok", ErrorCode::as_str);
        // A poisoned lock only means a panic elsewhere mid-increment; the counts still stand.
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry((op, code)).or_default() += 1;
    }

    fn snapshot(&self) -> Vec<RequestCount> {
        let counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        counts
            .iter()
            .map(|(&(op, code), &count)| RequestCount {
                op: op.to_owned(),
                code: code.to_owned(),
                count,
            })
            .collect()
    }
}

pub async fn snapshot(
    engine: &EngineHandle,
    counts: &RequestCounts,
) -> Result<Metrics, EngineError> {
    Ok(Metrics {
        faults: engine.call(Command::List).await?,
        engine: engine.call(Command::Stats).await?,
        requests: counts.snapshot(),
    })
}

/// The Prometheus text exposition format (version 0.0.4).
pub fn render(snapshot: &Metrics) -> String {
    let mut text = String::new();
    family(
        &mut text,
        "faultline_active_faults",
        "gauge",
        "Faults active now.",
    );
    let _ = writeln!(text, "faultline_active_faults {}", snapshot.faults.len());

    family(
        &mut text,
        "faultline_datapath_memory_bytes",
        "gauge",
        "What the kernel charges for the datapath's maps and programs (memlock).",
    );
    let memory = snapshot.engine.datapath_memory_bytes;
    let _ = writeln!(text, "faultline_datapath_memory_bytes {memory}");
    family(
        &mut text,
        "faultline_repairs_total",
        "counter",
        "Times faultd put back what someone else removed of its faults (filters, qdiscs, ifbs).",
    );
    let _ = writeln!(text, "faultline_repairs_total {}", snapshot.engine.repairs);

    family(
        &mut text,
        "faultline_requests_total",
        "counter",
        "Requests answered since faultd started, by op and outcome (ok or the error code).",
    );
    for r in &snapshot.requests {
        let _ = writeln!(
            text,
            "faultline_requests_total{{op=\"{}\",code=\"{}\"}} {}",
            escape(&r.op),
            escape(&r.code),
            r.count
        );
    }

    family(
        &mut text,
        "faultline_fault_remaining_seconds",
        "gauge",
        "Time until each active fault's deadline.",
    );
    for f in &snapshot.faults {
        let _ = writeln!(
            text,
            "faultline_fault_remaining_seconds{{{}}} {}",
            fault_labels(f),
            f.remaining_ms as f64 / 1000.0
        );
    }

    type Read = fn(&DirectionCounters) -> u64;
    let series: [(&str, &str, Read); 8] = [
        ("matched_packets", "Packets a fault's match selected", |c| {
            c.matched_packets
        }),
        ("matched_bytes", "Bytes a fault's match selected", |c| {
            c.matched_bytes
        }),
        ("dropped_packets", "Packets a fault dropped", |c| {
            c.dropped_packets
        }),
        ("dropped_bytes", "Bytes a fault dropped", |c| {
            c.dropped_bytes
        }),
        ("resets_sent", "RSTs a reset fault sent", |c| c.resets_sent),
        (
            "rejects_sent",
            "RST/ACKs and ICMP port unreachables a reject fault sent",
            |c| c.rejects_sent,
        ),
        (
            "allowed_bytes",
            "Payload bytes a stall let through before it acted",
            |c| c.allowed_bytes,
        ),
        (
            "corrupted_packets",
            "Packets whose payload a corrupt fault changed",
            |c| c.corrupted_packets,
        ),
    ];
    for (name, help, read) in series {
        let name = format!("faultline_fault_{name}_total");
        family(
            &mut text,
            &name,
            "counter",
            &format!("{help}, by direction."),
        );
        for f in &snapshot.faults {
            for (direction, counters) in [
                ("egress", &f.counters.egress),
                ("ingress", &f.counters.ingress),
            ] {
                let _ = writeln!(
                    text,
                    "{name}{{{},direction=\"{direction}\"}} {}",
                    fault_labels(f),
                    read(counters)
                );
            }
        }
    }
    text
}

fn family(text: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn fault_labels(f: &FaultView) -> String {
    let kind = if f.fault.netem.is_some() {
        "netem"
    } else if f.fault.loss.is_some() {
        "loss"
    } else if f.fault.reset.is_some() {
        "reset"
    } else if f.fault.reject.is_some() {
        "reject"
    } else if f.fault.corrupt.is_some() {
        "corrupt"
    } else {
        "partition"
    };
    format!(
        "fault_id=\"{}\",kind=\"{kind}\",dev=\"{}\",netns=\"{}\",label=\"{}\"",
        escape(&f.id),
        escape(&f.fault.target.dev),
        escape(f.fault.target.netns.as_deref().unwrap_or("")),
        escape(f.fault.label.as_deref().unwrap_or("")),
    )
}

/// A label value as the text format wants it: backslash, quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Why a metrics address is refused.
#[derive(Debug, thiserror::Error)]
#[error("--metrics-listen {0}: only a loopback address (127.0.0.0/8 or ::1) is served; forward the port to reach it from elsewhere")]
pub struct NotLoopback(pub SocketAddr);

/// Serves `GET /metrics` on `listener` (a loopback address) until faultd stops. Each
/// connection gets one answer and is closed; a client that sends nothing in 5 s is dropped.
pub async fn serve_http(
    listener: TcpListener,
    engine: EngineHandle,
    counts: std::sync::Arc<RequestCounts>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let engine = engine.clone();
        let counts = counts.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &engine, &counts).await {
                tracing::debug!(error = %e, "metrics request failed");
            }
        });
    }
}

async fn answer(
    mut stream: TcpStream,
    engine: &EngineHandle,
    counts: &RequestCounts,
) -> std::io::Result<()> {
    const LIMIT: usize = 8 * 1024;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < LIMIT {
        let n = match timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(read) => read?,
            Err(_) => return Ok(()),
        };
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let line = request.split(|&b| b == b'\r').next().unwrap_or_default();
    let (status, body) = match line {
        b"GET /metrics HTTP/1.1" | b"GET /metrics HTTP/1.0" => match snapshot(engine, counts).await
        {
            Ok(snapshot) => ("200 OK", render(&snapshot)),
            Err(e) => ("503 Service Unavailable", format!("{e}\n")),
        },
        _ => (
            "404 Not Found",
            "faultd serves GET /metrics only\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    timeout(
        Duration::from_secs(5),
        stream.write_all(response.as_bytes()),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "slow reader"))?
}
