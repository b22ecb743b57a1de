"""Timestamps: stored as integer nanoseconds since the Unix epoch (UTC),
handed out as timezone-aware datetimes, parsed from RFC 3339 labels."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Callable, Optional

Clock = Callable[[], datetime]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))\Z"
)


def utcnow() -> datetime:
    """The default clock."""
    return datetime.now(timezone.utc)


def to_ns(dt: datetime) -> int:
    """Nanoseconds since the epoch of an aware datetime (naive means UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    delta = dt - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def from_ns(ns: int) -> datetime:
    """The UTC datetime of a nanosecond timestamp (microsecond precision)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


def parse_rfc3339(text: str) -> Optional[int]:
    """Nanoseconds of an RFC 3339 timestamp (Go's time.RFC3339), or None if malformed."""
    m = _RFC3339.match(text)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    try:
        base = datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
    except ValueError:
        return None
    ns = to_ns(base)
    if m.group(7):
        ns += int(m.group(7).ljust(9, "0"))
    if m.group(9):
        offset = (int(m.group(10)) * 60 + int(m.group(11))) * 60 * 1_000_000_000
        ns += -offset if m.group(9) == "+" else offset
    return ns


def format_rfc3339(dt: datetime) -> str:
    """RFC 3339 text of an aware datetime, in UTC with a trailing Z."""
    return dt.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
