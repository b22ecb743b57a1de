"""The records of a snapshot backend (containerd's ``snapshots/storage``).

They know only backend keys, and live where `cargohold.snapshots.metastore`
puts them: in the metadata database, for a backend a `DB` opened (its
writes then commit with the metadata transaction that makes them), or in
the backend's own LMDB environment, ``<backend root>/metadata``. Tables:

==============  ========================================  =====================================
table           key                                       value
==============  ========================================  =====================================
``snapshots``   backend key (UTF-8, at most 511 bytes)    msgpack ``{"id", "kind", "parent",
                                                          "labels", "created", "updated",
                                                          "size", "inodes"}``
``parents``     parent id, child id (two big-endian u64)  child key (the parent's children)
``meta``        ``b"seq"``                                msgpack int: the last id handed out
``commits``     committed snapshot's key                  msgpack ``{"key", "labels",
                                                          "created", "updated"}``: the active
                                                          snapshot it was committed from
==============  ========================================  =====================================

``id`` names the snapshot's directory and never changes, not even on commit;
ids are never reused. ``kind`` is a `Kind` value, ``parent`` the parent's key
("" for none), timestamps are integer ns, ``size``/``inodes`` the usage
measured at commit (0 before).

``commits`` remembers where a committed snapshot came from, written in the
same transaction as a commit made outside any metadata transaction (by a
backend with its own environment, or called directly): the metadata
database then records the commit in a transaction of its own, after the
backend's, and a process that dies between the two leaves a metadata record
naming the active key that the backend no longer has. That entry lets
`cargohold.snapshots.store` put the active snapshot back (`uncommit`); once
the metadata names the committed key, the entry is settled
(`settle_commits`). Removing or uncommitting a snapshot drops its entry. A
commit that joins the metadata transaction needs no entry: both commit or
neither does. Functions take a `cargohold.snapshots.metastore.View`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Mapping, Optional

from .. import fieldpaths, filters, schema
from ..errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from ..kv import MAX_KEY_SIZE
from ..model import Kind, SnapshotInfo, Usage
from ..timeutil import from_ns, to_ns
from ..validation import validate_key

if TYPE_CHECKING:
    from .metastore import View

T_SNAPSHOTS = "snapshots"
T_PARENTS = "parents"
T_META = "meta"
T_COMMITS = "commits"
TABLES = (T_SNAPSHOTS, T_PARENTS, T_META, T_COMMITS)

_SEQ = b"seq"
_ID = struct.Struct(">Q")


@dataclass(frozen=True)
class Snapshot:
    """What a backend needs to lay out and mount one snapshot."""

    id: int
    kind: Kind
    parent_ids: list = field(default_factory=list)
    """Ids of the parent chain, nearest parent first (only the nearest `depth` of them when the
    caller asked for fewer: `create`, `get_snapshot`)."""


def check_key(key: object, what: str = "snapshot key") -> str:
    """A backend key: non-empty text without NUL that fits an LMDB key."""
    return validate_key(key, what, MAX_KEY_SIZE)


def _record(txn: View, key: str) -> Optional[dict]:
    raw = txn.get(T_SNAPSHOTS, key.encode())
    return None if raw is None else schema.unpack(raw, f"backend snapshot {key!r}")


def require(txn: View, key: str) -> dict:
    """The record of `key`; NotFound if there is none."""
    record = _record(txn, key)
    if record is None:
        raise NotFound(f"snapshot {key!r} does not exist")
    return record


def _put(txn: View, key: str, record: dict) -> None:
    txn.put(T_SNAPSHOTS, key.encode(), schema.pack(record))


def _link(parent_id: int, child_id: int) -> bytes:
    return _ID.pack(parent_id) + _ID.pack(child_id)


def _info(key: str, record: dict) -> SnapshotInfo:
    return SnapshotInfo(key, record["parent"], Kind(record["kind"]), record["labels"],
                        from_ns(record["created"]), from_ns(record["updated"]))


def _parent_ids(txn: View, record: dict, depth: Optional[int] = None) -> list:
    """The ids of the parents above `record`, nearest first: all of them, or the nearest `depth`."""
    ids: list = []
    while record["parent"] and (depth is None or len(ids) < depth):
        parent = record["parent"]
        record = _record(txn, parent)
        if record is None:
            raise NotFound(f"parent snapshot {parent!r} does not exist")
        ids.append(record["id"])
    return ids


def _next_id(txn: View) -> int:
    value = sequence(txn) + 1
    txn.put(T_META, _SEQ, schema.pack(value))
    return value


def create(txn: View, kind: Kind, key: str, parent: str, labels: Mapping[str, str], now: int,
           taken: Callable[[int], bool] = lambda snapshot_id: False, depth: Optional[int] = None) -> Snapshot:
    """Record a new active or view snapshot on a committed parent.

    Ids for which `taken` is true (a directory of that name exists: left by a
    creation that never committed, or by a metastore that was lost) are
    skipped, never reused. The result names the whole parent chain, or only
    its nearest `depth` ids (a backend whose layout needs no more reads no more).
    """
    if kind not in (Kind.ACTIVE, Kind.VIEW):
        raise InvalidArgument(f"snapshot kind {kind!s} cannot be created; only Active or View")
    parent_record = None
    if parent:
        parent_record = _record(txn, parent)
        if parent_record is None:
            raise NotFound(f"parent snapshot {parent!r} does not exist")
        if parent_record["kind"] != Kind.COMMITTED:
            raise InvalidArgument(f"parent {parent!r} is not a committed snapshot")
    if _record(txn, key) is not None:
        raise AlreadyExists(f"snapshot {key!r} already exists")
    snapshot_id = _next_id(txn)
    while taken(snapshot_id):
        snapshot_id = _next_id(txn)
    _put(txn, key, {"id": snapshot_id, "kind": int(kind), "parent": parent, "labels": dict(labels),
                    "created": now, "updated": now, "size": 0, "inodes": 0})
    parent_ids = []
    if parent_record is not None:
        txn.put(T_PARENTS, _link(parent_record["id"], snapshot_id), key.encode())
        parent_ids = [parent_record["id"], *_parent_ids(txn, parent_record, None if depth is None else depth - 1)]
    return Snapshot(snapshot_id, kind, parent_ids)


def exists(txn: View, key: str) -> bool:
    return txn.get(T_SNAPSHOTS, key.encode()) is not None


def child_keys(txn: View, key: str) -> set:
    """The keys of the snapshot's children."""
    prefix = _ID.pack(require(txn, key)["id"])
    return {schema.text(raw, "backend snapshot key") for _, raw in txn.scan(T_PARENTS, prefix)}


