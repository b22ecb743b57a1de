"""cargohold: container-host metadata on LMDB, with containerd's garbage collector.

>>> import cargohold
>>> with cargohold.open("/var/lib/myhost") as db:
...     ns = db.namespace("default")
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

from . import errors
from .content import LocalStore
from .db import DB, Transaction
from .integrity import fsck
from .kv import check_durable
from . import model
from .model import *  # noqa: F403 - the data classes of the API contract
from .namespaces import Namespace
from .timeutil import Clock

__version__ = "0.1.0"


def open(root: "str | os.PathLike[str]", *, shared: bool = True,
         publisher: Optional[Callable[[str, str, Any], None]] = None,
         clock: Optional[Clock] = None, map_size: Optional[int] = None, durable: bool = True,
         metadata: Optional[str] = None) -> DB:
    """Open (creating if needed) the host metadata under `root` and initialise it.

    Layout: ``root/meta`` (LMDB), ``root/content`` (blob store),
    ``root/snapshots/<name>`` (snapshotters ``native`` and ``overlayfs``, also
    reachable as ``overlay``). The DB is a context manager.
    A lost or damaged metadata database raises Corrupted and changes nothing.

    ``durable=False`` (containerd's ``no_sync``) makes each commit flush once instead of twice:
    a power cut may lose the last commits, never the database's consistency (see `cargohold.kv`).
    ``metadata`` (default ``$CARGOHOLD_METADATA``) is an engine URL such as
    ``etcd://host:port,host:port/<prefix>``: the tables live there and
    ``root/meta`` keeps only this host's locks and session files.
    """
    root = os.fspath(root)
    check_durable(durable)
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as exc:
        raise errors.Unavailable(f"cannot create root directory {root!r}: {exc}") from None
    # The metadata database first: one refused as lost or damaged leaves the backends untouched.
    if metadata is None:
        metadata = os.environ.get("CARGOHOLD_METADATA") or None
    db = DB(os.path.join(root, "meta"), shared=shared, publisher=publisher, clock=clock, map_size=map_size,
            durable=durable, metadata=metadata)
    try:
        db.content_store = LocalStore(os.path.join(root, "content"))
        db.snapshotters.update(_open_snapshotters(os.path.join(root, "snapshots"), clock))
        db.init()
    except BaseException:
        db.close()
        raise
    return db


def _open_snapshotters(path: str, clock: Optional[Clock]) -> dict:
    """The snapshot backends of a root: ``native`` and ``overlayfs``, each in its own directory.

    A root from before the overlay backend took containerd's name keeps it in
    ``snapshots/overlay``: that directory is renamed (atomically) on the way.
    """
    from .snapshots import NativeSnapshotter, OverlaySnapshotter

    _rename_legacy(path, "overlay", "overlayfs")
    opened: dict = {}
    try:
        for name, backend in (("native", NativeSnapshotter), ("overlayfs", OverlaySnapshotter)):
            opened[name] = backend(os.path.join(path, name), clock=clock)
    except BaseException:
        _close_all(opened)
        raise
    return opened


def _rename_legacy(path: str, old: str, new: str) -> None:
    legacy, current = os.path.join(path, old), os.path.join(path, new)
    if os.path.isdir(legacy) and not os.path.lexists(current):
        try:
            os.rename(legacy, current)
        except OSError as exc:
            raise errors.Unavailable(f"cannot rename snapshotter directory {legacy!r} to {current!r}: {exc}") from None


def _close_all(backends: dict) -> None:
    for backend in backends.values():
        backend.close()


__all__ = [
    "open",
    "fsck",
    "DB",
    "Transaction",
    "Namespace",
    "LocalStore",
    "errors",
    *model.__all__,
]
