//! Gilbert-Elliott burst loss, one type and one parser for both places it is used: eBPF loss
//! faults (`loss.burst`) and netem's loss model (`netem.loss.burst`).

use serde::{Deserialize, Serialize};

use super::{error::SpecError, values::Percent};

/// Gilbert-Elliott parameters in percent, named after netem's `loss gemodel p r 1-h 1-k`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BurstWire {
    pub p: f64,
    pub r: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_bad: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_good: Option<f64>,
}

/// netem's `gemodel`: p = P(good→bad), r = P(bad→good), loss_bad = 1-h, loss_good = 1-k.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GilbertElliott {
    pub p: Percent,
    pub r: Percent,
    pub loss_bad: Percent,
    pub loss_good: Percent,
}

impl GilbertElliott {
    /// Validates `wire`, found at field path `at`; `loss_bad` defaults to 100 (netem's h = 0),
    /// `loss_good` to 0.
    pub fn from_wire(wire: &BurstWire, at: &str) -> Result<Self, SpecError> {
        let field = |name: &str| format!("{at}.{name}");
        Ok(Self {
            p: Percent::new(wire.p).map_err(SpecError::at(field("p")))?,
            r: Percent::new(wire.r).map_err(SpecError::at(field("r")))?,
            loss_bad: Percent::new(wire.loss_bad.unwrap_or(100.0))
                .map_err(SpecError::at(field("loss_bad")))?,
            loss_good: Percent::new_or_zero(wire.loss_good.unwrap_or(0.0))
                .map_err(SpecError::at(field("loss_good")))?,
        })
    }

    /// The normalised wire form, defaults filled in.
    pub fn to_wire(self) -> BurstWire {
        BurstWire {
            p: self.p.value(),
            r: self.r.value(),
            loss_bad: Some(self.loss_bad.value()),
            loss_good: Some(self.loss_good.value()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_field_paths() {
        let wire = BurstWire {
            p: 1.0,
            r: 25.0,
            loss_bad: None,
            loss_good: None,
        };
        let ge = GilbertElliott::from_wire(&wire, "x").expect("valid");
        assert_eq!(ge.loss_bad.value(), 100.0);
        assert_eq!(ge.loss_good.value(), 0.0);
        assert_eq!(GilbertElliott::from_wire(&ge.to_wire(), "x"), Ok(ge));
        let bad = BurstWire { r: 0.0, ..wire };
        assert_eq!(
            GilbertElliott::from_wire(&bad, "fault.netem.loss.burst")
                .expect_err("r = 0")
                .field,
            "fault.netem.loss.burst.r"
        );
    }
}
