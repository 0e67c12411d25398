//! Weekly windows in which faults may be applied (`[[windows]]`), and the calendar arithmetic
//! they need: fixed UTC offsets, no time zones, no clock reads (callers pass `now`).

use std::{
    fmt,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::Deserialize;

use super::parse::{at, reject, Rejection};
use crate::fault::values::ValueError;

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const LONG_DAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];
const MINUTES_PER_DAY: u16 = 24 * 60;

/// A weekly window in which faults may be applied. `days` are the days the window *starts*
/// on, so a window from 22:00 to 06:00 on fri runs into saturday morning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Window {
    /// Bit d set: weekday d is on, monday = 0.
    pub(super) days: u8,
    /// Minutes after local midnight; start inclusive, end exclusive, end may be 24:00.
    pub(super) start: u16,
    pub(super) end: u16,
    /// Local time = UTC + offset.
    pub(super) offset_secs: i32,
}

impl Window {
    pub(super) fn from_wire(key: &str, wire: &WindowWire) -> Result<Self, Rejection> {
        let days = match &wire.days {
            None => 0x7f,
            Some(names) if names.is_empty() => {
                return reject(
                    format!("{key}.days"),
                    "is empty; leave it out for every day",
                )
            }
            Some(names) => names.iter().try_fold(0u8, |set, name| {
                let lower = name.to_ascii_lowercase();
                match (0..7).find(|&d| DAYS[d] == lower || LONG_DAYS[d] == lower) {
                    Some(d) => Ok(set | 1 << d),
                    None => reject(
                        format!("{key}.days"),
                        format!("{name:?} is not a day (mon, tue, wed, thu, fri, sat, sun)"),
                    ),
                }
            })?,
        };
        let start = minute_of_day(&wire.start, false).map_err(at(format!("{key}.start")))?;
        let end = minute_of_day(&wire.end, true).map_err(at(format!("{key}.end")))?;
        if start == end {
            return reject(
                format!("{key}.end"),
                "equals start; use 00:00 to 24:00 for a whole day",
            );
        }
        let offset_secs = match &wire.utc_offset {
            None => 0,
            Some(text) => parse_offset(text).map_err(at(format!("{key}.utc_offset")))?,
        };
        Ok(Self {
            days,
            start,
            end,
            offset_secs,
        })
    }

    pub(super) fn contains(&self, unix_secs: i64) -> bool {
        let (day, minute) = local_time(unix_secs, self.offset_secs);
        let on = |d: u8| self.days & (1 << d) != 0;
        if self.start < self.end {
            on(day) && (self.start..self.end).contains(&minute)
        } else {
            // Wraps midnight: the evening part is on its own day, the morning part belongs to
            // the window that started the day before.
            (on(day) && minute >= self.start) || (on((day + 6) % 7) && minute < self.end)
        }
    }

    pub(super) fn day_names(&self) -> Vec<String> {
        (0..7u8)
            .filter(|d| self.days & (1 << d) != 0)
            .map(|d| DAYS[usize::from(d)].to_owned())
            .collect()
    }

    /// The local time in this window's offset, for messages.
    pub(super) fn local_now(&self, unix_secs: i64) -> String {
        let (day, minute) = local_time(unix_secs, self.offset_secs);
        format!(
            "{} {} {}",
            DAYS[usize::from(day)],
            clock(minute),
            offset_text(self.offset_secs)
        )
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}-{} {}",
            self.day_names().join(","),
            clock(self.start),
            clock(self.end),
            offset_text(self.offset_secs)
        )
    }
}

/// `HH:MM` (or `H:MM`) as minutes after midnight; `24:00` only where it may be an end.
fn minute_of_day(text: &str, is_end: bool) -> Result<u16, ValueError> {
    let bad = || ValueError(format!("{text:?} is not a time of day like 09:00 or 17:30"));
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    let digits = |s: &str, len: std::ops::RangeInclusive<usize>| {
        if len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse::<u16>().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let (h, m) = (digits(h, 1..=2)?, digits(m, 2..=2)?);
    let minute = h * 60 + m;
    if m >= 60 || minute > MINUTES_PER_DAY || (minute == MINUTES_PER_DAY && !is_end) {
        return Err(bad());
    }
    Ok(minute)
}

/// `+HH:MM`, `-HH:MM` or `Z`, as seconds east of UTC.
fn parse_offset(text: &str) -> Result<i32, ValueError> {
    let bad = || {
        ValueError(format!(
            "{text:?} is not a UTC offset like +02:00 or -05:30"
        ))
    };
    if text == "Z" {
        return Ok(0);
    }
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') => (-1, &text[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let two_digits = |s: &str| {
        if s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse::<i32>().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let (h, m) = (two_digits(h)?, two_digits(m)?);
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(sign * (h * 3600 + m * 60))
}

pub(super) fn offset_text(secs: i32) -> String {
    let sign = if secs < 0 { '-' } else { '+' };
    let minutes = secs.unsigned_abs() / 60;
    format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

pub(super) fn clock(minute: u16) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

/// Whole seconds since the epoch, rounded down (also before 1970, which only a broken clock
/// reports, but a broken clock must not panic the agent).
pub(super) fn unix_seconds(now: SystemTime) -> i64 {
    match now.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let up = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
            i64::try_from(up).map_or(i64::MIN, |s| -s)
        }
    }
}

/// (weekday with monday = 0, minute of the day) at `unix_secs` in local time UTC + offset.
fn local_time(unix_secs: i64, offset_secs: i32) -> (u8, u16) {
    let local = unix_secs.saturating_add(i64::from(offset_secs));
    let days = local.div_euclid(86_400);
    // 1970-01-01 was a thursday, weekday 3 counting from monday.
    let weekday = (days + 3).rem_euclid(7) as u8;
    let minute = (local.rem_euclid(86_400) / 60) as u16;
    (weekday, minute)
}

/// One `[[windows]]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WindowWire {
    days: Option<Vec<String>>,
    start: String,
    end: String,
    utc_offset: Option<String>,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// 2024-01-01, a monday, 00:00 UTC.
    const MONDAY: i64 = 1_704_067_200;

    #[test]
    fn calendar_arithmetic() {
        assert_eq!(local_time(0, 0), (3, 0), "1970-01-01 00:00 was a thursday");
        assert_eq!(
            local_time(-1, 0),
            (2, 1439),
            "a second earlier, wednesday 23:59"
        );
        assert_eq!(local_time(MONDAY, 0), (0, 0));
        assert_eq!(local_time(MONDAY, -60), (6, 1439));
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_millis(1500)), -2);
        let monday_00_01 = UNIX_EPOCH + Duration::from_secs(MONDAY as u64 + 60);
        assert_eq!(unix_seconds(monday_00_01), MONDAY + 60);
    }

    #[test]
    fn offsets() {
        assert_eq!(parse_offset("+05:30"), Ok(19_800));
        assert_eq!(parse_offset("-00:45"), Ok(-2_700));
        assert_eq!(parse_offset("Z"), Ok(0));
        for bad in ["05:30", "+5:30", "+24:00", "+05:60", "UTC", ""] {
            assert!(parse_offset(bad).is_err(), "{bad:?}");
        }
        assert_eq!(offset_text(-19_800), "-05:30");
        assert_eq!(offset_text(0), "+00:00");
    }
}
