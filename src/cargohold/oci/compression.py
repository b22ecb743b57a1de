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
        except EOFError:  # the compressed stream stops before its end marker
            raise InvalidArgument(f"{self._what}: corrupt {self._kind} data: truncated, the stream ends before "
                                  "its end-of-stream marker") from None
        except (OSError, zlib.error, zstandard.ZstdError) as exc:
            raise InvalidArgument(f"{self._what}: corrupt {self._kind} data: {exc}") from None
        buffer[: len(data)] = data
        return len(data)


class _ZstdFrames(io.RawIOBase):
    """Passes a zstd stream through while following its frame structure.

    The zstd reader ends quietly when its input stops inside a frame; this
    notices the early end (RFC 8878 framing: frame header, blocks, optional
    checksum; skippable frames) and raises InvalidArgument naming `what`.
    """

    def __init__(self, raw: BinaryIO, what: str) -> None:
        super().__init__()
        self._raw = raw
        self._what = what
        self._state = "magic"
        self._want = 4  # bytes to collect for the current state
        self._got = b""
        self._skip = 0  # bytes to pass over (block contents, frame header fields)
        self._checksum = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._raw.read(len(buffer))
        if not data:
            if self._state != "magic" or self._got or self._skip:
                raise InvalidArgument(f"{self._what}: corrupt zstd data: truncated, the stream ends inside a frame")
            return 0
        self._follow(data)
        buffer[: len(data)] = data
        return len(data)

    def _follow(self, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            if self._skip:
                step = min(self._skip, len(data) - pos)
                self._skip -= step
                pos += step
                continue
            take = min(self._want - len(self._got), len(data) - pos)
            self._got += data[pos:pos + take]
            pos += take
            if len(self._got) == self._want:
                field, self._got = self._got, b""
                self._advance(int.from_bytes(field, "little"))

    def _advance(self, value: int) -> None:
        if self._state == "magic":
            if value == 0xFD2FB528:
                self._state, self._want = "header", 1
            elif value & 0xFFFFFFF0 == 0x184D2A50:
                self._state, self._want = "skippable", 4
            else:
                raise InvalidArgument(f"{self._what}: corrupt zstd data: bad frame magic {value:#x}")
        elif self._state == "skippable":
            self._state, self._want, self._skip = "magic", 4, value
        elif self._state == "header":
            single_segment = (value >> 5) & 1
            self._checksum = bool((value >> 2) & 1)
            content_size = (single_segment, 2, 4, 8)[value >> 6]
            self._skip = (1 - single_segment) + (0, 1, 2, 4)[value & 3] + content_size
            self._state, self._want = "block", 3
        else:  # a block header: last-block bit, type, size
            last, kind, size = value & 1, (value >> 1) & 3, value >> 3
            if kind == 3:
                raise InvalidArgument(f"{self._what}: corrupt zstd data: reserved block type")
            self._skip = 1 if kind == 1 else size
            if last:
                self._skip += 4 if self._checksum else 0
                self._state, self._want = "magic", 4


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
        inner = zstandard.ZstdDecompressor().stream_reader(
            io.BufferedReader(_ZstdFrames(source, what)), read_across_frames=True)
    else:
        return source
    return io.BufferedReader(_Guarded(inner, kind, what))
