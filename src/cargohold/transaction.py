"""Metadata transactions: what every store method runs in.

This module sits below the stores and above `cargohold.kv` and
`cargohold.schema`; it imports no store and no part of the collector, so the
layers read bottom-up: kv → schema → transaction → stores → gc → the `DB`
facade (`cargohold.db`), which owns the environment and the locks and hands
them to the classes here.

* `Transaction`: one metadata transaction as store methods see it (``tx=``):
  its key-value transaction, its timestamp, and what must happen only if it
  commits (dirty backends, events, backend work) or if it does not (undo
  steps, newest first). `Transaction.savepoint` nests a transaction inside it
  (an LMDB child transaction): a call that fails half-way inside a caller's
  transaction then leaves nothing behind.
* `TxContext`: ``db.update()`` and ``db.view()``. A store method called in
  the same thread inside one joins it even without ``tx=``; only the
  outermost block commits.
* `GroupCommit`: a store method called outside any transaction does not
  commit alone: concurrent callers of one process share write transactions
  (`cargohold.groupcommit`), so that they share durable commits too.

Locks a write transaction takes, in order (owned by `cargohold.db`, see its
docstring): ``gc.turnstile`` shared and released at once, ``gc.lock``
(``wlock``) shared for the transaction's life, then the environment's
writer lock (`cargohold.kv`).
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Protocol, TypeVar

from . import schema
from ._native import decode_varint, encode_varint
from .errors import FailedPrecondition, InvalidArgument
from .gc import journal as gcjournal
from .logs import LazyLogger
from .timeutil import clock_ns, from_ns

if TYPE_CHECKING:
    from .kv import Txn

log = LazyLogger("cargohold")

T = TypeVar("T")


class Database(Protocol):
    """What transactions and stores need of the database (`cargohold.db.DB` provides it)."""

    path: str
    clock: Callable[[], Any]
    publisher: Optional[Callable[[str, str, Any], None]]
    shared: bool
    content_store: Any

    def transaction(self, tx: Optional["Transaction"], write: bool) -> Any: ...
    def write(self, tx: Optional["Transaction"], fn: Callable[["Transaction"], T], *,
              savepoint: bool = False) -> T: ...
    def view(self) -> "TxContext": ...
    def update(self) -> "TxContext": ...
    def snapshotter_backend(self, name: str) -> Any: ...
    def backend_joins(self, name: str) -> bool: ...
    def stored_snapshotter(self, name: str) -> str: ...
    def local_snapshotter(self, stored: str) -> Optional[str]: ...
    def _current(self) -> Optional["Transaction"]: ...


class NamespaceHandle(Protocol):
    """What a namespaced store knows of its namespace (`cargohold.namespaces.Namespace`)."""

    db: Database
    name: str
    lease: Optional[str]


class Transaction:
    """One metadata transaction, handed to store methods as ``tx=``.

    Besides the key-value transaction (`kv`) it collects what must happen
    only if it commits: dirty backends, events and other post-commit work;
    what must happen just before it commits (`before_commit`: flushes its
    durability needs); and what must be undone if it does not (`on_abort`).
    """

    __slots__ = ("db", "kv", "write", "now", "_now_at", "_dirty", "_dirty_content", "_dirty_snapshotters",
                 "_after", "_before", "_undo", "_held", "_namespaces", "_gc_round", "_journaled",
                 "savepoints")

    def __init__(self, db: Any, kv_txn: "Txn", write: bool) -> None:
        self.db = db
        self.kv = kv_txn
        self.write = write
        self.now: int = clock_ns(db.clock)
        """The transaction's timestamp (ns): every object it touches gets the same one."""
        self._now_at: Optional[datetime] = None
        self._dirty = False
        self._dirty_content = False
        self._dirty_snapshotters: set[str] = set()
        self._after: list[Callable[[], None]] = []
        self._before: dict[Any, Callable[[], None]] = {}
        self._undo: list[Callable[[], None]] = []
        self._held: dict[Any, Any] = {}
        self._namespaces: set[str] = set()
        self._gc_round: Optional[int] = None
        self._journaled: set[bytes] = set()
        self.savepoints = 0
        """Savepoints open in this transaction: a nested call inside one needs none of its own.
        A group-commit call's own transaction counts as one (`cargohold.groupcommit`): a call
        that fails takes all of it back, so the writes of one that succeeds need no other."""

    @property
    def now_at(self) -> datetime:
        """`now` as a datetime, made once (the stores stamp every object they return with it)."""
        if self._now_at is None:
            self._now_at = from_ns(self.now)
        return self._now_at

    def gc_round(self) -> int:
        """The round of the concurrent collection this transaction journals in (0: none running).

        Looked up once, on the first change to the node table: write
        transactions are serialised, so the marker cannot change under one.
        """
        if self._gc_round is None:
            self._gc_round = gcjournal.active_round(self)
        return self._gc_round

    def require_write(self) -> None:
        if not self.write:
            raise InvalidArgument("this call writes, but the transaction given is read-only (use db.update())")

    def mark_dirty(self, *, content: bool = False, snapshotter: Optional[str] = None) -> None:
        """Record a deletion: the next collection must run, and clean these backends."""
        self.require_write()
        self._dirty = True
        # The marker's value is a fresh token: the collector clears a marker only
        # if it still holds the token it saw, so a newer deletion is never lost.
        if content and not self._dirty_content:
            self._dirty_content = True
            self.kv.put(schema.T_META, schema.META_DIRTY_CONTENT, os.urandom(8))
        if snapshotter is not None and snapshotter not in self._dirty_snapshotters:
            self._dirty_snapshotters.add(snapshotter)
            self.kv.put(schema.T_META, schema.dirty_snapshotter_key(snapshotter), os.urandom(8))

    def after_commit(self, fn: Callable[[], None], *, deletes: bool = False) -> None:
        """Run fn once the transaction has committed (events, backend work).

        ``deletes=True``: fn deletes backend data the commit stopped naming, so it runs only once
        the commit is on disk (a database that is not durable flushes first, `needs_flush`):
        a power cut must not bring back a record of what is gone.
        """
        self._after.append(AfterFlush(fn) if deletes else fn)

    def before_commit(self, key: Any, fn: Callable[[], None]) -> None:
        """Run fn just before the transaction commits, once per `key`: work the commit's durability
        needs, done once for every call that asked (one fsync of a directory that many calls
        renamed files into). If it fails, the transaction does not commit."""
        if key not in self._before:
            self._before[key] = fn

    def on_abort(self, fn: Callable[[], None]) -> None:
        """Run fn if the transaction does not commit (undo backend side effects).

        Undo steps run newest first, so a step may rely on the ones registered
        before it still being in place (a child snapshot goes before its parent).
        A step registered inside a savepoint that fails runs when it fails.
        """
        self._undo.append(fn)

    def hold(self, key: Any, factory: Callable[[], Any]) -> None:
        """Enter the context manager `factory()` now and exit it when the transaction
        ends, committed or not; once per `key` (e.g. a backend lock held until commit)."""
        if key not in self._held:
            cm = factory()
            cm.__enter__()
            self._held[key] = cm

    def publish(self, namespace: str, topic: str, event: Any) -> None:
        """Publish an event through the DB's publisher after the commit (a failing publisher is logged)."""
        publisher = self.db.publisher
        if publisher is not None:
            def send() -> None:
                try:
                    publisher(namespace, topic, event)
                except Exception:
                    log.exception("publishing %s failed", topic)
            self.after_commit(send)

    def ensure_namespace(self, name: str) -> None:
        """Create the namespace record if missing: a namespace exists once written in."""
        if name in self._namespaces:
            return
        self.require_write()
        key = name.encode()
        if self.kv.get(schema.T_NAMESPACES, key) is None:
            self.kv.put(schema.T_NAMESPACES, key, schema.pack({"labels": {}, "created": self.now}))
        self._namespaces.add(name)

    def next_sequence(self, name: str) -> int:
        """A per-database counter, incremented in this transaction (1, 2, ...)."""
        key = schema.META_SEQUENCE + name.encode()
        raw = self.kv.get(schema.T_META, key)
        value = (decode_varint(raw)[0] if raw else 0) + 1
        self.kv.put(schema.T_META, key, encode_varint(value))
        return value

    def savepoint(self) -> "Savepoint":
        """A nested transaction: ``with tx.savepoint(): ...`` keeps the block's writes only if it
        succeeds; if it raises, its writes are rolled back and the undo steps it registered run,
        and the transaction goes on as it was before the block."""
        return Savepoint(self)

    # -- the end of a transaction (`TxContext`, `GroupCommit`) ----------------------------

    def _undo_all(self) -> None:
        run_all(reversed(self._undo))

    def _release(self) -> None:
        """Let go of what `hold` took (newest first)."""
        if not self._held:
            return
        held, self._held = self._held, {}
        run_all([cm.__exit__ for cm in reversed(held.values())], None, None, None)


