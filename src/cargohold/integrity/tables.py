"""fsck's pass over the metadata tables: every record against its node-table entry, snapshot
records against their parents, child links and backend snapshots.

The hot path is `cargohold._native.TableCheck` (compiled, with a pure-Python twin): it is
fed one *group* at a time (the records of one kind in one namespace; snapshots per
snapshotter) in key order, together with the node-table rows of the group's node type, also
in key order. Both tables order a group's keys alike, and the groups are visited in the node
table's order, so every row of both tables is read once, in order, with no table held in
memory. What a record's entry must be comes from `entry_of`, which uses the node table's own
entry functions (`cargohold.gc.index`); the compiled twin computes the common case (labels
without ``containerd.io/gc.`` keys) itself and asks `entry_of` for everything else.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from .. import schema
from .._native import TableCheck
from ..errors import Corrupted, InvalidArgument
from ..gc import index
from ..model import ResourceType

GROUP_KINDS = (
    (ResourceType.CONTENT, schema.K_BLOB),
    (ResourceType.SNAPSHOT, schema.K_SNAPSHOT),
    (ResourceType.CONTAINER, schema.K_CONTAINER),
    (ResourceType.IMAGE, schema.K_IMAGE),
    (ResourceType.LEASE, schema.K_LEASE),
    (ResourceType.INGEST, schema.K_INGEST),
    (index.SANDBOX, schema.K_SANDBOX),
)
"""Node type and record kind of every kind that has a node, in node-type order."""

KNOWN_KINDS = frozenset(kind for _, kind in GROUP_KINDS) | {schema.K_SNAPSHOT_CHILD}

_FIELDS = {
    schema.K_BLOB: {"s": int, "l": dict, "c": int, "u": int},
    schema.K_SNAPSHOT: {"i": int, "b": str, "p": str, "pi": int, "k": int, "l": dict, "c": int, "u": int},
    schema.K_IMAGE: {"t": dict, "l": dict, "c": int, "u": int},
    schema.K_CONTAINER: {"r": str, "sn": str, "k": str, "i": str, "l": dict, "sb": str, "c": int, "u": int},
    schema.K_SANDBOX: {"r": str, "sx": str, "l": dict, "c": int, "u": int},
    schema.K_LEASE: {"l": dict, "c": int},
    schema.K_INGEST: {"b": str, "d": str, "sh": bool, "s": int, "c": int, "u": int},
}
"""The fields each record needs, and their types (`cargohold.schema` lists the records)."""


_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1


def _checked(kind: bytes, raw: bytes) -> dict:
    record = schema.unpack(raw, f"{kind.decode()} record")
    if not isinstance(record, dict):
        raise Corrupted(f"damaged {kind.decode()} record: not a map")
    for name, typ in _FIELDS[kind].items():
        value = record.get(name)
        if not isinstance(value, typ) or (typ is int and (isinstance(value, bool) or not _I64_MIN <= value <= _I64_MAX)):
            raise Corrupted(f"damaged {kind.decode()} record: field {name!r} is {value!r}")
    labels = record.get("l", {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise Corrupted(f"damaged {kind.decode()} record: labels that are not text")
    if kind == schema.K_IMAGE and not isinstance(record["t"].get("d"), str):
        raise Corrupted("damaged image record: its target has no digest")
    if kind == schema.K_INGEST and not (record["e"] is None or isinstance(record["e"], int)):
        raise Corrupted(f"damaged ingest record: expiry {record['e']!r}")
    return record


def entry_of(kind: bytes, ns: str, parts: list, raw: bytes) -> tuple[bytes, dict]:
    """(the node-table entry the record must have, the decoded record); Corrupted for a damaged record."""
    record = _checked(kind, raw)
    try:
        return _entry(kind, ns, parts, record), record
    except InvalidArgument as exc:  # a reference too long for an entry: only a damaged record holds one
        raise Corrupted(f"damaged {kind.decode()} record: {exc}") from None


def _entry(kind: bytes, ns: str, parts: list, record: dict) -> bytes:
    labels = record.get("l")
    if kind == schema.K_BLOB:
        return index.content_entry(ns, labels)
    if kind == schema.K_SNAPSHOT:
        return index.snapshot_entry(ns, parts[0], record["p"], labels)
    if kind == schema.K_IMAGE:
        return index.image_entry(ns, record["t"]["d"], labels)
    if kind == schema.K_CONTAINER:
        return index.container_entry(ns, record["sn"] if record["k"] else "", record["k"], labels)
    if kind == schema.K_SANDBOX:
        return index.sandbox_entry(ns, labels)
    if kind == schema.K_LEASE:
        return index.lease_entry(labels)
    return index.ingest_entry(ns, record["e"], record["d"] if record["sh"] else "")


def backend_of(raw: bytes) -> tuple[int, int, bytes]:
    """(id, kind, parent's key as bytes) of a backend snapshot's record (`cargohold.snapshots.storage`)."""
    record = schema.unpack(raw, "backend snapshot")
    if not isinstance(record, dict):
        raise Corrupted("damaged backend snapshot: not a map")
    sid, kind, parent = record.get("id"), record.get("kind"), record.get("parent")
    if not (isinstance(sid, int) and isinstance(kind, int) and isinstance(parent, str)) or isinstance(sid, bool) \
            or isinstance(kind, bool) or not _I64_MIN <= sid <= _I64_MAX or not _I64_MIN <= kind <= _I64_MAX:
        raise Corrupted(f"damaged backend snapshot: id {sid!r}, kind {kind!r}, parent {parent!r}")
    return sid, kind, parent.encode()


def new_check(problems: list, entry: Callable = entry_of) -> TableCheck:
    """A table pass that appends its problems to `problems`."""
    return TableCheck(entry, backend_of, problems)


def distinct(kv: Any, table: str, prefix: bytes = b"") -> list[bytes]:
    """The distinct key parts (up to the next NUL) that follow `prefix` in `table`, in order:
    one seek per part, however many keys each has."""
    found: list[bytes] = []
    start = prefix
    while True:
        row = next(kv.scan(table, prefix, start=start), None)
        if row is None:
            return found
        part = row[0][len(prefix):].split(schema.SEP, 1)[0]
        found.append(part)
        start = prefix + part + b"\x01"


class Scan:
    """The outcome of one pass: what the other checks need besides the problems."""

    def __init__(self, check: TableCheck) -> None:
        self.check = check
        self.problems: list[tuple] = check.problems
        self.namespaces: list[bytes] = []
        """Every namespace that has records (raw names)."""
        self.blobs: list[tuple] = []
        self.others: list[tuple] = []
        self.max_ids: dict[str, int] = {}
        """The largest id the snapshot records of each snapshotter use."""
        self.records = 0
        self.nodes = 0
        self.matched = 0


def scan(kv: Any, check: TableCheck) -> Scan:
    """Check every record of the objects table against the node table, in transaction `kv`; `check`
    holds the snapshotters' backends (`TableCheck.backend`)."""
    out = Scan(check)
    with kv.translated():
        _scan(kv, check, out)
    out.blobs, out.others = check.blobs, check.others
    out.records, out.matched, out.max_ids = check.records, check.matched, check.max_ids
    out.nodes = kv.count(schema.T_GC)
    return out


def _scan(kv: Any, check: TableCheck, out: Scan) -> None:
    out.namespaces = distinct(kv, schema.T_OBJECTS)
    order = sorted(out.namespaces, key=lambda ns: ns + schema.SEP)
    kinds = {ns: distinct(kv, schema.T_OBJECTS, ns + schema.SEP) for ns in order}
    names: dict[bytes, str] = {}
    for ns in order:
        try:
            names[ns] = schema.text(ns, "namespace")
        except Corrupted:
            out.problems.extend(("damaged-record", key, "its namespace is not UTF-8 text")
                                for key, _ in kv.scan(schema.T_OBJECTS, ns + schema.SEP))
    for ns in order:
        for kind in kinds[ns]:
            if kind not in KNOWN_KINDS and ns in names:
                out.problems.extend(("unknown-record", key)
                                    for key, _ in kv.scan(schema.T_OBJECTS, ns + schema.SEP + kind + schema.SEP))
    types = set(distinct_types(kv))
    for rtype, kind in GROUP_KINDS:
        types.discard(rtype)
        head = bytes((rtype,))
        check.begin_type(head, kv.rows_from(schema.T_GC, head))
        for ns in order:
            if ns not in names or kind not in kinds[ns] and not (
                    kind == schema.K_SNAPSHOT and schema.K_SNAPSHOT_CHILD in kinds[ns]):
                continue
            if kind == schema.K_SNAPSHOT:
                _snapshot_groups(kv, check, names[ns])
            else:
                prefix = schema.object_prefix(names[ns], kind)
                check.rows(kind, int(rtype), names[ns], kv.rows_from(schema.T_OBJECTS, prefix))
        check.end_type()
    for rtype in sorted(types):  # node types no record kind has: every entry is an orphan
        head = bytes((rtype,))
        check.begin_type(head, kv.rows_from(schema.T_GC, head))
        check.end_type()


def distinct_types(kv: Any) -> Iterator[int]:
    """The node types that have entries in the node table."""
    start = b""
    while True:
        row = next(kv.scan(schema.T_GC, start=start), None)
        if row is None:
            return
        yield row[0][0]
        if row[0][0] == 0xFF:
            return
        start = bytes((row[0][0] + 1,))


def _snapshot_groups(kv: Any, check: TableCheck, ns: str) -> None:
    """The snapshot groups of one namespace, in the node table's order (``<snapshotter>/<key>``)."""
    snap = schema.object_prefix(ns, schema.K_SNAPSHOT)
    child = schema.object_prefix(ns, schema.K_SNAPSHOT_CHILD)
    groups = set(distinct(kv, schema.T_OBJECTS, snap)) | set(distinct(kv, schema.T_OBJECTS, child))
    for raw_name in sorted(groups, key=lambda name: name + b"/"):
        name = raw_name.decode("utf-8", "replace")
        check.snapshots(ns, name, kv.rows_from(schema.T_OBJECTS, child + raw_name + schema.SEP, values=False),
                        kv.rows_from(schema.T_OBJECTS, snap + raw_name + schema.SEP))
