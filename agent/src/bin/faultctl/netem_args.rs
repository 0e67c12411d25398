//! The netem command's flags, and the value parsers of the fault flags (`P[,CORR]`, rates,
//! loss models), read into the protocol's wire types.

use clap::Args;
use faultline::fault::{
    burst::BurstWire,
    netem::{ChanceWire, FourStateWire, NetemLossWire, NetemWire, RateWire, ReorderWire},
};

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
    #[arg(long, value_name = "P[,CORR]", value_parser = chance)]
    loss: Option<ChanceWire>,
    /// Gilbert-Elliott loss, as netem's gemodel: P,R[,1-H[,1-K]] in percent.
    #[arg(long, value_name = "P,R[,1-H[,1-K]]", value_parser = burst, conflicts_with = "loss")]
    loss_burst: Option<BurstWire>,
    /// netem's 4-state loss: P13[,P31[,P32[,P23[,P14]]]] in percent.
    #[arg(long, value_name = "P13[,P31,P32,P23,P14]", value_parser = four_state, conflicts_with_all = ["loss", "loss_burst"])]
    loss_state: Option<FourStateWire>,
    /// Duplicate packets: PERCENT[,CORRELATION].
    #[arg(long, value_name = "P[,CORR]", value_parser = chance)]
    duplicate: Option<ChanceWire>,
    /// Corrupt packets (one bit flip): PERCENT[,CORRELATION].
    #[arg(long, value_name = "P[,CORR]", value_parser = chance)]
    corrupt: Option<ChanceWire>,
    /// Send packets early (out of order): PERCENT[,CORRELATION]; needs a delay.
    #[arg(long, value_name = "P[,CORR]", value_parser = chance)]
    reorder: Option<ChanceWire>,
    /// With --reorder: reorder every GAP-th packet.
    #[arg(long, requires = "reorder")]
    gap: Option<u32>,
    /// Bandwidth limit: RATE[,PACKET_OVERHEAD[,CELL_SIZE[,CELL_OVERHEAD]]], e.g. 10mbit.
    #[arg(long, value_name = "RATE[,OVERHEAD[,CELL[,CELL_OVERHEAD]]]", value_parser = rate)]
    rate: Option<RateWire>,
    /// Packets netem may hold.
    #[arg(long)]
    limit: Option<u32>,
}

impl NetemArgs {
    pub(crate) fn to_wire(&self, delay: Option<String>) -> NetemWire {
        let random = self.loss.as_ref().map(|chance| NetemLossWire {
            percent: Some(chance.percent),
            correlation: chance.correlation,
            burst: None,
            state4: None,
        });
        let burst = self.loss_burst.clone().map(|burst| NetemLossWire {
            percent: None,
            correlation: None,
            burst: Some(burst),
            state4: None,
        });
        let state4 = self.loss_state.clone().map(|state4| NetemLossWire {
            percent: None,
            correlation: None,
            burst: None,
            state4: Some(state4),
        });
        NetemWire {
            delay,
            jitter: self.jitter.clone(),
            delay_correlation: self.correlation,
            distribution: self.distribution.clone(),
            // clap lets at most one of them through.
            loss: random.or(burst).or(state4),
            duplicate: self.duplicate.clone(),
            corrupt: self.corrupt.clone(),
            reorder: self.reorder.as_ref().map(|chance| ReorderWire {
                percent: chance.percent,
                correlation: chance.correlation,
                gap: self.gap,
            }),
            rate: self.rate.clone(),
            limit: self.limit,
        }
    }
}

fn numbers(text: &str, min: usize, max: usize, shape: &str) -> Result<Vec<f64>, String> {
    let numbers: Result<Vec<f64>, _> = text.split(',').map(|s| s.trim().parse::<f64>()).collect();
    match numbers {
        Ok(n) if (min..=max).contains(&n.len()) => Ok(n),
        _ => Err(format!("{text:?}: expected {shape}")),
    }
}

/// `P,R[,1-H[,1-K]]` in percent, as netem's gemodel.
pub(crate) fn burst(text: &str) -> Result<BurstWire, String> {
    let n = numbers(text, 2, 4, "P,R[,1-H[,1-K]] in percent")?;
    Ok(BurstWire {
        p: n[0],
        r: n[1],
        loss_bad: n.get(2).copied(),
        loss_good: n.get(3).copied(),
    })
}

/// `P[,CORR]`.
fn chance(text: &str) -> Result<ChanceWire, String> {
    let n = numbers(text, 1, 2, "PERCENT[,CORRELATION]")?;
    Ok(ChanceWire {
        percent: n[0],
        correlation: n.get(1).copied(),
    })
}

/// `P13[,P31[,P32[,P23[,P14]]]]`.
fn four_state(text: &str) -> Result<FourStateWire, String> {
    let n = numbers(text, 1, 5, "P13[,P31[,P32[,P23[,P14]]]]")?;
    Ok(FourStateWire {
        p13: n[0],
        p31: n.get(1).copied(),
        p32: n.get(2).copied(),
        p23: n.get(3).copied(),
        p14: n.get(4).copied(),
    })
}

/// `RATE[,OVERHEAD[,CELL_SIZE[,CELL_OVERHEAD]]]`.
fn rate(text: &str) -> Result<RateWire, String> {
    fn integer<T: std::str::FromStr>(
        text: &str,
        part: Option<&str>,
        name: &str,
    ) -> Result<Option<T>, String> {
        part.map(|p| {
            p.parse()
                .map_err(|_| format!("{text:?}: {name} must be an integer in range"))
        })
        .transpose()
    }
    let mut parts = text.split(',').map(str::trim);
    Ok(RateWire {
        rate: parts.next().unwrap_or_default().to_owned(),
        packet_overhead: integer(text, parts.next(), "packet_overhead")?,
        cell_size: integer(text, parts.next(), "cell_size")?,
        cell_overhead: integer(text, parts.next(), "cell_overhead")?,
    })
}
