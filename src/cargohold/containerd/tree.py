"""Reading a bbolt file of a containerd root: one committed transaction, in memory.

`cargohold.bolt.open` reads the newest committed transaction with positional
reads, without a lock, and re-checks it against the file's meta, so what it
returns is whole even while containerd commits; nothing is ever written.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

from .. import bolt
from ..errors import Error

T = TypeVar("T")


@contextmanager
def bulk() -> Iterator[None]:
    """Hold Python's cycle collector off while many acyclic objects are built.

    Listing or planning a large meta.db makes objects per record (data classes,
    or a node key and entry per object); each time the allocations pass a
    threshold the collector walks every live object again. Nothing built here
    forms cycles, so nothing is left for it to find.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def read(path: str, select: Callable[[Any], T], what: str) -> tuple[int, T]:
    """(txid, select(opened file)) of the bbolt file at `path`; errors name `what`.

    NotFound if the file is missing, Corrupted if it is not a sound bbolt file
    (or `select` finds it is not what `what` should be), Unavailable if it
    cannot be read.
    """
    try:
        with bulk(), bolt.open(path) as f:
            return f.txid, select(f)
    except Error as exc:
        message = str(exc)
        raise type(exc)(message if message.startswith(what) else f"{what}: {message}") from None
