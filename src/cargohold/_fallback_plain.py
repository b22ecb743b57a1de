"""Pure-Python twins of `_ext/plainpack.pxi` (re-exported by `cargohold._fallback`): which records
the compiled msgpack fast paths take, and what they give for them.

* `plain_pack(value)`: msgpack-python's ``packb(value, use_bin_type=True)`` when `value` is built
  only of exact dict, list, tuple, str (UTF-8 encodable), bytes, int in [-2**63, 2**64), bool
  and None, at most 32 containers deep; else None.
* `plain_unpack(data)`: for `bytes` holding exactly one value of those forms (no float, no ext
  type; every map key a str of at most 255 bytes, fixstr or str8, valid UTF-8), what msgpack's
  ``unpackb(data, raw=False, strict_map_key=False)`` returns; else `NOT_PLAIN`.

`cargohold.schema` takes them only in the compiled core (`cargohold._plain`): in Python, msgpack's
own C code is the faster reader and writer, and gives the same bytes and values.
"""

from __future__ import annotations

from typing import Any, Optional

import msgpack

NOT_PLAIN = object()

_DEPTH = 32
_INT = range(-(1 << 63), 1 << 64)


def _plain(value: Any, depth: int) -> bool:
    kind = type(value)
    if value is None or kind is bool or kind is bytes:
        return True
    if kind is int:
        return value in _INT
    if kind is str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if depth >= _DEPTH:
        return False
    if kind is dict:
        return all(_plain(k, depth + 1) and _plain(v, depth + 1) for k, v in value.items())
    if kind is list or kind is tuple:
        return all(_plain(item, depth + 1) for item in value)
    return False


def plain_pack(value: Any) -> Optional[bytes]:
    """msgpack-python's ``packb(value, use_bin_type=True)`` for a plain value, else None."""
    return msgpack.packb(value, use_bin_type=True) if _plain(value, 0) else None


class _Declined(Exception):
    """The data is not of the plain forms (or is damaged): msgpack reads it."""


def _be(data: bytes, i: int, width: int) -> int:
    if i + width > len(data):
        raise _Declined
    return int.from_bytes(data[i:i + width], "big")


def _text(data: bytes, i: int, n: int) -> str:
    if n > len(data) - i:
        raise _Declined
    try:
        return data[i:i + n].decode("utf-8")
    except UnicodeDecodeError:
        raise _Declined from None


def _read(data: bytes, i: int, depth: int) -> tuple[Any, int]:
    if i >= len(data):
        raise _Declined
    c = data[i]
    i += 1
    if c < 0x80:
        return c, i
    if c >= 0xE0:
        return c - 0x100, i
    if 0xA0 <= c <= 0xBF or 0xD9 <= c <= 0xDB:
        if c <= 0xBF:
            n = c & 0x1F
        else:
            width = 1 << (c - 0xD9)
            n = _be(data, i, width)
            i += width
        return _text(data, i, n), i + n
    if 0xCC <= c <= 0xD3:
        width = 1 << ((c - 0xCC) & 3)
        raw = _be(data, i, width)
        if c >= 0xD0 and raw >= 1 << (8 * width - 1):
            raw -= 1 << (8 * width)
        return raw, i + width
    if c == 0xC0:
        return None, i
    if c in (0xC2, 0xC3):
        return c == 0xC3, i
    if 0xC4 <= c <= 0xC6:
        width = 1 << (c - 0xC4)
        n = _be(data, i, width)
        i += width
        if n > len(data) - i:
            raise _Declined
        return data[i:i + n], i + n
    if depth >= _DEPTH:
        raise _Declined
    if c <= 0x8F or c in (0xDE, 0xDF):
        if c <= 0x8F:
            n = c & 0x0F
        else:
            width = 2 if c == 0xDE else 4
            n = _be(data, i, width)
            i += width
        if n > len(data) - i:
            raise _Declined
        out: dict = {}
        for _ in range(n):
            if i >= len(data):
                raise _Declined
            c = data[i]
            if 0xA0 <= c <= 0xBF:
                width, i = c & 0x1F, i + 1
            elif c == 0xD9 and i + 1 < len(data):
                width, i = data[i + 1], i + 2
            else:
                raise _Declined
            key = _text(data, i, width)
            value, i = _read(data, i + width, depth + 1)
            out[key] = value
        return out, i
    if 0x90 <= c <= 0x9F or c in (0xDC, 0xDD):
        if c <= 0x9F:
            n = c & 0x0F
        else:
            width = 2 if c == 0xDC else 4
            n = _be(data, i, width)
            i += width
        if n > len(data) - i:
            raise _Declined
        items = []
        for _ in range(n):
            value, i = _read(data, i, depth + 1)
            items.append(value)
        return items, i
    raise _Declined


def plain_unpack(data: Any) -> Any:
    """msgpack-python's ``unpackb(data, raw=False, strict_map_key=False)`` for data of the plain
    forms, else `NOT_PLAIN`."""
    if type(data) is not bytes:
        return NOT_PLAIN
    try:
        value, end = _read(data, 0, 0)
    except _Declined:
        return NOT_PLAIN
    return value if end == len(data) else NOT_PLAIN


__all__ = ["NOT_PLAIN", "plain_pack", "plain_unpack"]
