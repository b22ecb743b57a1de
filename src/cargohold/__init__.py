"""cargohold: container-host metadata on LMDB, with containerd's garbage collector.

>>> import cargohold
>>> with cargohold.open("/var/lib/myhost") as db:
...     ns = db.namespace("default")

The facade's names (`DB`, `Namespace`, the data classes, ...) are loaded on
first use, so that ``import cargohold`` (and every ``cargohold.<submodule>``
import, such as the command line's) costs only what it uses.
"""

from __future__ import annotations

import importlib
import os

from . import errors

TYPE_CHECKING = False  # typing itself is not imported: `import cargohold` stays cheap
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

    from .content import LocalStore
    from .db import DB, Transaction  # noqa: F401
    from .model import *  # noqa: F401,F403
    from .namespaces import Namespace  # noqa: F401
    from .timeutil import Clock

__version__ = "0.1.0"

_SNAPSHOTTERS = ("native", "overlayfs")
"""The snapshotters `open` provides, by their containerd names."""

_FACADE = {"DB": "db", "Transaction": "db", "Namespace": "namespaces", "LocalStore": "content", "fsck": "integrity"}
"""Facade names defined outside `cargohold.model`, by the module that defines them."""


def open(root: "str | os.PathLike[str]", *, shared: bool = True,
         publisher: Optional[Callable[[str, str, Any], None]] = None,
         clock: "Optional[Clock]" = None, map_size: Optional[int] = None, readonly: bool = False,
         durable: bool = True, metadata: Optional[str] = None) -> "DB":
    """Open (creating if needed) the host metadata under `root` and initialise it.

    Layout: ``root/meta`` (LMDB), ``root/content`` (blob store),
    ``root/snapshots/<name>`` (snapshotters ``native`` and ``overlayfs``, also
    reachable as ``overlay``). The DB is a context manager.
    A lost or damaged metadata database raises Corrupted and changes nothing.

    ``readonly=True`` opens an existing root only to read it (NotFound if
    there is none): nothing is created, migrated, claimed or repaired, and
    every write raises FailedPrecondition. A root whose files this process
    cannot write (a read-only mount, another user's root) must be opened so;
    a writable open of one is refused up front with FailedPrecondition.

    ``durable=False`` (containerd's ``no_sync``) makes each commit flush once instead of twice:
    a power cut may lose the last commits, never the database's consistency (see `cargohold.kv`).
    ``metadata`` (default ``$CARGOHOLD_METADATA``) is an engine URL such as
    ``etcd://host:port,host:port/<prefix>``: the tables live there and
    ``root/meta`` keeps only this host's locks and session files.
    """
    from .db import DB
    from .kv import check_durable

    root = os.path.abspath(os.fspath(root))  # every path below is opened later, maybe after a chdir
    check_durable(durable)
    if metadata is None:
        metadata = os.environ.get("CARGOHOLD_METADATA") or None
    if metadata:
        from .engines import check_url

        check_url(metadata)  # before anything is created
    if readonly:
        _require_root(root)
    else:
        _require_writable(root)
        if not metadata:  # on an engine, DB makes root/meta once the cluster answered
            try:
                os.makedirs(root, exist_ok=True)
            except OSError as exc:
                raise errors.Unavailable(f"cannot create root directory {root!r}: {exc}") from None
    # The metadata database first: one refused as lost or damaged leaves the backends untouched.
    db = DB(os.path.join(root, "meta"), shared=shared, publisher=publisher, clock=clock, map_size=map_size,
            readonly=readonly, durable=durable, metadata=metadata)
    try:
        if readonly:  # most reading commands touch one backend, or none: each opens on first use
            db.content_store = _Deferred(lambda: _content_store(root))
            db.snapshotters.update({name: _Deferred(lambda name=name: _bound(db, name, root, clock))
                                    for name in _SNAPSHOTTERS})
        else:
            db.content_store = _content_store(root)
            db.snapshotters.update(_open_snapshotters(os.path.join(root, "snapshots"), clock))
        db.init()
    except BaseException:
        db.close()
        raise
    return db


