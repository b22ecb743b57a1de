"""The on-disk schema, described in one place.

Tables (LMDB named databases) of the metadata environment ``root/meta``:

``meta``
    ``schema`` → ``b"v1"``; ``version`` → the db version (Go varint);
    ``dirty\\0content`` and ``dirty\\0snapshotter\\0<name>`` → ``b""`` while
    a backend has deletions the garbage collector has not cleaned yet;
    ``seq\\0<name>`` → a varint counter (`Transaction.next_sequence`);
    ``gc\\0active`` → the marker of a concurrent collection and
    ``gc\\0journal\\0<round><node key>`` → ``b""``, the nodes writers changed
    meanwhile (`cargohold.gc.journal`).
``namespaces``
    ``<ns>`` → record ``{"labels": {...}, "created": ns}``.
``objects``
    one record (msgpack map) per object, keyed ``<ns>\\0<kind>\\0<id>[\\0<sub>...]``
    so that a prefix scan lists a namespace, a kind, or a snapshotter:

    ===================  ==============================================
    kind                 key parts after the kind
    ===================  ==============================================
    ``image``            image name
    ``container``        container id
    ``sandbox``          sandbox id
    ``lease``            lease id
    ``blob``             digest (content committed in the namespace)
    ``ingest``           ingest ref
    ``snapshot``         snapshotter name, snapshot key
    ``snapchild``        snapshotter name, parent's id (decimal), child
                         key; value ``b""``: the parent's children
    ===================  ==============================================

    Records (msgpack maps; ``c``/``u``: created/updated, int ns; ``l``: labels,
    never with empty values; ``x``: extensions, name → msgpack value):

    ===================  ==============================================
    kind                 record
    ===================  ==============================================
    ``image``            ``t``: target {``m`` media type, ``d`` digest,
                         ``s`` size, ``a`` annotations}, ``l``, ``c``, ``u``
    ``container``        ``r`` runtime name, ``o`` runtime options, ``s``
                         spec (bytes), ``sn`` snapshotter, ``k`` snapshot
                         key, ``i`` image, ``sb`` sandbox id, ``l``, ``x``,
                         ``c``, ``u``
    ``sandbox``          ``r``, ``o``, ``s`` as for containers, ``sx``
                         sandboxer, ``l``, ``x``, ``c``, ``u``
    ``lease``            ``l``, ``c`` (its resources are in ``leaseres``)
    ``snapshot``         ``i`` id, ``b`` backend key ``<ns>/<i>/<key>``,
                         ``p`` parent key, ``pi`` parent's id (0: none),
                         ``k`` kind, ``l``, ``c``, ``u`` (the backends'
                         own metastores: `cargohold.snapshots.storage`)
    ``blob``             ``s`` size, ``l``, ``c``, ``u``
    ``ingest``           ``b`` backend ingest ref, ``d`` expected digest
                         (or ""), ``sh`` shared (commits the stored ``d``
                         without its bytes), ``s`` size (total), ``e``
                         expiry ns (None when leased), ``c``, ``u``
    ===================  ==============================================
``gc``
    the garbage collector's node table: one entry per collectible object and
    per root holder (container, sandbox), keyed by the packed node key, whose
    value carries its root flags and outgoing edges (see `cargohold.gc.index`).
    It is written in the same transaction as the object it describes.
``leaseres``
    lease resources, keyed ``<ns>\\0<lease>\\0<type byte><node key>``, value ``b""``.
``snapshotters``
    the records of the snapshot backends the database opened, keyed
    ``<snapshotter>\\0<table letter><backend key>``: each backend's own tables
    (`cargohold.snapshots.storage`) as key ranges, so that its writes commit
    with the metadata transaction (`cargohold.snapshots.metastore`).

Names and ids never contain NUL (validated), so NUL separates key parts.
Timestamps are integer nanoseconds since the epoch, UTC.
"""

from __future__ import annotations

from typing import Any

import msgpack

from ._fallback_msgrecords import msgpack_pack
from ._keys import object_key, pack_node, pack_record, unpack_record
from .errors import Corrupted, InvalidArgument
from .model import Node, ResourceType

SCHEMA = b"v1"

