"""Progress reporting for transfers: a callback told how far each blob has got."""

from __future__ import annotations

from typing import BinaryIO, Callable, Optional

from ..model import Descriptor
from ..oci.digests import ReadTap

Progress = Callable[[str, Descriptor, int], None]
"""``progress(phase, descriptor, done)``: `done` bytes of the blob are through `phase`.

Phases are ``"store"`` (copied from an archive into the content store),
``"pull"`` (downloaded from a registry into the content store), ``"unpack"``
(layer bytes applied to a snapshot), ``"export"`` (copied from the content
store into an archive) and ``"push"`` (uploaded to a registry). Each blob is
reported at 0 first and at its full size last.
"""


def counting(raw: BinaryIO, progress: Optional[Progress], phase: str, descriptor: Descriptor) -> BinaryIO:
    """`raw` itself without a progress callback, else a reader that reports through it."""
    if progress is None:
        return raw
    done = 0

    def observe(data: bytes) -> None:
        nonlocal done
        done += len(data)
        progress(phase, descriptor, done)

    progress(phase, descriptor, 0)
    return ReadTap(raw, observe)
