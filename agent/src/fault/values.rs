//! Validated scalar values of the fault model. Each parses from the text a user writes and
//! cannot hold an out-of-range value afterwards.

use std::{fmt, net::IpAddr, str::FromStr, time::Duration};

use thiserror::Error;

/// Why a value was rejected; the caller adds the field path.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ValueError(pub String);

fn invalid(message: impl Into<String>) -> ValueError {
    ValueError(message.into())
}

/// A percentage in (0, 100].
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Percent(f64);

impl Percent {
    pub fn new(value: f64) -> Result<Self, ValueError> {
        if value.is_finite() && value > 0.0 && value <= 100.0 {
            Ok(Self(value))
        } else {
            Err(invalid(format!("{value} is not a percentage in (0, 100]")))
        }
    }

    /// Like `new`, but 0 is allowed (a probability that may be zero, e.g. loss while good).
    pub fn new_or_zero(value: f64) -> Result<Self, ValueError> {
        if value == 0.0 {
            Ok(Self(0.0))
        } else {
            Self::new(value)
                .map_err(|_| invalid(format!("{value} is not a percentage in [0, 100]")))
        }
    }

    pub fn value(self) -> f64 {
        self.0
    }

    /// The probability as a fraction of 2^32, the datapath's encoding.
    pub fn as_u32_fraction(self) -> u32 {
        (self.0 / 100.0 * 4_294_967_296.0)
            .round()
            .min(u32::MAX as f64) as u32
    }
}

/// A fraction in (0, 1].
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Fraction(f64);

impl Fraction {
    pub fn new(value: f64) -> Result<Self, ValueError> {
        if value.is_finite() && value > 0.0 && value <= 1.0 {
            Ok(Self(value))
        } else {
            Err(invalid(format!("{value} is not a fraction in (0, 1]")))
        }
    }

    pub fn value(self) -> f64 {
        self.0
    }
}

/// An inclusive port range; a single port is a range of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    pub fn first(self) -> u16 {
        self.first
    }

    pub fn last(self) -> u16 {
        self.last
    }
}

impl FromStr for PortRange {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        let port = |s: &str| -> Result<u16, ValueError> {
            match s.trim().parse::<u32>() {
                Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
                _ => Err(invalid(format!("{s:?} is not a port in 1..65535"))),
            }
        };
        let (first, last) = match text.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(text)?, port(text)?),
        };
        if first > last {
            return Err(invalid(format!(
                "port range {text:?} ends before it starts"
            )));
        }
        Ok(Self { first, last })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// An IPv4 or IPv6 network; host bits must be zero, so what is written is what is matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    pub fn addr(self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(self) -> u8 {
        self.prefix_len
    }

    /// The network as an IPv6 address (IPv4 mapped into ::ffff:0:0/96) and prefix length
    /// within those 128 bits, the datapath's one address space.
    pub fn to_mapped_v6(self) -> ([u8; 16], u32) {
        match self.addr {
            IpAddr::V4(v4) => (
                v4.to_ipv6_mapped().octets(),
                96 + u32::from(self.prefix_len),
            ),
            IpAddr::V6(v6) => (v6.octets(), u32::from(self.prefix_len)),
        }
    }
}

impl FromStr for Cidr {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        let (addr_text, len_text) = text.split_once('/').unwrap_or((text, ""));
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| invalid(format!("{addr_text:?} is not an IPv4 or IPv6 address")))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = if len_text.is_empty() {
            max
        } else {
            match len_text.parse::<u8>() {
                Ok(len) if len <= max => len,
                _ => {
                    return Err(invalid(format!(
                        "prefix length /{len_text} is not in 0..={max}"
                    )))
                }
            }
        };
        let masked = mask(addr, prefix_len);
        if masked != addr {
            return Err(invalid(format!(
                "{text} has host bits set; the network is {masked}/{prefix_len}"
            )));
        }
        Ok(Self { addr, prefix_len })
    }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4) & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(bits.into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(bits.into())
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// The L4 protocol a fault matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Proto {
    #[default]
    Any,
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
}

impl Proto {
    pub const NAMES: &'static str = "tcp, udp, icmp, icmpv6 or any";

    /// The IP protocol number; 0 means any.
    pub fn number(self) -> u8 {
        match self {
            Self::Any => 0,
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Icmp => 1,
            Self::Icmpv6 => 58,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Icmp => "icmp",
            Self::Icmpv6 => "icmpv6",
        }
    }
}

impl FromStr for Proto {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        Ok(match text.to_ascii_lowercase().as_str() {
            "any" => Self::Any,
            "tcp" => Self::Tcp,
            "udp" => Self::Udp,
            "icmp" => Self::Icmp,
            "icmpv6" => Self::Icmpv6,
            _ => {
                return Err(invalid(format!(
                    "unknown protocol {text:?}; use {}",
                    Self::NAMES
                )))
            }
        })
    }
}

/// Which packets of the matched flows are hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Direction {
    Egress,
    Ingress,
    #[default]
    Both,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Self::Egress => "egress",
            Self::Ingress => "ingress",
            Self::Both => "both",
        }
    }

    pub fn has_egress(self) -> bool {
        matches!(self, Self::Egress | Self::Both)
    }

    pub fn has_ingress(self) -> bool {
        matches!(self, Self::Ingress | Self::Both)
    }
}

impl FromStr for Direction {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        Ok(match text {
            "egress" => Self::Egress,
            "ingress" => Self::Ingress,
            "both" => Self::Both,
            _ => return Err(invalid(format!("{text:?} is not egress, ingress or both"))),
        })
    }
}

