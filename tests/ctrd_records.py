"""containerd metadata records for hand-made meta.db files, written by bbolt itself (tests/gobolt)."""

from __future__ import annotations

import hashlib
import struct
from datetime import datetime


def varint(n: int) -> bytes:
    """Go's binary.PutVarint (containerd's sizes and db version)."""
    ux = (n << 1) ^ (n >> 63)
    out = bytearray()
    while ux >= 0x80:
        out.append((ux & 0x7F) | 0x80)
        ux >>= 7
    out.append(ux)
    return bytes(out)


def gotime(dt: datetime) -> bytes:
    """Go's time.Time.MarshalBinary of an aware UTC datetime (containerd's timestamps)."""
    sec = int(dt.timestamp()) + 62135596800
    return bytes((1,)) + struct.pack(">qIh", sec, dt.microsecond * 1000, -1)


def digest_of(data: bytes) -> bytes:
    return ("sha256:" + hashlib.sha256(data).hexdigest()).encode()


def tree_spec(tree: dict) -> dict:
    """A gobolt spec writing `tree` (bytes keys; dict values are buckets) in one transaction."""
    ops = []

    def walk(path, node):
        for key, value in node.items():
            here = path + ["hex:" + key.hex()]
            if isinstance(value, dict):
                ops.append({"op": "bucket", "path": here})
                walk(here, value)
            else:
                ops.append({"op": "put", "path": path, "key": "hex:" + key.hex(), "value": "hex:" + value.hex()})

    walk([], tree)
    return {"txns": [{"ops": ops}]}
