"""Pure-Python twin of `_ext/fsdir.pxi`: a directory descriptor's listing."""

from __future__ import annotations

import os


def list_dir(fd: int) -> list[str]:
    """The names in directory descriptor fd (without "." and ".."), read from its start."""
    return os.listdir(fd)
