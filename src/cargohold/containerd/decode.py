"""containerd's metadata records (``metadata/*.go`` readers) as cargohold's data classes.

Every function takes a *tree*: a `cargohold.bolt.Bucket` of the one transaction
`cargohold.bolt.open` read into memory. Decoding is strict where containerd's Go readers silently fall back to zero: a
value that is a bucket where a value belongs, text that is not UTF-8, a malformed
varint, timestamp or protobuf raises `Corrupted` naming the object, so a damaged
file never yields plausible-looking nonsense.

Protobuf ``Any`` fields (container and sandbox specs, runtime options,
extensions): a spec becomes the bytes it wraps (the OCI runtime spec JSON
containerd stores); options and extensions become ``{"type_url": str,
"value": bytes}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator, Optional

from .._native import decode_varint
from ..bolt import Bucket
from ..errors import Corrupted, InvalidArgument
from ..model import Container, Descriptor, Image, Info, Kind, Lease, Resource, RuntimeInfo, Sandbox
from . import gotime
from . import schema as s

Tree = Bucket
EMPTY = Bucket()
"""What an absent bucket reads as."""


def text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Corrupted(f"{what} {raw[:80]!r} is not UTF-8 text") from None


def _name(key: bytes) -> str:
    return key.decode(errors="replace")


def value(tree: Tree, key: bytes, what: str) -> Optional[bytes]:
    """The value under `key` (None if absent); Corrupted if a bucket sits there."""
    found = tree.get(key)
    if found is None and tree.bucket(key) is not None:
        raise Corrupted(f"{what}: {_name(key)!r} is a bucket, not a value")
    return found


def string(tree: Tree, key: bytes, what: str) -> str:
    raw = value(tree, key, what)
    return "" if raw is None else text(raw, f"{what}: {_name(key)}")


def bucket(tree: Tree, key: bytes, what: str) -> Tree:
    """The sub-bucket under `key` (empty if absent); Corrupted if a value sits there."""
    found = tree.bucket(key)
    if found is None:
        if tree.get(key) is not None:
            raise Corrupted(f"{what}: {_name(key)!r} is a value, not a bucket")
        return EMPTY
    return found


def children(tree: Tree, what: str) -> Iterator[tuple[str, Tree]]:
    """(name, sub-bucket) of every sub-bucket, in key order; plain values are skipped, as containerd does."""
    for key, found in tree.buckets():
        yield text(key, f"{what} name"), found


def string_map(tree: Tree, key: bytes, what: str) -> dict:
    """A bucket of labels or annotations as a str → str dict."""
    out = {}
    for k, v in bucket(tree, key, what).items():
        if v is None:
            raise Corrupted(f"{what}: {_name(key)} {k!r} is a bucket, not a value")
        out[text(k, f"{what}: {_name(key)} key")] = text(v, f"{what}: {_name(key)} value")
    return out


def varint(raw: Optional[bytes], what: str) -> int:
    """A Go varint value (0 when absent); Corrupted if malformed."""
    if raw is None:
        return 0
    try:
        result, end = decode_varint(raw)
    except InvalidArgument:
        end = -1
    if end != len(raw):
        raise Corrupted(f"{what} {raw[:20]!r} is not a varint")
    return result


def uvarint(raw: Optional[bytes], what: str) -> int:
    """A Go uvarint value (0 when absent); Corrupted if malformed."""
    if raw is None:
        return 0
    result = shift = 0
    for i, byte in enumerate(raw):
        if i == 10 or (i == 9 and byte > 1):
            break
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            if i == len(raw) - 1:
                return result
            break
    raise Corrupted(f"{what} {raw[:20]!r} is not a uvarint")


def moment(tree: Tree, key: bytes, what: str) -> Optional[gotime.GoTime]:
    raw = value(tree, key, what)
    return None if raw is None else gotime.decode_binary(raw, f"{what}: {key.decode()}")


def timestamp(tree: Tree, key: bytes, what: str) -> Optional[datetime]:
    found = moment(tree, key, what)
    return None if found is None else found.datetime()


def _proto_fields(raw: bytes, what: str) -> Iterator[tuple[int, Any]]:
    """(field number, value) of a protobuf message: ints for varints, bytes otherwise."""
    pos = 0
    while pos < len(raw):
        tag, pos = _proto_varint(raw, pos, what)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            field_value, pos = _proto_varint(raw, pos, what)
        elif wire == 2:
            size, pos = _proto_varint(raw, pos, what)
            if pos + size > len(raw):
                raise Corrupted(f"{what}: truncated protobuf field {number}")
            field_value, pos = raw[pos:pos + size], pos + size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > len(raw):
                raise Corrupted(f"{what}: truncated protobuf field {number}")
            field_value, pos = raw[pos:pos + width], pos + width
        else:
            raise Corrupted(f"{what}: protobuf wire type {wire} is not supported")
        if number == 0:
            raise Corrupted(f"{what}: protobuf field number 0")
        yield number, field_value


def _proto_varint(raw: bytes, pos: int, what: str) -> tuple[int, int]:
    result = shift = 0
    while pos < len(raw) and shift < 64:
        byte = raw[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    raise Corrupted(f"{what}: malformed protobuf varint")


def proto_any(raw: Optional[bytes], what: str) -> Optional[dict]:
    """A ``google.protobuf.Any`` as ``{"type_url": str, "value": bytes}`` (None when absent)."""
    if raw is None:
        return None
    out = {"type_url": "", "value": b""}
    for number, field_value in _proto_fields(raw, what):
        if number == 1 and isinstance(field_value, bytes):
            out["type_url"] = text(field_value, f"{what} type URL")
        elif number == 2 and isinstance(field_value, bytes):
            out["value"] = field_value
    return out


def _extensions(tree: Tree, what: str) -> dict:
    return {text(k, f"{what} extension name"): proto_any(v, f"{what} extension")
            for k, v in bucket(tree, s.EXTENSIONS, what).items() if v is not None}


def _runtime(tree: Tree, what: str) -> RuntimeInfo:
    runtime = bucket(tree, s.RUNTIME, what)
    return RuntimeInfo(string(runtime, s.NAME, f"{what} runtime"),
                       proto_any(value(runtime, s.OPTIONS, f"{what} runtime"), f"{what} runtime options"))


def _spec(tree: Tree, what: str) -> bytes:
    spec = proto_any(value(tree, s.SPEC, what), f"{what} spec")
    return b"" if spec is None else spec["value"]


# -- objects ----------------------------------------------------------------------------------


def image(name: str, tree: Tree, ns: str) -> Image:
    what = f"image {name!r} of namespace {ns!r}"
    if s.TARGET not in tree:
        raise Corrupted(f"{what} has no target")
    target = bucket(tree, s.TARGET, what)
    descriptor = Descriptor(string(target, s.MEDIA_TYPE, what), string(target, s.DIGEST, what),
                            varint(value(target, s.SIZE, what), f"{what} target size"),
                            string_map(tree, s.ANNOTATIONS, what))
    return Image(name, descriptor, string_map(tree, s.LABELS, what),
                 timestamp(tree, s.CREATED_AT, what), timestamp(tree, s.UPDATED_AT, what))


def container(cid: str, tree: Tree, ns: str) -> Container:
    what = f"container {cid!r} of namespace {ns!r}"
    return Container(cid, _runtime(tree, what), _spec(tree, what), string(tree, s.SNAPSHOTTER, what),
                     string(tree, s.SNAPSHOT_KEY, what), string(tree, s.IMAGE, what),
                     string_map(tree, s.LABELS, what), _extensions(tree, what),
                     string(tree, s.SANDBOX_ID, what), timestamp(tree, s.CREATED_AT, what),
                     timestamp(tree, s.UPDATED_AT, what))


def sandbox(sid: str, tree: Tree, ns: str) -> Sandbox:
    what = f"sandbox {sid!r} of namespace {ns!r}"
    return Sandbox(sid, _runtime(tree, what), _spec(tree, what), string(tree, s.SANDBOXER, what),
                   string_map(tree, s.LABELS, what), _extensions(tree, what),
                   timestamp(tree, s.CREATED_AT, what), timestamp(tree, s.UPDATED_AT, what))


def lease(lid: str, tree: Tree, ns: str) -> Lease:
    what = f"lease {lid!r} of namespace {ns!r}"
    return Lease(lid, timestamp(tree, s.CREATED_AT, what), string_map(tree, s.LABELS, what))


def lease_resources(lid: str, tree: Tree, ns: str, *, images: bool = True) -> list[Resource]:
    """The resources of a lease in containerd's order: content, ingests, snapshots, then images (2.x)."""
    what = f"lease {lid!r} of namespace {ns!r}"
    out = [Resource(text(k, f"{what} content"), "content") for k in bucket(tree, s.CONTENT, what)]
    out += [Resource(text(k, f"{what} ingest"), "ingests") for k in bucket(tree, s.INGESTS, what)]
    for snapshotter, keys in children(bucket(tree, s.SNAPSHOTS, what), f"{what} snapshotter"):
        out += [Resource(text(k, f"{what} snapshot"), f"snapshots/{snapshotter}") for k in keys]
    if images:
        out += [Resource(text(k, f"{what} image"), "images") for k in bucket(tree, s.LEASE_IMAGES, what)]
    return out