def get_info(txn: View, key: str) -> tuple[int, SnapshotInfo, Usage]:
    record = require(txn, key)
    return record["id"], _info(key, record), Usage(record["size"], record["inodes"])


def get_snapshot(txn: View, key: str, depth: Optional[int] = None) -> Snapshot:
    """The layout of an active or view snapshot (the ones that can be mounted), with the whole
    parent chain or its nearest `depth` ids."""
    record = require(txn, key)
    kind = Kind(record["kind"])
    if kind not in (Kind.ACTIVE, Kind.VIEW):
        raise FailedPrecondition(f"snapshot {key!r} is {kind!s}: only active snapshots and views have mounts")
    return Snapshot(record["id"], kind, _parent_ids(txn, record, depth))


def update_info(txn: View, info: SnapshotInfo, paths: Iterable[str], now: int) -> SnapshotInfo:
    """Replace labels (``labels``) or single ones (``labels.<key>``); nothing else is mutable."""
    record = require(txn, info.name)
    record["labels"] = fieldpaths.update_labels(record["labels"], info.labels, paths, f"snapshot {info.name!r}")
    record["updated"] = now
    _put(txn, info.name, record)
    return _info(info.name, record)


def remove(txn: View, key: str) -> int:
    """Forget a snapshot without children; returns its id."""
    record = require(txn, key)
    snapshot_id = record["id"]
    if txn.has_prefix(T_PARENTS, _ID.pack(snapshot_id)):
        raise FailedPrecondition(f"cannot remove snapshot {key!r}: it has children")
    if record["parent"]:
        parent = _record(txn, record["parent"])
        if parent is not None:
            txn.delete(T_PARENTS, _link(parent["id"], snapshot_id))
    txn.delete(T_SNAPSHOTS, key.encode())
    txn.delete(T_COMMITS, key.encode())
    return snapshot_id


