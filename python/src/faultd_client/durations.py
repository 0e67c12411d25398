"""Durations as the protocol writes them ("500ms", "30s", "1m30s") and as Python holds them."""

from __future__ import annotations

import datetime
import re
from typing import Union

#: What the builders accept for a duration: the protocol's text, seconds, or a timedelta.
DurationLike = Union[str, int, float, datetime.timedelta]

_UNITS_US = {"us": 1, "ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000}
_TERM = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")


def to_seconds(duration: str) -> float:
    """The protocol's duration text in seconds; ValueError if it is not one."""
    if not duration or not re.fullmatch(f"(?:{_TERM.pattern})+", duration):
        raise ValueError(f"{duration!r} is not a duration like 500ms, 30s or 1m30s")
    return sum(float(n) * _UNITS_US[u] for n, u in _TERM.findall(duration)) / 1e6


def format_duration(duration: DurationLike) -> str:
    """The protocol's text for a duration. Text passes through as written (faultd validates
    it); seconds and timedeltas get faultd's own shortest exact form ("1.5s" is "1500ms",
    "120s" is "2m"), rounded to the microsecond, the protocol's finest unit."""
    if isinstance(duration, str):
        return duration
    if isinstance(duration, datetime.timedelta):
        micros = (duration.days * 86_400 + duration.seconds) * 1_000_000 + duration.microseconds
    elif isinstance(duration, (int, float)) and not isinstance(duration, bool):
        micros = round(duration * 1_000_000)
    else:
        raise TypeError(f"a duration is text, seconds or a timedelta, not {duration!r}")
    if micros <= 0:
        raise ValueError(f"a duration must be more than zero, not {duration!r}")
    for unit in ("h", "m", "s", "ms"):
        if micros % _UNITS_US[unit] == 0:
            return f"{micros // _UNITS_US[unit]}{unit}"
    return f"{micros}us"
