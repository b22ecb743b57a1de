"""The garbage collector's node table, kept by the stores.

Every collectible object (content, snapshot, image, lease, ingest) and every
root holder (container, sandbox) has one entry in table ``gc``, written in the
same transaction as its record. The key is the packed node key
(`schema.pack_node`); the value says whether the node is a root and lists
its outgoing edges, so the mark phase reads one table and decodes no record.

Value layout (little endian)::

    u8 flags                      ROOT, EXPIRES, FLAT, HIDDEN, USEDAT
    [i64 expire]                  if EXPIRES: a root only until this time (ns)
    [u8 n, n * i64 usedat]        if USEDAT: gc.cond.value-usedat timestamps
    edge*                         until the end:
      u8 kind, u16 len, target    STRONG, REF, BREF
      ... then u8 op, i64 dur     COND (op is '<' or '>')
      u8 kind, u16 len, suffix, u16 len, value     LABEL (collector reference)

Edge kinds:

* STRONG: followed even when the node is reached through a flat lease, which
  then passes flatness on (snapshot → parent, image → target, container →
  snapshot, ingest → expected content).
* REF: a label reference, not followed from a flat node.
* BREF: a back reference, an edge *from* the target *to* this node.
* COND: a conditional reference to a snapshot, live while the snapshot's
  usedat timestamp satisfies ``now - usedat <op> dur``.
* LABEL: ``containerd.io/gc.ref.<suffix>`` = value, resolved at mark time to a
  node of the collector whose reference label matches the suffix.

Times (expire, usedat) are saturated to the int64 range (`timeutil.saturate`):
a clock inside it compares with them as Go compares the real times.

Lease resources live in table ``leaseres`` (``<ns>\\0<lease>\\0<type><key>``),
one row each, so adding one never rewrites the lease.

Every write of this table and of ``leaseres`` goes through the writers below,
which also journal the node for a concurrent collection (`cargohold.gc.journal`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional

from .. import schema
from ..errors import Corrupted, InvalidArgument, Unsupported
from ..model import RESOURCE_MAX, Resource, ResourceType, snapshotter_name
from ..timeutil import saturate
from . import journal
from . import labels as gclabels

F_ROOT = 0x01
F_EXPIRES = 0x02
F_FLAT = 0x04
F_HIDDEN = 0x08
F_USEDAT = 0x10

E_STRONG = 1
E_REF = 2
E_BREF = 3
E_COND = 4
E_LABEL = 5

SANDBOX = RESOURCE_MAX
"""Internal node type of sandboxes: root holders that are not resources."""

_I64 = struct.Struct("<q")
_U16 = struct.Struct("<H")


def _chunk(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise InvalidArgument(f"reference of {len(data)} bytes is too long")
    return _U16.pack(len(data)) + data


def encode(*, root: bool = False, expire: Optional[int] = None, flat: bool = False,
           hidden: bool = False, usedat: Iterable[int] = (), strong: Iterable[bytes] = (),
           refs: Optional[gclabels.LabelRefs] = None) -> bytes:
    """The table value of one node."""
    usedat = [saturate(t) for t in usedat][:255]
    flags = ((F_ROOT if root else 0) | (F_EXPIRES if expire is not None else 0)
             | (F_FLAT if flat else 0) | (F_HIDDEN if hidden else 0) | (F_USEDAT if usedat else 0))
    out = [bytes((flags,))]
    if expire is not None:
        out.append(_I64.pack(saturate(expire)))
    if usedat:
        out.append(bytes((len(usedat),)))
        out.extend(_I64.pack(t) for t in usedat)
    for target in strong:
        out.append(bytes((E_STRONG,)) + _chunk(target))
    if refs is not None:
        for target in refs.refs:
            out.append(bytes((E_REF,)) + _chunk(target))
        for target in refs.brefs:
            out.append(bytes((E_BREF,)) + _chunk(target))
        for target, op, duration in refs.conds:
            out.append(bytes((E_COND,)) + _chunk(target) + op.encode() + _I64.pack(duration))
        for suffix, value in refs.collector:
            out.append(bytes((E_LABEL,)) + _chunk(suffix.encode()) + _chunk(value.encode()))
    return b"".join(out)


_EDGE_HEAD = struct.Struct("<BH")
_ROOT_ONLY = bytes((F_ROOT,))
_NO_FLAGS = bytes((0,))


def strong_edge(target: bytes) -> bytes:
    """One STRONG edge as `encode` writes it: appended to an entry without flags' payload
    (no expiry, no usedat) it gives the entry with that edge after its own."""
    if len(target) > 0xFFFF:
        raise InvalidArgument(f"reference of {len(target)} bytes is too long")
    return _EDGE_HEAD.pack(E_STRONG, len(target)) + target


@dataclass
class Entry:
    """A decoded node-table value."""

    flags: int
    expire: Optional[int] = None
    usedat: list = field(default_factory=list)
    edges: list = field(default_factory=list)
    """(kind, target bytes, extra): extra is (op, dur) for COND, the value bytes for LABEL."""


def decode(value: bytes) -> Entry:
    """Parse a node-table value (the pure-Python reader; the mark phase has its own)."""
    try:
        entry = Entry(value[0])
        pos = 1
        if entry.flags & F_EXPIRES:
            entry.expire = _I64.unpack_from(value, pos)[0]
            pos += 8
        if entry.flags & F_USEDAT:
            count = value[pos]
            pos += 1
            entry.usedat = [_I64.unpack_from(value, pos + 8 * i)[0] for i in range(count)]
            pos += 8 * count
        while pos < len(value):
            kind = value[pos]
            size = _U16.unpack_from(value, pos + 1)[0]
            target = bytes(value[pos + 3:pos + 3 + size])
            if len(target) != size:
                raise ValueError("truncated edge")
            pos += 3 + size
            extra = None
            if kind == E_COND:
                extra = (chr(value[pos]), _I64.unpack_from(value, pos + 1)[0])
                pos += 9
            elif kind == E_LABEL:
                vsize = _U16.unpack_from(value, pos)[0]
                extra = bytes(value[pos + 2:pos + 2 + vsize])
                pos += 2 + vsize
            elif kind not in (E_STRONG, E_REF, E_BREF):
                raise ValueError(f"unknown edge kind {kind}")
            entry.edges.append((kind, target, extra))
        return entry
    except (IndexError, struct.error, ValueError) as exc:
        raise Corrupted(f"damaged garbage-collection entry: {exc}") from None


def reencode(entry: Entry) -> bytes:
    """The table value of a decoded entry: ``reencode(decode(v)) == v``."""
    out = [bytes((entry.flags,))]
    if entry.flags & F_EXPIRES:
        out.append(_I64.pack(entry.expire))
    if entry.flags & F_USEDAT:
        out.append(bytes((len(entry.usedat),)))
        out.extend(_I64.pack(t) for t in entry.usedat)
    for kind, target, extra in entry.edges:
        out.append(bytes((kind,)) + _chunk(target))
        if kind == E_COND:
            out.append(extra[0].encode() + _I64.pack(extra[1]))
        elif kind == E_LABEL:
            out.append(_chunk(extra))
    return b"".join(out)


def rename_targets(value: bytes, rename) -> Optional[bytes]:
    """`value` with every edge's target node key passed through ``rename(key) -> key | None``
    (None keeps it), or None when nothing changed. Collector label edges name no node: kept."""
    entry = decode(value)
    changed = False
    for i, (kind, target, extra) in enumerate(entry.edges):
        if kind != E_LABEL:
            new = rename(target)
            if new is not None:
                entry.edges[i] = (kind, new, extra)
                changed = True
    return reencode(entry) if changed else None


def _put(tx: "journal.Writing", rtype: int, ns: str, key: str, value: bytes) -> None:
    put_entry(tx, schema.pack_node(rtype, ns, key), value)


def put_entry(tx: "journal.Writing", packed: bytes, value: bytes) -> None:
    """Write the entry of the node with packed key `packed` (a store that packed the key itself)."""
    tx.kv.put(schema.T_GC, packed, value)
    journal.record(tx, packed)


def remove(tx: "journal.Writing", rtype: int, ns: str, key: str) -> None:
    """Drop a node's entry (its record is being deleted)."""
    remove_entry(tx, schema.pack_node(rtype, ns, key))


