"""Where a snapshot backend keeps its records (`cargohold.snapshots.storage`).

A backend used alone (``NativeSnapshotter(root)``) keeps them in an LMDB
environment of its own, ``<root>/metadata``, one named table per storage
table. A backend that a `cargohold.db.DB` opens is *bound* to the metadata
environment instead (`Metastore.bind`): its tables are key ranges of the
metadata table ``snapshotters`` (``<snapshotter name> NUL <table letter>``
then the storage key). Its writes then join the metadata transaction the
calling thread has open and commit with it, so that a prepare, a commit, or
a whole image unpack in one ``db.update()`` makes one durable commit, and a
backend record can never be lost, or outlive an aborted transaction, apart
from the metadata that names it.

`Metastore.read` and `Metastore.write` hand out a `View`: the storage tables
over one key-value transaction, with `View.on_abort`, `View.before_commit`
and `View.after_commit` for the work outside LMDB a change does (a directory
renamed into place must go if the records do not commit, and be on disk
before they do). A bound metastore's view joins the
thread's metadata transaction when there is one: reads see it, and writes go
into a savepoint of it (`cargohold.transaction.Transaction.savepoint`), so a
backend call that fails half-way leaves nothing behind even inside a
caller's transaction; its undo steps then run at once, or whenever the
transaction does not commit. Without one, a view has a transaction of its
own, committed (then its after-commit steps run) or aborted (then its undo
steps run, newest first) when the block ends.

A backend's own environment from before binding existed (a root written by
an older cargohold) is moved into the metadata database the first time the
backend is bound (`Metastore.bind`), in one transaction that also records
the move, and then deleted.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from typing import Any, Callable, ContextManager, Iterator, Optional, Sequence

from ..errors import FailedPrecondition, Unavailable
from ..kv import Env
from ..transaction import AfterFlush, needs_flush, run_all

TABLE = "snapshotters"
"""The metadata table bound backends keep their records in."""

_MOVED = b"moved"
"""Key, in a bound backend's ``meta`` range, recording that its own environment was moved in."""


