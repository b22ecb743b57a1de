"""An in-memory bbolt bucket: its keys in order, their values, and its sub-buckets."""

from __future__ import annotations

from bisect import bisect_left
from typing import Iterator, Optional

from ..errors import InvalidArgument


def _key(key) -> bytes:
    if type(key) is bytes:
        return key
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key)
    raise InvalidArgument(f"a bbolt key is bytes, not {type(key).__name__}: {key!r}")


class Bucket:
    """One bucket of the transaction a `bolt.File` read; immutable, served from memory.

    Keys are in bbolt's order (bytewise). A key naming a sub-bucket has no
    value: `get` and `items` give None for it, `bucket` gives the sub-bucket.
    """

    __slots__ = ("sequence", "_keys", "_values", "_subs")

    def __init__(self, sequence: int = 0) -> None:
        self.sequence = sequence   # the bucket's NextSequence counter
        self._keys: list = []
        self._values: list = []
        self._subs: dict = {}

    def _fill(self, keys: list, values: list, subs: dict) -> None:
        self._keys = keys
        self._values = values
        self._subs = subs

    def get(self, key: bytes) -> Optional[bytes]:
        """The value of `key`; None for a missing key or a sub-bucket (as bbolt's Get)."""
        key = _key(key)
        keys = self._keys
        i = bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            return self._values[i]
        return None

    def bucket(self, key: bytes) -> Optional["Bucket"]:
        """The sub-bucket named `key`, or None."""
        return self._subs.get(_key(key))

    def _range(self, prefix) -> tuple[int, int]:
        if prefix is None:
            return 0, len(self._keys)
        prefix = _key(prefix)
        keys = self._keys
        lo = i = bisect_left(keys, prefix)
        n = len(keys)
        # keys sharing the prefix are contiguous from the first one not below it
        while i < n and keys[i].startswith(prefix):
            i += 1
        return lo, i

    def items(self, prefix: Optional[bytes] = None) -> Iterator[tuple[bytes, Optional[bytes]]]:
        """(key, value) pairs in key order, value None for a sub-bucket (bbolt's ForEach)."""
        if prefix is None:
            return zip(self._keys, self._values)
        lo, hi = self._range(prefix)
        return zip(self._keys[lo:hi], self._values[lo:hi])

    def keys(self, prefix: Optional[bytes] = None) -> Iterator[bytes]:
        """Keys in order (sub-bucket names included)."""
        if prefix is None:
            return iter(self._keys)
        lo, hi = self._range(prefix)
        return iter(self._keys[lo:hi])

    def buckets(self) -> Iterator[tuple[bytes, "Bucket"]]:
        """(name, sub-bucket) pairs in key order."""
        return iter(self._subs.items())

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: bytes) -> bool:
        key = _key(key)
        keys = self._keys
        i = bisect_left(keys, key)
        return i < len(keys) and keys[i] == key

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._keys)

    def __repr__(self) -> str:
        return f"<bolt.Bucket: {len(self._keys)} keys, {len(self._subs)} sub-buckets>"
