"""The namespaced snapshotter, ``ns.snapshotter(name)`` (containerd's
``metadata/snapshot.go``), and the garbage collector's hooks into it.

Every namespace sees its own snapshot keys. The metadata database maps each
one to a backend key ``<ns>/<id>/<key>`` (``id`` from a per-snapshotter
sequence, so backend keys are never reused) and keeps, in the same
transaction, the record, the parent's children and the GC node-table entry:

* record ``objects: <ns>\\0snapshot\\0<snapshotter>\\0<key>`` → ``i`` id,
  ``b`` backend key, ``p`` parent key ("" for none), ``pi`` the parent's id
  (0 for none), ``k`` kind (`Kind`), ``l`` labels, ``c``/``u`` created and
  updated (ns), as listed in `cargohold.schema`;
* children ``objects: <ns>\\0snapchild\\0<snapshotter>\\0<parent id>\\0<child key>``
  → ``b""``: keyed by the parent's id, never by two full keys, so every key
  stays far below LMDB's 511 bytes (keys are at most 255 bytes).

On metadata several hosts share (etcd), ``<snapshotter>`` in these keys, in the
node table, the id sequence, the backend's records and its dirty marker is the
host's scoped name, ``<snapshotter>@<host scope>`` (`cargohold.snapshots.scope`,
`Database.stored_snapshotter`): each host sees and cleans only its own
snapshots, while references by name keep every host's snapshot of that name
(`cargohold.gc.context`).

Backend work (creating or committing a backend snapshot) happens inside the
caller's metadata transaction, in a savepoint of it, so a call that fails
half-way leaves nothing. A backend the database bound
(`cargohold.snapshots.metastore`) writes its records in that same
transaction: they commit with the metadata, once, or not at all, and only
what is outside LMDB needs undoing (a new snapshot's directory goes; the
backend registers that itself). A backend with a metastore of its own
commits separately, before the metadata: if the metadata transaction does
not commit, the work is undone, newest first (the backend snapshot is
removed, a commit reverted). Removing a snapshot only deletes metadata and
marks the snapshotter dirty: the backend snapshot goes at the next
`collect_backend`.

A process that dies before its transaction ends undoes nothing. A backend
snapshot directory it created is then garbage no record owns (its session
file gets the backend cleaned, see `cargohold.sessions`). With a metastore
of its own a commit is worse: the backend has renamed the active key that a
metadata record still names. Such a backend remembers each commit's source
(`cargohold.snapshots.storage`), and `_reconcile_commits` reverts a commit
the metadata never recorded, at open (`repair_commits`, when no creation is
in flight) and in every `collect_backend`, so every record has its backend
snapshot again.

Locking — the creation lock, owned by this module:
``<meta>/snapshots-<name>.lock`` (a `cargohold.locks.FileLock`, so it works
across threads and processes). A transaction that creates a backend snapshot
(prepare, view, commit) holds it *shared* from just before the backend call
until the transaction commits or aborts. `collect_backend` reads which
backend keys the metadata references and lists the backend with no lock
held, then takes the lock *exclusive* only as a barrier: once it has it,
every creation that was in flight has committed (its key is referenced),
aborted (its snapshot was removed) or died (its process is gone), and it
looks up, for each key it listed as unreferenced, the one record that key
was made for (one get each), then lets go. The keys still unreferenced then
can never become referenced again, because new records only name fresh
backend keys (a creation whose key would clash with debris fails in the
backend instead); every creation after the barrier made keys the listing
does not hold. So it reverts interrupted commits and removes with no lock
held, and no removal, however slow, delays a creation. `repair_commits` (at open) and
`leftovers` (a dry run) take it exclusive for their whole work, the former
only if it is free. Lock order is metadata writer, then creation lock, then
backend writer (for a bound backend, the metadata writer itself, already
held); `collect_backend` holds the creation lock only around reads, and
`repair_commits` begins its metadata transaction before it tries the
creation lock, so the order cannot cycle.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Optional
from urllib.parse import quote

from .. import filters, leases, schema
from ..errors import AlreadyExists, Error, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from ..fieldpaths import clean_labels, update_labels
from ..gc import index
from ..locks import FileLock
from ..model import Freed, Kind, Leftover, Mount, Resource, ResourceType, SnapshotInfo, Usage
from ..timeutil import from_ns
from ..validation import require_str, validate_key
from . import storage
from .fsutil import disk_usage

if TYPE_CHECKING:
    from ..transaction import Database, Transaction
    from ..gc.scope import Scope
    from ..transaction import NamespaceHandle


class Snapshotter:
    """One snapshotter as one namespace sees it; every method takes ``tx=``."""

    def __init__(self, ns: "NamespaceHandle", name: str) -> None:
        self._ns = ns
        self._db = ns.db
        self.name = name
        self._backend = ns.db.snapshotter_backend(name)
        self._stored = ns.db.stored_snapshotter(name)
        """The name its records are keyed by (this host's scope on a shared engine, `scope`)."""
        self._keys = _Keys(ns.name, self._stored)
        self._sequence = _sequence_name(self._stored)
        self._creation = _creation_hold(ns.db, name)
        self._joins = ns.db.backend_joins(name)
        """Whether the backend's records commit with the metadata transaction (see the module docstring)."""
        self._resource_type = f"snapshots/{name}"

    def __repr__(self) -> str:
        return f"Snapshotter({self._ns!r}, {self.name!r})"

    # -- records ----------------------------------------------------------------------

    def _get(self, t: "Transaction", key: str) -> Optional[dict]:
        raw = t.kv.get(schema.T_OBJECTS, self._keys.record + key.encode())
        return None if raw is None else schema.unpack(raw, f"snapshot {key!r}")

    def _require(self, t: "Transaction", key: str) -> dict:
        record = self._get(t, key)
        if record is None:
            raise NotFound(f"snapshot {key!r} does not exist in snapshotter {self.name!r} "
                           f"of namespace {self._ns.name!r}")
        return record

    def _put(self, t: "Transaction", key: str, record: dict) -> None:
        t.kv.put(schema.T_OBJECTS, self._keys.record + key.encode(), schema.pack(record))
        index.put_entry(t, self._keys.node + key.encode(),
                        index.snapshot_entry(self._ns.name, self._stored, record["p"], record["l"]))

    def _add(self, t: "Transaction", key: str, record: dict) -> None:
        """Store a new record and its parent's link to it."""
        t.ensure_namespace(self._ns.name)
        self._put(t, key, record)
        if record["p"]:
            t.kv.put(schema.T_OBJECTS, self._keys.child_link(record["pi"], key), b"")

    def _check_free(self, t: "Transaction", key: str) -> None:
        if self._get(t, key) is not None:
            raise AlreadyExists(f"snapshot {key!r} already exists in snapshotter {self.name!r} "
                                f"of namespace {self._ns.name!r}")

    def _reserve(self, t: "Transaction", key: str) -> tuple[int, str]:
        """A fresh id and backend key for `key`; the creation lock is held from now on."""
        snapshot_id = t.next_sequence(self._sequence)
        t.hold(*self._creation)
        return snapshot_id, f"{self._ns.name}/{snapshot_id}/{key}"

    def _resource(self, key: str) -> Resource:
        return Resource(key, self._resource_type)

    # -- queries ----------------------------------------------------------------------

    def stat(self, key: str, *, tx: Optional["Transaction"] = None) -> SnapshotInfo:
        """The snapshot's info; NotFound if the namespace has no such snapshot."""
        validate_key(key, "snapshot key")
        with self._db.transaction(tx, write=False) as t:
            return _info(key, self._require(t, key))

    def usage(self, key: str, *, tx: Optional["Transaction"] = None) -> Usage:
        """Bytes and inodes the snapshot uses (measured now while it is active)."""
        return self._backend.usage(self._backend_key(key, tx))

    def mounts(self, key: str, *, tx: Optional["Transaction"] = None) -> list[Mount]:
        """The mounts of an active snapshot or a view (again, as prepare/view returned them)."""
        return self._backend.mounts(self._backend_key(key, tx))

    def _backend_key(self, key: str, tx: Optional["Transaction"]) -> str:
        validate_key(key, "snapshot key")
        with self._db.transaction(tx, write=False) as t:
            return self._require(t, key)["b"]

    def walk(self, *filter_args: str, tx: Optional["Transaction"] = None) -> Iterator[SnapshotInfo]:
        """The namespace's snapshots matching any of the filters, in key order.

        Fields: ``name``, ``parent``, ``kind`` (active, view, committed), ``labels.<key>``.
        """
        matcher = filters.parse(*filter_args)
        prefix = schema.object_prefix(self._ns.name, schema.K_SNAPSHOT, self._stored)
        with self._db.transaction(tx, write=False) as t:
            found = []
            for raw_key, raw in t.kv.scan(schema.T_OBJECTS, prefix):
                key = schema.text(raw_key[len(prefix):], "snapshot key")
                info = _info(key, schema.unpack(raw, f"snapshot {key!r}"))
                if matcher.match(storage.adaptor(info)):
                    found.append(info)
        return iter(found)

    # -- changes ------------------------------------------------------------------------

    def prepare(self, key: str, parent: str = "", labels: Optional[dict] = None, *,
                tx: Optional["Transaction"] = None) -> list[Mount]:
        """Create an active snapshot on committed `parent` ("" for none); returns its mounts."""
        return self._create(Kind.ACTIVE, key, parent, labels, tx)

    def view(self, key: str, parent: str = "", labels: Optional[dict] = None, *,
             tx: Optional["Transaction"] = None) -> list[Mount]:
        """Create a read-only view of committed `parent`; returns its mounts."""
        return self._create(Kind.VIEW, key, parent, labels, tx)

    def _create(self, kind: Kind, key: str, parent: str, labels: Optional[dict],
                tx: Optional["Transaction"]) -> list[Mount]:
        validate_key(key, "snapshot key")
        if require_str(parent, "parent snapshot key"):
            validate_key(parent, "parent snapshot key")
        labels = clean_labels(labels)
        ns = self._ns.name

        def create(t: "Transaction") -> list[Mount]:
            self._check_free(t, key)
            parent_id, backend_parent = 0, ""
            if parent:
                parent_record = self._get(t, parent)
                if parent_record is None:
                    raise NotFound(f"parent snapshot {parent!r} does not exist in snapshotter "
                                   f"{self.name!r} of namespace {ns!r}")
                if parent_record["k"] != Kind.COMMITTED:
                    raise InvalidArgument(f"parent snapshot {parent!r} is not committed")
                parent_id, backend_parent = parent_record["i"], parent_record["b"]
            snapshot_id, backend_key = self._reserve(t, key)
            make = self._backend.prepare if kind == Kind.ACTIVE else self._backend.view
            mounts = make(backend_key, backend_parent)
            if not self._joins:
                t.on_abort(lambda: self._backend.remove(backend_key))
            if self._ns.lease is not None:
                leases.attach(t, self._ns, self._resource(key))
            self._add(t, key, {"i": snapshot_id, "b": backend_key, "p": parent, "pi": parent_id,
                               "k": int(kind), "l": labels, "c": t.now, "u": t.now})
            if kind == Kind.ACTIVE and t.db.publisher is not None:
                from .. import events  # loaded by the first write that publishes

                t.publish(ns, events.TOPIC_SNAPSHOT_PREPARE, events.SnapshotPrepare(key, parent, self.name))
            return mounts

        return self._db.write(tx, create, savepoint=True)

    def commit(self, name: str, key: str, labels: Optional[dict] = None, *,
               tx: Optional["Transaction"] = None) -> None:
        """Commit active snapshot `key` as `name`; `key` is gone afterwards.

        AlreadyExists if `name` exists, FailedPrecondition unless `key` is active.
        """
        validate_key(name, "snapshot name")
        validate_key(key, "snapshot key")
        labels = clean_labels(labels)
        ns = self._ns.name

        def commit(t: "Transaction") -> None:
            self._check_free(t, name)
            active = self._require(t, key)
            if active["k"] != Kind.ACTIVE:
                raise FailedPrecondition(f"snapshot {key!r} is a {Kind(active['k'])!s} snapshot, "
                                         "not active: only active snapshots can be committed")
            snapshot_id, backend_name = self._reserve(t, name)
            if self._joins:
                self._backend.commit(backend_name, active["b"])
            else:
                before = self._backend.stat(active["b"])
                self._backend.commit(backend_name, active["b"])
                t.on_abort(lambda: self._backend.uncommit(backend_name, before))
            if self._ns.lease is not None:
                leases.attach(t, self._ns, self._resource(name))
                leases.detach(t, self._ns, self._resource(key))
            _delete(t, self._keys, key, active)
            self._add(t, name, {"i": snapshot_id, "b": backend_name, "p": active["p"],
                                "pi": active["pi"], "k": int(Kind.COMMITTED), "l": labels,
                                "c": t.now, "u": t.now})
            if t.db.publisher is not None:
                from .. import events  # loaded by the first write that publishes

                t.publish(ns, events.TOPIC_SNAPSHOT_COMMIT, events.SnapshotCommit(key, name, self.name))

        self._db.write(tx, commit, savepoint=True)

    def remove(self, key: str, *, tx: Optional["Transaction"] = None) -> None:
        """Remove a snapshot of any kind; FailedPrecondition while it has children.

        The backend snapshot is deleted by the next garbage collection.
        """
        validate_key(key, "snapshot key")
        ns = self._ns.name

        def _body(t: "Transaction"):
            record = self._require(t, key)
            children = schema.object_prefix(ns, schema.K_SNAPSHOT_CHILD, self._stored, str(record["i"]))
            child = next(t.kv.scan(schema.T_OBJECTS, children), None)
            if child is not None:
                raise FailedPrecondition(f"cannot remove snapshot {key!r}: it has children "
                                         f"(such as {schema.text(child[0][len(children):])!r})")
            t.ensure_namespace(ns)
            _delete(t, self._keys, key, record)
            leases.detach(t, self._ns, self._resource(key))
            t.mark_dirty(snapshotter=self._stored)
            from .. import events  # loaded by the first write that publishes

            t.publish(ns, events.TOPIC_SNAPSHOT_REMOVE, events.SnapshotRemove(key, self.name))

        self._db.write(tx, _body)

    def update(self, info: SnapshotInfo, *fieldpaths: str, tx: Optional["Transaction"] = None) -> SnapshotInfo:
        """Update labels: field paths ``labels`` or ``labels.<key>``, none meaning all labels.

        Other fields are immutable (InvalidArgument).
        """
        if not isinstance(info, SnapshotInfo):
            raise InvalidArgument(f"update needs a SnapshotInfo, not {type(info).__name__}")
        validate_key(info.name, "snapshot key")

        def _body(t: "Transaction"):
            record = self._require(t, info.name)
            record["l"] = update_labels(record["l"], info.labels, fieldpaths, f"snapshot {info.name!r}")
            record["u"] = t.now
            t.ensure_namespace(self._ns.name)
            self._put(t, info.name, record)
            return _info(info.name, record)

        return self._db.write(tx, _body)


def _info(key: str, record: dict) -> SnapshotInfo:
    return SnapshotInfo(key, record["p"], Kind(record["k"]), record["l"],
                        from_ns(record["c"]), from_ns(record["u"]))


def _record_key(ns: str, snapshotter: str, key: str) -> bytes:
    return schema.object_key(ns, schema.K_SNAPSHOT, snapshotter, key)


def _sequence_name(snapshotter: str) -> str:
    return f"snapshots/{snapshotter}"


class _Keys:
    """The key prefixes of one namespace's snapshots of one (stored) snapshotter name: a record's
    key, a child link's and a node's are a prefix and the snapshot key (in UTF-8) after it."""

    __slots__ = ("record", "child", "node")

    def __init__(self, ns: str, snapshotter: str) -> None:
        self.record = schema.object_prefix(ns, schema.K_SNAPSHOT, snapshotter)
        """`_record_key` without the snapshot key."""
        self.child = schema.object_prefix(ns, schema.K_SNAPSHOT_CHILD, snapshotter)
        """A child link's key without ``<parent id>\\0<child key>`` (`child_link`)."""
        self.node = schema.pack_node(ResourceType.SNAPSHOT, ns, f"{snapshotter}/")
        """The packed node key without the snapshot key."""

    def child_link(self, parent_id: int, child: str) -> bytes:
        return self.child + str(parent_id).encode() + b"\x00" + child.encode()


def _delete(t: "Transaction", keys: _Keys, key: str, record: dict) -> None:
    """Drop a record, its link from its parent, its children links and its node entry."""
    t.kv.delete(schema.T_OBJECTS, keys.record + key.encode())
    if record["p"]:
        t.kv.delete(schema.T_OBJECTS, keys.child_link(record["pi"], key))
    t.kv.delete_prefix(schema.T_OBJECTS, keys.child + str(record["i"]).encode() + b"\x00")
    index.remove_entry(t, keys.node + key.encode())


# -- the creation lock ----------------------------------------------------------------------


_locks: "weakref.WeakKeyDictionary[Database, dict[str, FileLock]]" = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def creation_lock(db: "Database", name: str) -> FileLock:
    """The creation lock of snapshotter `name` of `db` (see the module docstring)."""
    with _locks_guard:
        per_db = _locks.setdefault(db, {})
        lock = per_db.get(name)
        if lock is None:
            lock = per_db[name] = FileLock(os.path.join(db.path, f"snapshots-{quote(name, safe='')}.lock"))
        return lock


def _creation_hold(db: "Database", name: str) -> tuple:
    """`Transaction.hold`'s (key, factory) for the creation lock of `name`, held shared."""
    return ("snapshot-creation", name), lambda: creation_lock(db, name).shared()


# -- garbage collection -------------------------------------------------------------------


def remove_for_gc(tx: "Transaction", ns: str, node_key: str) -> None:
    """Delete the snapshot record of node key ``<snapshotter>/<key>`` in a collection's sweep.

    Drops the record, its node-table entry and its parent's link to it, and
    marks the snapshotter dirty. No validation and no event: the collector
    decided, and publishes ``/snapshot/remove`` itself.
    """
    snapshotter, _, key = node_key.partition("/")
    raw = tx.kv.get(schema.T_OBJECTS, _record_key(ns, snapshotter, key))
    if raw is None:
        index.remove(tx, ResourceType.SNAPSHOT, ns, node_key)
    else:
        _delete(tx, _Keys(ns, snapshotter), key, schema.unpack(raw, f"snapshot {key!r}"))
    tx.mark_dirty(snapshotter=snapshotter)


def backend_key_for_gc(tx: "Transaction", ns: str, node_key: str) -> Optional[tuple[str, str]]:
    """(stored snapshotter name, backend key) of the snapshot record of node key ``<snapshotter>/<key>``
    (None without one): what a restricted collection that removes the record lets its cleanup purge."""
    snapshotter, _, key = node_key.partition("/")
    raw = tx.kv.get(schema.T_OBJECTS, _record_key(ns, snapshotter, key))
    return None if raw is None else (snapshotter, schema.unpack(raw, f"snapshot {key!r}")["b"])


def collect_backend(db: "Database", name: str, freed: Optional[Freed] = None,
                    errors: Optional[list] = None, *, scope: Optional["Scope"] = None) -> float:
    """Remove every backend snapshot of `name` that no namespace references; return the seconds taken.

    With no lock held it reads which backend keys the metadata references and
    lists the backend; a momentary barrier on the creation lock (exclusive)
    then confirms, one record look-up each, which of the keys it listed are
    still unreferenced once every creation in flight has ended (see the
    module docstring). Then, with no lock held again, it first repairs
    interrupted commits (`_reconcile_commits`), and purges those snapshots,
    leaves first, and the directories no record owns. A creation waits for
    the barrier at most, never for a removal.

    Purging deletes a snapshot's directory before its record, so that a full
    disk (where the record's deletion may need a page LMDB cannot get) still
    frees its data. That order is safe because a backend key unreferenced
    after the barrier can never become referenced again: a metadata record
    only ever names a key made for it (``<ns>/<fresh id>/<key>``), so no one
    mounts, commits or builds on it. Its record outliving the directory for a
    while harms no one; the next purge forgets it.

    A snapshot that still has children is skipped, as containerd's
    ``pruneBranch`` does. `freed` counts the directories deleted (with their
    bytes); `errors` receives one line per failure, and the cleanup goes on
    with the rest. Must run outside any transaction of this thread (its
    barrier waits for creations in flight, which would include that
    transaction's own).

    With a `scope`, only the backend snapshots it owns (`Scope.owns_snapshot`:
    the namespace's ``<ns>/...`` keys, or those of the records a restricted
    collection removed) are purged, and directories no record owns stay; a
    restricted collection repairs only the interrupted commits of those keys.
    """
    started = time.perf_counter()
    if db._current() is not None:
        raise FailedPrecondition("collect_backend must not run inside a transaction: "
                                 "it waits for the snapshot creations that transaction holds")
    errors = [] if errors is None else errors
    backend = db.snapshotter_backend(name)
    referenced = _referenced_keys(db, name)
    snapshots = list(backend.walk())
    listed = {info.name for info in snapshots}
    with creation_lock(db, name).exclusive():
        garbage = _unreferenced(db, name, listed - referenced)

    def is_referenced(key: str) -> bool:
        return key not in garbage if key in listed else _references(db, name, key)
    stored = db.stored_snapshotter(name)
    owned = listed if scope is None else {key for key in listed if scope.owns_snapshot(stored, key)}
    restricted = scope is not None and scope.snapshots is not None
    kept = _reconcile_commits(backend, is_referenced, snapshots, freed, errors, owned if restricted else listed)
    lost = _lost(db, name, backend, referenced - {info.name for info in backend.walk()})
    if lost:
        errors.append(f"snapshotter {name!r} is not cleaned: the metadata references {len(lost)} "
                      f"snapshot{'' if len(lost) == 1 else 's'} "
                      f"its backend does not know (such as {sorted(lost)[0]!r}), so the backend's own metastore "
                      f"may have been lost or replaced; nothing in it was deleted. Restore "
                      f"{os.path.join(backend.root, 'metadata')!r}, or remove the records of the lost snapshots")
        return time.perf_counter() - started
    order = [key for key in _removal_order(snapshots, (listed - garbage) | kept) if key in owned]
    lines = backend.purge(order, freed)
    if scope is None:
        lines += backend.cleanup(freed)
    errors.extend(f"snapshotter {name!r}: {line}" for line in lines)
    return time.perf_counter() - started


def repair_commits(db: "Database", name: str) -> list[str]:
    """At open: put back the active snapshots of interrupted commits, if no creation is in flight.

    Returns one line per repair that failed. Does nothing while the creation
    lock is taken (the next `collect_backend` repairs instead).
    """
    backend = db.snapshotter_backend(name)
    if not backend.commit_sources():
        return []
    errors: list[str] = []
    # The metadata writer first, as a creation takes them: a bound backend writes in it.
    with db.wlock.shared(), db._internal_update():
        try:
            with creation_lock(db, name).exclusive(timeout=0):
                _reconcile_commits(backend, lambda key: _references(db, name, key), None, None, errors)
        except Unavailable:
            pass  # a creation is in flight somewhere
    return [f"snapshotter {name!r}: {line}" for line in errors]


def _reconcile_commits(backend, is_referenced: Callable[[str], bool], snapshots: Optional[list],
                       freed: Optional[Freed], errors: list, only: Optional[set] = None) -> set:
    """Settle the backend's unsettled commits: all of them under the creation lock held exclusive,
    or (`only`) those whose committed key the cleanup listed before its barrier.

    The backend commits before the metadata transaction that records the new
    key. Such a transaction has ended (no lock is held exclusive for nothing;
    a commit listed before the barrier ended before it), so:

    * a committed key the metadata references: the commit was recorded; settled.
    * an unreferenced committed key whose source (active) key the metadata
      still references: the recording transaction never committed (its process
      died, or its undo failed). The commit is reverted (`uncommit`), after
      purging any children the dead transaction built on it, so that the
      record has its snapshot again.
    * neither: plain garbage, purged with the rest.

    Returns the committed keys that must not be purged (a revert that failed).
    """
    kept: set = set()
    settled = []
    for committed, source in backend.commit_sources().items():
        if only is not None and committed not in only:
            continue  # made after the listing: perhaps in flight
        if is_referenced(committed):
            settled.append(committed)
        elif is_referenced(source.name):
            if snapshots is None:
                snapshots = list(backend.walk())
            failed = backend.purge(_descendants(snapshots, committed), freed)
            try:
                if failed:
                    raise Unavailable("; ".join(failed))
                backend.uncommit(committed, source)
            except Error as exc:
                kept.add(committed)
                errors.append(f"cannot restore active snapshot {source.name!r} from {committed!r}: {exc}")
    try:
        backend.settle_commits(settled)
    except Error as exc:
        errors.append(f"cannot settle {len(settled)} commits: {exc}")
    return kept


def _references(db: "Database", name: str, backend_key: str) -> bool:
    """Whether the metadata record that backend key ``<ns>/<id>/<key>`` was made for still names it."""
    with db.view() as t:
        return _names(t, name, backend_key)


def _lost(db: "Database", name: str, backend, missing: set) -> set:
    """Of the referenced backend keys the backend did not list, those still referenced and still
    unknown to it once no creation is in flight (a commit in flight renames a key it listed)."""
    if not missing:
        return set()
    with creation_lock(db, name).exclusive():
        named = missing - _unreferenced(db, name, missing)
        return {key for key in named if not _backend_has(backend, key)}


def _backend_has(backend, key: str) -> bool:
    try:
        backend.stat(key)
    except NotFound:
        return False
    return True


def _unreferenced(db: "Database", name: str, backend_keys: Iterable[str]) -> set:
    """The backend keys whose records no longer name them, in one read transaction."""
    with db.view() as t:
        return {key for key in backend_keys if not _names(t, name, key)}


def _names(t: "Transaction", name: str, backend_key: str) -> bool:
    ns, _, rest = backend_key.partition("/")
    key = rest.partition("/")[2]
    if not key:
        return False
    try:
        raw = t.kv.get(schema.T_OBJECTS, _record_key(ns, t.db.stored_snapshotter(name), key))
    except InvalidArgument:
        return False
    return raw is not None and schema.unpack(raw, f"snapshot {key!r}")["b"] == backend_key


def leftovers(db: "Database", name: str) -> list[Leftover]:
    """The directories the next `collect_backend` of `name` would delete, with their bytes."""
    backend = db.snapshotter_backend(name)
    with creation_lock(db, name).exclusive():
        referenced = _referenced_keys(db, name)
        unowned = [info.name for info in backend.walk() if info.name not in referenced]
        for committed, source in backend.commit_sources().items():
            if source.name in referenced and committed in unowned:
                unowned.remove(committed)  # to be reverted, not deleted
        paths = backend.leftover_dirs(unowned)
    found = []
    for path in paths:
        try:
            found.append(Leftover("snapshot-dir", f"{name}/{os.path.basename(path)}", disk_usage(path).size))
        except FileNotFoundError:
            continue
    return found


def _referenced_keys(db: "Database", name: str) -> set:
    """The backend keys this host's records of snapshotter `name` name (never another host's)."""
    stored = db.stored_snapshotter(name)
    with db.view() as t:
        return {schema.unpack(raw, "snapshot record")["b"]
                for ns in db.namespaces.list(tx=t)
                for _, raw in t.kv.scan(schema.T_OBJECTS, schema.object_prefix(ns, schema.K_SNAPSHOT, stored))}


def _descendants(snapshots: Iterable[SnapshotInfo], key: str) -> list[str]:
    """Every snapshot below `key`, children before their parents (`key` itself excluded)."""
    children: dict[str, list[str]] = {}
    for info in snapshots:
        children.setdefault(info.parent, []).append(info.name)
    order, stack = [], [(child, False) for child in children.get(key, ())]
    while stack:
        current, expanded = stack.pop()
        if expanded:
            order.append(current)
            continue
        stack.append((current, True))
        stack.extend((child, False) for child in children.get(current, ()))
    return order


def _removal_order(snapshots: Iterable[SnapshotInfo], referenced: set) -> list[str]:
    """Unreferenced backend keys, every child before its parent (post-order)."""
    snapshots = list(snapshots)
    known = {info.name for info in snapshots}
    children: dict[str, list[str]] = {}
    roots = []
    for info in snapshots:
        if info.parent and info.parent in known:
            children.setdefault(info.parent, []).append(info.name)
        else:
            roots.append(info.name)
    order = []
    for root in roots:
        stack = [(root, False)]
        while stack:
            key, expanded = stack.pop()
            if expanded:
                if key not in referenced:
                    order.append(key)
                continue
            stack.append((key, True))
            stack.extend((child, False) for child in children.get(key, ()))
    return order
