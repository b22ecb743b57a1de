"""Pure-Python twins of `_ext/keys.pxi`: the keys of the metadata tables (`cargohold.schema`).

A module of their own, importing nothing of cargohold but its errors, because `cargohold.schema`
needs them and sits below everything else (`cargohold._keys` chooses).
"""

from __future__ import annotations

from .errors import InvalidArgument


def _key_part(part) -> bytes:
    try:
        return part.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{part!r} is not valid Unicode text") from None


def object_key(ns: str, kind: bytes, *parts: str) -> bytes:
    """Key of one object record (or, with fewer parts, the prefix of a group)."""
    return b"\x00".join([_key_part(ns), kind, *[_key_part(part) for part in parts]])


def pack_node(rtype: int, ns: str, key: str) -> bytes:
    """The packed node key: one type byte, the namespace, NUL, the key."""
    return bytes((rtype,)) + _key_part(ns) + b"\x00" + _key_part(key)
