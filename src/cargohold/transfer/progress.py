"""Progress reporting for transfers: a callback told how far each blob has got."""

from __future__ import annotations

import io
from typing import BinaryIO, Callable, Optional

from ..model import Descriptor

Progress = Callable[[str, Descriptor, int], None]
"""``progress(phase, descriptor, done)``: `done` bytes of the blob are through `phase`.

Phases are ``"store"`` (copied from an archive into the content store),
``"unpack"`` (layer bytes applied to a snapshot) and ``"export"`` (copied from
the content store into an archive). Each blob is reported at 0 first and at
its full size last.
"""


class Counting(io.RawIOBase):
    """Pass reads through from `raw`, reporting the running byte count to `progress`."""

    def __init__(self, raw: BinaryIO, progress: Progress, phase: str, descriptor: Descriptor) -> None:
        super().__init__()
        self._raw = raw
        self._report = lambda done: progress(phase, descriptor, done)
        self._done = 0
        self._report(0)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        if n:
            self._done += n
            self._report(self._done)
        return n


def counting(raw: BinaryIO, progress: Optional[Progress], phase: str, descriptor: Descriptor) -> BinaryIO:
    """`raw` itself without a progress callback, else a reader that reports through it."""
    if progress is None:
        return raw
    return Counting(raw, progress, phase, descriptor)