/// Which TCP connections of the matched flows a fault acts on, told apart by whether the fault
/// saw their SYN (see docs/protocol.md; other protocols' flows are all new).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Connections {
    #[default]
    All,
    /// Opened after the fault was applied.
    New,
    /// Open before the fault was applied.
    Established,
}

impl Connections {
    pub fn name(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::New => "new",
            Self::Established => "established",
        }
    }
}

impl FromStr for Connections {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        Ok(match text {
            "all" => Self::All,
            "new" => Self::New,
            "established" => Self::Established,
            _ => return Err(invalid(format!("{text:?} is not new, established or all"))),
        })
    }
}

/// A human duration: `500us`, `500ms`, `30s`, `1.5s`, `2m`, `1h`, or sums like `1m30s`, with
/// microsecond resolution (finer parts are refused, not silently rounded).
pub fn parse_duration(text: &str) -> Result<Duration, ValueError> {
    let bad = || {
        invalid(format!(
            "{text:?} is not a duration like 500ms, 30s, 2m or 1h"
        ))
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    // Exact decimal arithmetic in microseconds: floating point would misread long durations
    // (past ~10^12 us) and so refuse its own normal form.
    const MAX_MICROS: u128 = 1_000_000_000 * 1_000_000;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (number, after) = rest.split_at(number_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let unit_micros: u128 = match unit {
            "us" => 1,
            "ms" => 1_000,
            "s" => 1_000_000,
            "m" => 60_000_000,
            "h" => 3_600_000_000,
            _ => return Err(bad()),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
            return Err(bad());
        }
        // Digits beyond these cannot change a bounded value by a whole microsecond.
        if whole.len() > 20 || fraction.len() > 20 {
            return Err(bad());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let scale = 10u128.pow(fraction.len() as u32);
        let fraction: u128 = if fraction.is_empty() {
            0
        } else {
            fraction.parse().map_err(|_| bad())?
        };
        let fraction_micros = fraction * unit_micros;
        if !fraction_micros.is_multiple_of(scale) {
            return Err(invalid(format!("{text:?} is finer than a microsecond")));
        }
        total = whole
            .checked_mul(unit_micros)
            .and_then(|w| w.checked_add(fraction_micros / scale))
            .and_then(|part| total.checked_add(part))
            .filter(|t| *t <= MAX_MICROS)
            .ok_or_else(bad)?;
        rest = next;
    }
    Ok(Duration::from_micros(total as u64))
}

/// Formats a duration the way `parse_duration` reads it, choosing the shortest exact form.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !d.subsec_micros().is_multiple_of(1000) {
        format!("{}us", d.as_micros())
    } else if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_bounds() {
        assert!(Percent::new(150.0).is_err());
        assert!(Percent::new(0.0).is_err());
        assert!(Percent::new(-1.0).is_err());
        assert!(Percent::new(f64::NAN).is_err());
        assert_eq!(
            Percent::new(100.0).map(|p| p.as_u32_fraction()),
            Ok(u32::MAX)
        );
        assert_eq!(Percent::new(50.0).map(|p| p.as_u32_fraction()), Ok(1 << 31));
        assert_eq!(
            Percent::new_or_zero(0.0).map(|p| p.as_u32_fraction()),
            Ok(0)
        );
    }

    #[test]
    fn ports() {
        assert_eq!(
            "80".parse::<PortRange>().map(|r| (r.first(), r.last())),
            Ok((80, 80))
        );
        assert_eq!(
            "9000-9100".parse::<PortRange>().map(|r| r.to_string()),
            Ok("9000-9100".into())
        );
        assert!("70000".parse::<PortRange>().is_err());
        assert!("0".parse::<PortRange>().is_err());
        assert!("100-90".parse::<PortRange>().is_err());
        assert!("http".parse::<PortRange>().is_err());
    }

    #[test]
    fn cidrs() {
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0.1/24".parse::<Cidr>().is_err(), "host bits");
        assert!("fd00::/129".parse::<Cidr>().is_err());
        assert!("not-an-ip".parse::<Cidr>().is_err());
        let host: Cidr = "10.0.0.2".parse().expect("a host address");
        assert_eq!(host.to_string(), "10.0.0.2/32");
        assert_eq!(host.to_mapped_v6().1, 128);
        let any: Cidr = "0.0.0.0/0".parse().expect("v4 any");
        assert_eq!(any.to_mapped_v6().1, 96);
        let v6: Cidr = "fd00::/64".parse().expect("v6 net");
        assert_eq!(v6.to_mapped_v6().1, 64);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert!(parse_duration("0.4us").is_err());
        // Exact far past what f64 seconds hold to the microsecond; the normal form reads back.
        let long = parse_duration("999999999.999999s").expect("long");
        assert_eq!(long, Duration::from_micros(999_999_999_999_999));
        assert_eq!(parse_duration(&format_duration(long)), Ok(long));
        assert!(parse_duration("1000000000.000001s").is_err());
        assert_eq!(parse_duration(".5s"), Ok(Duration::from_millis(500)));
        for bad in ["1..5s", ".s", "1.2.3s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            format_duration(Duration::from_micros(1_000_500)),
            "1000500us"
        );
        for bad in ["", "-1s", "10", "5 parsecs", "s", "1e3s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn protocols() {
        assert_eq!("TCP".parse::<Proto>(), Ok(Proto::Tcp));
        assert!("sctp".parse::<Proto>().is_err());
    }
}