T_META = "meta"
T_NAMESPACES = "namespaces"
T_OBJECTS = "objects"
T_GC = "gc"
T_LEASERES = "leaseres"
T_SNAPSHOTTERS = "snapshotters"
TABLES = (T_META, T_NAMESPACES, T_OBJECTS, T_GC, T_LEASERES, T_SNAPSHOTTERS)

K_IMAGE = b"image"
K_CONTAINER = b"container"
K_SANDBOX = b"sandbox"
K_LEASE = b"lease"
K_BLOB = b"blob"
K_INGEST = b"ingest"
K_SNAPSHOT = b"snapshot"
K_SNAPSHOT_CHILD = b"snapchild"

DATA_KINDS = (K_IMAGE, K_BLOB, K_CONTAINER, K_SNAPSHOT, K_SANDBOX)
"""Kinds whose presence makes a namespace non-empty (it cannot be deleted)."""

META_SCHEMA = b"schema"
META_VERSION = b"version"
META_IDENTITY = b"identity"
"""The database's random identity (32 hex digits), written once: backends record their owner by it."""
META_DIRTY_CONTENT = b"dirty\x00content"
META_DIRTY_SNAPSHOTTER = b"dirty\x00snapshotter\x00"
META_SEQUENCE = b"seq\x00"
META_GC_ACTIVE = b"gc\x00active"
META_GC_JOURNAL = b"gc\x00journal\x00"

SEP = b"\x00"

# `object_key(ns, kind, *parts)`, the key of one object record (or, with fewer parts, the prefix
# of a group), and `pack_node(rtype, ns, key)`, the packed node key (one type byte, the namespace,
# NUL, the key), are built on every write: they come from the compiled core (`_ext/keys.pxi`).


def _enc(part: str) -> bytes:
    try:
        return part.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{part!r} is not valid Unicode text") from None


def ns_prefix(ns: str) -> bytes:
    """Prefix of every `objects` and `leaseres` key of a namespace."""
    return _enc(ns) + SEP


def object_prefix(ns: str, kind: bytes = b"", *parts: str) -> bytes:
    """Prefix that lists a namespace, a kind in it, or a group inside a kind."""
    if not kind:
        return ns_prefix(ns)
    return object_key(ns, kind, *parts) + SEP


def text(raw: bytes, what: str = "key") -> str:
    """Decode stored UTF-8; damaged bytes raise Corrupted."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Corrupted(f"damaged {what} {raw[:80]!r} in the metadata database") from None


def split_object_key(key: bytes) -> list[str]:
    """[ns, kind, part...] of an object key."""
    return [text(p) for p in key.split(SEP)]


def node_prefix(rtype: int, ns: str) -> bytes:
    return bytes((rtype,)) + _enc(ns) + SEP


def unpack_node(packed: bytes) -> Node:
    ns, _, key = packed[1:].partition(SEP)
    rtype = packed[0]
    try:
        rtype = ResourceType(rtype)
    except ValueError:
        pass
    return Node(rtype, text(ns, "namespace"), text(key, "node key"))


def lease_resource_key(ns: str, lease: str, rtype: int | None = None, key: str = "") -> bytes:
    """Key of one lease resource row (or, without rtype, the prefix of the lease's rows)."""
    prefix = _enc(ns) + SEP + _enc(lease) + SEP
    return prefix if rtype is None else prefix + bytes((rtype,)) + _enc(key)


def dirty_snapshotter_key(name: str) -> bytes:
    return META_DIRTY_SNAPSHOTTER + _enc(name)


def pack(record: Any) -> bytes:
    """Encode a record (msgpack): ``msgpack.packb(record, use_bin_type=True)``'s bytes, from the
    compiled core for a record of the plain form (`cargohold._fallback_msgrecords`)."""
    data = pack_record(record)
    return msgpack_pack(record) if data is None else data


def unpack(data: bytes, what: str = "record") -> Any:
    """Decode a record; damaged bytes raise Corrupted, never a raw msgpack error."""
    value = unpack_record(data)
    if value is not None:
        return value
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated classes
        raise Corrupted(f"damaged {what} in the metadata database: {exc}") from None
