//! The netem command's flags, and the value parsers of the fault flags (`P[,CORR]`, rates,
//! loss models), turned into the protocol's JSON.

use clap::Args;
use faultline::control::client::ClientError;
use serde_json::{json, Map, Value};

#[derive(Debug, Args)]
pub(crate) struct NetemArgs {
    /// Delay variation, e.g. 10ms.
    #[arg(long)]
    jitter: Option<String>,
    /// Correlation of successive delays, percent.
    #[arg(long)]
    correlation: Option<f64>,
    /// Jitter distribution: uniform, normal, pareto, paretonormal.
    #[arg(long)]
    distribution: Option<String>,
    /// Random loss: PERCENT[,CORRELATION].
    #[arg(long, value_name = "P[,CORR]", value_parser = chance_json)]
    loss: Option<Value>,
    /// Gilbert-Elliott loss, as netem's gemodel: P,R[,1-H[,1-K]] in percent.
    #[arg(long, value_name = "P,R[,1-H[,1-K]]", value_parser = burst_json, conflicts_with = "loss")]
    loss_burst: Option<Value>,
    /// netem's 4-state loss: P13[,P31[,P32[,P23[,P14]]]] in percent.
    #[arg(long, value_name = "P13[,P31,P32,P23,P14]", value_parser = state4_json, conflicts_with_all = ["loss", "loss_burst"])]
    loss_state: Option<Value>,
    /// Duplicate packets: PERCENT[,CORRELATION].
    #[arg(long, value_name = "P[,CORR]", value_parser = chance_json)]
    duplicate: Option<Value>,
    /// Corrupt packets (one bit flip): PERCENT[,CORRELATION].
    #[arg(long, value_name = "P[,CORR]", value_parser = chance_json)]
    corrupt: Option<Value>,
    /// Send packets early (out of order): PERCENT[,CORRELATION]; needs a delay.
    #[arg(long, value_name = "P[,CORR]", value_parser = chance_json)]
    reorder: Option<Value>,
    /// With --reorder: reorder every GAP-th packet.
    #[arg(long, requires = "reorder")]
    gap: Option<u32>,
    /// Bandwidth limit: RATE[,PACKET_OVERHEAD[,CELL_SIZE[,CELL_OVERHEAD]]], e.g. 10mbit.
    #[arg(long, value_name = "RATE[,OVERHEAD[,CELL[,CELL_OVERHEAD]]]", value_parser = rate_json)]
    rate: Option<Value>,
    /// Packets netem may hold.
    #[arg(long)]
    limit: Option<u32>,
}

impl NetemArgs {
    pub(crate) fn to_json(&self, delay: Option<&String>) -> Value {
        let mut netem = Map::new();
        let mut put = |name: &str, value: Option<Value>| {
            if let Some(value) = value {
                netem.insert(name.into(), value);
            }
        };
        put("delay", delay.map(|d| json!(d)));
        put("jitter", self.jitter.as_ref().map(|j| json!(j)));
        put("delay_correlation", self.correlation.map(|c| json!(c)));
        put("distribution", self.distribution.as_ref().map(|d| json!(d)));
        put("loss", self.loss.clone());
        put("loss", self.loss_burst.clone().map(|b| json!({"burst": b})));
        put(
            "loss",
            self.loss_state.clone().map(|s| json!({"state4": s})),
        );
        put("duplicate", self.duplicate.clone());
        put("corrupt", self.corrupt.clone());
        put(
            "reorder",
            self.reorder.clone().map(|mut r| {
                if let Some(gap) = self.gap {
                    r["gap"] = json!(gap);
                }
                r
            }),
        );
        put("rate", self.rate.clone());
        put("limit", self.limit.map(|l| json!(l)));
        Value::Object(netem)
    }
}

pub(crate) fn burst_json(text: &str) -> Result<Value, ClientError> {
    let numbers: Result<Vec<f64>, _> = text.split(',').map(|s| s.trim().parse::<f64>()).collect();
    let usage = || {
        ClientError::Protocol(format!(
            "--burst {text:?}: expected P,R[,1-H[,1-K]] in percent"
        ))
    };
    let numbers = numbers.map_err(|_| usage())?;
    let mut burst = match numbers.as_slice() {
        [p, r, ..] if numbers.len() <= 4 => json!({"p": p, "r": r}),
        _ => return Err(usage()),
    };
    if let Some(bad) = numbers.get(2) {
        burst["loss_bad"] = json!(bad);
    }
    if let Some(good) = numbers.get(3) {
        burst["loss_good"] = json!(good);
    }
    Ok(burst)
}

fn numbers(text: &str, min: usize, max: usize, shape: &str) -> Result<Vec<f64>, String> {
    let numbers: Result<Vec<f64>, _> = text.split(',').map(|s| s.trim().parse::<f64>()).collect();
    match numbers {
        Ok(n) if (min..=max).contains(&n.len()) => Ok(n),
        _ => Err(format!("{text:?}: expected {shape}")),
    }
}

/// `P[,CORR]` → `{"percent": P, "correlation": CORR}`.
pub(crate) fn chance_json(text: &str) -> Result<Value, String> {
    let n = numbers(text, 1, 2, "PERCENT[,CORRELATION]")?;
    let mut chance = json!({"percent": n[0]});
    if let Some(c) = n.get(1) {
        chance["correlation"] = json!(c);
    }
    Ok(chance)
}

pub(crate) fn state4_json(text: &str) -> Result<Value, String> {
    let n = numbers(text, 1, 5, "P13[,P31[,P32[,P23[,P14]]]]")?;
    let mut state = Map::new();
    for (name, value) in ["p13", "p31", "p32", "p23", "p14"].iter().zip(n) {
        state.insert((*name).into(), json!(value));
    }
    Ok(Value::Object(state))
}

/// `RATE[,OVERHEAD[,CELL_SIZE[,CELL_OVERHEAD]]]`.
pub(crate) fn rate_json(text: &str) -> Result<Value, String> {
    let mut parts = text.split(',');
    let mut rate = json!({"rate": parts.next().unwrap_or_default().trim()});
    for name in ["packet_overhead", "cell_size", "cell_overhead"] {
        if let Some(part) = parts.next() {
            let value: i64 = part
                .trim()
                .parse()
                .map_err(|_| format!("{text:?}: {name} must be an integer"))?;
            rate[name] = json!(value);
        }
    }
    Ok(rate)
}
