//! The corrupt action: flip payload bits in a share of the matching TCP and UDP packets, with
//! the L4 checksum recomputed (the receiving application gets the corrupted bytes) or left
//! broken (the receiving kernel discards the packet, as netem's `corrupt` makes it).
//! What is flipped, and how each kind of skb keeps or breaks its checksum, is the datapath's
//! (ebpf/include/corrupt.h); docs/protocol.md says it for users.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{
    error::SpecError,
    values::{Percent, ValueError},
};
use crate::abi::MAX_CORRUPT_BITS;

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CorruptWire {
    /// Share of the matching packets corrupted, in (0, 100].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// Bits flipped in each corrupted packet, 1..=8; 1 when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits: Option<i64>,
    /// `recompute` (the default) or `broken`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

/// A validated corrupt action.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Corrupt {
    pub percent: Percent,
    pub bits: FlippedBits,
    pub checksum: Checksum,
}

/// How many payload bits one corrupted packet has flipped: 1 to `MAX_CORRUPT_BITS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlippedBits(u8);

impl FlippedBits {
    pub fn new(bits: i64) -> Result<Self, ValueError> {
        u8::try_from(bits)
            .ok()
            .filter(|&b| b >= 1 && u32::from(b) <= MAX_CORRUPT_BITS)
            .map(Self)
            .ok_or_else(|| {
                ValueError(format!(
                    "{bits} is not a number of bits in 1..={MAX_CORRUPT_BITS}"
                ))
            })
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

/// What becomes of the L4 checksum of a corrupted packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Checksum {
    /// Updated to match the corrupted payload: the application receives the corrupted bytes.
    #[default]
    Recompute,
    /// Left as it was, so it no longer matches: the receiving kernel discards the packet.
    Broken,
}

impl Checksum {
    pub fn name(self) -> &'static str {
        match self {
            Self::Recompute => "recompute",
            Self::Broken => "broken",
        }
    }
}

impl FromStr for Checksum {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        match text {
            "recompute" => Ok(Self::Recompute),
            "broken" => Ok(Self::Broken),
            _ => Err(ValueError(format!("{text:?} is not recompute or broken"))),
        }
    }
}

impl Corrupt {
    /// Validates `wire`, found at `fault.corrupt`.
    pub fn from_wire(wire: &CorruptWire) -> Result<Self, SpecError> {
        let percent = wire
            .percent
            .ok_or_else(|| SpecError::new("fault.corrupt.percent", "required"))?;
        Ok(Self {
            percent: Percent::new(percent).map_err(SpecError::at("fault.corrupt.percent"))?,
            bits: FlippedBits::new(wire.bits.unwrap_or(1))
                .map_err(SpecError::at("fault.corrupt.bits"))?,
            checksum: match &wire.checksum {
                Some(text) => text
                    .parse()
                    .map_err(SpecError::at("fault.corrupt.checksum"))?,
                None => Checksum::default(),
            },
        })
    }

    /// The normalised wire form, defaults filled in.
    pub fn to_wire(self) -> CorruptWire {
        CorruptWire {
            percent: Some(self.percent.value()),
            bits: Some(i64::from(self.bits.get())),
            checksum: Some(self.checksum.name().to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(percent: Option<f64>, bits: Option<i64>, checksum: Option<&str>) -> CorruptWire {
        CorruptWire {
            percent,
            bits,
            checksum: checksum.map(str::to_owned),
        }
    }

    #[test]
    fn defaults_are_one_bit_and_a_recomputed_checksum() {
        let corrupt = Corrupt::from_wire(&wire(Some(5.0), None, None)).expect("valid");
        assert_eq!(corrupt.bits.get(), 1);
        assert_eq!(corrupt.checksum, Checksum::Recompute);
        assert_eq!(Corrupt::from_wire(&corrupt.to_wire()), Ok(corrupt));
        let broken = Corrupt::from_wire(&wire(Some(100.0), Some(8), Some("broken"))).expect("ok");
        assert_eq!((broken.bits.get(), broken.checksum), (8, Checksum::Broken));
        assert_eq!(Corrupt::from_wire(&broken.to_wire()), Ok(broken));
    }

    #[test]
    fn bad_values_name_their_field() {
        let field = |w: CorruptWire| Corrupt::from_wire(&w).expect_err("invalid").field;
        assert_eq!(field(wire(None, None, None)), "fault.corrupt.percent");
        assert_eq!(field(wire(Some(0.0), None, None)), "fault.corrupt.percent");
        assert_eq!(
            field(wire(Some(100.5), None, None)),
            "fault.corrupt.percent"
        );
        for bits in [0, 9, -1, 256] {
            assert_eq!(
                field(wire(Some(1.0), Some(bits), None)),
                "fault.corrupt.bits"
            );
        }
        assert_eq!(
            field(wire(Some(1.0), None, Some("valid"))),
            "fault.corrupt.checksum"
        );
    }
}