def remove_entry(tx: "journal.Writing", packed: bytes) -> None:
    """Drop the entry of the node with packed key `packed` (a store that packed the key itself)."""
    if tx.kv.delete(schema.T_GC, packed):
        journal.record(tx, packed)


# -- entries (one node's table value; the rules of cargohold and containerd 2.x) ------------
#
# `parse` turns labels into references: `gc.labels.parse` here; `cargohold.containerd.plan`
# passes containerd 1.x's narrower reading of the same labels.


def content_entry(ns: str, labels: Optional[Mapping[str, str]], parse=gclabels.parse) -> bytes:
    refs = parse(ns, labels)
    return encode(root=refs.root, refs=refs)


def snapshot_entry(ns: str, snapshotter: str, parent: str, labels: Optional[Mapping[str, str]],
                   parse=gclabels.parse) -> bytes:
    if not labels:  # the common case, as `encode` would write it: no flags, the parent's edge
        return _NO_FLAGS + strong_edge(schema.pack_node(ResourceType.SNAPSHOT, ns, f"{snapshotter}/{parent}")) \
            if parent else _NO_FLAGS
    refs = parse(ns, labels)
    refs.conds = []
    strong = [schema.pack_node(ResourceType.SNAPSHOT, ns, f"{snapshotter}/{parent}")] if parent else []
    return encode(root=refs.root, usedat=refs.usedat, strong=strong, refs=refs)