def commit_active(txn: View, key: str, name: str, usage: Usage, labels: Mapping[str, str], now: int,
                  *, remember: bool = True, record: Optional[dict] = None) -> None:
    """Turn active snapshot `key` into committed snapshot `name`, keeping its id; with
    `remember`, record where it came from (``commits``, see the module docstring). `record` is
    `key`'s, if the caller has just read it in this transaction (`require`)."""
    if _record(txn, name) is not None:
        raise AlreadyExists(f"snapshot {name!r} already exists")
    if record is None:
        record = require(txn, key)
    if record["kind"] != Kind.ACTIVE:
        raise FailedPrecondition(f"snapshot {key!r} is {Kind(record['kind'])!s}, not active: "
                                 "only active snapshots can be committed")
    committed = dict(record, kind=int(Kind.COMMITTED), labels=dict(labels), created=now, updated=now,
                     size=usage.size, inodes=usage.inodes)
    txn.delete(T_SNAPSHOTS, key.encode())
    _put(txn, name, committed)
    _relink(txn, committed, name)
    if remember:
        txn.put(T_COMMITS, name.encode(), schema.pack({"key": key, "labels": record["labels"],
                                                       "created": record["created"], "updated": record["updated"]}))


def uncommit(txn: View, name: str, active: SnapshotInfo) -> None:
    """Undo `commit_active`: committed `name` becomes the active snapshot `active` again."""
    record = require(txn, name)
    if record["kind"] != Kind.COMMITTED:
        raise FailedPrecondition(f"snapshot {name!r} is not committed")
    if txn.has_prefix(T_PARENTS, _ID.pack(record["id"])):
        raise FailedPrecondition(f"cannot revert the commit of {name!r}: it has children")
    restored = dict(record, kind=int(Kind.ACTIVE), labels=dict(active.labels), size=0, inodes=0,
                    created=_ns_or(active.created_at, record["created"]),
                    updated=_ns_or(active.updated_at, record["updated"]))
    txn.delete(T_SNAPSHOTS, name.encode())
    txn.delete(T_COMMITS, name.encode())
    _put(txn, active.name, restored)
    _relink(txn, restored, active.name)


def commit_sources(txn: View) -> dict[str, SnapshotInfo]:
    """Committed key -> the active snapshot it came from, for every commit not yet settled."""
    found = {}
    for raw_key, raw in txn.scan(T_COMMITS):
        name = schema.text(raw_key, "backend snapshot key")
        source = schema.unpack(raw, f"commit source of backend snapshot {name!r}")
        found[name] = SnapshotInfo(source["key"], kind=Kind.ACTIVE, labels=source["labels"],
                                   created_at=from_ns(source["created"]), updated_at=from_ns(source["updated"]))
    return found


def settle_commits(txn: View, names: Iterable[str]) -> None:
    """Forget where these committed snapshots came from: the metadata has recorded their commits."""
    for name in names:
        txn.delete(T_COMMITS, name.encode())


def _ns_or(when, default: int) -> int:
    return default if when is None else to_ns(when)


def _relink(txn: View, record: dict, key: str) -> None:
    if record["parent"]:
        parent = require(txn, record["parent"])
        txn.put(T_PARENTS, _link(parent["id"], record["id"]), key.encode())


def walk(txn: View, *filter_args: str) -> Iterator[SnapshotInfo]:
    """Every snapshot that passes the filters, in key order."""
    matcher = filters.parse(*filter_args)
    for raw_key, raw in txn.scan(T_SNAPSHOTS):
        key = schema.text(raw_key, "backend snapshot key")
        info = _info(key, schema.unpack(raw, f"backend snapshot {key!r}"))
        if matcher.match(adaptor(info)):
            yield info


def sequence(txn: View) -> int:
    """The last id handed out: every id a future creation gets is above it."""
    raw = txn.get(T_META, _SEQ)
    return schema.unpack(raw, "backend sequence") if raw else 0


def ids(txn: View) -> set:
    """The ids of every recorded snapshot (the directories that must stay)."""
    return {schema.unpack(raw, "backend snapshot")["id"] for _, raw in txn.scan(T_SNAPSHOTS)}


_KIND_NAMES = {Kind.ACTIVE: "active", Kind.VIEW: "view", Kind.COMMITTED: "committed"}


def adaptor(info: SnapshotInfo) -> filters.Adaptor:
    """containerd's snapshot filter fields: name, parent, kind, labels.<key>."""

    def lookup(path):
        if not path:
            return "", False
        head = path[0]
        if head == "name":
            return info.name, True
        if head == "parent":
            return info.parent, True
        if head == "kind":
            kind = _KIND_NAMES.get(info.kind)
            return (kind, True) if kind else ("", False)
        if head == "labels":
            return filters.check_map(path[1:], info.labels)
        return "", False

    return lookup