def blob(digest: str, tree: Tree, ns: str) -> Info:
    what = f"content {digest} of namespace {ns!r}"
    return Info(digest, varint(value(tree, s.SIZE, what), f"{what} size"), string_map(tree, s.LABELS, what),
                timestamp(tree, s.CREATED_AT, what), timestamp(tree, s.UPDATED_AT, what))


@dataclass(frozen=True)
class IngestRecord:
    """One ``content/ingests/<ref>`` record: the backend's ref, its expiry (None when leased), the digest expected."""

    ref: str
    backend_ref: str
    expire_at: Optional[gotime.GoTime]
    expected: str


def ingests(namespace: Tree, ns: str) -> list[IngestRecord]:
    """The ingest records of a namespace; a db-version-1 ``content/ingest`` bucket of bare refs too."""
    what = f"ingests of namespace {ns!r}"
    content = bucket(namespace, s.CONTENT, what)
    out = []
    for ref, tree in children(bucket(content, s.INGESTS, what), "ingest"):
        item = f"ingest {ref!r} of namespace {ns!r}"
        out.append(IngestRecord(ref, string(tree, s.REF, item), moment(tree, s.EXPIRE_AT, item),
                                string(tree, s.EXPECTED, item)))
    for raw_ref, backend_ref in bucket(content, s.INGEST_V1, what).items():
        if backend_ref is not None:
            out.append(IngestRecord(text(raw_ref, "ingest ref"), text(backend_ref, "backend ingest ref"), None, ""))
    return out