def image_entry(ns: str, target_digest: str, labels: Optional[Mapping[str, str]]) -> bytes:
    if not labels and target_digest:  # the common case, as `encode` would write it
        return _ROOT_ONLY + strong_edge(schema.pack_node(ResourceType.CONTENT, ns, target_digest))
    refs = gclabels.parse(ns, labels)
    strong = [schema.pack_node(ResourceType.CONTENT, ns, target_digest)] if target_digest else []
    return encode(root=True, expire=gclabels.expiry(labels), strong=strong, refs=refs)


def container_entry(ns: str, snapshotter: str, snapshot_key: str, labels: Optional[Mapping[str, str]],
                    parse=gclabels.parse) -> bytes:
    refs = parse(ns, labels)
    refs.conds = []
    strong = ([schema.pack_node(ResourceType.SNAPSHOT, ns, f"{snapshotter}/{snapshot_key}")]
              if snapshotter else [])
    return encode(root=True, hidden=True, strong=strong, refs=refs)


def sandbox_entry(ns: str, labels: Optional[Mapping[str, str]], parse=gclabels.parse) -> bytes:
    refs = parse(ns, labels)
    refs.conds, refs.brefs = [], []
    return encode(root=True, hidden=True, refs=refs)


def lease_entry(labels: Optional[Mapping[str, str]]) -> bytes:
    return encode(root=True, expire=gclabels.expiry(labels), flat=gclabels.is_flat(labels))


def ingest_entry(ns: str, expire: Optional[int], expected: str) -> bytes:
    """An ingest is a root until `expire`; a leased ingest has none and lives by its lease."""
    strong = [schema.pack_node(ResourceType.CONTENT, ns, expected)] if expected else []
    return encode(root=expire is not None, expire=expire, strong=strong)


# -- writers used by the stores ---------------------------------------------------------


def index_content(tx: "journal.Writing", ns: str, digest: str, labels: Optional[Mapping[str, str]]) -> None:
    _put(tx, ResourceType.CONTENT, ns, digest, content_entry(ns, labels))


def index_snapshot(tx: "journal.Writing", ns: str, snapshotter: str, key: str, parent: str,
                   labels: Optional[Mapping[str, str]]) -> None:
    _put(tx, ResourceType.SNAPSHOT, ns, f"{snapshotter}/{key}", snapshot_entry(ns, snapshotter, parent, labels))


def index_image(tx: "journal.Writing", ns: str, name: str, target_digest: str,
                labels: Optional[Mapping[str, str]]) -> None:
    _put(tx, ResourceType.IMAGE, ns, name, image_entry(ns, target_digest, labels))


def index_container(tx: "journal.Writing", ns: str, container_id: str, snapshotter: str,
                    snapshot_key: str, labels: Optional[Mapping[str, str]]) -> None:
    _put(tx, ResourceType.CONTAINER, ns, container_id, container_entry(ns, snapshotter, snapshot_key, labels))


def index_sandbox(tx: "journal.Writing", ns: str, sandbox_id: str, labels: Optional[Mapping[str, str]]) -> None:
    _put(tx, SANDBOX, ns, sandbox_id, sandbox_entry(ns, labels))