class Savepoint:
    """Context manager behind `Transaction.savepoint` (a child of the key-value transaction)."""

    __slots__ = ("tx", "_parent", "_child", "_undo", "_after", "_before", "_flags", "_sets")

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx

    def __enter__(self) -> Transaction:
        tx = self.tx
        if not tx.write:
            tx.require_write()
        parent = self._parent = tx.kv
        child = self._child = parent.child()
        tx.kv = child
        self._undo, self._after, self._before = len(tx._undo), len(tx._after), len(tx._before)
        self._flags = (tx._dirty, tx._dirty_content)
        self._sets = (set(tx._dirty_snapshotters), set(tx._namespaces), set(tx._journaled))
        tx.savepoints += 1
        return tx

    def __exit__(self, exc_type, exc, tb) -> None:
        tx = self.tx
        tx.kv = self._parent
        tx.savepoints -= 1
        if exc_type is None:
            try:
                self._child.commit()
                return
            except BaseException:
                self._roll_back()
                raise
        self._child.abort()
        self._roll_back()

    def _roll_back(self) -> None:
        tx = self.tx
        undo = tx._undo[self._undo:]
        del tx._undo[self._undo:]
        del tx._after[self._after:]
        for key in list(tx._before)[self._before:]:
            del tx._before[key]
        tx._dirty, tx._dirty_content = self._flags
        tx._dirty_snapshotters, tx._namespaces, tx._journaled = self._sets
        run_all(reversed(undo))


