"""Check every invariant a cargohold root relies on; change nothing.

What is checked (each problem one `Finding`, `cargohold.integrity.findings` names the kinds):

* the database: its schema and version, its dirty markers (notes), each snapshotter's id
  counter against the ids its records use, a namespace record for every namespace that
  has records, the owner of every backend;
* every record against its node-table entry (present, and equal to what the record's fields
  and labels make it), and no entry without a record (`cargohold.integrity.tables`);
* lease resources name leases that exist; a snapshot's parent exists in the same namespace
  and snapshotter, is committed and is linked to its child;
* every content record's blob exists with the recorded size (and, with `verify_content`,
  digest); every ingest record that needs its data has its ingest directory; every snapshot
  record has its backend snapshot, of the same kind and parent, and its directory;
* data no record owns, with its size: blobs, ingest directories, backend snapshots and
  snapshot directories (what `gc --dry-run` lists as leftovers).

A live root can be checked: the records are read in one read transaction, taken while the
content store's cleanup lock and every snapshotter's creation lock are held exclusive, and
the backends are listed before the locks are released. Commits and creations in flight
therefore have finished (their data and records both seen) or not started (neither seen),
and a backend cleanup never deletes what that transaction still references. Writers go on
during the rest of the check.
"""

from __future__ import annotations

import logging
import os
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, Optional

from .. import schema
from .._native import decode_varint
from ..errors import Corrupted, Error, FailedPrecondition, InvalidArgument, NotFound
from ..gc import context as gccontext
from ..gc import index
from ..model import Kind, ResourceType
from ..snapshots.scope import SEP
from ..timeutil import to_ns
from .. import ownership
from . import backends as disk
from . import findings as f
from . import tables
from .verify import verify_files

if TYPE_CHECKING:
    from ..transaction import Database as DB

log = logging.getLogger("cargohold.fsck")

QUARANTINE_DIR = "quarantine"
"""Where, under the content store's root, blobs whose bytes do not match their digest are moved."""

_STORES = {ResourceType.CONTENT: "content", ResourceType.CONTAINER: "containers", ResourceType.IMAGE: "images",
           ResourceType.LEASE: "leases", ResourceType.INGEST: "ingests", index.SANDBOX: "sandboxes"}
_KIND_STORES = {schema.K_BLOB: "content", schema.K_CONTAINER: "containers", schema.K_IMAGE: "images",
                schema.K_LEASE: "leases", schema.K_INGEST: "ingests", schema.K_SANDBOX: "sandboxes"}


def check(db: "DB", *, verify_content: bool = False, workers: Optional[int] = None) -> f.Report:
    """Every finding of root `db` (see the module docstring); the database is not written."""
    if not isinstance(verify_content, bool):
        raise InvalidArgument(f"verify_content must be True or False, not {verify_content!r}")
    db._require_open()
    if db._current() is not None:
        raise FailedPrecondition("fsck cannot run inside a transaction of the same thread")
    report = f.Report(root=os.path.dirname(os.path.abspath(db.path)))
    table = tables.new_check([])
    with ExitStack() as locks:
        locks.enter_context(_backend_locks(db))
        with db.view() as tx:
            seen = _observe(db, tx, table)
            locks.close()
            _check_meta(db, tx, report)
            scan = tables.scan(tx.kv, table)
            report.checked.update(records=scan.records, nodes=scan.nodes, namespaces=len(scan.namespaces))
            _check_namespaces(tx, scan, report)
            _check_sequences(tx, scan, report)
            _check_lease_resources(tx, scan, report)
            report.findings.extend(_from_problems(db, scan, seen))
            report.findings.extend(_check_content(db, scan, seen, report, verify_content, workers))
            report.findings.extend(_check_snapshot_data(db, scan, seen))
            _classify(db, tx, report)
            _pending_cleanups(tx, report)
    report.findings.extend(_check_owners(db))
    report.findings.extend(_quarantined(db))
    return report


# -- what the backends hold, listed under their locks ---------------------------------------------


