"""Pure-Python twin of `_ext/msgrecords.pxi`: msgpack-python itself, for every record.

The compiled `pack_record` and `unpack_record` handle the plain form of a record (ASCII text,
int64 integers and maps of them) and give None for anything else, which `cargohold.schema` then
hands to msgpack-python; here msgpack-python handles everything, so the two give the same bytes
and the same values. `msgpack_pack` is ``msgpack.packb(record, use_bin_type=True)`` through one
`msgpack.Packer` per thread (``packb`` builds a packer for every call, a third of its cost; a
packer whose `pack` fails empties its buffer, so nothing of a failed record reaches the next).
"""

from __future__ import annotations

import threading
from typing import Any, Optional

import msgpack

_packers = threading.local()


def msgpack_pack(record: Any) -> bytes:
    """``msgpack.packb(record, use_bin_type=True)``."""
    try:
        packer = _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(record)


pack_record = msgpack_pack


def unpack_record(data: Any) -> Optional[Any]:
    """``msgpack.unpackb(data, raw=False, strict_map_key=False)``, None for damaged bytes."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:  # msgpack raises several unrelated classes; schema.unpack reports them
        return None
