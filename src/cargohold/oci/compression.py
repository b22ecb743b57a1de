"""Decompressing layer streams: gzip and zstd, detected from the data as containerd does.

containerd's `compression.DecompressStream` ignores the media type and looks
at the first bytes; so does `decompressed`, so a layer whose media type
understates its compression still applies. The `zstandard` package provides
zstd (the standard library has none before Python 3.14).
"""

from __future__ import annotations

import gzip
import io
import zlib
from typing import BinaryIO

import zstandard

from ..errors import InvalidArgument

GZIP_MAGIC = b"\x1f\x8b\x08"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def detect(head: bytes) -> str:
    """The compression of a stream that starts with `head`: "gzip", "zstd" or ""."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return ""


class _Prefixed(io.RawIOBase):
    """`head` followed by the rest of `raw` (to give back bytes read to sniff the format)."""

    def __init__(self, head: bytes, raw: BinaryIO) -> None:
        super().__init__()
        self._head = head
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _Guarded(io.RawIOBase):
    """Reads from a decompressor, turning its errors into InvalidArgument naming `what`."""

    def __init__(self, inner: BinaryIO, kind: str, what: str) -> None:
        super().__init__()
        self._inner = inner
        self._kind = kind
        self._what = what

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            data = self._inner.read(len(buffer))
        except (OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
            raise InvalidArgument(f"{self._what}: corrupt {self._kind} data: {exc}") from None
        buffer[: len(data)] = data
        return len(data)


def decompressed(raw: BinaryIO, what: str) -> BinaryIO:
    """A binary stream of the uncompressed bytes of `raw` (gzip, zstd or plain).

    Decompression errors surface as InvalidArgument naming `what`.
    """
    head = b""
    while len(head) < len(ZSTD_MAGIC):
        chunk = raw.read(len(ZSTD_MAGIC) - len(head))
        if not chunk:
            break
        head += chunk
    kind = detect(head)
    source = io.BufferedReader(_Prefixed(head, raw))
    if kind == "gzip":
        inner: BinaryIO = gzip.GzipFile(fileobj=source, mode="rb")
    elif kind == "zstd":
        inner = zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True)
    else:
        return source
    return io.BufferedReader(_Guarded(inner, kind, what))
