"""Which metadata database owns a backend's data.

The collector deletes whatever a backend (the content store, a snapshotter)
holds that no record references. Judged by a database that lost its records
(a truncated or deleted ``meta`` directory, a root put together from pieces)
that is everything. So each backend records, in ``owner.json`` in its root
directory, the identity of the database whose records describe its data
(`cargohold.schema.META_IDENTITY`, created by migration 2), and the collector
cleans only backends owned by the database collecting.

When a database opens (`settle`), a backend without an owner file is claimed
if it holds nothing, or if the database predates identities (it is being
upgraded now and adopts the backends it was used with). A new database never
adopts a backend that holds data. Any other backend is *foreign* (another
identity, an unreadable owner file, or data of unknown origin): it is used as
usual, but never cleaned until the caller adopts it explicitly
(``db.garbage_collect(adopt_backends=True)``, ``cargohold gc --adopt-backends``).
A backend without a ``root`` directory cannot record an owner and is cleaned
as before.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any, Optional

from .errors import Unavailable
from .logs import LazyLogger

log = LazyLogger("cargohold")

OWNER_FILE = "owner.json"

ADOPT_HINT = ("Nothing in it was deleted. If this database's records are the whole truth about it, "
              "take it over with `cargohold gc --adopt-backends` (db.garbage_collect(adopt_backends=True)): "
              "that deletes everything in it they do not reference")


def backend_root(backend: Any) -> Optional[str]:
    root = getattr(backend, "root", None)
    return root if isinstance(root, str) and os.path.isdir(root) else None


def read_owner(root: str) -> tuple[Optional[str], Optional[str]]:
    """(identity, None) for an owned backend, (None, None) without an owner file, (None, problem) if unreadable."""
    path = os.path.join(root, OWNER_FILE)
    try:
        with open(path, "rb") as f:
            raw = f.read(4096)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"its owner file {path!r} cannot be read ({exc})"
    try:
        owner = json.loads(raw).get("database")
    except (ValueError, AttributeError):
        owner = None
    if not isinstance(owner, str) or not owner:
        return None, f"its owner file {path!r} is damaged"
    return owner, None


def claim(root: str, identity: str) -> None:
    """Record `identity` as the owner of the backend at `root` (atomically and durably)."""
    try:
        write_json(os.path.join(root, OWNER_FILE), {"database": identity})
    except OSError as exc:
        raise Unavailable(f"cannot record the owner of backend {root!r}: {exc}") from None


def write_json(path: str, data: dict, *, replace: bool = True) -> bool:
    """Write `data` to `path` atomically and durably; with ``replace=False`` an existing file
    stays as it is (False is returned), even against another process writing at the same time."""
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}"
    try:
        with open(tmp, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        directory = os.path.dirname(path) or "."
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return True
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def holds_data(backend: Any) -> bool:
    """Whether the backend holds anything: a blob, an ingest or a snapshot (its own `holds_data()`
    when it has one, which also counts data its records do not describe)."""
    own = getattr(backend, "holds_data", None)
    if callable(own):
        return bool(own())
    for listing in ("walk", "statuses"):
        fn = getattr(backend, listing, None)
        if fn is None:
            continue
        items = iter(fn())
        try:
            if next(items, None) is not None:
                return True
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # ends the read transaction a generator may hold
    return False


def refusal(backend: Any, what: str, identity: str) -> Optional[str]:
    """Why this database must not clean `backend` (None: it may). An empty backend
    nobody owns is claimed on the way."""
    root = backend_root(backend)
    if root is None:
        return None
    owner, problem = read_owner(root)
    if owner == identity:
        return None
    if problem is not None:
        why = problem
    elif owner is not None:
        why = (f"it belongs to metadata database {owner}, not to this one ({identity}): the records "
               "describing its data may have been lost (a damaged or deleted meta directory), "
               "or it comes from another root")
    elif holds_data(backend):
        why = (f"it holds data, but has no owner file and this metadata database ({identity}) "
               "was created after that data was written: it knows nothing about it")
    else:
        claim(root, identity)
        return None
    return f"{what} {root!r} is not cleaned: {why}. {ADOPT_HINT}"


def settle(backend: Any, what: str, identity: str, *, adopt: bool) -> None:
    """At open: claim an unowned backend that is empty, or any unowned one if `adopt`
    (a database upgraded from before identities). A failure only leaves it unowned."""
    root = backend_root(backend)
    if root is None:
        return
    try:
        owner, problem = read_owner(root)
        if owner is None and problem is None and (adopt or not holds_data(backend)):
            claim(root, identity)
    except Exception as exc:  # the collector will refuse it and say why
        log.warning("could not settle the owner of %s %r: %s", what, root, exc)


def adopt(backend: Any, identity: str) -> bool:
    """Take `backend` over for `identity`; True if it was not already this database's."""
    root = backend_root(backend)
    if root is None or read_owner(root)[0] == identity:
        return False
    claim(root, identity)
    return True