class TxContext:
    """Context manager behind `DB.update()` and `DB.view()`.

    The collector runs its own write transactions with ``internal=True``: it
    already holds the writer lock exclusively, and its commits are not
    mutations to report (no callbacks, post-commit hooks left to the caller).
    """

    __slots__ = ("db", "write", "tx", "joined", "_lock", "internal")

    def __init__(self, db: Any, write: bool, internal: bool = False) -> None:
        self.db = db
        self.write = write
        self.tx: Optional[Transaction] = None
        self.joined = False
        self._lock = None
        self.internal = internal

    def __enter__(self) -> Transaction:
        db = self.db
        current = db._current()
        if current is not None:
            if self.write and not current.write:
                raise FailedPrecondition("cannot write inside a read transaction (db.view())")
            self.joined = True
            self.tx = current
            return current
        db._require_open()
        if self.write and not self.internal:
            self._lock = enter_writer(db)
        kv_txn = None
        try:
            kv_txn = db._env.write() if self.write else db._env.read()
            self.tx = tx = Transaction(db, kv_txn, self.write)
        except BaseException:  # a KeyboardInterrupt too: `with` runs no `__exit__` for a failed enter
            if kv_txn is not None:
                kv_txn.abort()
            self._release()
            raise
        db._local.tx = tx
        return tx

    def _release(self) -> None:
        if self._lock is not None:
            self.db.wlock.release(self._lock)  # inline: no Python call for an interrupt to precede
            self._lock = None

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.joined:
            return
        tx = self.tx
        self.db._local.tx = None
        try:
            if exc_type is None:
                try:
                    commit(tx.kv, [tx], tx._undo_all)
                except BaseException:
                    if not tx.kv.committed:
                        raise
                    tx.kv.abort()  # an interrupt as the commit let go: it stands (this only lets go)
            else:
                tx.kv.abort(undo=tx._undo_all)
                return
        finally:
            try:
                tx._release()
            finally:
                self._release()
        if self.write and not self.internal:
            self.db._committed(tx)


def commit(kv: "Txn", txs: Iterable[Transaction], undo: Callable[[], None]) -> None:
    """Commit `kv`, the key-value transaction of `txs` (one, or a shared commit's calls): their
    before-commit work first, once per key; if it or the commit fails, `kv` is aborted with
    `undo` run under the writer lock (`cargohold.kv.Txn.abort`) and the error raised."""
    before: dict = {}
    for tx in txs:
        if tx._before:
            for key, fn in tx._before.items():
                before.setdefault(key, fn)
    if before:
        try:
            for fn in before.values():
                fn()
        except BaseException:
            kv.abort(undo=undo)
            raise
    kv.commit(undo=undo)


def enter_writer(db: Any) -> Any:
    """Pass the turnstile and take ``wlock`` shared, as every write transaction does first;
    returns the hold to give back (``db.wlock.release(held)``, inline) once the transaction has ended."""
    turnstile = db._turnstile
    token = turnstile.acquire_shared()
    held = None
    try:
        held = db.wlock.acquire_shared()
    finally:
        try:
            turnstile.release(token)
        except BaseException:  # interrupted: the hold it took must not be lost with the return
            if held is not None:
                db.wlock.release(held)
            raise
    return held


class Given:
    """Context manager that hands back a transaction the caller owns."""

    __slots__ = ("tx",)

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx

    def __enter__(self) -> Transaction:
        return self.tx

    def __exit__(self, *exc) -> None:
        return None


def check_given(db: Any, tx: Any, write: bool) -> Transaction:
    """`tx` as a store method's ``tx=``: a transaction of `db`, one that writes if `write`."""
    if not isinstance(tx, Transaction) or tx.db is not db:
        raise InvalidArgument("tx must be a transaction of this database")
    if write:
        tx.require_write()
    return tx


class AfterFlush:
    """A post-commit step that deletes data: it must not run before the commit is durable."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn

    def __call__(self) -> None:
        self.fn()


def needs_flush(env: Any, steps: Iterable[Callable]) -> bool:
    """Whether `env`'s last commit must be flushed before `steps` run: it is not durable by
    itself and one of them deletes data (`AfterFlush`)."""
    return not env.durable and any(isinstance(step, AfterFlush) for step in steps)


def run_all(fns: Iterable[Callable], *args: Any) -> None:
    """Call each of `fns`; an exception of one is swallowed (cleanup must not hide the error
    that caused it) and the others still run."""
    for fn in fns:
        try:
            fn(*args)
        except Exception:
            pass
