"""One consistent, in-memory copy of (part of) a bbolt file that another process may be writing.

containerd keeps meta.db open and commits to it while cargohold reads. A bbolt
writer never overwrites a page the newest committed transaction can reach, but
once a newer transaction commits, the one after it may reuse the pages the
reader is walking. So `read` copies what it needs into plain dicts (`decode.Tree`:
bytes keys, bytes values or nested dicts) and then looks at the file's
transaction id again: unchanged means the copy is that transaction, whole;
changed means it may be torn, and it starts over. Nothing is ever written.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, TypeVar

from .. import bolt
from ..errors import Corrupted, NotFound, Unavailable

T = TypeVar("T")

ATTEMPTS = 20
"""Reads tried before giving up on a file that changes faster than it can be read."""


def copy(bucket: Any) -> dict:
    """A bucket and everything under it as nested dicts."""
    out = {}
    for key, value in bucket.items():
        if value is None:
            sub = bucket.bucket(key)
            out[key] = {} if sub is None else copy(sub)
        else:
            out[key] = value
    return out


def _txid(path: str) -> int:
    with bolt.open(path) as f:
        return f.txid


def read(path: str, select: Callable[[Any], T], what: str) -> tuple[int, T]:
    """(txid, select(opened file)) from one committed transaction of the bbolt file at `path`.

    `select` must copy everything it keeps (see `copy`). NotFound if the file is
    missing, Corrupted if it is not a sound bbolt file, Unavailable if it kept
    changing for `ATTEMPTS` reads.
    """
    for attempt in range(ATTEMPTS):
        try:
            with bolt.open(path) as f:
                txid = f.txid
                result = select(f)
            if _txid(path) == txid:
                return txid, result
        except FileNotFoundError:
            raise NotFound(f"{what} {path!r} does not exist") from None
        except IsADirectoryError:
            raise Corrupted(f"{what} {path!r} is a directory, not a bbolt file") from None
        except Corrupted as exc:
            # a page reused under a torn read looks damaged: only a stable file is really corrupt
            if _stable(path):
                raise Corrupted(f"{what} {path!r}: {exc}") from None
        except OSError as exc:
            raise Unavailable(f"cannot read {what} {path!r}: {exc}") from None
        time.sleep(min(0.001 * 2 ** attempt, 0.1))
    raise Unavailable(f"{what} {path!r} changed during each of {ATTEMPTS} reads")


def _stable(path: str) -> bool:
    """Whether the file looks unchanged over a short wait (size and modification time)."""
    before = os.stat(path)
    time.sleep(0.01)
    after = os.stat(path)
    return (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns)
