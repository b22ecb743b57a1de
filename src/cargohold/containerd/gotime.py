"""Go's ``time.Time`` encodings as containerd stores them.

Binary (``MarshalBinary``, every timestamp of meta.db): version byte 1 or 2, then
big-endian int64 seconds since January 1 of year 1, uint32 nanoseconds, int16 zone
offset in minutes (-1 means UTC); version 2 adds an int8 of offset seconds. Text
(``MarshalText``, the ingest directories' ``startedat``/``updatedat`` files):
RFC 3339 with nanoseconds.

A `GoTime` keeps what Go keeps: nanoseconds since the Unix epoch and the zone
offset. Go's zero time (year 1, UTC) means "never set" and decodes to None.
"""

from __future__ import annotations

import struct
from datetime import datetime, timedelta, timezone
from typing import NamedTuple, Optional

from ..errors import Corrupted
from ..timeutil import parse_rfc3339

_SECONDS_TO_UNIX = 62135596800
"""Seconds from 0001-01-01T00:00:00Z, Go's internal origin, to the Unix epoch."""

_SECONDS_TO_YEAR_10000 = _SECONDS_TO_UNIX + 253402300800
"""Python's datetimes end with year 9999; containerd writes nothing later."""

_V1 = struct.Struct(">qIh")
_V2 = struct.Struct(">qIhb")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class GoTime(NamedTuple):
    ns: int
    """Nanoseconds since the Unix epoch."""
    offset: int
    """Zone offset in seconds east of UTC (0 for UTC)."""

    def datetime(self) -> datetime:
        """The moment as an aware datetime in UTC (microsecond precision, as Python keeps)."""
        return _EPOCH + timedelta(microseconds=self.ns // 1000)

    def local(self) -> datetime:
        """The moment in the zone it was written with."""
        return self.datetime().astimezone(timezone(timedelta(seconds=self.offset)))


def decode_binary(data: bytes, what: str = "timestamp") -> Optional[GoTime]:
    """Decode ``MarshalBinary`` bytes; None for Go's zero time; Corrupted if malformed."""
    if not data:
        raise Corrupted(f"empty {what}")
    version = data[0]
    if version == 1 and len(data) == 1 + _V1.size:
        sec, nsec, minutes = _V1.unpack_from(data, 1)
        seconds = 0
    elif version == 2 and len(data) == 1 + _V2.size:
        sec, nsec, minutes, seconds = _V2.unpack_from(data, 1)
    else:
        raise Corrupted(f"{what} is not a Go binary time (version {version}, {len(data)} bytes)")
    if nsec >= 1_000_000_000 or not 0 <= sec < _SECONDS_TO_YEAR_10000:
        raise Corrupted(f"{what} is out of range ({sec} s, {nsec} ns since year 1)")
    offset = 0 if minutes == -1 else minutes * 60 + seconds
    if sec == 0 and nsec == 0 and offset == 0:
        return None
    return GoTime((sec - _SECONDS_TO_UNIX) * 1_000_000_000 + nsec, offset)


def decode_text(text: str, what: str = "timestamp") -> GoTime:
    """Decode ``MarshalText`` (RFC 3339 with up to nine fractional digits); Corrupted if malformed."""
    text = text.strip()
    ns = parse_rfc3339(text)
    if ns is None:
        raise Corrupted(f"{what} {text[:60]!r} is not an RFC 3339 time")
    offset = 0
    if text[-1] not in "Zz":
        sign = -1 if text[-6] == "-" else 1
        offset = sign * (int(text[-5:-3]) * 3600 + int(text[-2:]) * 60)
    return GoTime(ns, offset)