class View:
    """A backend's storage tables over one key-value transaction (what `storage` functions take).

    ``joined`` is the metadata transaction this view writes in, or None for
    a transaction of the backend's own.
    """

    __slots__ = ("_kv", "_tables", "joined", "_undo", "_after", "_before")

    def __init__(self, kv: Any, tables: dict, joined: Any = None) -> None:
        self._kv = kv
        self._tables = tables
        self.joined = joined
        self._undo: list[Callable[[], None]] = []
        self._before: dict[Any, Callable[[], None]] = {}
        self._after: list[Callable[[], None]] = []

    def get(self, table: str, key: bytes) -> Optional[bytes]:
        name, prefix = self._tables[table]
        return self._kv.get(name, prefix + key)

    def put(self, table: str, key: bytes, value: bytes, *, overwrite: bool = True) -> bool:
        name, prefix = self._tables[table]
        return self._kv.put(name, prefix + key, value, overwrite=overwrite)

    def delete(self, table: str, key: bytes) -> bool:
        name, prefix = self._tables[table]
        return self._kv.delete(name, prefix + key)

    def scan(self, table: str, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """(key, value) of the table's keys starting with `prefix`, in key order."""
        name, base = self._tables[table]
        if not base:
            yield from self._kv.scan(name, prefix)
            return
        cut = len(base)
        for key, value in self._kv.scan(name, base + prefix):
            yield key[cut:], value

    def __enter__(self) -> "View":
        return self  # a view over a joined transaction is its own context: nothing to end

    def __exit__(self, exc_type, exc, tb) -> None:
        return None

    def has_prefix(self, table: str, prefix: bytes) -> bool:
        name, base = self._tables[table]
        return self._kv.has_prefix(name, base + prefix)

    def on_abort(self, fn: Callable[[], None]) -> None:
        """Run fn if these writes do not commit (newest first)."""
        if self.joined is not None:
            self.joined.on_abort(fn)
        else:
            self._undo.append(fn)

    def before_commit(self, key: Any, fn: Callable[[], None]) -> None:
        """Run fn just before these writes commit, once per `key`; if it fails, they do not."""
        if self.joined is not None:
            self.joined.before_commit(key, fn)
        else:
            self._before.setdefault(key, fn)

    def after_commit(self, fn: Callable[[], None], *, deletes: bool = False) -> None:
        """Run fn once these writes have committed (``deletes=True``: once they are on disk,
        see `Transaction.after_commit`)."""
        if self.joined is not None:
            self.joined.after_commit(fn, deletes=deletes)
        else:
            self._after.append(AfterFlush(fn) if deletes else fn)


class Metastore:
    """A backend's records: its own environment at `path` (opened on first use), or, once bound,
    a key range of the metadata environment."""

    def __init__(self, path: str, tables: Sequence[str]) -> None:
        self.path = path
        self._table_names = tuple(tables)
        self._own: Optional[Env] = None
        self._own_tables = {table: (table, b"") for table in self._table_names}
        self._bound: Optional[Env] = None
        self._bound_tables: dict = {}
        self._current: Callable[[], Any] = lambda: None
        self._closed = False

    @property
    def bound_env(self) -> Optional[Env]:
        """The metadata environment this metastore is bound to (None: it has its own)."""
        return self._bound

    def _env(self) -> tuple[Env, dict]:
        if self._closed:
            raise Unavailable(f"snapshot metastore {self.path!r} is closed")
        if self._bound is not None:
            return self._bound, self._bound_tables
        if self._own is None:
            self._own = Env(self.path, self._table_names)
        return self._own, self._own_tables

    def bind(self, env: Env, name: str, current: Callable[[], Any], *, move: bool = True) -> bool:
        """Keep the records in metadata environment `env` under snapshotter `name` from now on;
        ``current()`` is the metadata transaction of the calling thread (or None). Moves the
        backend's own environment in first, if it has one (see the module docstring); with
        ``move=False`` (a read-only open) one that has its own stays unbound. Returns whether bound."""
        if not move and os.path.isdir(self.path):
            return False
        if self._closed:
            raise Unavailable(f"snapshot metastore {self.path!r} is closed")
        prefix = name.encode() + b"\x00"
        tables = {table: (TABLE, prefix + table[:1].encode()) for table in self._table_names}
        if len({p for _, p in tables.values()}) != len(tables):
            raise ValueError(f"snapshot metastore tables {self._table_names} do not start with distinct letters")
        _move_in(self, env, tables, name)
        self._bound, self._bound_tables, self._current = env, tables, current
        return True

    def read(self) -> ContextManager[View]:
        """``with store.read() as view:`` the records at one moment: in the thread's metadata
        transaction if it has one."""
        env, tables = self._env()
        joined = self._current() if self._bound is not None else None
        if joined is not None:
            return View(joined.kv, tables)
        return _read_own(env, tables)

    def write(self) -> ContextManager[View]:
        """``with store.write() as view:`` a change of the records: a savepoint of the thread's
        metadata transaction if it has one (bound), else a transaction of its own, committed
        when the block ends."""
        env, tables = self._env()
        joined = self._current() if self._bound is not None else None
        if joined is None:
            return _write_own(env, tables)
        if not joined.write:
            raise FailedPrecondition("a snapshot backend cannot write inside a read transaction (db.view())")
        if joined.savepoints:  # a store's call: its savepoint takes this one back too
            return View(joined.kv, tables, joined)
        return _write_joined(joined, tables)

    def close(self) -> None:
        """Close the own environment, if open; the metastore cannot be used afterwards."""
        self._closed = True
        self._bound = None
        if self._own is not None:
            self._own.close()
            self._own = None


@contextmanager
def _read_own(env: Env, tables: dict) -> Iterator[View]:
    with env.read() as kv:
        yield View(kv, tables)


@contextmanager
def _write_joined(joined: Any, tables: dict) -> Iterator[View]:
    with joined.savepoint() as tx:
        yield View(tx.kv, tables, tx)


@contextmanager
def _write_own(env: Env, tables: dict) -> Iterator[View]:
    kv = env.write()
    view = View(kv, tables)

    def undo() -> None:
        run_all(reversed(view._undo))
    try:
        yield view
        for fn in view._before.values():
            fn()
        kv.commit(undo=undo)
    except BaseException:
        kv.abort(undo=undo)
        raise
    if needs_flush(env, view._after):
        env.sync()
    run_all(view._after)


def _move_in(store: Metastore, env: Env, tables: dict, name: str) -> None:
    """Copy the backend's own environment, if there is one, into `env` under `tables`, record
    the move, then delete it; FailedPrecondition if `env` holds records of the snapshotter already
    that did not come from it."""
    legacy = store.path
    if not os.path.isdir(legacy):
        return
    meta_name, meta_prefix = tables["meta"]
    with env.read() as kv:
        moved = kv.get(meta_name, meta_prefix + _MOVED) is not None
        has_records = any(kv.has_prefix(table, prefix) for table, prefix in tables.values())
    if not moved:
        if has_records:
            raise FailedPrecondition(
                f"snapshotter {name!r}: the metadata database holds its records, and so does its own "
                f"metastore {legacy!r}; move one of them away (the one that does not describe the "
                f"directories under {os.path.dirname(legacy)!r})")
        own = store._own or Env(legacy, store._table_names)
        store._own = None
        try:
            with own.read() as source, env.write() as target:
                for table in store._table_names:
                    target_table, prefix = tables[table]
                    for key, value in source.scan(table):
                        target.put(target_table, prefix + key, value)
                target.put(meta_name, meta_prefix + _MOVED, b"")
        finally:
            own.close()
    try:
        shutil.rmtree(legacy)
    except OSError as exc:
        raise Unavailable(f"snapshotter {name!r}: cannot delete {legacy!r} after moving its records into "
                          f"the metadata database: {exc}") from None