def _require_root(root: str) -> None:
    """NotFound unless `root` has a metadata directory (what a read-only open needs; the
    database in it is judged by `cargohold.kv`: lost, missing or there)."""
    if not os.path.isdir(os.path.join(root, "meta")):
        state = "does not exist" if not os.path.lexists(root) else "has no metadata directory (meta)"
        raise errors.NotFound(f"root {root!r} {state}: there is nothing to read")


def _read_only_reason(root: str) -> Optional[str]:
    """Why this process cannot write the root at `root` (None: it can, or it does not exist yet)."""
    for path in (os.path.join(root, "meta"), root):
        if os.path.isdir(path):
            if os.access(path, os.W_OK):
                return None
            try:
                writable_fs = not os.statvfs(path).f_flag & os.ST_RDONLY
            except OSError:
                writable_fs = True
            return (f"{path!r} is not writable by this user" if writable_fs
                    else f"{path!r} is on a read-only file system")
    return None


def _require_writable(root: str) -> None:
    reason = _read_only_reason(root)
    if reason is not None:
        raise errors.FailedPrecondition(f"root {root!r} is read-only ({reason}): only reading it is possible")


def _content_store(root: str) -> "LocalStore":
    from .content import LocalStore

    return LocalStore(os.path.join(root, "content"))


def _backend_class(name: str) -> type:
    from .snapshots import NativeSnapshotter, OverlaySnapshotter

    return {"native": NativeSnapshotter, "overlayfs": OverlaySnapshotter}[name]


def _open_snapshotters(path: str, clock: "Optional[Clock]") -> dict:
    """The snapshot backends of a root: ``native`` and ``overlayfs``, each in its own directory.

    A root from before the overlay backend took containerd's name keeps it in
    ``snapshots/overlay``: that directory is renamed (atomically) on the way.
    """
    _rename_legacy(path, "overlay", "overlayfs")
    opened: dict = {}
    try:
        for name in _SNAPSHOTTERS:
            opened[name] = _backend_class(name)(os.path.join(path, name), clock=clock)
    except BaseException:
        _close_all(opened)
        raise
    return opened


def _open_snapshotter(root: str, name: str, clock: "Optional[Clock]") -> Any:
    """One snapshot backend of a root opened read-only (a legacy ``snapshots/overlay`` is used where it is)."""
    directory = os.path.join(root, "snapshots", name)
    if name == "overlayfs" and not os.path.isdir(directory) and os.path.isdir(os.path.join(root, "snapshots", "overlay")):
        directory = os.path.join(root, "snapshots", "overlay")
    return _backend_class(name)(directory, clock=clock)


def _bound(db: "DB", name: str, root: str, clock: "Optional[Clock]") -> Any:
    """Snapshotter `name` of a read-only open, reading its records where `db` keeps them."""
    backend = _open_snapshotter(root, name, clock)
    try:
        db.bind_read_only(name, backend)
    except BaseException:
        backend.close()
        raise
    return backend


class _Deferred:
    """A backend opened on first use, for read-only opens: listing images must not pay for opening
    the snapshotters. Attributes are the backend's; `close` closes it only if it was opened."""

    __slots__ = ("_factory", "_backend", "_lock")

    def __init__(self, factory: Callable[[], Any]) -> None:
        import threading

        self._factory = factory
        self._backend: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        with self._lock:
            if self._backend is None:
                self._backend = self._factory()
            return self._backend

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)

    def __repr__(self) -> str:
        return repr(self._backend) if self._backend is not None else "<backend opened on first use>"

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()


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


def _model_names() -> list:
    from . import model

    return list(model.__all__)


def __getattr__(name: str) -> Any:
    """Load a facade name (or a submodule, as ``cargohold.gc``) on first use."""
    if name == "__all__":
        return ["open", "fsck", "DB", "Transaction", "Namespace", "LocalStore", "errors", *_model_names()]
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name in _FACADE:
        value = getattr(importlib.import_module(f".{_FACADE[name]}", __name__), name)
    else:
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            model = importlib.import_module(".model", __name__)
            if name not in model.__all__:
                raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
            value = getattr(model, name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__getattr__("__all__")))
