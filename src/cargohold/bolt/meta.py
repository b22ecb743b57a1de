"""bbolt's two meta pages: decoding, validation, and the choice bbolt makes between them.

A meta page is a 16-byte page header followed by magic, version, page size,
flags, the root bucket (root pgid, sequence), the freelist pgid, the pgid
high-water mark, the txid and an FNV-1a 64 checksum of the fields before it.
Meta 0 sits at offset 0 and meta 1 at offset page_size; bbolt writes
transaction T's meta into page T % 2, so the other one holds T - 1.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = 0xED0CDAED
VERSION = 2
PAGE_HEADER_SIZE = 16
NO_FREELIST = 0xFFFFFFFFFFFFFFFF

_META = struct.Struct("<IIIIQQQQQQ")   # magic version page_size flags root sequence freelist pgid txid checksum
_META_END = PAGE_HEADER_SIZE + _META.size
_CHECKSUMMED = _META.size - 8
_LMDB_MAGIC = 0xBEEFC0DE

# bbolt looks for meta 1 at these offsets when meta 0 is unreadable (1 KiB .. 16 MiB)
PROBE_OFFSETS = tuple(1024 << i for i in range(15))
MIN_PAGE_SIZE = 1024
MAX_PAGE_SIZE = 1 << 28

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_U64 = (1 << 64) - 1


def fnv1a64(data: bytes) -> int:
    """FNV-1a, 64 bits (Go's hash/fnv New64a), the checksum of a meta page."""
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & _U64
    return h


@dataclass(frozen=True)
class Meta:
    """One decoded meta page; `problem` is None for a valid one, else why bbolt would refuse it."""

    page: int
    page_size: int
    flags: int
    root: int
    sequence: int
    freelist: int
    high_water: int
    txid: int
    problem: str | None


def decode(raw: bytes, page: int) -> Meta:
    """Decode and validate the meta page whose first bytes are `raw` (as bbolt's meta.validate)."""
    if len(raw) < _META_END:
        return Meta(page, 0, 0, 0, 0, 0, 0, 0, f"only {len(raw)} bytes, a meta page needs {_META_END}")
    magic, version, page_size, flags, root, sequence, freelist, high_water, txid, checksum = \
        _META.unpack_from(raw, PAGE_HEADER_SIZE)
    problem = None
    if magic != MAGIC:
        problem = f"bad magic {magic:#010x}"
        if magic == _LMDB_MAGIC:
            problem += " (an LMDB file, not bbolt)"
    elif version != VERSION:
        problem = f"unsupported version {version} (bbolt writes {VERSION})"
    elif checksum != 0 and checksum != fnv1a64(raw[PAGE_HEADER_SIZE:PAGE_HEADER_SIZE + _CHECKSUMMED]):
        problem = f"checksum mismatch (stored {checksum:#018x})"
    elif not MIN_PAGE_SIZE <= page_size <= MAX_PAGE_SIZE:
        problem = f"page size {page_size} outside [{MIN_PAGE_SIZE}, {MAX_PAGE_SIZE}]"
    return Meta(page, page_size, flags, root, sequence, freelist, high_water, txid, problem)


def choose(meta0: Meta, meta1: Meta) -> Meta | None:
    """The meta bbolt uses: the valid one with the higher txid, else the other valid one."""
    first, second = (meta1, meta0) if meta1.txid > meta0.txid else (meta0, meta1)
    if first.problem is None:
        return first
    if second.problem is None:
        return second
    return None


def describe_problems(meta0: Meta, meta1: Meta) -> str:
    """Why neither meta page is usable, for an error message."""
    return f"meta page 0: {meta0.problem}; meta page 1: {meta1.problem}"
