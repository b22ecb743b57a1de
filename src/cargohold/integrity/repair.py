"""`fsck --repair`: fix what a check found, where the fix needs no guess; each fix in its own
transaction, checked again inside it, and logged (logger ``cargohold.fsck``).

In order:

1. *Rebuilds* of what is derived from the records: a node-table entry from its record, a
   parent's child link, a snapshotter's id counter, a namespace record; the active snapshot
   of an interrupted commit (`cargohold.snapshots.store.repair_commits`); the resource rows of
   a lease that has neither record nor entry, an ingest record whose data is gone (it holds
   nothing), and node-table entries nobody can read, are dropped.
2. *Quarantines*: a blob whose bytes do not match its digest (verified again, under the
   content store's cleanup lock) is moved to ``content/quarantine/<alg>/<hex>``, never deleted.
3. *Drops*, with writers of every process held off (``wlock`` exclusive, as a collection
   does): the reachable set is marked once, then each record whose data is gone (blob,
   backend snapshot, snapshot directory) and each node-table entry without a record is
   deleted only if no root reaches it. One a root reaches stays, reported as lost: deleting
   it would let the next collection delete what it references. A snapshot goes with its
   descendants, leaves first (they cannot be reachable when it is not).
4. With ``prune_orphans``: the backends' cleanups (those a collection runs) delete the data
   no record owns, in backends this database owns: what the check listed (the debris a
   pending cleanup would delete included) and what the drops above left.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Callable, Optional

from .. import ownership, schema
from .._native import encode_varint
from ..errors import Corrupted, Error, FailedPrecondition
from ..gc import context as gccontext
from ..gc import index
from ..kvguard import sync_dir
from ..model import Freed, ResourceType
from . import findings as f
from . import tables
from .check import QUARANTINE_DIR, node_of
from .verify import digest_of

if TYPE_CHECKING:
    from ..transaction import Database as DB, Transaction

log = logging.getLogger("cargohold.fsck")

_KINDS = {"content": schema.K_BLOB, "images": schema.K_IMAGE, "containers": schema.K_CONTAINER,
          "sandboxes": schema.K_SANDBOX, "leases": schema.K_LEASE, "ingests": schema.K_INGEST}


class _Skip(Exception):
    """The problem is gone, or the fix would need a guess: nothing was changed."""


def repair(db: "DB", report: f.Report, *, prune_orphans: bool = False) -> list[f.Repair]:
    """Fix the findings of `report` that can be fixed (see the module docstring); return what was done."""
    if db._current() is not None:
        raise FailedPrecondition("fsck --repair cannot run inside a transaction of the same thread")
    work = report.repairable(prune_orphans)
    done: list[f.Repair] = []
    rebuilds = [x for x in work if x.repair == f.REBUILD or x.kind in _EARLY_DROPS]
    for finding in rebuilds:
        done.append(_one(finding, "rebuild" if finding.repair == f.REBUILD else "drop",
                         lambda finding=finding: _rebuild(db, finding)))
    for finding in (x for x in work if x.repair == f.QUARANTINE):
        done.append(_one(finding, "quarantine", lambda finding=finding: _quarantine(db, finding)))
    drops = [x for x in work if x.kind in _LATE_DROPS and (x.repair == f.DROP or _quarantined(done, x))]
    done.extend(_drop_unreachable(db, drops))
    if prune_orphans:
        dropped = {_backend(r.finding) for r in done if r.done and r.action in ("drop", "quarantine")}
        done.extend(_prune(db, [x for x in work if x.repair == f.PRUNE], dropped))
    return done


_EARLY_DROPS = {f.ORPHAN_LEASE_RESOURCE, f.MISSING_INGEST, f.ORPHAN_CHILD_LINK}
_LATE_DROPS = {f.MISSING_BLOB, f.WRONG_SIZE, f.BAD_DIGEST, f.MISSING_BACKEND_SNAPSHOT, f.MISSING_SNAPSHOT_DIR,
               f.ORPHAN_NODE}


def _quarantined(done: list, finding: f.Finding) -> bool:
    return any(r.finding is finding and r.action == "quarantine" and r.done for r in done)


def _one(finding: f.Finding, action: str, fn: Callable[[], str]) -> f.Repair:
    """Run one fix; log and record its outcome (a failure is recorded, not raised)."""
    try:
        message = fn()
        result = f.Repair(finding, action, True, message)
        log.info("fsck: %s %s %s %s: %s", action, finding.kind, finding.namespace, finding.key, message)
    except _Skip as exc:
        result = f.Repair(finding, action, False, str(exc))
        log.info("fsck: %s %s %s %s skipped: %s", action, finding.kind, finding.namespace, finding.key, exc)
    except (Error, OSError) as exc:
        result = f.Repair(finding, action, False, f"failed: {exc}")
        log.warning("fsck: %s %s %s %s failed: %s", action, finding.kind, finding.namespace, finding.key, exc)
    return result


def _object(finding: f.Finding) -> tuple[bytes, str, list, bytes]:
    """(record kind, namespace, key parts, object key) of the record a finding is about."""
    ns = finding.namespace
    if finding.store.startswith("snapshots/"):
        name = finding.store.partition("/")[2]
        return schema.K_SNAPSHOT, ns, [name, finding.key], schema.object_key(ns, schema.K_SNAPSHOT, name, finding.key)
    kind = _KINDS[finding.store]
    return kind, ns, [finding.key], schema.object_key(ns, kind, finding.key)


# -- rebuilds -------------------------------------------------------------------------------------


def _rebuild(db: "DB", finding: f.Finding) -> str:
    kind = finding.kind
    if kind == f.MISSING_BACKEND_SNAPSHOT:
        from ..snapshots.store import repair_commits

        name = finding.store.partition("/")[2]
        errors = repair_commits(db, db.local_snapshotter(name) or name)
        if errors:
            raise _Skip("; ".join(errors))
        return f"reverted the interrupted commits of snapshotter {name!r}"
    with db.update() as tx:
        if kind == f.MISSING_NAMESPACE:
            if tx.kv.get(schema.T_NAMESPACES, finding.namespace.encode()) is not None:
                raise _Skip("the namespace record exists now")
            tx.ensure_namespace(finding.namespace)
            return "wrote a namespace record without labels"
        if kind in (f.MISSING_NODE, f.WRONG_NODE):
            return _rebuild_node(tx, finding)
        if kind == f.ORPHAN_NODE:
            return _drop_entry(tx, finding, readable=False)
        if kind == f.SEQUENCE_BEHIND:
            return _rebuild_sequence(tx, finding)
        if kind in (f.MISSING_CHILD_LINK, f.WRONG_PARENT_ID):
            return _rebuild_link(tx, finding)
        if kind == f.ORPHAN_CHILD_LINK:
            name = finding.store.partition("/")[2]
            key = schema.object_key(finding.namespace, schema.K_SNAPSHOT_CHILD, name, *finding.key.split("/", 1))
            if not tx.kv.delete(schema.T_OBJECTS, key):
                raise _Skip("the link is gone")
            return "deleted the link"
        if kind == f.ORPHAN_LEASE_RESOURCE:
            return _drop_lease_rows(tx, finding)
        if kind == f.MISSING_INGEST:
            return _drop_ingest(db, tx, finding)
    raise _Skip(f"no repair for {kind}")


def _rebuild_node(tx: "Transaction", finding: f.Finding) -> str:
    kind, ns, parts, okey = _object(finding)
    raw = tx.kv.get(schema.T_OBJECTS, okey)
    if raw is None:
        raise _Skip("the record is gone")
    expected, _ = tables.entry_of(kind, ns, parts, raw)
    packed = node_of(finding)
    if tx.kv.get(schema.T_GC, packed) == expected:
        raise _Skip("the entry is right now")
    index.rewrite(tx, packed, expected)
    return "rewrote the node-table entry from the record"


def _rebuild_sequence(tx: "Transaction", finding: f.Finding) -> str:
    name = finding.key
    highest = 0
    for raw_ns, _ in tx.kv.scan(schema.T_NAMESPACES):
        ns = raw_ns.decode("utf-8", "replace")
        for _, raw in tx.kv.scan(schema.T_OBJECTS, schema.object_prefix(ns, schema.K_SNAPSHOT, name)):
            try:
                highest = max(highest, int(schema.unpack(raw)["i"]))
            except (Corrupted, KeyError, TypeError, ValueError):
                continue
    key = schema.META_SEQUENCE + f"snapshots/{name}".encode()
    tx.kv.put(schema.T_META, key, encode_varint(highest))
    return f"set the id counter to {highest}"


def _rebuild_link(tx: "Transaction", finding: f.Finding) -> str:
    _, ns, (name, key), okey = _object(finding)
    raw = tx.kv.get(schema.T_OBJECTS, okey)
    if raw is None:
        raise _Skip("the record is gone")
    record = tables._checked(schema.K_SNAPSHOT, raw)
    if not record["p"]:
        raise _Skip("the snapshot has no parent now")
    parent_raw = tx.kv.get(schema.T_OBJECTS, schema.object_key(ns, schema.K_SNAPSHOT, name, record["p"]))
    if parent_raw is None:
        raise _Skip("its parent has no record")
    parent_id = tables._checked(schema.K_SNAPSHOT, parent_raw)["i"]
    message = "linked it to its parent"
    if record["pi"] != parent_id:
        tx.kv.delete(schema.T_OBJECTS, schema.object_key(ns, schema.K_SNAPSHOT_CHILD, name, str(record["pi"]), key))
        record["pi"] = parent_id
        tx.kv.put(schema.T_OBJECTS, okey, schema.pack(record))
        message = f"set its parent id to {parent_id} and linked it to its parent"
    tx.kv.put(schema.T_OBJECTS, schema.object_key(ns, schema.K_SNAPSHOT_CHILD, name, str(parent_id), key), b"")
    return message


def _drop_lease_rows(tx: "Transaction", finding: f.Finding) -> str:
    ns, lease = finding.namespace, finding.key
    if tx.kv.get(schema.T_OBJECTS, schema.object_key(ns, schema.K_LEASE, lease)) is not None:
        raise _Skip("the lease has a record now")
    if tx.kv.get(schema.T_GC, schema.pack_node(ResourceType.LEASE, ns, lease)) is not None:
        raise _Skip("the lease's node-table entry still holds its resources")
    rows = index.lease_drop(tx, ns, lease)
    return f"deleted {rows} resource row(s)"


def _drop_ingest(db: "DB", tx: "Transaction", finding: f.Finding) -> str:
    from ..content.store import remove_ingest_for_gc

    ns, ref = finding.namespace, finding.key
    raw = tx.kv.get(schema.T_OBJECTS, schema.object_key(ns, schema.K_INGEST, ref))
    if raw is None:
        raise _Skip("the record is gone")
    record = tables._checked(schema.K_INGEST, raw)
    if record["sh"]:
        raise _Skip("the ingest commits content it shares: it needs no data of its own")
    try:
        db.content_store.status(record["b"])
        raise _Skip("its data is there now")
    except (Error, OSError) as exc:
        if isinstance(exc, _Skip):
            raise
    remove_ingest_for_gc(tx, ns, ref)
    return "deleted the ingest record (it held no data, and holds no content)"


def _drop_entry(tx: "Transaction", finding: f.Finding, readable: bool) -> str:
    packed = node_of(finding)
    value = tx.kv.get(schema.T_GC, packed)
    if value is None:
        raise _Skip("the entry is gone")
    kind, _, _, okey = _object(finding)
    if tx.kv.get(schema.T_OBJECTS, okey) is not None:
        raise _Skip("its record exists now")
    if not readable:
        try:
            index.decode(value)
            raise _Skip("the entry is readable: it goes only if no root reaches it")
        except Corrupted:
            pass
    index.discard(tx, packed)
    return "deleted the node-table entry"


# -- quarantine -------------------------------------------------------------------------------------


def _quarantine(db: "DB", finding: f.Finding) -> str:
    store = db.content_store
    digest = finding.key
    path = store.blob_path(digest)
    algorithm, _, encoded = digest.partition(":")
    with store.cleanup_lock.exclusive():
        actual, _ = digest_of(path, algorithm)
        if actual is None:
            raise _Skip("the blob is gone")
        if actual == digest:
            raise _Skip("the blob's bytes match its digest (the record's size is what is wrong): left alone")
        directory = os.path.join(store.root, QUARANTINE_DIR, algorithm)
        os.makedirs(directory, exist_ok=True)
        target = os.path.join(directory, encoded)
        n = 0
        while os.path.lexists(target):
            n += 1
            target = os.path.join(directory, f"{encoded}.{n}")
        os.rename(path, target)
        for d in (directory, os.path.dirname(path)):
            sync_dir(d)
    return f"moved the blob to {target} (its bytes have digest {actual})"


# -- drops of records whose data is gone, only if no root reaches them ----------------------------------


def _drop_unreachable(db: "DB", findings: list) -> list[f.Repair]:
    if not findings:
        return []
    out: list[f.Repair] = []
    contexts = gccontext.Contexts(db._collectors)
    try:
        with db._turnstile.exclusive(), db.wlock.exclusive():  # as a collection holds writers off
            with db.view() as tx:
                try:
                    marker = gccontext.marking(tx, contexts)
                except Corrupted as exc:
                    return [f.Repair(x, "drop", False, f"reachability unknown: {exc}") for x in findings]
            for finding in findings:
                packed = node_of(finding)
                if marker.is_reachable(packed):
                    out.append(_one(finding, "drop", _raiser("a root reaches it: left, reported as lost")))
                    continue

                def drop(finding: f.Finding = finding) -> str:
                    # writes of their own (writers are held off), journaled for a concurrent collection
                    if finding.kind == f.ORPHAN_NODE:
                        with db._internal_update() as tx:
                            return _drop_entry(tx, finding, readable=True)
                    if finding.store == "content":
                        with db._internal_update() as tx:
                            return _drop_blob_record(db, tx, finding)
                    return _drop_snapshot(db, finding, db._internal_update)

                out.append(_one(finding, "drop", drop))
    finally:
        contexts.cancel()
    return out


def _raiser(message: str) -> Callable[[], str]:
    def fail() -> str:
        raise _Skip(message)
    return fail


def _drop_blob_record(db: "DB", tx: "Transaction", finding: f.Finding) -> str:
    from ..content.store import remove_blob_for_gc

    ns, digest = finding.namespace, finding.key
    if tx.kv.get(schema.T_OBJECTS, schema.object_key(ns, schema.K_BLOB, digest)) is None:
        raise _Skip("the record is gone")
    if db.content_store.exists(digest):
        raise _Skip("the blob is there")
    remove_blob_for_gc(tx, ns, digest)
    return "deleted the content record (its blob is gone and no root reaches it)"


def _drop_snapshot(db: "DB", finding: f.Finding, update: Callable[[], Any]) -> str:
    from ..snapshots.store import remove_for_gc

    ns, name = finding.namespace, finding.store.partition("/")[2]
    with db.view() as tx:
        raw = tx.kv.get(schema.T_OBJECTS, schema.object_key(ns, schema.K_SNAPSHOT, name, finding.key))
        if raw is None:
            raise _Skip("the record is gone")
        if not _data_gone(db, name, tables._checked(schema.K_SNAPSHOT, raw)):
            raise _Skip("its backend snapshot and directory are there")
        order = _subtree(tx, ns, name, finding.key)
    for key in order:
        with update() as tx:
            remove_for_gc(tx, ns, f"{name}/{key}")
    more = f" and {len(order) - 1} descendant(s)" if len(order) > 1 else ""
    return f"deleted the snapshot record{more} (its data is gone and no root reaches it)"


def _data_gone(db: "DB", name: str, record: dict) -> bool:
    backend = db.snapshotters.get(db.local_snapshotter(name) or name)
    if backend is None:
        return False
    sid = backend.snapshot_id(record["b"])
    return sid is None or not os.path.isdir(backend.snapshot_dir(sid))


def _subtree(tx: "Transaction", ns: str, name: str, key: str) -> list[str]:
    """`key` and every snapshot below it, children before parents (through the child links)."""
    order: list[str] = []
    stack = [(key, False)]
    while stack:
        current, expanded = stack.pop()
        if expanded:
            order.append(current)
            continue
        stack.append((current, True))
        raw = tx.kv.get(schema.T_OBJECTS, schema.object_key(ns, schema.K_SNAPSHOT, name, current))
        if raw is None:
            continue
        prefix = schema.object_prefix(ns, schema.K_SNAPSHOT_CHILD, name, str(schema.unpack(raw)["i"]))
        stack.extend((schema.text(k[len(prefix):]), False) for k, _ in tx.kv.scan(schema.T_OBJECTS, prefix))
    return order


# -- pruning data no record owns ------------------------------------------------------------------------


def _backend(finding: f.Finding) -> Optional[str]:
    """The snapshotter whose data a finding is about; None for the content store."""
    return finding.store.partition("/")[2] if finding.store.startswith("snapshots/") else None


def _prune(db: "DB", findings: list, dropped: set) -> list[f.Repair]:
    """Run the cleanups of the backends `findings` are about and of those whose records were
    `dropped` (what the drops left is deleted too, so a second check finds nothing to prune)."""
    from ..content.store import collect_backend as clean_content
    from ..snapshots.store import collect_backend as clean_snapshots

    out: list[f.Repair] = []
    groups: dict[Optional[str], list] = {name: [] for name in dropped}
    for finding in findings:
        groups.setdefault(_backend(finding), []).append(finding)
    for name, items in sorted(groups.items(), key=lambda kv: kv[0] or ""):
        if name is not None:
            name = db.local_snapshotter(name) or name  # findings name the stored snapshotter
        backend = db.content_store if name is None else db.snapshotters.get(name)
        what = "content store" if name is None else f"snapshotter {name!r}"
        errors: list[str] = []
        reason = ownership.refusal(backend, what, db.identity) if backend is not None else f"no {what}"
        if reason is None:
            try:
                if name is None:
                    clean_content(db, Freed(), Freed(), errors, [])
                else:
                    clean_snapshots(db, name, Freed(), errors)
            except Error as exc:
                errors.append(str(exc))
        for finding in items:
            gone = not os.path.lexists(finding.path) if finding.path else False
            message = "deleted" if gone else (reason or "; ".join(errors) or "still there (in use, or too young)")
            out.append(_one(finding, "prune", _raiser(message) if not gone else (lambda message=message: message)))
    return out