class _Seen:
    def __init__(self) -> None:
        self.layouts: dict[str, list] = {}
        """The names under each snapshotter's ``snapshots/``."""
        self.broken: dict[str, str] = {}
        self.commit_sources: dict[str, dict] = {}
        self.blobs: list[tuple] = []
        self.ingests: list[tuple] = []
        """(namespace, ref, record) of every ingest record."""
        self.ingest_missing: set[str] = set()
        self.ingest_leftovers: list[tuple] = []


def _backend_locks(db: "DB") -> ExitStack:
    from ..snapshots.store import creation_lock

    stack = ExitStack()
    try:
        if db.content_store is not None:
            stack.enter_context(db.content_store.cleanup_lock.exclusive())
        for name in sorted(db.snapshotters):
            stack.enter_context(creation_lock(db, name).exclusive())
    except BaseException:
        stack.close()
        raise
    return stack


def _observe(db: "DB", tx: Any, table: Any) -> _Seen:
    """The backends as they are while no commit or creation is in flight (the snapshotters' metastores
    go into the table pass, `table`)."""
    seen = _Seen()
    for local, backend in sorted(db.snapshotters.items()):
        name = db.stored_snapshotter(local)  # how the records' groups name it

        def register(rows: Any, entries: list, name: str = name) -> list:
            table.backend(name, rows, {int(e) for e in entries if e.isdigit()})
            return entries

        try:
            seen.layouts[name] = backend.layout(register)
            seen.commit_sources[name] = {key: source.name for key, source in backend.commit_sources().items()}
        except (Error, OSError) as exc:
            seen.broken[name] = str(exc)
            seen.layouts.pop(name, None)
            table.backend(name, (), set())
    store = db.content_store
    if store is None:
        return seen
    for raw_ns in tables.distinct(tx.kv, schema.T_OBJECTS):
        try:
            ns = schema.text(raw_ns, "namespace")
        except Corrupted:
            continue
        prefix = schema.object_prefix(ns, schema.K_INGEST)
        for key, raw in tx.kv.scan(schema.T_OBJECTS, prefix):
            try:
                ref = schema.text(key[len(prefix):], "ingest ref")
                record = tables._checked(schema.K_INGEST, raw)
            except Corrupted:
                continue  # the table scan reports it
            seen.ingests.append((ns, ref, record))
            if not record["sh"]:
                try:
                    store.status(record["b"])
                except (NotFound, Corrupted):
                    seen.ingest_missing.add(record["b"])
    seen.blobs = list(disk.blob_files(store.root))
    refs = {record["b"] for _, _, record in seen.ingests}
    seen.ingest_leftovers = store.ingest_leftovers(refs, now=to_ns(db.clock()) / 1e9)
    return seen


# -- the database -----------------------------------------------------------------------------


def _check_meta(db: "DB", tx: Any, report: f.Report) -> None:
    kv = tx.kv
    report.schema = schema.text(kv.get(schema.T_META, schema.META_SCHEMA) or b"", "schema")
    report.version = db.version_in(kv)
    report.identity = db.identity
    content = kv.get(schema.T_META, schema.META_DIRTY_CONTENT)
    if content is not None:
        report.findings.append(f.Finding(f.DIRTY_BACKEND, "-", "content", "content store", detail=(
            "deletions its cleanup has not freed yet: the next collection cleans it")))
    prefix = schema.META_DIRTY_SNAPSHOTTER
    for key, _ in kv.scan(schema.T_META, prefix):
        name = key[len(prefix):].decode("utf-8", "replace")
        if _other_hosts(db, name):
            continue  # its own host's collection cleans it, and its fsck notes it
        report.findings.append(f.Finding(f.DIRTY_BACKEND, "-", f"snapshots/{name}", name, detail=(
            "deletions its cleanup has not freed yet: the next collection cleans it")))


def _check_namespaces(tx: Any, scan: tables.Scan, report: f.Report) -> None:
    for raw in scan.namespaces:
        if tx.kv.get(schema.T_NAMESPACES, raw) is None:
            name = raw.decode("utf-8", "replace")
            report.findings.append(f.Finding(
                f.MISSING_NAMESPACE, name, "namespaces", name, detail=(
                    "records exist in a namespace that has no namespace record: listings skip it, and the "
                    "backend cleanups would delete its data"), repair=f.REBUILD))


