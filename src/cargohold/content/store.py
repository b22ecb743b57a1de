"""The namespaced content store (``ns.content``): containerd's ``metadata/content.go``.

A blob's bytes are stored once, in the backend (`cargohold.content.LocalStore`);
each namespace that committed it holds a *blob* record, and only those
namespaces see it. A writer is backed by an *ingest* record that names its
backend ingest (a random backend ref, so an aborted ingest is never resumed
by a later one) and, unless the handle is leased, expires 24 hours after the
writer was last opened. Records are described in `cargohold.schema`.

Sharing: a writer whose expected digest the backend already holds commits
without receiving the bytes again when the content is shareable: the DB was
opened with ``shared=True``, or a namespace that holds the blob is labelled
``containerd.io/namespace.shareable=true``. Its ingest record then retains
the blob (`collect_backend` keeps it) until the commit records it.

Locking, as owned by this module: the backend's ``cleanup.lock``
(`cargohold.locks.FileLock`, a flock, so it works across processes) orders
the calls that put something in the backend before the metadata references
it against the cleanup that follows a garbage collection (`collect_backend`):

* a commit holds it *shared* from before the blob is linked into place
  until the transaction that records it has ended; a writer's registration
  holds it from its check that shareable content exists until its ingest
  record (which retains that content) has been committed. When the call runs
  in a caller's transaction, the lock is kept until that transaction ends.
* `collect_backend` takes it *exclusive* once per orphan: it re-reads the
  metadata for that blob or ingest and removes it only if still no record
  references it, so a commit waits for at most one removal, never for the
  whole cleanup; `leftovers` (a dry run) holds it exclusive while it lists
  them.
* Fairness: flock does not queue, so a cleanup releasing the lock and taking
  it again at once could keep a waiting commit out for many removals. A
  commit therefore waits for the lock while holding ``<meta>/content-cleanup.intent``
  shared, and the cleanup takes that one exclusive (and lets go) before each
  removal: a commit already waiting always gets in before the next removal.

So each removal either sees the record of a commit, or runs entirely before
its blob appears. Open ingests are safe anyway: their writer holds the
ingest's own lock (`cargohold.content.local`), and the cleanup skips them.
The lock is taken once the transaction has begun (after the database's
writer lock) and released when it ends (`Transaction.hold`); the cleanup
never waits for a write lock while it holds it, so no order can deadlock.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import weakref
from contextlib import contextmanager
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterator, Optional, TypeVar

from .. import filters, leases, schema
from ..errors import AlreadyExists, Corrupted, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from ..fieldpaths import clean_labels, update_labels
from ..gc import index
from ..kvguard import sync_dir
from ..locks import FileLock
from ..model import Freed, Info, Leftover, Resource, ResourceType, Status
from ..timeutil import from_ns, to_ns
from ..validation import validate_digest, validate_key, validate_size
from .local import CHUNK, IngestBusy, LocalStore, LocalWriter, info_adaptor

if TYPE_CHECKING:
    from ..transaction import Database, Transaction
    from ..gc.scope import Scope
    from ..transaction import NamespaceHandle

INGEST_EXPIRY_NS = 24 * 3600 * 1_000_000_000
"""How long an unleased ingest stays a GC root after its writer was last opened."""

LABEL_SHAREABLE = "containerd.io/namespace.shareable"

T = TypeVar("T")


def new_backend_ref(ns: str) -> str:
    """A fresh backend ingest ref of namespace `ns`: ``<ns>-<16 hex>`` (never resumes another's ingest)."""
    return f"{ns}-{os.urandom(8).hex()}"


def backend_ref_namespace(ref: str) -> Optional[str]:
    """The namespace a backend ingest ref was made for (`new_backend_ref`), or None for another ref."""
    ns, dash, suffix = ref.rpartition("-")
    if dash and len(suffix) == 16 and all(c in "0123456789abcdef" for c in suffix):
        return ns
    return None


def _blob_key(ns: str, digest: str) -> bytes:
    return schema.object_key(ns, schema.K_BLOB, digest)


def _ingest_key(ns: str, ref: str) -> bytes:
    return schema.object_key(ns, schema.K_INGEST, ref)


def _scan(t: "Transaction", ns: str, kind: bytes) -> list[tuple[str, bytes]]:
    """(id, raw record) of every object of one kind in a namespace, in id order."""
    prefix = schema.object_prefix(ns, kind)
    return [(schema.text(key[len(prefix):], "object id"), raw) for key, raw in t.kv.scan(schema.T_OBJECTS, prefix)]


def _blob_record(raw: bytes, digest: str) -> dict:
    return _record(raw, f"content record {digest}", ("s", "l", "c", "u"))


def _ingest_record(raw: bytes, ref: str) -> dict:
    return _record(raw, f"ingest record {ref!r}", ("b", "d", "sh", "s", "e", "c", "u"))


def _record(raw: bytes, what: str, fields: tuple) -> dict:
    record = schema.unpack(raw, what)
    if not isinstance(record, dict) or any(f not in record for f in fields):
        raise Corrupted(f"damaged {what} in the metadata database")
    return record


def _optional_digest(value: Optional[str], what: str) -> str:
    return validate_digest(value, what) if value else ""


def _info(digest: str, record: dict) -> Info:
    return Info(digest, record["s"], record["l"], from_ns(record["c"]), from_ns(record["u"]))


def _backend(db: "Database") -> LocalStore:
    backend = db.content_store
    if backend is None:
        raise Unavailable(f"metadata database {db.path!r} has no content store")
    return backend


_intents: "weakref.WeakKeyDictionary[Database, FileLock]" = weakref.WeakKeyDictionary()
_intents_guard = threading.Lock()


def _intent(db: "Database") -> FileLock:
    with _intents_guard:
        lock = _intents.get(db)
        if lock is None:
            lock = _intents[db] = FileLock(os.path.join(db.path, "content-cleanup.intent"))
        return lock


class _CommitLock:
    """The cleanup lock, shared, waited for while announcing it (see the module docstring); a
    context manager that every commit and registration enters."""

    __slots__ = ("_intent", "_held")

    def __init__(self, db: "Database", backend: LocalStore) -> None:
        self._intent = _intent(db)
        self._held = backend.cleanup_lock.shared()

    def __enter__(self) -> None:
        token = self._intent.acquire_shared()
        try:
            self._held.__enter__()
        finally:
            self._intent.release(token)

    def __exit__(self, *exc: object) -> None:
        self._held.__exit__(None, None, None)


@contextmanager
def _removal_lock(db: "Database", backend: LocalStore) -> Iterator[None]:
    """The cleanup lock, exclusive, for one removal, once every commit waiting for it is in."""
    with _intent(db).exclusive():
        pass
    with backend.cleanup_lock.exclusive():
        yield


def _locked_write(db: "Database", tx: Optional["Transaction"], fn: Callable[["Transaction"], T]) -> T:
    """``fn(t)`` in a write transaction that holds the cleanup lock shared until it ends; in a
    savepoint of a caller's transaction, so that a failing call leaves that transaction as it was."""
    backend = _backend(db)

    def locked(t: "Transaction") -> T:
        t.hold(("content-cleanup", backend.root), lambda: _CommitLock(db, backend))
        return fn(t)

    return db.write(tx, locked, savepoint=True)


def _sync_before_commit(t: "Transaction", directory: str) -> None:
    """Flush the blob directory `directory` just before `t` commits: once for every blob the
    transaction put there, and before the records naming them can be on disk."""
    def flush() -> None:
        try:
            sync_dir(directory)
        except OSError as exc:
            raise Unavailable(f"cannot flush content directory {directory!r}: {exc}") from None

    t.before_commit(("content-sync-dir", directory), flush)


def _abandon(bw: Optional[LocalWriter]) -> None:
    """Close a backend writer we will not use, removing the ingest if it started it."""
    if bw is None:
        return
    if bw.created:
        bw.discard()
    else:
        bw.close()


class _Raced(Exception):
    """Another writer registered the same ref between our read and our write."""


class ContentStore:
    """The content of one namespace (``ns.content``)."""

    def __init__(self, ns: "NamespaceHandle") -> None:
        self._ns = ns
        self._db = ns.db

    # -- records -----------------------------------------------------------------------

    def _blob(self, t: "Transaction", digest: str) -> Optional[dict]:
        raw = t.kv.get(schema.T_OBJECTS, _blob_key(self._ns.name, digest))
        return None if raw is None else _blob_record(raw, digest)

    def _ingest(self, t: "Transaction", ref: str) -> Optional[dict]:
        raw = t.kv.get(schema.T_OBJECTS, _ingest_key(self._ns.name, ref))
        return None if raw is None else _ingest_record(raw, ref)

    def _require_blob(self, t: "Transaction", digest: str) -> dict:
        record = self._blob(t, digest)
        if record is None:
            raise NotFound(f"content {digest} not found in namespace {self._ns.name!r}")
        return record

    def _require_ingest(self, t: "Transaction", ref: str) -> dict:
        record = self._ingest(t, ref)
        if record is None:
            raise NotFound(f"ingest ref {ref!r} not found in namespace {self._ns.name!r}")
        return record

    def _put_ingest(self, t: "Transaction", ref: str, record: dict) -> None:
        t.kv.put(schema.T_OBJECTS, _ingest_key(self._ns.name, ref), schema.pack(record))
        index.index_ingest(t, self._ns.name, ref, record["e"], record["d"] if record["sh"] else "")

    def _drop_ingest(self, t: "Transaction", ref: str) -> None:
        ns = self._ns.name
        t.kv.delete(schema.T_OBJECTS, _ingest_key(ns, ref))
        index.remove(t, ResourceType.INGEST, ns, ref)
        leases.detach(t, self._ns, Resource(ref, "ingests"))

    # -- blobs -------------------------------------------------------------------------

    def info(self, digest: str, *, tx: Optional["Transaction"] = None) -> Info:
        """The blob as this namespace sees it; NotFound unless the namespace committed it."""
        validate_digest(digest)
        with self._db.transaction(tx, write=False) as t:
            return _info(digest, self._require_blob(t, digest))

    def update(self, info: Info, *fieldpaths: str, tx: Optional["Transaction"] = None) -> Info:
        """Update labels (``labels`` or ``labels.<key>``; none means all); returns the stored Info."""
        if not isinstance(info, Info):
            raise InvalidArgument(f"update needs an Info, not {type(info).__name__}")
        digest = validate_digest(info.digest)

        def _body(t: "Transaction"):
            record = self._require_blob(t, digest)
            new_labels = update_labels(record["l"], info.labels, fieldpaths, f"content {digest}")
            record["l"] = new_labels
            record["u"] = t.now
            t.kv.put(schema.T_OBJECTS, _blob_key(self._ns.name, digest), schema.pack(record))
            index.index_content(t, self._ns.name, digest, new_labels)
            return _info(digest, record)

        return self._db.write(tx, _body)

    def walk(self, *filter_args: str, tx: Optional["Transaction"] = None) -> Iterator[Info]:
        """The namespace's blobs matching the filters (``digest``, ``labels.<key>``)."""
        matcher = filters.parse(*filter_args)
        with self._db.transaction(tx, write=False) as t:
            digests = _scan(t, self._ns.name, schema.K_BLOB)
        infos = [_info(digest, _blob_record(raw, digest)) for digest, raw in digests]
        return iter([i for i in infos if matcher.match(info_adaptor(i))])

    def delete(self, digest: str, *, tx: Optional["Transaction"] = None) -> None:
        """Forget the blob in this namespace; the bytes go at the next garbage collection."""
        validate_digest(digest)
        ns = self._ns.name

        def _body(t: "Transaction"):
            if not t.kv.delete(schema.T_OBJECTS, _blob_key(ns, digest)):
                raise NotFound(f"content {digest} not found in namespace {ns!r}")
            index.remove(t, ResourceType.CONTENT, ns, digest)
            leases.detach(t, self._ns, Resource(digest, "content"))
            t.mark_dirty(content=True)
            from ..events import TOPIC_CONTENT_DELETE, ContentDelete  # loaded by the first write that publishes

            t.publish(ns, TOPIC_CONTENT_DELETE, ContentDelete(digest))

        self._db.write(tx, _body)

    def open(self, digest: str, *, tx: Optional["Transaction"] = None) -> BinaryIO:
        """A binary, seekable file object on the blob (the caller closes it)."""
        self.info(digest, tx=tx)
        return _backend(self._db).open(digest)

    def read(self, digest: str, *, tx: Optional["Transaction"] = None) -> bytes:
        """The whole blob."""
        with self.open(digest, tx=tx) as f:
            return f.read()

    # -- ingests -----------------------------------------------------------------------

    def writer(self, ref: str, *, total: int = 0, expected: Optional[str] = None,
               tx: Optional["Transaction"] = None) -> "Writer":
        """Open, or resume, the ingest `ref`; use it as a context manager.

        AlreadyExists if this namespace already has `expected` (the content then
        joins the handle's lease); Unavailable if the ref is open in another
        writer, in this or another process. Resume from ``status().offset``.
        """
        validate_key(ref, "ingest ref")
        validate_size(total, "total")
        expected = _optional_digest(expected, "expected digest")
        backend = _backend(self._db)
        algorithm = expected.partition(":")[0] if expected else "sha256"
        for _ in range(3):
            with self._db.transaction(tx, write=False) as t:
                exists = bool(expected) and self._blob(t, expected) is not None
                record = self._ingest(t, ref)
            if exists and self._ns.lease is None:
                raise AlreadyExists(f"content {expected} already exists in namespace {self._ns.name!r}")
            bref = record["b"] if record else new_backend_ref(self._ns.name)
            try:
                bw = None if exists else backend.writer(bref, total=total, algorithm=algorithm,
                                                        fresh=record is None)
            except IngestBusy:
                raise IngestBusy(f"ingest ref {ref!r} of namespace {self._ns.name!r} is open "
                                 f"in another writer") from None
            try:
                return self._register(ref, bw, bref, total, expected, tx)
            except _Raced:
                _abandon(bw)
            except BaseException:
                _abandon(bw)
                raise
        raise Unavailable(f"ingest ref {ref!r} is being opened by other writers")

    def _register(self, ref: str, bw: Optional[LocalWriter], bref: str, total: int, expected: str,
                  tx: Optional["Transaction"]) -> "Writer":
        """Write the ingest record for an opened backend writer (under the cleanup lock)."""
        ns = self._ns.name
        backend = _backend(self._db)

        def register(t: "Transaction") -> Optional[dict]:
            """The ingest record written, or None when the namespace has the expected content."""
            if expected and self._blob(t, expected) is not None:
                # containerd: hold the existing content in the lease, then report it exists.
                leases.attach(t, self._ns, Resource(expected, "content"))
                return None
            if bw is None:
                raise _Raced()
            current = self._ingest(t, ref)
            if current is not None and current["b"] != bref:
                raise _Raced()
            shared, size = False, total
            if expected and (self._db.shared or _shareable_elsewhere(t, expected)):
                stored = backend._size(expected)
                if stored is not None and total in (0, stored):
                    shared, size = True, stored
            t.ensure_namespace(ns)
            record = {"b": bref, "d": expected, "sh": shared, "s": size,
                      "e": None if self._ns.lease else t.now + INGEST_EXPIRY_NS,
                      "c": current["c"] if current else t.now, "u": t.now}
            self._put_ingest(t, ref, record)
            leases.attach(t, self._ns, Resource(ref, "ingests"))
            return record

        record = _locked_write(self._db, tx, register)
        if record is None:
            _abandon(bw)
            raise AlreadyExists(f"content {expected} already exists in namespace {ns!r}")
        return Writer(self, ref, bw, record)

    def status(self, ref: str, *, tx: Optional["Transaction"] = None) -> Status:
        """Progress of the ingest `ref`; NotFound if the namespace has none."""
        validate_key(ref, "ingest ref")
        with self._db.transaction(tx, write=False) as t:
            record = self._require_ingest(t, ref)
        return self._status(ref, record)

    def _status(self, ref: str, record: dict) -> Status:
        if record["sh"]:
            size = record["s"]
            return Status(ref, size, size, record["d"], from_ns(record["c"]), from_ns(record["u"]))
        try:
            backend_status = _backend(self._db).status(record["b"])
        except NotFound:
            raise NotFound(f"ingest ref {ref!r} of namespace {self._ns.name!r} has no data "
                           f"in the content store") from None
        return dataclasses.replace(backend_status, ref=ref, expected=record["d"])

    def statuses(self, *filter_args: str, tx: Optional["Transaction"] = None) -> list[Status]:
        """Every ingest of the namespace matching the filters (``ref``), by ref."""
        matcher = filters.parse(*filter_args)
        with self._db.transaction(tx, write=False) as t:
            refs = _scan(t, self._ns.name, schema.K_INGEST)
        found = []
        for ref, raw in refs:
            if not matcher.match(filters.adaptor({"ref": ref})):
                continue
            try:
                found.append(self._status(ref, _ingest_record(raw, ref)))
            except NotFound:
                continue  # committed or aborted meanwhile
        return found

    def abort(self, ref: str, *, tx: Optional["Transaction"] = None) -> None:
        """Discard the ingest `ref`; Unavailable while a writer has it open."""
        validate_key(ref, "ingest ref")

        def _body(t: "Transaction"):
            record = self._require_ingest(t, ref)
            try:
                claim = _backend(self._db).claim(record["b"])
            except IngestBusy:
                raise IngestBusy(f"cannot abort ingest ref {ref!r} of namespace {self._ns.name!r}: "
                                 f"it is open in a writer") from None
            t.on_abort(claim.release)
            t.after_commit(claim.discard, deletes=True)
            self._drop_ingest(t, ref)

        self._db.write(tx, _body)


def _shareable_elsewhere(t: "Transaction", digest: str) -> bool:
    """Whether a namespace labelled shareable holds the blob (containerd's isSharedContent)."""
    for name, raw in t.kv.scan(schema.T_NAMESPACES):
        ns = schema.text(name, "namespace")
        labels = schema.unpack(raw, f"namespace {ns!r}").get("labels", {})
        if labels.get(LABEL_SHAREABLE) == "true" and t.kv.get(schema.T_OBJECTS, _blob_key(ns, digest)):
            return True
    return False


class Writer:
    """An open ingest in a namespace (``ns.content.writer(ref)``), a context manager.

    Leaving the ``with`` block without `commit` closes the writer and keeps
    the ingest resumable; ``ns.content.abort(ref)`` discards it.
    """

    def __init__(self, store: ContentStore, ref: str, bw: LocalWriter, record: dict) -> None:
        self._store = store
        self.ref = ref
        self._bw = bw
        self._shared: bool = record["sh"]
        self._size: int = record["s"]
        self._expected: str = record["d"]
        self._started: int = record["c"]
        self._updated: int = record["u"]

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<content Writer {self.ref!r}{' (closed)' if self.closed else ''}>"

    @property
    def closed(self) -> bool:
        return self._bw.closed

    def _require_open(self) -> LocalWriter:
        if self._bw.closed:
            raise FailedPrecondition(f"writer for ingest ref {self.ref!r} is closed")
        return self._bw

    def write(self, data) -> int:
        """Append bytes; returns how many."""
        bw = self._require_open()
        if self._shared:
            try:
                if not memoryview(data).nbytes:
                    return 0
            except TypeError:
                raise InvalidArgument(f"write needs a bytes-like object, not {type(data).__name__}") from None
            self._unshare(self._size)
        return bw.write(data)

    def digest(self) -> str:
        """Digest of the content so far (still known after commit or close)."""
        return self._expected if self._shared else self._bw.digest()

    def status(self) -> Status:
        if self._shared:
            return Status(self.ref, self._size, self._size, self._expected,
                          from_ns(self._started), from_ns(self._updated))
        return dataclasses.replace(self._bw.status(), ref=self.ref, expected=self._expected)

    def truncate(self, size: int = 0) -> None:
        """Cut the content back to its first `size` bytes."""
        bw = self._require_open()
        validate_size(size, "truncate size")
        if not self._shared:
            bw.truncate(size)
            return
        if size > self._size:
            raise InvalidArgument(f"cannot truncate ingest ref {self.ref!r} to {size} bytes: "
                                  f"the content has {self._size}")
        self._unshare(size)

    def _unshare(self, keep: int) -> None:
        """Copy the first `keep` bytes of the shared blob into our own ingest, before changing it."""
        store = self._store
        bw = self._bw
        bw.truncate(0)
        copied = 0
        with _backend(store._db).open(self._expected) as f:
            while copied < keep:
                chunk = f.read(min(CHUNK, keep - copied))
                if not chunk:
                    raise Corrupted(f"content {self._expected} is shorter than its recorded size {self._size}")
                copied += bw.write(chunk)

        def unshare(t: "Transaction") -> None:
            record = store._ingest(t, self.ref)
            if record is not None and record["b"] == bw.ref:
                record["sh"] = False
                record["u"] = t.now
                store._put_ingest(t, self.ref, record)

        store._db.write(None, unshare)
        self._shared = False

    def commit(self, size: int = 0, expected: Optional[str] = None, labels: Optional[dict] = None, *,
               tx: Optional["Transaction"] = None) -> Info:
        """Verify the content and record it in the namespace; returns its Info.

        FailedPrecondition on a size (when non-zero) or digest mismatch: nothing
        is stored and the ingest stays resumable. AlreadyExists if the namespace
        already had the content (the ingest is consumed). The writer is closed
        afterwards, whatever the outcome.
        """
        validate_size(size, "size")
        expected = _optional_digest(expected, "expected digest")
        labels = clean_labels(labels)
        bw = self._require_open()
        store = self._store
        ns = store._ns

        def commit(t: "Transaction") -> tuple[str, Optional[Info]]:
            """(digest, the Info of the blob record written, or None when the namespace had the content)."""
            if self._shared:
                actual, digest = self._size, self._expected
                backend = _backend(store._db)
                if not backend.exists(digest):
                    raise FailedPrecondition(f"commit of ingest ref {self.ref!r}: content {digest} "
                                             f"is no longer in the content store; write its bytes")
                # Whoever linked it may have died before flushing its directory entry.
                _sync_before_commit(t, os.path.dirname(backend.blob_path(digest)))
            else:
                actual, digest = bw.offset, bw.digest()
            if size and size != actual:
                raise FailedPrecondition(f"commit of ingest ref {self.ref!r}: {actual} bytes written, "
                                         f"expected size {size}")
            if expected and expected != digest:
                raise FailedPrecondition(f"commit of ingest ref {self.ref!r}: content has digest "
                                         f"{digest}, expected {expected}")
            existing = store._blob(t, digest)
            t.ensure_namespace(ns.name)
            leases.attach(t, ns, Resource(digest, "content"))
            store._drop_ingest(t, self.ref)
            if self._shared:
                bw.discard()
            else:
                # The ingest goes only once the blob is recorded; if the transaction does not commit,
                # the blob goes if this made it, and the ingest stays resumable as it was.
                # Size and digest are checked above, from the same writer.
                published = bw.publish(flush_dir=lambda directory: _sync_before_commit(t, directory))
                t.on_abort(published.undo)
                t.after_commit(published.ingest.discard, deletes=True)
            if existing is not None:
                return digest, None
            t.kv.put(schema.T_OBJECTS, _blob_key(ns.name, digest),
                     schema.pack({"s": actual, "l": labels, "c": t.now, "u": t.now}))
            index.index_content(t, ns.name, digest, labels)
            if t.db.publisher is not None:
                from ..events import TOPIC_CONTENT_CREATE, ContentCreate  # loaded by the first commit that publishes

                t.publish(ns.name, TOPIC_CONTENT_CREATE, ContentCreate(digest, actual))
            return digest, Info(digest, actual, labels, t.now_at, t.now_at)

        try:
            if not self._shared:
                bw.sync()  # the slow part, done before any lock is taken
            digest, info = _locked_write(store._db, tx, commit)
        finally:
            bw.close()
        if info is None:
            raise AlreadyExists(f"content {digest} already exists in namespace {ns.name!r}")
        return info

    def close(self) -> None:
        """Close the writer; the ingest stays resumable."""
        self._bw.close()


# -- the garbage collector's side ----------------------------------------------------------


def remove_blob_for_gc(tx: "Transaction", ns: str, digest: str) -> None:
    """Delete a blob record and its node (the sweep); the backend cleanup removes the bytes."""
    tx.kv.delete(schema.T_OBJECTS, _blob_key(ns, digest))
    index.remove(tx, ResourceType.CONTENT, ns, digest)
    tx.mark_dirty(content=True)


def remove_ingest_for_gc(tx: "Transaction", ns: str, ref: str) -> None:
    """Delete an ingest record and its node (the sweep); the backend cleanup aborts the ingest."""
    tx.kv.delete(schema.T_OBJECTS, _ingest_key(ns, ref))
    index.remove(tx, ResourceType.INGEST, ns, ref)
    tx.mark_dirty(content=True)


def _referenced(db: "Database") -> tuple[set, set]:
    """(digests, backend refs) that some namespace's records still reference."""
    digests: set[str] = set()
    refs: set[str] = set()
    with db.view() as t:
        for ns in db.namespaces.list(tx=t):
            digests.update(digest for digest, _ in _scan(t, ns, schema.K_BLOB))
            for ref, raw in _scan(t, ns, schema.K_INGEST):
                record = _ingest_record(raw, ref)
                refs.add(record["b"])
                if record["sh"]:
                    digests.add(record["d"])  # a shared ingest retains the content it will commit
    return digests, refs


def _references_blob(db: "Database", digest: str) -> bool:
    """Whether a blob record of any namespace, or a shared ingest, references `digest` now."""
    with db.view() as t:
        namespaces = db.namespaces.list(tx=t)
        if any(t.kv.get(schema.T_OBJECTS, _blob_key(ns, digest)) is not None for ns in namespaces):
            return True
        return any(record["sh"] and record["d"] == digest
                   for ns in namespaces for record in _ingest_records(t, ns))


def _references_ingest(db: "Database", ref: str) -> bool:
    """Whether an ingest record references the backend ingest `ref` now."""
    with db.view() as t:
        owner = backend_ref_namespace(ref)
        namespaces = [owner] if owner is not None else db.namespaces.list(tx=t)
        return any(record["b"] == ref for ns in namespaces for record in _ingest_records(t, ns))


def _ingest_records(t: "Transaction", ns: str) -> Iterator[dict]:
    for ref, raw in _scan(t, ns, schema.K_INGEST):
        yield _ingest_record(raw, ref)


class _Referenced:
    """The backend ingest refs records reference, as `LocalStore.clean_ingests` asks: a ref seen
    referenced earlier is kept; any other is looked up afresh under the cleanup lock (held only
    for the look-up). `clean_ingests` asks again once it holds the ingest's own lock, and no
    writer can then register it, so that answer stays true while it removes the ingest.
    Iterating yields the refs seen: `clean_ingests` keeps their directories even without a meta
    (a ref registered later has a young directory of its own, or one that was seen)."""

    def __init__(self, db: "Database", seen: set) -> None:
        self._db = db
        self._seen = seen

    def __iter__(self) -> Iterator[str]:
        return iter(self._seen)

    def __contains__(self, ref: str) -> bool:
        if ref in self._seen:
            return True
        with _removal_lock(self._db, _backend(self._db)):
            return _references_ingest(self._db, ref)


def collect_backend(db: "Database", blobs: Optional[Freed] = None, ingests: Optional[Freed] = None,
                    errors: Optional[list] = None, deferred: Optional[list] = None, *,
                    scope: Optional["Scope"] = None) -> float:
    """Delete every backend blob and ingest no namespace references; returns the seconds it took.

    Runs after a collection has committed, outside any transaction (it waits
    for commits in flight, which may wait for the database's write locks).
    The metadata is read once without any lock to find the candidates; each
    candidate is then removed under the cleanup lock (see the module
    docstring), taken for that one removal, after checking again that no
    record references it, so a commit in flight in any process is either
    seen or not yet started, and a commit waits for one removal at most.
    Open ingests are skipped. Deleting only unlinks files, so it works on a
    full disk.

    `blobs` and `ingests` count what was deleted, with the bytes measured just
    before; `errors` receives one line per blob or ingest that could not be
    deleted, and the cleanup goes on with the rest (without `errors`, the first
    failure raises), `deferred` each orphan ingest left for a later cleanup
    (open in a writer, or too young to be called abandoned). Abandoned
    ingests are judged against the DB's clock.

    With a `scope`, only the blobs of the scope's removed records and the
    ingests made for its namespace (or, if it names them, the scope's removed
    ingests alone) are candidates; blobs and ingest directories that belong to
    no namespace are left alone.
    """
    started = time.perf_counter()
    backend = db.content_store
    if backend is None:
        return 0.0
    if db._current() is not None:
        raise FailedPrecondition("collect_backend must run outside any transaction")
    digests, refs = _referenced(db)
    candidates = sorted(scope.digests) if scope else [info.digest for info in backend.walk()]
    for digest in candidates:
        if digest in digests:
            continue
        with _removal_lock(db, backend):
            if _references_blob(db, digest):
                continue
            try:
                size = backend.delete(digest)
            except NotFound:
                continue
            except Unavailable as exc:
                if errors is None:
                    raise
                errors.append(f"cannot delete blob {digest}: {exc}")
                continue
        if blobs is not None:
            blobs.add(size)
    owned = None if scope is None else _owned_ingests(scope)
    backend.clean_ingests(_Referenced(db, refs), now=_seconds(db), freed=ingests, errors=errors,
                          deferred=deferred, owned=owned)
    return time.perf_counter() - started


def _owned_ingests(scope: "Scope") -> Callable[[str], bool]:
    """Which backend ingest refs a scoped cleanup may discard."""
    if scope.ingests is not None:
        return scope.ingests.__contains__
    return lambda ref: backend_ref_namespace(ref) == scope.namespace


def ingest_backend_ref(tx: "Transaction", ns: str, ref: str) -> Optional[str]:
    """The backend ref of ingest record `ref` of namespace `ns` (None without one): what a
    restricted collection that removes the record lets its cleanup discard."""
    raw = tx.kv.get(schema.T_OBJECTS, _ingest_key(ns, ref))
    return None if raw is None else _ingest_record(raw, ref)["b"]


def leftovers(db: "Database") -> list[Leftover]:
    """The blobs and ingests the next `collect_backend` would delete, with their bytes; deletes nothing."""
    backend = db.content_store
    if backend is None:
        return []
    with backend.cleanup_lock.exclusive():
        digests, refs = _referenced(db)
        found = [Leftover("blob", info.digest, info.size) for info in backend.walk() if info.digest not in digests]
        found += [Leftover("ingest-dir", name, size)
                  for name, size in backend.ingest_leftovers(refs, now=_seconds(db))]
    return found


def _seconds(db: "Database") -> float:
    return to_ns(db.clock()) / 1e9