@dataclass(frozen=True)
class SnapshotRecord:
    """One ``snapshots/<snapshotter>/<key>`` record of a namespace."""

    snapshotter: str
    key: str
    backend_key: str
    parent: str
    labels: dict
    created_at: Optional[datetime]
    updated_at: Optional[datetime]


def snapshot(snapshotter: str, key: str, tree: Tree, ns: str) -> SnapshotRecord:
    what = f"snapshot {snapshotter}/{key} of namespace {ns!r}"
    return SnapshotRecord(snapshotter, key, string(tree, s.NAME, what), string(tree, s.PARENT, what),
                          string_map(tree, s.LABELS, what), timestamp(tree, s.CREATED_AT, what),
                          timestamp(tree, s.UPDATED_AT, what))


@dataclass(frozen=True)
class BackendSnapshot:
    """One snapshot of a snapshotter's own metastore (``snapshots/storage``)."""

    key: str
    id: int
    kind: Kind
    parent: str
    labels: dict
    created_at: Optional[datetime]
    updated_at: Optional[datetime]
    size: int
    inodes: int


def backend_snapshot(key: str, tree: Tree, snapshotter: str) -> BackendSnapshot:
    what = f"{snapshotter} backend snapshot {key!r}"
    raw_kind = value(tree, s.STORAGE_KIND, what)
    try:
        kind = Kind(raw_kind[0]) if raw_kind is not None and len(raw_kind) == 1 else Kind.UNKNOWN
    except ValueError:
        raise Corrupted(f"{what} has an unknown kind {raw_kind[0]}") from None
    return BackendSnapshot(key, uvarint(value(tree, s.STORAGE_ID, what), f"{what} id"), kind,
                           string(tree, s.PARENT, what), string_map(tree, s.LABELS, what),
                           timestamp(tree, s.CREATED_AT, what), timestamp(tree, s.UPDATED_AT, what),
                           varint(value(tree, s.SIZE, what), f"{what} size"),
                           varint(value(tree, s.STORAGE_INODES, what), f"{what} inodes"))