def _check_sequences(tx: Any, scan: tables.Scan, report: f.Report) -> None:
    for name, highest in sorted(scan.max_ids.items()):
        raw = tx.kv.get(schema.T_META, schema.META_SEQUENCE + f"snapshots/{name}".encode())
        try:
            value = decode_varint(raw)[0] if raw else 0
        except InvalidArgument:
            value = -1
        if value < highest:
            report.findings.append(f.Finding(
                f.SEQUENCE_BEHIND, "-", f"snapshots/{name}", name, detail=(
                    f"the id counter is at {value}, but records use ids up to {highest}: new snapshots "
                    "would reuse ids"), repair=f.REBUILD))


def _check_lease_resources(tx: Any, scan: tables.Scan, report: f.Report) -> None:
    leases = {(ns, ident) for kind, ns, ident, _ in scan.others if kind == "lease"}
    counts: dict[tuple, int] = {}
    damaged = 0
    for key, _ in tx.kv.scan(schema.T_LEASERES):
        parts = key.split(schema.SEP, 2)
        if len(parts) != 3 or not parts[2]:
            damaged += 1
            continue
        owner = (parts[0].decode("utf-8", "replace"), parts[1].decode("utf-8", "replace"))
        if owner not in leases:
            counts[owner] = counts.get(owner, 0) + 1
    for (ns, lease), rows in sorted(counts.items()):
        node = schema.pack_node(ResourceType.LEASE, ns, lease)
        held = tx.kv.get(schema.T_GC, node) is not None
        report.findings.append(f.Finding(
            f.ORPHAN_LEASE_RESOURCE, ns, "leases", lease, detail=(
                f"{rows} resource row(s) of a lease that has no record"
                + (": its node-table entry still holds them (see its orphan-node finding)" if held else "")),
            repair="" if held else f.DROP))
    if damaged:
        report.findings.append(f.Finding(f.DAMAGED_RECORD, "-", "leases", "lease resources", detail=(
            f"{damaged} lease resource row(s) with a damaged key")))


# -- problems of the table pass -----------------------------------------------------------------


def _node_store(packed: bytes) -> tuple[str, str, str]:
    """(namespace, store, key) of a packed node key, for a finding."""
    try:
        node = schema.unpack_node(packed)
    except Corrupted:
        return "-", "nodes", repr(packed)
    if node.type == ResourceType.SNAPSHOT:
        name, _, key = node.key.partition("/")
        return node.namespace, f"snapshots/{name}", key
    return node.namespace, _STORES.get(node.type, f"type{int(node.type)}"), node.key


def _object_store(okey: bytes) -> tuple[str, str, str]:
    parts = okey.split(schema.SEP)
    ns = parts[0].decode("utf-8", "replace")
    kind = parts[1] if len(parts) > 1 else b""
    rest = [p.decode("utf-8", "replace") for p in parts[2:]]
    if kind in (schema.K_SNAPSHOT, schema.K_SNAPSHOT_CHILD) and rest:
        return ns, f"snapshots/{rest[0]}", "/".join(rest[1:])
    return ns, _KIND_STORES.get(kind, kind.decode("utf-8", "replace") or "objects"), "/".join(rest)


