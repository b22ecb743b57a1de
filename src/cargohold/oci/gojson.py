"""JSON bytes exactly as Go's encoding/json `Marshal` writes them.

Documents that containerd makes itself (the Docker manifest and index of an
imported ``docker save`` archive, the manifest.json of an export) are named
by the digest of their bytes, so ours must be byte for byte the same:
compact, struct fields in declaration order (a dict is written in its own
order; `go_map` sorts keys as Go writes a map), and Go's string escapes:
``<``, ``>`` and ``&`` as ``\\u003c``..., control characters as ``\\u00XX``
except ``\\n``, ``\\r`` and ``\\t`` (Go before 1.22, what containerd 1.6
and 1.7 are built with), U+2028 and U+2029 escaped, everything else raw UTF-8.
None is ``null`` (a nil slice or map).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

_SHORT = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPED = re.compile('[\\\\"\x00-\x1f<>&\u2028\u2029\ud800-\udfff]')


def _escape(match: "re.Match[str]") -> str:
    char = match.group()
    if char in _SHORT:
        return _SHORT[char]
    if "\ud800" <= char <= "\udfff":  # a lone surrogate is not UTF-8: Go writes the replacement character
        return "\ufffd"
    return f"\\u{ord(char):04x}"


def _string(value: str) -> str:
    return '"' + _ESCAPED.sub(_escape, value) + '"'


def _encode(value: Any, out: list) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, Mapping):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if i:
                out.append(",")
            out.append(_string(key))
            out.append(":")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def marshal(value: Any) -> bytes:
    """The bytes Go's `json.Marshal` gives for `value` (dicts in their own key order)."""
    out: list = []
    _encode(value, out)
    return "".join(out).encode()


def go_map(mapping: Mapping[str, Any]) -> dict:
    """`mapping` in the key order Go writes a map in (sorted by bytes, which is code point order)."""
    return dict(sorted(mapping.items()))
