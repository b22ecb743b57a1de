"""Timestamps and durations: stored as integer nanoseconds since the Unix
epoch (UTC), handed out as timezone-aware datetimes, parsed from labels as Go's
``time.Parse(time.RFC3339, ...)`` and ``time.ParseDuration`` parse them.

Range: containerd compares Go times, which reach from year 0 to 9999 and
beyond; the node table stores int64 nanoseconds (1677-09-21 to 2262-04-11).
Times outside that range are *saturated* to its ends (`saturate`), never
refused: a clock inside the range then compares expiries with them exactly as
Go compares the real times, so a 9999 expiry never passes and a year-1 expiry
has passed. (A usedat condition computes ``now - usedat`` exactly where Go
saturates ``time.Since``; the answers part only for a duration within a few
nanoseconds of the int64 limit or one below minus two centuries.) Durations
follow Go: ``ParseDuration`` refuses any beyond int64 nanoseconds (about 292
years), so `parse_go_duration` returns None for them.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from typing import Callable, Optional

Clock = Callable[[], datetime]

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_NS = 1_000_000_000

_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{1,2}):([0-9]{2}):([0-9]{2})(?:[.,]([0-9]+))?"
    r"(?:Z|([+-])([0-9]{2}):([0-9]{2}))\Z"
)
"""Go's RFC 3339 layout as time.Parse reads it: one- or two-digit hours, a
fraction after ``.`` or ``,`` of any length, and an offset it does not range-check."""

_DURATION_UNITS = {
    "ns": 1, "us": 1_000, "\u00b5s": 1_000, "\u03bcs": 1_000, "ms": 1_000_000,
    "s": _NS, "m": 60 * _NS, "h": 3600 * _NS,
}
_DURATION_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")
_OVERFLOW = 1 << 63


def utcnow() -> datetime:
    """The default clock."""
    return datetime.now(timezone.utc)


def clock_ns(clock: Clock) -> int:
    """``to_ns(clock())``; for the default clock read straight from the system clock, which gives
    the same value (`utcnow` floors it to microseconds) without making a datetime."""
    if clock is utcnow:
        return time.time_ns() // 1000 * 1000
    return to_ns(clock())


def saturate(ns: int) -> int:
    """`ns` limited to the int64 range the node table and the mark phase store."""
    return INT64_MAX if ns > INT64_MAX else INT64_MIN if ns < INT64_MIN else ns


def to_ns(dt: datetime) -> int:
    """Nanoseconds since the epoch of an aware datetime (naive means UTC), saturated to int64."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    delta = dt - _EPOCH
    return saturate((delta.days * 86400 + delta.seconds) * _NS + delta.microseconds * 1000)


def from_ns(ns: int) -> datetime:
    """The UTC datetime of a nanosecond timestamp (microsecond precision)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a proleptic Gregorian date (any year, 0 included)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def parse_rfc3339(text: str) -> Optional[int]:
    """Nanoseconds of an RFC 3339 timestamp as Go's time.Parse(time.RFC3339) reads it, or None
    where Go fails. Exact, so possibly outside int64 (the node table saturates)."""
    m = _RFC3339.match(text)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    if not (1 <= month <= 12 and 1 <= day <= _days_in_month(year, month)
            and hour < 24 and minute < 60 and second < 60):
        return None
    seconds = _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second
    sign, off_hours, off_minutes = m.group(8, 9, 10)
    if sign:
        offset = (int(off_hours) * 60 + int(off_minutes)) * 60
        seconds += -offset if sign == "+" else offset
    fraction = m.group(7)
    return seconds * _NS + (int(fraction[:9].ljust(9, "0")) if fraction else 0)


def _leading_fraction(digits: str) -> tuple[int, float]:
    """Go's leadingFraction: the digits as an integer and its float64 scale, precision stopping at overflow."""
    value, scale = 0, 1.0
    for ch in digits:
        if value > (_OVERFLOW - 1) // 10:
            break
        nxt = value * 10 + ord(ch) - 48
        if nxt > _OVERFLOW:
            break
        value, scale = nxt, scale * 10
    return value, scale


def parse_go_duration(text: str) -> Optional[int]:
    """Nanoseconds of a Go duration ("2h", "1h30m", "-1.5s") as time.ParseDuration computes them,
    or None where it fails: malformed, or beyond int64 nanoseconds."""
    body = text[1:] if text[:1] in ("+", "-") else text
    if body == "0":
        return 0
    if not body:
        return None
    total = 0
    pos = 0
    while pos < len(body):
        m = _DURATION_PART.match(body, pos)
        whole, frac, unit = m.groups()
        if (not whole and not frac) or unit not in _DURATION_UNITS:
            return None  # no digits, a missing or an unknown unit
        scale = _DURATION_UNITS[unit]
        whole = whole.lstrip("0")
        if len(whole) > 19:
            return None  # beyond int64 (and int() of a huge digit string is refused by Python)
        value = int(whole or 0)
        if value > _OVERFLOW // scale:
            return None
        value *= scale
        if frac:
            digits, frac_scale = _leading_fraction(frac)
            if digits:
                value += int(float(digits) * (float(scale) / frac_scale))  # float64, as Go
                if value > _OVERFLOW:
                    return None
        total += value
        if total > _OVERFLOW:
            return None
        pos = m.end()
    if text[:1] == "-":
        return -total
    return None if total > INT64_MAX else total


def format_rfc3339(dt: datetime) -> str:
    """RFC 3339 text of an aware datetime, in UTC with a trailing Z."""
    return dt.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
