"""How far a layer may expand: the limit on its uncompressed size.

A small compressed layer can inflate to terabytes: a decompression bomb, or a
sparse member whose holes are written out as zeros. Applying a layer stops
as soon as its uncompressed tar stream, or the bytes it writes into the
target, pass the limit:

- by default max(`DEFAULT_FLOOR`, `DEFAULT_RATIO` x the compressed size),
  the compressed size being the descriptor's when one is given, else the
  compressed bytes read so far;
- `max_size` > 0 is the limit in bytes, whatever the compressed size;
- `max_size` = 0 means no limit.
"""

from __future__ import annotations

from typing import Callable, Optional

from ..errors import InvalidArgument

DEFAULT_FLOOR = 1 << 30
"""The default limit is never below 1 GiB."""

DEFAULT_RATIO = 100
"""The default limit is at least 100 times the compressed size."""

HOW_TO_RAISE = "raise it with max_layer_size (the CLI's --max-layer-size), 0 for no limit"


def validate_max_size(max_size: Optional[int], what: str = "max_layer_size") -> Optional[int]:
    """`max_size` itself if it is None or a non-negative integer, else InvalidArgument."""
    if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 0):
        raise InvalidArgument(f"{what} must be a non-negative number of bytes (0: no limit) or None, "
                              f"not {max_size!r}")
    return max_size


def default_limit(compressed_size: int) -> int:
    """The limit applied when none is given, for a layer of `compressed_size` bytes."""
    return max(DEFAULT_FLOOR, DEFAULT_RATIO * compressed_size)


class SizeBudget:
    """Counts what a layer expands to and raises InvalidArgument, naming `what`, past the limit.

    `compressed` gives the compressed size the default limit scales with
    (called at each check, so it may grow as the layer is read).
    """

    def __init__(self, what: str, max_size: Optional[int], compressed: Callable[[], int]) -> None:
        self._what = what
        self._max_size = validate_max_size(max_size, "max_size")
        self._compressed = compressed
        self.streamed = 0
        self.written = 0

    def limit(self) -> Optional[int]:
        """The limit in bytes now, None for none."""
        if self._max_size is None:
            return default_limit(self._compressed())
        return self._max_size or None

    def stream(self, n: int) -> None:
        """Count `n` more bytes of the uncompressed tar stream."""
        self.streamed += n
        self._check(self.streamed, "its uncompressed content")

    def write(self, n: int, entry: str) -> None:
        """Count `n` bytes about to be written into the target for `entry` (before writing them)."""
        self.written += n
        self._check(self.written, f"entry {entry!r} of {n} bytes")

    def _check(self, total: int, subject: str) -> None:
        limit = self.limit()
        if limit is not None and total > limit:
            how = "max_size" if self._max_size else (
                f"the default, max({DEFAULT_FLOOR}, {DEFAULT_RATIO} x the {self._compressed()} compressed bytes)")
            raise InvalidArgument(f"{self._what}: {subject} takes it past the uncompressed size limit of "
                                  f"{limit} bytes ({how}); {HOW_TO_RAISE}")