def _from_problems(db: "DB", scan: tables.Scan, seen: _Seen) -> list[f.Finding]:
    out = []
    for problem in scan.problems:
        code = problem[0]
        if code in ("missing-node", "wrong-node"):
            ns, store, key = _node_store(problem[1])
            detail = ("the record has no node-table entry: the collector never sees it" if code == "missing-node"
                      else "the node-table entry differs from what the record's fields and labels make it")
            out.append(f.Finding(f.MISSING_NODE if code == "missing-node" else f.WRONG_NODE, ns, store, key,
                                 detail=detail, repair=f.REBUILD))
        elif code == "orphan-node":
            ns, store, key = _node_store(problem[1])
            try:
                index.decode(problem[2])
                readable = True
            except Corrupted:
                readable = False
            out.append(f.Finding(f.ORPHAN_NODE, ns, store, key, detail=(
                "a node-table entry without a record" if readable else
                "a node-table entry without a record, unreadable: no collection can run while it is there"),
                repair=f.DROP if readable else f.REBUILD))
        elif code == "damaged-record":
            ns, store, key = _object_store(problem[1])
            out.append(f.Finding(f.DAMAGED_RECORD, ns, store, key, detail=problem[2]))
        elif code == "unknown-record":
            ns, store, key = _object_store(problem[1])
            out.append(f.Finding(f.UNKNOWN_RECORD, ns, store, key, detail="a record of a kind cargohold does not know"))
        elif code == "damaged-backend-record":
            out.append(f.Finding(f.DAMAGED_RECORD, "-", f"snapshots/{problem[1]}",
                                 problem[2].decode("utf-8", "replace"), detail=f"in the snapshotter's metastore: {problem[3]}"))
        elif code == "orphan-child-link":
            ns, store, key = _object_store(problem[1])
            out.append(f.Finding(f.ORPHAN_CHILD_LINK, ns, store, key, detail=(
                "a parent's link to a child snapshot that does not exist"), repair=f.REBUILD))
        else:
            finding = _snapshot_problem(db, problem, seen)
            if finding is not None:
                out.append(finding)
    return out


def _snapshot_problem(db: "DB", problem: tuple, seen: _Seen) -> Optional[f.Finding]:
    """The finding of a snapshot record's problem; None for one that only says another host's
    record has no backend here (on metadata several hosts share, see `cargohold.snapshots.scope`)."""
    code, ns, name, key = problem[:4]
    store = f"snapshots/{name}"
    if code == "missing-parent":
        return f.Finding(f.MISSING_PARENT, ns, store, key, detail=(
            f"its parent {problem[4]!r} has no record: lost, left alone"))
    if code == "parent-not-committed":
        return f.Finding(f.PARENT_NOT_COMMITTED, ns, store, key, detail=f"its parent {problem[4]!r} is not committed")
    if code == "wrong-parent-id":
        return f.Finding(f.WRONG_PARENT_ID, ns, store, key, detail=(
            f"the record names parent id {problem[4]}, its parent's id is {problem[5]}"), repair=f.REBUILD)
    if code == "missing-child-link":
        return f.Finding(f.MISSING_CHILD_LINK, ns, store, key, detail=(
            "its parent has no link to it: the parent could be removed under it"), repair=f.REBUILD)
    local = db.local_snapshotter(name)
    if code == "no-backend":
        if _other_hosts(db, name):
            return None
        return f.Finding(f.NO_BACKEND, ns, store, key, detail=f"this database has no snapshotter {name!r}")
    backend = db.snapshotters.get(local or name)
    bkey = problem[4]
    if code == "missing-backend-snapshot":
        if name in seen.broken:
            return f.Finding(f.MISSING_BACKEND_SNAPSHOT, ns, store, key, detail=(
                f"the snapshotter's metastore cannot be read: {seen.broken[name]}"))
        if bkey in seen.commit_sources.get(name, {}).values():
            return f.Finding(f.MISSING_BACKEND_SNAPSHOT, ns, store, key, detail=(
                "an interrupted commit renamed it in the backend: the commit is reverted"), repair=f.REBUILD)
        return f.Finding(f.MISSING_BACKEND_SNAPSHOT, ns, store, key, detail=(
            f"backend snapshot {bkey!r} does not exist; while this record exists, collections do not clean "
            f"snapshotter {name!r}"), repair=f.DROP)
    if code == "backend-kind":
        return f.Finding(f.BACKEND_KIND, ns, store, key, detail=(
            f"the record is {_kind(problem[5])}, backend snapshot {bkey!r} is {_kind(problem[6])}"))
    if code == "backend-parent":
        return f.Finding(f.BACKEND_PARENT, ns, store, key, detail=(
            f"backend snapshot {bkey!r} has parent {problem[6]!r}, the record's parent is {problem[5]!r}"))
    path = backend.snapshot_dir(problem[5]) if backend is not None else ""
    return f.Finding(f.MISSING_SNAPSHOT_DIR, ns, store, key, path, 0, (
        f"the directory of backend snapshot {bkey!r} is gone"), repair=f.DROP)


