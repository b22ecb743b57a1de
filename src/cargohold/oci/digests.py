"""Digests of content, and readers that check them while the bytes stream by.

Nothing here holds more than one read's worth of data: blobs of any size are
verified with bounded memory.
"""

from __future__ import annotations

import hashlib
import io
from typing import BinaryIO, Callable

from ..errors import InvalidArgument
from ..validation import validate_digest

CHUNK = 1 << 20
"""Bytes moved per read when copying streams."""


def hasher(digest: str):
    """A fresh hashlib object for the algorithm of `digest` (sha256, sha384 or sha512)."""
    validate_digest(digest)
    return hashlib.new(digest.partition(":")[0])


def digest_bytes(data: bytes, algorithm: str = "sha256") -> str:
    """The digest string (``algorithm:hex``) of `data`."""
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def blob_path(digest: str) -> str:
    """The path of a blob inside an OCI image layout: ``blobs/<algorithm>/<hex>``."""
    validate_digest(digest)
    algorithm, _, encoded = digest.partition(":")
    return f"blobs/{algorithm}/{encoded}"


class ReadTap(io.RawIOBase):
    """Pass reads through from `raw`, handing every non-empty chunk to `observe`."""

    def __init__(self, raw: BinaryIO, observe: Callable[[bytes], None]) -> None:
        super().__init__()
        self._raw = raw
        self._observe = observe

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        if n:
            self._observe(data)
        return n


class CountingReader(ReadTap):
    """Pass reads through from `raw`, counting every byte in `count`."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__(raw, self._update)
        self.count = 0

    def _update(self, data: bytes) -> None:
        self.count += len(data)


class DigestingReader(CountingReader):
    """Pass reads through from `raw`, hashing (sha256) and counting every byte."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__(raw)
        self._hash = hashlib.sha256()

    def _update(self, data: bytes) -> None:
        self._hash.update(data)
        super()._update(data)

    def drain(self) -> None:
        """Read `raw` to its end, so that the digest covers the whole stream."""
        while self.read(CHUNK):
            pass

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


class VerifiedReader(io.RawIOBase):
    """Read exactly `size` bytes of `raw` and check them against `digest`.

    Raises InvalidArgument, naming `what`, as soon as the stream proves wrong:
    more bytes than `size`, an early end, or a different digest once `size`
    bytes have been read. A reader that was read to the end has been verified.
    """

    def __init__(self, raw: BinaryIO, digest: str, size: int, what: str) -> None:
        super().__init__()
        self._raw = raw
        self._digest = digest
        self._size = size
        self._what = what
        self._hash = hasher(digest)
        self._count = 0
        self._verified = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        # Ask for one byte beyond the declared size so that extra content is noticed.
        want = min(len(buffer), self._size - self._count + 1)
        data = self._raw.read(want)
        n = len(data)
        if n == 0:
            if self._count < self._size:
                raise InvalidArgument(
                    f"{self._what}: truncated, {self._count} of {self._size} bytes present")
            self._check_digest()
            return 0
        if self._count + n > self._size:
            raise InvalidArgument(
                f"{self._what}: size mismatch, content is larger than the {self._size} bytes "
                "its descriptor declares")
        buffer[:n] = data
        self._hash.update(data)
        self._count += n
        if self._count == self._size:
            self._check_digest()
        return n

    def _check_digest(self) -> None:
        if self._verified:
            return
        self._verified = True
        actual = f"{self._digest.partition(':')[0]}:{self._hash.hexdigest()}"
        if actual != self._digest:
            raise InvalidArgument(f"{self._what}: digest mismatch, content is {actual}")

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()
