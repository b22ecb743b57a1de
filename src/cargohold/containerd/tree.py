"""Reading a bbolt file of a containerd root: one committed transaction, in memory.

`cargohold.bolt.open` reads the newest committed transaction with positional
reads, without a lock, and re-checks it against the file's meta, so what it
returns is whole even while containerd commits; nothing is ever written.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from .. import bolt
from ..errors import Error

T = TypeVar("T")


def read(path: str, select: Callable[[Any], T], what: str) -> tuple[int, T]:
    """(txid, select(opened file)) of the bbolt file at `path`; errors name `what`.

    NotFound if the file is missing, Corrupted if it is not a sound bbolt file
    (or `select` finds it is not what `what` should be), Unavailable if it
    cannot be read.
    """
    try:
        with bolt.open(path) as f:
            return f.txid, select(f)
    except Error as exc:
        message = str(exc)
        raise type(exc)(message if message.startswith(what) else f"{what}: {message}") from None