def _other_hosts(db: "DB", stored: str) -> bool:
    """Whether snapshotter `stored` is another host's, on metadata several hosts share."""
    return db.fleet and SEP in stored and db.local_snapshotter(stored) is None


def _kind(value: Any) -> str:
    try:
        return str(Kind(value)).lower()
    except ValueError:
        return f"kind {value!r}"


# -- data -----------------------------------------------------------------------------------------


def _check_content(db: "DB", scan: tables.Scan, seen: _Seen, report: f.Report, verify_content: bool,
                   workers: Optional[int]) -> list[f.Finding]:
    store = db.content_store
    if store is None:
        return []
    retained = [record["d"] for _, _, record in seen.ingests if record["sh"] and record["d"]]
    repairs = {f.MISSING_BLOB: f.DROP, f.WRONG_SIZE: f.QUARANTINE, f.UNOWNED_BLOB: f.PRUNE}
    found = [_with(finding, repair=repairs.get(finding.kind, ""))
             for finding in disk.content_findings(scan.blobs, seen.blobs, retained, store.blob_path)]
    report.checked["blobs"] = len(seen.blobs)
    report.checked["content_records"] = len(scan.blobs)
    if verify_content:
        found.extend(_verify(store, scan, found, workers))
    for ns, ref, record in seen.ingests:
        if record["b"] in seen.ingest_missing:
            found.append(f.Finding(f.MISSING_INGEST, ns, "ingests", ref, store.ingest_dir(record["b"]), 0,
                                   "the ingest's directory is gone: its writer would start over", f.DROP))
    for name, size in seen.ingest_leftovers:
        path = os.path.join(store.root, "ingest", name)
        if not os.path.isdir(path):
            path = store.ingest_dir(name)
        found.append(f.Finding(f.UNOWNED_INGEST, "-", "ingests", name, path, size,
                               "an ingest directory no record owns", f.PRUNE))
    report.checked["ingest_records"] = len(seen.ingests)
    return found


def _verify(store: Any, scan: tables.Scan, found: list, workers: Optional[int]) -> list[f.Finding]:
    """Hash every blob a record names (once per digest) whose size matched."""
    skip = {finding.key for finding in found if finding.kind in (f.MISSING_BLOB, f.WRONG_SIZE)}
    owners: dict[str, str] = {}
    for ns, digest, _ in scan.blobs:
        if digest not in skip:
            owners.setdefault(digest, ns)
    out = []
    for digest, actual, size in verify_files([(d, store.blob_path(d)) for d in sorted(owners)], workers):
        if actual is None or actual == digest:
            continue
        out.append(f.Finding(f.BAD_DIGEST, owners[digest], "content", digest, store.blob_path(digest), size,
                             f"the blob's bytes have digest {actual}", f.QUARANTINE))
    return out


def _check_snapshot_data(db: "DB", scan: tables.Scan, seen: _Seen) -> list[f.Finding]:
    out = []
    for name, reason in sorted(seen.broken.items()):
        out.append(f.Finding(f.DAMAGED_RECORD, "-", f"snapshots/{name}", "metadata", detail=(
            f"the snapshotter's metastore cannot be read: {reason}")))
    table = scan.check
    for name, entries in sorted(seen.layouts.items()):
        backend = db.snapshotters[db.local_snapshotter(name) or name]
        sources = seen.commit_sources.get(name, {})
        kept = {committed for committed, source in sources.items() if table.is_referenced(name, source.encode())}
        unreferenced = {key.decode("utf-8", "replace"): sid for key, sid in table.unreferenced(name)}
        for finding in disk.unowned_snapshots(f"snapshots/{name}", unreferenced, kept, entries,
                                              table.backend_ids(name), backend.snapshot_dir):
            out.append(_with(finding, repair=f.PRUNE))
    return out


def _check_owners(db: "DB") -> list[f.Finding]:
    out = []
    for name, backend in db._backends():
        root = ownership.backend_root(backend)
        if root is None:
            continue
        owner, problem = ownership.read_owner(root)
        if owner == db.identity:
            continue
        if problem is None and owner is None:
            try:
                if not ownership.holds_data(backend):
                    continue  # an empty backend nobody owns: the next collection claims it
            except Error:
                pass
        what = "content" if name is None else f"snapshots/{name}"
        why = problem or (f"it belongs to metadata database {owner}" if owner else
                          "it holds data but has no owner file")
        out.append(f.Finding(f.FOREIGN_BACKEND, "-", what, root, root, 0, (
            f"{why}: collections do not clean it. If this database's records are the whole truth about it, "
            "take it over with `cargohold gc --adopt-backends`")))
    return out


