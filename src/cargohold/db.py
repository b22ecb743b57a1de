"""The metadata database: initialisation and migrations, transactions,
the writer lock, dirty tracking and mutation callbacks.

Locking, as owned by this module:

* ``collector.lock`` (``<meta>/collector.lock``): one collection at a time,
  across processes. A collection holds it *exclusive* from before its marker
  until its journal is cleared (not during the backend cleanups); a second
  collection, in this or another process, waits for it. A writer that sees a
  collection's marker probes it (`cargohold.gc.journal`).
* ``wlock`` (``<meta>/gc.lock``) is containerd's ``wlock``: every write
  transaction holds it *shared* for its whole life; the garbage collector
  holds it *exclusive* only while it marks what writers changed during its
  concurrent mark and sweeps (the stop-the-world collection: while it marks
  everything and sweeps). Because it is a flock, it holds off writers of
  every process that opened the same root, not just this one. Read
  transactions never take it: readers never block and are never blocked.
* ``gc.turnstile`` (``<meta>/gc.turnstile``): a writer passes it (*shared*,
  released at once) before it takes ``wlock``; the collector holds it
  *exclusive* while it waits for ``wlock`` and until it releases it. flock
  grants a shared lock even while an exclusive request waits, so without it
  a steady stream of writers could keep the collector waiting for ever; with
  it, new writers wait at the turnstile and the collector waits only for the
  transactions already in flight.
* Below it, `cargohold.kv` serialises the write transactions themselves.
* On an engine shared by several hosts (``metadata="etcd://..."``),
  ``collector.lock`` and ``wlock`` are the engine's locks
  (`cargohold.engines.etcd.EtcdLock`), held across every host, and a commit
  requires every such lock its thread holds to still be held; the
  turnstile and the session files stay in ``<meta>`` on each host.
* Crash detection: every open database holds a locked session file
  (`cargohold.sessions`). At open and at each collection, the session files
  of processes that died with the root open are found (their lock is free);
  every backend they had open is marked dirty (at open in a write transaction
  of its own, taking ``wlock`` shared; in a collection inside the sweep's
  transaction) and then the files are deleted. The sessions lock is never
  held while waiting for ``wlock``: session files are probed first.
* After the sweep commits, each dirty backend is cleaned in its own thread
  (`_clean_backend`, the one place every backend cleanup goes through): the
  backend's own lock orders its cleanup against writers (see
  `cargohold.content.store` and `cargohold.snapshots.store`), and the marker
  is cleared in a write transaction that holds ``wlock`` shared, only if the
  cleanup had no failure and no deletion renewed the marker meanwhile.

A store method called inside ``with db.update()`` (or ``db.view()``) in the
same thread joins that transaction even without ``tx=``; only the outermost
block commits. Mutation callbacks run after the commit, with the lock
released, so a callback may start a collection. A store method called outside
any transaction shares a write transaction with concurrent callers
(`cargohold.groupcommit`). The snapshot backends' records are written in the
same transactions (`cargohold.snapshots.metastore`): one commit per metadata
transaction, durable when it returns unless the database was opened with
``durable=False`` (`cargohold.kv`, "Durability").

The transaction classes live in `cargohold.transaction`, below the stores;
this module is the facade above them and the collector.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterator, Mapping, Optional, TypeVar

from . import migrations, ownership, schema
from ._native import decode_varint, encode_varint
from .errors import Corrupted, Error, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from .gc import journal as gcjournal
from .groupcommit import GroupCommit
from .kv import open_env
from .locks import FileLock
from .logs import LazyLogger
from .model import Freed, GCStats, Leftover, Node, ResourceType, snapshotter_name
from .sessions import DeadSession, Sessions
from .timeutil import Clock, utcnow
from .transaction import AfterFlush, Given, Transaction, TxContext, check_given, needs_flush, run_all
from .validation import require_str, validate_identifier

if TYPE_CHECKING:  # the collector's modules load with the first collection, not with every open
    from .gc import context as gccontext
    from .gc.allowed import Allowed
    from .gc.scope import Scope

log = LazyLogger("cargohold")

MutationCallback = Callable[[bool], None]
Publisher = Callable[[str, str, Any], None]
T = TypeVar("T")

__all__ = ["DB", "Transaction", "COLLECTION_PHASES"]


class DB:
    """Metadata of one container host on one LMDB environment.

    ``content_store`` is the backend blob store (`cargohold.content.LocalStore`),
    ``snapshotters`` maps names to snapshot backends. ``shared=True`` lets a
    namespace commit a blob another namespace already stored without sending
    its bytes again (containerd's shared content policy). ``metadata``, an
    engine URL (``etcd://host:port,.../<prefix>``, `cargohold.engines`), puts
    the tables there instead of LMDB in ``meta_path``. ``readonly=True``
    opens an existing database only to read it (`cargohold.kv`): `init` then
    migrates, claims and repairs nothing, and writes raise FailedPrecondition.
    """

    def __init__(self, meta_path: str, content_store: Any = None,
                 snapshotters: Optional[Mapping[str, Any]] = None, shared: bool = True,
                 publisher: Optional[Publisher] = None, clock: Optional[Clock] = None,
                 *, map_size: Optional[int] = None, readonly: bool = False, durable: bool = True,
                 metadata: Optional[str] = None) -> None:
        self.path = os.path.abspath(os.fspath(meta_path))  # locks and files open later, maybe after a chdir
        self.content_store = content_store
        self.snapshotters: dict[str, Any] = Snapshotters(snapshotters or {})
        self.shared = shared
        self.publisher = publisher
        self.clock: Clock = clock or utcnow
        self.readonly = readonly
        # an engine is reached before meta_path is made: a bad URL or a cluster that does not answer
        # leaves the disk as it was
        self._env = open_env(self.path, schema.TABLES, metadata=metadata, map_size=map_size, readonly=readonly,
                             durable=durable)
        if metadata and not readonly:  # the host-local locks and session files stay in meta_path
            try:
                os.makedirs(self.path, exist_ok=True)
            except OSError as exc:
                self._env.close()
                raise Unavailable(f"cannot create metadata directory {self.path!r}: {exc}") from None
        self.metadata = metadata or self.path
        """Where the metadata lives: the LMDB directory, or the engine URL given as ``metadata``."""
        fleet_lock = getattr(self._env, "lock", None)
        """An engine shared by several hosts has locks of its own (`cargohold.engines.etcd.EtcdLock`)."""
        self.wlock = fleet_lock("gc") if fleet_lock else FileLock(os.path.join(self.path, "gc.lock"))
        self.fleet = fleet_lock is not None
        """Whether several hosts share this metadata: each host's snapshot records are then its own,
        keyed by a host scope (`stored_snapshotter`, `cargohold.snapshots.scope`)."""
        self._stored_names: dict[str, str] = {}
        self._scope_lock = threading.RLock()
        self._sessions = Sessions(self.path)
        self._local = threading.local()
        self._callbacks: list[MutationCallback] = []
        self._dirty = 0
        self._dirty_lock = threading.Lock()
        self._initialized = False
        self._closed = False
        self.identity = ""
        """The database's random identity (hex), known after `init()`: backends record their owner by it."""
        self._stores: dict[str, Any] = {}
        self._collectors: dict[int, Any] = {}
        self._collector_lock = (fleet_lock("collector") if fleet_lock
                                else FileLock(os.path.join(self.path, "collector.lock")))
        self._turnstile = FileLock(os.path.join(self.path, "gc.turnstile"))
        self._group = GroupCommit(self)
        self._gc_hook: Optional[Callable[[str], None]] = None
        """Test seam: called with the name of each phase of a collection as it is reached
        (`COLLECTION_PHASES`), in the collecting thread."""

    # -- life cycle ----------------------------------------------------------------

    def init(self) -> None:
        """Bring the schema up to date, then settle which backends this database owns.

        Pending migrations run in one write transaction; a database that needs
        none is not written. See `cargohold.ownership` for the backends.
        """
        with self._env.read() as kv_txn:
            current = self._check_version(kv_txn)
        latest = migrations.latest_version()
        if current != latest and self.readonly:
            raise FailedPrecondition(f"metadata database {self.path!r} is at version {current} and needs "
                                     f"migrating to version {latest}, which a read-only open cannot do")
        if current != latest:
            with self._env.write() as kv_txn:
                tx = Transaction(self, kv_txn, True)
                current = self._check_version(kv_txn)  # another process may have migrated meanwhile
                for migration in migrations.pending(current):
                    migration.apply(tx)
                if current != latest:
                    kv_txn.put(schema.T_META, schema.META_VERSION, encode_varint(latest))
        with self._env.read() as kv_txn:
            self.identity = schema.text(kv_txn.get(schema.T_META, schema.META_IDENTITY) or b"", "identity")
        if not self.identity:
            raise Corrupted(f"metadata database {self.path!r} has no identity although it is at version {latest}")
        if self.readonly:  # nothing to claim or repair: that would write
            self._initialized = True
            return
        upgraded = 0 < current < migrations.IDENTITY_VERSION
        self._bind_backends()
        for name, backend in self._backends():
            ownership.settle(backend, _describe(name), self.identity, adopt=upgraded)
        self._initialized = True
        self._recover_after_crash()

    def _recover_after_crash(self) -> None:
        """Open a session; mark dirty what dead sessions had open; repair interrupted snapshot commits.

        What cannot be done now (the disk is full, a snapshot creation is in
        flight) is left to the next collection, which does it again.
        """
        from .snapshots.store import repair_commits

        self._sessions.start(list(self.snapshotters))
        dead = self._sessions.dead()
        if dead:
            try:
                with self.wlock.shared(), TxContext(self, True, internal=True) as tx:
                    self._mark_dead_sessions(tx, dead)
            except Error:
                pass
            else:
                self._sessions.forget(dead)
        for name in self.snapshotters:
            try:
                repair_commits(self, name)
            except Error:
                pass

    def _bind_backends(self) -> None:
        """Let every snapshot backend that can keep its records in this database (and join its
        transactions) do so; one with an environment of its own has it moved in first."""
        for name, backend in sorted(self.snapshotters.items()):
            bind = getattr(backend, "bind_metastore", None)
            if bind is not None and getattr(backend, "metastore_env", None) is not self._env:
                bind(self._env, self._scoped_name(name, backend), self._current)

    def bind_read_only(self, name: str, backend: Any) -> None:
        """A read-only open's backend `name` reads its records in this database once they were
        moved in; one that still has its own environment keeps reading it (moving would write)."""
        bind = getattr(backend, "bind_metastore", None)
        if bind is not None:
            bind(self._env, self._scoped_name(name, backend), self._current, move=False)

    def stored_snapshotter(self, name: str) -> str:
        """The name the records of snapshotter `name` are keyed by: the name itself on one host;
        on metadata several hosts share (`fleet`), ``<name>@<host scope>``, whose scope is kept in
        the backend's root (`cargohold.snapshots.scope`)."""
        name = snapshotter_name(name)
        if not self.fleet:
            return name
        stored = self._stored_names.get(name)
        return stored if stored is not None else self._scoped_name(name, self.snapshotters.get(name))

    def _scoped_name(self, name: str, backend: Any) -> str:
        name = snapshotter_name(name)
        if not self.fleet:
            return name
        with self._scope_lock:
            root = ownership.backend_root(backend) if backend is not None else None  # may open a deferred one
            stored = self._stored_names.get(name)
            if stored is None:
                from .snapshots import scope

                path = scope.scope_path(root) if root else scope.scope_path(self.path, name)
                snapshots = os.path.join(root, "snapshots") if root else None
                stored = scope.stored_name(name, scope.host_scope(path, create=not self.readonly,
                                                                  snapshots=snapshots))
                self._stored_names[name] = stored
            return stored

    def local_snapshotter(self, stored: str) -> Optional[str]:
        """The snapshotter of this host whose records are keyed by `stored` (None: another host's,
        or one this database does not have)."""
        if not self.fleet:
            return snapshotter_name(stored) if stored in self.snapshotters else None
        for name in self.snapshotters:
            if self.stored_snapshotter(name) == stored:
                return name
        return None

    def _present(self, node: Node) -> Optional[Node]:
        """A node as this host names it: its own snapshots under their snapshotter's name, other
        hosts' under the stored name; None for a marking's stand-in of a snapshot name that
        references use (`cargohold.gc.context`), which is no resource."""
        if not self.fleet or node.type != ResourceType.SNAPSHOT:
            return node
        from .snapshots.scope import SEP

        stored, _, key = node.key.partition("/")
        if SEP not in stored:
            return None
        local = self.local_snapshotter(stored)
        return node if local is None else Node(node.type, node.namespace, f"{local}/{key}")

    def _presented(self, nodes: Any) -> list[Node]:
        return [shown for shown in map(self._present, nodes) if shown is not None]

    def _stored_node(self, node: Node) -> Node:
        """The node as the node table keys it: `_present` undone for this host's snapshots."""
        if not self.fleet or not isinstance(node, tuple) or len(node) != 3 or node[0] != ResourceType.SNAPSHOT:
            return node
        name, sep, key = str(node[2]).partition("/")
        if not sep or snapshotter_name(name) not in self.snapshotters:
            return node
        return Node(node[0], node[1], f"{self.stored_snapshotter(name)}/{key}")

    def backend_joins(self, name: str) -> bool:
        """Whether snapshotter `name` writes its records in this database's transactions."""
        return getattr(self.snapshotter_backend(name), "metastore_env", None) is self._env

    def _mark_dead_sessions(self, tx: Transaction, dead: list[DeadSession]) -> None:
        """Mark dirty every backend a dead session had open, and every backend of this DB."""
        tx.mark_dirty(content=True)
        for name in sorted(set(self.snapshotters).union(*(session.snapshotters for session in dead))):
            if name in self.snapshotters:
                tx.mark_dirty(snapshotter=self.stored_snapshotter(name))
            elif not self.fleet:  # another host's would need its scope: its own database marks it
                tx.mark_dirty(snapshotter=name)

    def _check_version(self, kv_txn) -> int:
        """The stored version; FailedPrecondition for a foreign schema or a newer database."""
        raw_schema = kv_txn.get(schema.T_META, schema.META_SCHEMA)
        if raw_schema is not None and raw_schema != schema.SCHEMA:
            raise FailedPrecondition(
                f"metadata database {self.path!r} uses schema {raw_schema!r}, expected {schema.SCHEMA!r}"
            )
        current = self.version_in(kv_txn)
        latest = migrations.latest_version()
        if current > latest:
            raise FailedPrecondition(
                f"metadata database {self.path!r} is at version {current}, newer than the "
                f"version {latest} this cargohold understands: upgrade cargohold to open it"
            )
        return current

    def _backends(self) -> list[tuple[Optional[str], Any]]:
        """(snapshotter name, or None for the content store; backend) of every backend."""
        found = [(None, self.content_store)] if self.content_store is not None else []
        return found + sorted(self.snapshotters.items())

    def version_in(self, kv_txn) -> int:
        raw = kv_txn.get(schema.T_META, schema.META_VERSION)
        if raw is None:
            return 0
        try:
            value, end = decode_varint(raw)
        except InvalidArgument as exc:
            raise Corrupted(f"metadata database {self.path!r} has a damaged version: {exc}") from None
        if end != len(raw):
            raise Corrupted(f"metadata database {self.path!r} has a damaged version: {raw!r}")
        return value

    @property
    def version(self) -> int:
        """The db version stored on disk."""
        with self._env.read() as kv_txn:
            return self.version_in(kv_txn)

    @property
    def durable(self) -> bool:
        """Whether a commit is on disk when it returns (``durable=False``: see `cargohold.kv`)."""
        return self._env.durable

    def sync(self) -> None:
        """Make every commit so far durable (what ``durable=False`` leaves to the next flush)."""
        self._require_open()
        self._env.sync()

    def close(self) -> None:
        """Close the database (waits for open transactions); backends are closed too."""
        if self._closed:
            return
        self._closed = True
        self._env.close()
        self._sessions.close()
        self.wlock.close()
        self._collector_lock.close()
        self._turnstile.close()
        for backend in [self.content_store, *self.snapshotters.values()]:
            close = getattr(backend, "close", None)
            if close is not None:
                close()

    def __enter__(self) -> "DB":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _require_open(self) -> None:
        if self._closed:
            raise Unavailable(f"metadata database {self.path!r} is closed")
        if not self._initialized:
            raise FailedPrecondition("DB.init() must be called before the database is used")

    # -- transactions --------------------------------------------------------------

    def update(self) -> TxContext:
        """A write transaction: ``with db.update() as tx: ...`` commits on success, rolls back on error."""
        self._env.require_writable()
        return TxContext(self, True)

    def view(self) -> TxContext:
        """A read transaction: a consistent snapshot that never blocks writers."""
        return TxContext(self, False)

    def _current(self) -> Optional[Transaction]:
        return getattr(self._local, "tx", None)

    def transaction(self, tx: Optional[Transaction], write: bool) -> Any:
        """The context a store method runs in: the caller's `tx` if given, else a new one."""
        if tx is None:
            return self.update() if write else self.view()
        return Given(check_given(self, tx, write))

    def write(self, tx: Optional[Transaction], fn: Callable[[Transaction], T], *, savepoint: bool = False) -> T:
        """Run a store method's body ``fn(t)`` in a write transaction; return what it returns.

        In the caller's `tx`, or the transaction this thread has open, if
        any (in a savepoint of it with ``savepoint=True``: for bodies that
        cannot check every failure before their first write); else in a
        write transaction shared with concurrent callers (`cargohold.groupcommit`),
        durable, as far as the database's mode makes commits durable, when
        this returns.
        """
        if tx is None:
            tx = getattr(self._local, "tx", None)  # `_current`, inline: every write passes here
            if tx is None:
                return self._group.run(fn)
            if not tx.write:
                raise FailedPrecondition("cannot write inside a read transaction (db.view())")
        else:
            check_given(self, tx, True)
        if savepoint:
            with tx.savepoint():
                return fn(tx)
        return fn(tx)

    def register_mutation_callback(self, fn: MutationCallback) -> None:
        """Call fn(dirty) after each committed update; dirty says a deletion awaits collection."""
        if not callable(fn):
            raise InvalidArgument(f"mutation callback must be callable, not {fn!r}")
        self._callbacks.append(fn)

    def _committed(self, tx: Transaction) -> None:
        """Post-commit work: hooks, then mutation callbacks; then re-raise a hook's error."""
        if tx._dirty:
            with self._dirty_lock:
                self._dirty += 1
        error: Optional[BaseException] = None
        steps = tx._after
        if needs_flush(self._env, steps):
            try:
                self._env.sync()
            except Exception as exc:  # deletions wait for the next collection, the rest runs
                error = exc
                steps = [fn for fn in steps if not isinstance(fn, AfterFlush)]
        for fn in steps:
            try:
                fn()
            except Exception as exc:
                error = error or exc
        dirty = self._dirty > 0
        for fn in list(self._callbacks):
            fn(dirty)
        if error is not None:
            raise error

    @property
    def dirty(self) -> int:
        """Number of committed updates with deletions since the last collection."""
        return self._dirty

    def _reset_dirty(self) -> None:
        with self._dirty_lock:
            self._dirty = 0

    # -- garbage collection ------------------------------------------------------------

    def register_collectible_resource(self, rtype: int, collector: Any) -> None:
        """Register a collector for resource type `rtype` (in [RESOURCE_END, RESOURCE_MAX)).

        `collector.start_collection()` returns a context with ``all(fn)``,
        ``active(namespace, fn)``, ``leased(namespace, lease_id, fn)``,
        ``remove(node)``, ``cancel()`` and ``finish()``;
        `collector.reference_label()` returns the suffix X so that a label
        ``containerd.io/gc.ref.X[.name|/name]`` references a node of this type.
        """
        from .gc import context as gccontext

        for method in ("start_collection", "reference_label"):
            if not callable(getattr(collector, method, None)):
                raise InvalidArgument(f"collector {collector!r} has no {method}() method")
        self._collectors[gccontext.validate_collectible_type(rtype, self._collectors)] = collector

    def _with_marking(self, fn: Callable[[Any, "gccontext.Contexts"], Any]) -> Any:
        """Run fn(marker, contexts) over a marking of a read snapshot; collectors are cancelled after."""
        from .gc import context as gccontext

        contexts = gccontext.Contexts(self._collectors)
        try:
            with self.view() as tx:
                return fn(gccontext.marking(tx, contexts), contexts)
        finally:
            contexts.cancel()

    def nodes(self) -> Iterator[Node]:
        """Every known resource: what a collection scans (containers and sandboxes excluded)."""
        from .gc import context as gccontext

        contexts = gccontext.Contexts(self._collectors)
        try:
            with self.view() as tx:
                found = self._presented(gccontext.table_nodes(tx))
            found.extend(contexts.all())
        finally:
            contexts.cancel()
        return iter(found)

    def mark(self) -> set[Node]:
        """Every resource reachable from a root now; deletes nothing."""
        from .gc import context as gccontext

        return set(self._presented(self._with_marking(gccontext.reachable)))

    def unreachable(self, namespace: Optional[str] = None) -> list[Node]:
        """What a collection would remove now (a dry run): every known, unreachable resource
        (of `namespace` only, if given, as ``garbage_collect(namespace=...)`` would)."""
        from .gc import context as gccontext

        namespace = _scope_namespace(namespace)
        return self._presented(self._with_marking(
            lambda marker, contexts: list(gccontext.unreachable(marker, contexts, namespace))))

    def explain(self, node: Node) -> Optional[list[Node]]:
        """Why is `node` kept? The chain of nodes from a root down to it, or None if unreachable."""
        from .gc import context as gccontext

        packed = gccontext.node_key(self._stored_node(node))
        chain = self._with_marking(lambda marker, _: marker.chain(packed))
        return None if chain is None else self._presented(schema.unpack_node(key) for key in chain)

    def leftovers(self) -> list[Leftover]:
        """Backend data no record owns, with its bytes: blobs, ingests, snapshot directories.

        A collection's cleanup deletes them when it cleans their backend (one
        with deletions since its last cleanup, or one a crashed process had open).
        Deletes nothing.
        """
        from .content.store import leftovers as content_leftovers
        from .snapshots.store import leftovers as snapshot_leftovers

        self._require_open()
        found = content_leftovers(self)
        for name in sorted(self.snapshotters):
            found.extend(snapshot_leftovers(self, name))
        return found

    def garbage_collect(self, namespace: Optional[str] = None, *, adopt_backends: bool = False,
                        allowed: Optional[Collection[Node]] = None) -> GCStats:
        """Collect everything no root references; return what was removed and how long it took.

        With `namespace`, only that namespace is collected: its unreachable
        records go, and the backend cleanup deletes only data that belonged to
        it (the blobs whose records this collection removed, unless another
        namespace still records them; its ingests; its snapshots), never
        leftovers no namespace owns. Every reference stays inside its
        namespace, so this removes exactly what a whole collection would
        remove from that namespace.

        The mark runs on a read snapshot while writers go on; what they change
        meanwhile is journaled (`cargohold.gc.journal`) and marked in rounds,
        the last one with writers of every process held off (``wlock``
        exclusive) and the unreachable records swept in the same write
        transaction. Nothing reachable when that transaction commits is
        removed, and nothing created or changed during the collection is.
        One collection runs at a time: a collection started while another
        runs, in this or another process, waits for it (then does its own).
        After the commit, with writers running again, the events are
        published, the backends with deletions (or left open by a process
        that died) are cleaned in parallel threads and the collectors finish;
        this returns once all of that is done (containerd's ``wg.Wait()``). A
        backend removal that fails is one line of ``stats.errors``; the
        cleanup goes on with the rest.

        A backend this database does not own (`cargohold.ownership`: its data
        may be described by records this database lost) is not cleaned: the
        refusal is a line of ``stats.errors`` and its deletions stay pending.
        ``adopt_backends=True`` makes this database the owner of every backend
        and cleans the ones it took over, deleting all they hold that no
        record references.

        `allowed` (the nodes a dry run, ``unreachable()``, returned, or any
        collection of `Node`) makes the collection remove nothing else, so that
        checking a dry run and collecting are one step: the nodes it is about
        to remove are compared with `allowed` in the sweep's write transaction,
        with writers held off, and if one is missing it raises
        FailedPrecondition naming that node (also as the error's ``node``)
        and nothing changes (no record removed, no backend data deleted). A
        node of `allowed` that is reachable by then simply stays. Its backend
        cleanup deletes only the data of the records it removed: the blobs
        of its content records (unless another namespace records them), the
        backend snapshots of its snapshot records and the ingests of its ingest
        records, never a leftover no record owns, whatever the backends hold
        (with ``adopt_backends=True`` too). Bad `allowed` (not a collection,
        or holding something that is no Node): InvalidArgument naming it.
        """
        if not isinstance(adopt_backends, bool):
            raise InvalidArgument(f"adopt_backends must be True or False, not {adopt_backends!r}")
        return self._collect(namespace, concurrent=True, adopt_backends=adopt_backends, allowed=allowed)

    def _collect(self, namespace: Optional[str], concurrent: bool, adopt_backends: bool = False,
                 allowed: Optional[Collection[Node]] = None) -> GCStats:
        """A collection: concurrent, or (``concurrent=False``, kept to compare against) the
        stop-the-world one that marks everything with writers held off."""
        from .gc import context as gccontext
        from .gc.allowed import Allowed
        from .gc.scope import Scope

        started = time.perf_counter()
        self._require_open()
        namespace = _scope_namespace(namespace)
        guard = None if allowed is None else Allowed(allowed, self._stored_node, self._present)
        if self._current() is not None:
            raise FailedPrecondition("garbage_collect() cannot run inside a transaction of the same thread")
        with self._collector_lock.exclusive():
            dead = self._sessions.dead()
            contexts = gccontext.Contexts(self._collectors)
            try:
                self._phase("started")
                collect = self._collect_concurrently if concurrent else self._collect_stopped
                stats, tx, dirty = collect(contexts, dead, namespace, guard)
            except BaseException:
                contexts.cancel()
                self._forget_journal()
                raise
            self._reset_dirty()
            stats.removed = self._presented(stats.removed)
            self._sessions.forget(dead)
            self._phase("committed")
            self._forget_journal()
            self._phase("cleared")
        if not self._env.durable:
            self._env.sync()  # the backends delete only what a commit on disk stopped naming
        if adopt_backends:
            self._adopt_backends(stats, dirty)
        jobs = [lambda: run_all(tx._after)]  # events only: publish() already logs failures
        digests = frozenset(n.key for n in stats.removed if n.type == ResourceType.CONTENT)
        if guard is not None:
            scope: Optional[Scope] = guard.scope(namespace, digests)
        else:
            scope = None if namespace is None else Scope(namespace, digests)
        jobs.extend(self._cleanup_jobs(stats, dirty, scope))
        jobs.extend(contexts.finish_all())
        threads = [threading.Thread(target=job, name="cargohold-gc-cleanup") for job in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stats.total_d = time.perf_counter() - started
        return stats

    def _phase(self, name: str) -> None:
        hook = self._gc_hook
        if hook is not None:
            hook(name)

    def _internal_update(self) -> "TxContext":
        """A write transaction of the collector's own (no callbacks, never journaled)."""
        return TxContext(self, True, internal=True)

    def _collect_concurrently(self, contexts: "gccontext.Contexts", dead: list[DeadSession],
                              namespace: Optional[str], guard: Optional["Allowed"] = None
                              ) -> tuple[GCStats, Transaction, "_DirtyMarkers"]:
        """Mark a snapshot while writers run, then what they changed; sweep with writers held off.

        Phases (`COLLECTION_PHASES`): the marker is committed (writers start
        journaling) before the snapshot is opened, so every change is either in
        the snapshot or journaled, or both. After the first mark, rounds: the
        round is moved on in a transaction of its own, a snapshot opened after
        it holds every change journaled in the rounds before, and those nodes
        are reloaded and marked gray (`gccontext.Marking.update`), until a
        round journaled at most `_FEW_CHANGES` nodes (or `_MAX_ROUNDS`; no
        round at all while nothing was journaled). Then
        new writers wait at the turnstile, the transactions in flight finish,
        and in the sweep's transaction the last round is marked the same way,
        the nodes found unreachable before the pause that still are and still
        exist are removed, and the marker is deleted. The snapshot is open only
        while the node table and lease rows are loaded (a writer that must grow
        the map waits for it meanwhile, see `cargohold.kv`).
        """
        from .gc import context as gccontext

        token = os.urandom(8)
        with self._internal_update() as tx:
            tx._gc_round = 0
            gcjournal.begin(tx, token)
        self._phase("marker")
        marking_started = time.perf_counter()
        with self.view() as tx:
            self._phase("snapshot")
            marking = gccontext.Marking.load(tx, contexts)
        marking.mark()
        self._phase("marked")
        round_, rounds = 1, 0
        while rounds < _MAX_ROUNDS:
            with self.view() as tx:
                if not gcjournal.changed(tx.kv, round_, limit=1):
                    break
            with self._internal_update() as tx:
                tx._gc_round = 0
                round_ = gcjournal.advance(tx, token)
            with self.view() as tx:
                changed = gcjournal.changed(tx.kv, round_ - 1)
                marking.update(tx, changed)
            rounds += 1
            self._phase("remarked")
            if len(changed) <= _FEW_CHANGES:
                break
        if not rounds:
            self._phase("remarked")
        candidates = marking.marker.unreachable()
        mark_d = time.perf_counter() - marking_started
        self._phase("pre-exclusive")
        paused = time.perf_counter()
        with self._turnstile.exclusive():
            self._phase("exclusive-wait")
            with self.wlock.exclusive(), self._internal_update() as tx:
                tx._gc_round = 0
                marking.update(tx, gcjournal.changed(tx.kv, round_))
                self._phase("exclusive")
                if dead:
                    self._mark_dead_sessions(tx, dead)
                swept = time.perf_counter()
                removed = gccontext.sweep(tx, marking.marker, contexts, namespace, candidates, guard)
                sweep_d = time.perf_counter() - swept
                gcjournal.end(tx)
                dirty = _dirty_markers(tx)
                self._phase("swept")
        stats = GCStats(meta_d=time.perf_counter() - paused, mark_d=mark_d, sweep_d=sweep_d,
                        removed=removed, records=gccontext.count_by_type(removed))
        return stats, tx, dirty

    def _collect_stopped(self, contexts: "gccontext.Contexts", dead: list[DeadSession],
                         namespace: Optional[str], guard: Optional["Allowed"] = None
                         ) -> tuple[GCStats, Transaction, "_DirtyMarkers"]:
        """The stop-the-world collection: writers held off while everything is marked and swept."""
        from .gc import context as gccontext

        paused = time.perf_counter()
        with self._turnstile.exclusive():
            self._phase("exclusive-wait")
            with self.wlock.exclusive(), self._internal_update() as tx:
                tx._gc_round = 0
                gcjournal.end(tx)  # a dead concurrent collection's marker
                if dead:
                    self._mark_dead_sessions(tx, dead)
                marking_started = time.perf_counter()
                marker = gccontext.marking(tx, contexts)
                mark_d = time.perf_counter() - marking_started
                self._phase("exclusive")
                swept = time.perf_counter()
                removed = gccontext.sweep(tx, marker, contexts, namespace, before=guard)
                sweep_d = time.perf_counter() - swept
                del marker
                dirty = _dirty_markers(tx)
                self._phase("swept")
        stats = GCStats(meta_d=time.perf_counter() - paused, mark_d=mark_d, sweep_d=sweep_d,
                        removed=removed, records=gccontext.count_by_type(removed))
        return stats, tx, dirty

    def _forget_journal(self) -> None:
        """Delete the journal rows (and a marker left by a failure), a few at a time, with writers
        running; best effort: the next collection clears whatever is left first."""
        try:
            with self._env.read() as kv_txn:
                if not gcjournal.pending(kv_txn):
                    return
            while True:
                with self.wlock.shared(), self._internal_update() as tx:
                    tx._gc_round = 0
                    gcjournal.end(tx)
                    if gcjournal.drop_rows(tx.kv, _JOURNAL_BATCH) < _JOURNAL_BATCH:
                        return
        except Error as exc:
            log.warning("the collection journal stays for the next collection to clear: %s", exc)

    def _collection_pending(self) -> bool:
        """Whether garbage waits that no mutation of this process announced: a dirty marker of a
        backend this DB has (deletions since its last cleanup, by any process, or a cleanup that
        failed), a dead process's session, or the journal of a collector that died."""
        self._require_open()
        if self._sessions.dead():
            return True
        with self._env.read() as kv_txn:
            if kv_txn.get(schema.T_META, schema.META_DIRTY_CONTENT) is not None and self.content_store is not None:
                return True
            prefix = schema.META_DIRTY_SNAPSHOTTER
            if any(self.local_snapshotter(schema.text(key[len(prefix):], "snapshotter")) is not None
                   for key, _ in kv_txn.scan(schema.T_META, prefix)):
                return True
            return gcjournal.pending(kv_txn)

    def _collector_alive(self) -> bool:
        """Whether some process holds the collector lock (a collection is running)."""
        try:
            with self._collector_lock.shared(timeout=0):
                return False
        except Unavailable:
            return True

    def _cleanup_jobs(self, stats: GCStats, dirty: "_DirtyMarkers",
                      scope: Optional[Scope]) -> list[Callable[[], None]]:
        """One job per dirty backend this DB has and owns (a marker of a snapshotter it lacks,
        or of a backend it may not clean, stays)."""
        jobs: list[Callable[[], None]] = []
        if dirty.content is not None and self.content_store is not None \
                and self._may_clean(stats, None, self.content_store):
            jobs.append(lambda: self._clean_content(stats, dirty.content, scope))
        for stored, token in sorted(dirty.snapshotters.items()):
            name = self.local_snapshotter(stored)  # another host's stays for that host to clean
            if name is not None and self._may_clean(stats, name, self.snapshotters[name]):
                stats.snapshot_dirs[name] = Freed()
                jobs.append(lambda name=name, token=token: self._clean_snapshotter(stats, name, token, scope))
        return jobs

    def _adopt_backends(self, stats: GCStats, dirty: "_DirtyMarkers") -> None:
        """Make this database the owner of every backend; those it takes over are cleaned now,
        deletions or not (`_NO_MARKER`: no dirty marker to clear)."""
        for name, backend in self._backends():
            try:
                if not ownership.adopt(backend, self.identity):
                    continue
            except Exception as exc:
                stats.errors.append(f"{_describe(name)} could not be taken over: {exc}")
                continue
            if name is None:
                dirty.content = dirty.content or _NO_MARKER
            else:
                dirty.snapshotters.setdefault(self.stored_snapshotter(name), _NO_MARKER)

    def _may_clean(self, stats: GCStats, name: Optional[str], backend: Any) -> bool:
        """Whether this database owns the backend (snapshotter `name`, None: the content store)
        and may clean it; a refusal goes to ``stats.errors``."""
        what = _describe(name)
        try:
            reason = ownership.refusal(backend, what, self.identity)
        except Exception as exc:
            reason = f"{what} is not cleaned: its owner could not be checked ({exc}). {ownership.ADOPT_HINT}"
        if reason is None:
            return True
        log.warning("%s", reason)
        stats.errors.append(reason)
        return False

    def _clean_content(self, stats: GCStats, token: bytes, scope: Optional[Scope]) -> None:
        from .content.store import collect_backend

        def clean(errors: list, deferred: list) -> None:
            stats.content_d = collect_backend(self, stats.blobs, stats.ingests, errors, deferred, scope=scope)

        marker = None if scope else schema.META_DIRTY_CONTENT
        self._clean_backend(stats, "content store", marker, token, clean)

    def _clean_snapshotter(self, stats: GCStats, name: str, token: bytes,
                           scope: Optional[Scope]) -> None:
        from .snapshots.store import collect_backend

        def clean(errors: list, deferred: list) -> None:
            stats.snapshot_d[name] = collect_backend(self, name, stats.snapshot_dirs[name], errors, scope=scope)

        marker = None if scope else schema.dirty_snapshotter_key(self.stored_snapshotter(name))
        self._clean_backend(stats, f"snapshotter {name!r}", marker, token, clean)

    def _clean_backend(self, stats: GCStats, what: str, marker: Optional[bytes], token: bytes,
                       clean: Callable[[list, list], None]) -> None:
        """Run one backend's cleanup; every backend cleanup goes through here.

        ``clean(errors, deferred)`` appends a line per failure to `errors` and
        whatever it left for later to `deferred`. Failures become lines of
        ``stats.errors``; the dirty marker is cleared only when nothing failed
        and nothing was deferred, so that the next collection cleans again
        (never by a namespace-scoped cleanup, `marker` None, which leaves
        other namespaces' garbage for a whole collection).
        """
        errors: list[str] = []
        deferred: list[str] = []
        try:
            clean(errors, deferred)
        except Exception as exc:
            errors.append(f"{what}: cleanup failed: {exc}")
        if marker is not None and not errors and not deferred:
            try:
                self._clear_marker(marker, token)
            except Exception as exc:
                errors.append(f"{what}: cleaned, but its dirty marker stays (the next collection cleans "
                              f"again): {exc}")
        stats.errors.extend(" ".join(str(line).split()) for line in errors)

    def _clear_marker(self, key: bytes, token: bytes) -> None:
        """Forget a dirty marker unless a deletion since the collection renewed it."""
        with self.wlock.shared():
            with TxContext(self, True, internal=True) as tx:
                if tx.kv.get(schema.T_META, key) == token:
                    tx.kv.delete(schema.T_META, key)

    # -- maintenance -------------------------------------------------------------------

    def fsck(self, repair: bool = False, verify_content: bool = False, **options: Any) -> Any:
        """`cargohold.fsck` of this database (a `cargohold.integrity.Report`)."""
        from .integrity import fsck

        return fsck(self, repair, verify_content, **options)

    def compact(self, timeout: float = 10.0) -> list[tuple[str, int, int]]:
        """Rewrite the metadata file (which holds the bound snapshotters' records too), then each
        snapshotter metastore that has a file of its own, compacted (LMDB's compacting copy, swapped
        in atomically: `cargohold.kv.Env.compact`); (path, bytes before, bytes after) each.

        Needs every file to itself: Unavailable when another process keeps it open, or a
        transaction of this process stays open, for `timeout` seconds (nothing is changed then).
        """
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 <= timeout < float("inf"):
            raise InvalidArgument(f"timeout must be a number of seconds, not {timeout!r}")
        self._require_open()
        if self._current() is not None:
            raise FailedPrecondition("compact() cannot run inside a transaction of the same thread")
        done = [(os.path.join(self.path, "data.mdb"), *self._env.compact(timeout, self._sessions.others))]
        for _, backend in sorted(self.snapshotters.items()):
            if callable(getattr(backend, "compact", None)):
                own = backend.compact(timeout)
                if own is not None:
                    done.append(own)
        return done

    def storage(self) -> tuple[int, int]:
        """(bytes of the metadata file, bytes of live data in it): `compact` gives back the difference."""
        self._require_open()
        return self._env.usage()

    def df(self) -> Any:
        """`cargohold.df.usage` of this database: bytes per namespace and store."""
        from .df import usage

        return usage(self)

    # -- stores ----------------------------------------------------------------------

    @property
    def namespaces(self):
        """The namespace store (create, list, labels, set_label, delete)."""
        from .namespaces import NamespaceStore

        store = self._stores.get("namespaces")
        if store is None:
            store = self._stores["namespaces"] = NamespaceStore(self)
        return store

    def namespace(self, name: str):
        """A handle on one namespace; validates the identifier, creates nothing."""
        from .namespaces import Namespace

        return Namespace(self, name)

    def snapshotter_backend(self, name: str) -> Any:
        """The backend of snapshotter `name` (an alias such as ``overlay`` names ``overlayfs``)."""
        require_str(name, "snapshotter name")
        try:
            return self.snapshotters[name]
        except KeyError:
            raise NotFound(f"snapshotter {name!r} not found (have: {', '.join(sorted(self.snapshotters)) or 'none'})") from None


class Snapshotters(dict):
    """The snapshot backends by name; an alias (``overlay``) finds its snapshotter (``overlayfs``)."""

    def __init__(self, backends: Mapping[str, Any] = ()) -> None:
        super().__init__()
        self.update(backends)

    def update(self, backends: Mapping[str, Any] = (), **more: Any) -> None:
        for name, backend in {**dict(backends), **more}.items():
            self[name] = backend

    def __setitem__(self, name: str, backend: Any) -> None:
        super().__setitem__(snapshotter_name(name), backend)

    def __getitem__(self, name: str) -> Any:
        return super().__getitem__(snapshotter_name(name))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(snapshotter_name(name))

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(snapshotter_name(name), default) if isinstance(name, str) else default


COLLECTION_PHASES = ("started", "marker", "snapshot", "marked", "remarked", "pre-exclusive",
                     "exclusive-wait", "exclusive", "swept", "committed", "cleared")
"""The phases of a collection, in order, as `DB._gc_hook` sees them ("remarked" after each
concurrent round, once if none was needed; a stop-the-world collection has only "started",
then "exclusive-wait" on)."""

_MAX_ROUNDS = 8
_FEW_CHANGES = 64
_JOURNAL_BATCH = 512


def _scope_namespace(namespace: Optional[str]) -> Optional[str]:
    return None if namespace is None else validate_identifier(namespace, "namespace")


def _describe(snapshotter: Optional[str]) -> str:
    """How messages name a backend: the content store, or a snapshotter."""
    return "content store" if snapshotter is None else f"snapshotter {snapshotter!r}"


_NO_MARKER = b""
"""The token of a cleanup that no dirty marker asked for: it matches no marker, so it clears none."""


class _DirtyMarkers:
    __slots__ = ("content", "snapshotters")

    def __init__(self) -> None:
        self.content: Optional[bytes] = None
        self.snapshotters: dict[str, bytes] = {}


def _dirty_markers(tx: Transaction) -> _DirtyMarkers:
    """The backends whose deletions await cleanup, with the token of each marker."""
    found = _DirtyMarkers()
    found.content = tx.kv.get(schema.T_META, schema.META_DIRTY_CONTENT)
    prefix = schema.META_DIRTY_SNAPSHOTTER
    for key, token in tx.kv.scan(schema.T_META, prefix):
        found.snapshotters[schema.text(key[len(prefix):], "snapshotter")] = token
    return found