def index_lease(tx: "journal.Writing", ns: str, lease_id: str, labels: Optional[Mapping[str, str]]) -> None:
    _put(tx, ResourceType.LEASE, ns, lease_id, lease_entry(labels))


def index_ingest(tx: "journal.Writing", ns: str, ref: str, expire: Optional[int], expected: str) -> None:
    _put(tx, ResourceType.INGEST, ns, ref, ingest_entry(ns, expire, expected))


def rewrite(tx: "Transaction", packed: bytes, value: bytes) -> None:
    """Put back one node's entry, given by its packed key (fsck's repair of the table)."""
    node = schema.unpack_node(packed)
    _put(tx, node.type, node.namespace, node.key, value)


def discard(tx: "Transaction", packed: bytes) -> None:
    """Drop one node's entry, given by its packed key (fsck's repair of an entry without a record)."""
    node = schema.unpack_node(packed)
    remove(tx, node.type, node.namespace, node.key)


# -- lease resources ------------------------------------------------------------------------

_SNAPSHOTS = "snapshots/"


def resource_ref(resource: Resource) -> tuple[int, str]:
    """(node type, node key) of a lease resource; Unsupported for an unknown resource type."""
    rtype = resource.type
    if rtype == "content":
        return ResourceType.CONTENT, resource.id
    if rtype == "ingests":
        return ResourceType.INGEST, resource.id
    if rtype == "images":
        return ResourceType.IMAGE, resource.id
    if rtype.startswith(_SNAPSHOTS) and len(rtype) > len(_SNAPSHOTS):
        return ResourceType.SNAPSHOT, f"{snapshotter_name(rtype[len(_SNAPSHOTS):])}/{resource.id}"
    raise Unsupported(f"unsupported lease resource type {rtype!r}")


def ref_resource(rtype: int, key: str) -> Resource:
    """The Resource a (node type, node key) of a lease row stands for."""
    if rtype == ResourceType.CONTENT:
        return Resource(key, "content")
    if rtype == ResourceType.INGEST:
        return Resource(key, "ingests")
    if rtype == ResourceType.IMAGE:
        return Resource(key, "images")
    if rtype == ResourceType.SNAPSHOT:
        snapshotter, _, name = key.partition("/")
        return Resource(name, f"{_SNAPSHOTS}{snapshotter}")
    raise Corrupted(f"damaged lease resource entry of type {rtype}")


def _lease_key(ns: str, lease_id: str, resource: Resource) -> tuple[bytes, bytes]:
    """(row key, packed node key of the resource)."""
    rtype, key = resource_ref(resource)
    return schema.lease_resource_key(ns, lease_id, rtype, key), schema.pack_node(rtype, ns, key)


def _row_resource(row: bytes) -> bytes:
    """The packed node key a lease row ``<ns>\\0<lease>\\0<type><key>`` names."""
    ns_end = row.index(0)
    lease_end = row.index(0, ns_end + 1)
    return row[lease_end + 1:lease_end + 2] + row[:ns_end + 1] + row[lease_end + 2:]


def lease_add(tx: "journal.Writing", ns: str, lease_id: str, resource: Resource) -> None:
    """Record a lease resource (the lease record must exist: the lease store checks)."""
    row, packed = _lease_key(ns, lease_id, resource)
    tx.kv.put(schema.T_LEASERES, row, b"")
    journal.record(tx, packed)


def lease_remove(tx: "journal.Writing", ns: str, lease_id: str, resource: Resource) -> bool:
    row, packed = _lease_key(ns, lease_id, resource)
    if not tx.kv.delete(schema.T_LEASERES, row):
        return False
    journal.record(tx, packed)
    return True


def lease_resources(tx: "journal.Writing", ns: str, lease_id: str) -> list[Resource]:
    prefix = schema.lease_resource_key(ns, lease_id)
    return [ref_resource(key[len(prefix)], schema.text(key[len(prefix) + 1:]))
            for key, _ in tx.kv.scan(schema.T_LEASERES, prefix)]


def lease_drop(tx: "journal.Writing", ns: str, lease_id: str) -> int:
    """Forget every resource of a lease (the lease is being deleted)."""
    rows = tx.kv.keys(schema.T_LEASERES, schema.lease_resource_key(ns, lease_id))
    for row in rows:
        tx.kv.delete(schema.T_LEASERES, row)
        journal.record(tx, _row_resource(row))
    return len(rows)