def _quarantined(db: "DB") -> list[f.Finding]:
    store = db.content_store
    if store is None:
        return []
    base = os.path.join(store.root, QUARANTINE_DIR)
    out = []
    for top, _, files in sorted(os.walk(base)):
        for name in sorted(files):
            path = os.path.join(top, name)
            try:
                size = os.lstat(path).st_size
            except FileNotFoundError:
                continue
            out.append(f.Finding(f.QUARANTINED, "-", "content", os.path.relpath(path, base), path, size,
                                 "a blob fsck moved aside because its bytes did not match its digest"))
    return out


# -- which drops are safe: nothing a root reaches is dropped -------------------------------------


DROPPABLE = {f.MISSING_BLOB, f.WRONG_SIZE, f.BAD_DIGEST, f.MISSING_BACKEND_SNAPSHOT, f.MISSING_SNAPSHOT_DIR,
             f.ORPHAN_NODE}
"""Findings whose record (or entry) goes only when no root reaches it."""

_NODE_TYPES = {store: rtype for rtype, store in _STORES.items()}


def node_of(finding: f.Finding) -> bytes:
    """The packed node key of the record (or entry) a finding is about."""
    if finding.store.startswith("snapshots/"):
        return schema.pack_node(ResourceType.SNAPSHOT, finding.namespace,
                                f"{finding.store.partition('/')[2]}/{finding.key}")
    return schema.pack_node(_NODE_TYPES[finding.store], finding.namespace, finding.key)


def _classify(db: "DB", tx: Any, report: f.Report) -> None:
    """Record-dropping repairs only for records no root reaches; the others are lost, left alone
    (dropping them would let a collection delete what they reference)."""
    candidates = [i for i, finding in enumerate(report.findings)
                  if finding.kind in DROPPABLE and finding.repair in (f.DROP, f.QUARANTINE)]
    if not candidates:
        return
    contexts = gccontext.Contexts(db._collectors)
    try:
        marker = gccontext.marking(tx, contexts)
    except Corrupted as exc:
        marker = None
        reason = f"reachability unknown until the node table is repaired ({exc})"
    finally:
        contexts.cancel()
    for i in candidates:
        finding = report.findings[i]
        if marker is None:  # the repair decides once it has rebuilt the table
            report.findings[i] = _with(finding, detail=f"{finding.detail}; {reason}")
        elif marker.is_reachable(node_of(finding)):
            report.findings[i] = _with(finding, detail=f"{finding.detail}; a root reaches it: reported as lost and "
                                       "left, so that collections keep what it references",
                                       repair=f.QUARANTINE if finding.repair == f.QUARANTINE else "")


_UNOWNED = {f.UNOWNED_BLOB, f.UNOWNED_INGEST, f.UNOWNED_BACKEND_SNAPSHOT, f.UNOWNED_SNAPSHOT_DIR}


def _pending_cleanups(tx: Any, report: f.Report) -> None:
    """Data no record owns in a backend marked dirty is what the next collection deletes: a note."""
    dirty = set()
    if tx.kv.get(schema.T_META, schema.META_DIRTY_CONTENT) is not None:
        dirty.update(("content", "ingests"))
    prefix = schema.META_DIRTY_SNAPSHOTTER
    dirty.update(f"snapshots/{key[len(prefix):].decode('utf-8', 'replace')}" for key, _ in tx.kv.scan(schema.T_META, prefix))
    for i, finding in enumerate(report.findings):
        if finding.kind in _UNOWNED and finding.store in dirty:
            report.findings[i] = _with(finding, note=True, detail=f"{finding.detail}; the next collection deletes it")


def _with(finding: f.Finding, **changes: Any) -> f.Finding:
    from dataclasses import replace

    return replace(finding, **changes)
