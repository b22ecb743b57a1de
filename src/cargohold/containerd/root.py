"""`open_root`: a containerd root (or a bare meta.db), read-only, as one consistent snapshot.

`Host` reads meta.db at one committed transaction when it opens (`tree`), so every
listing and the GC plan describe the same moment, however busy the daemon is.
The snapshotters' metastores are read the first time they are needed; blobs,
ingest and snapshot directories are looked at when asked about. Nothing under
the root is ever written.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from ..errors import Corrupted, InvalidArgument, NotFound, Unsupported
from ..model import Container, Image, Info, Kind, Lease, Node, Resource, Sandbox, SnapshotInfo, Status
from ..timeutil import Clock, to_ns, utcnow
from ..validation import require_str, validate_identifier
from . import decode, plan, snapshotters, tree
from . import schema as s
from .contentstore import ContentDir
from .decode import IngestRecord, SnapshotRecord, Tree
from .snapshotters import Backend


def locate(path: "str | os.PathLike[str]") -> tuple[Optional[str], str]:
    """(root directory or None, meta.db path) of a containerd root directory or a meta.db file."""
    try:
        path = os.path.abspath(os.fspath(path))
    except TypeError:
        raise InvalidArgument(f"containerd root must be a path, not {path!r}") from None
    if os.path.isdir(path):
        meta = os.path.join(path, s.METADATA_DIR, s.META_DB)
        if not os.path.isfile(meta):
            raise NotFound(f"{path!r} is not a containerd root: it has no {s.METADATA_DIR}/{s.META_DB}")
        return path, meta
    if not os.path.exists(path):
        raise NotFound(f"containerd root or meta.db {path!r} does not exist")
    parent = os.path.dirname(path)
    root = os.path.dirname(parent) if os.path.basename(parent) == s.METADATA_DIR else None
    return root, path


def _select(f: Any) -> tuple[int, Tree, dict]:
    """(db version, ``v1``, the 1.7 sandbox buckets outside ``v1`` by namespace) of an open meta.db."""
    v1 = f.bucket(s.SCHEMA)
    if v1 is None:
        raise Corrupted("it has no v1 bucket: not containerd metadata")
    raw = v1.get(s.DB_VERSION)
    if raw is None:
        raise Corrupted("its v1 bucket has no db version: not containerd metadata")
    version = decode.varint(raw, "db version")
    if version < 1:
        raise Corrupted(f"db version {version} is not one containerd writes")
    if version > s.MAX_DB_VERSION:
        raise Unsupported(f"db version {version} is newer than the {s.MAX_DB_VERSION} this cargohold reads")
    outside: dict = {}
    for name, top in f.buckets():
        if name != s.SCHEMA:
            sandboxes = top.bucket(s.SANDBOXES)
            if sandboxes is not None:
                outside[name] = sandboxes
    return version, v1, outside


def _rules(rules: Optional[str], version: int) -> str:
    return s.RULES_BY_VERSION[version] if rules is None else rules


class Host:
    """A containerd root at one transaction of its meta.db; see `open_root`."""

    def __init__(self, path: "str | os.PathLike[str]", rules: Optional[str] = None,
                 clock: Optional[Clock] = None) -> None:
        if clock is not None and not callable(clock):
            raise InvalidArgument(f"clock must be a callable returning a datetime, not {clock!r}")
        if rules is not None and rules not in plan.RULES:
            raise InvalidArgument(f"rules {rules!r} must be one of {', '.join(plan.RULES)} (or None)")
        self.root, self.meta_path = locate(path)
        self.txid, (self.db_version, self._v1, self._outside) = tree.read(self.meta_path, _select, "meta.db")
        self.rules = _rules(rules, self.db_version)
        self._clock = clock or utcnow
        self._backends: dict[str, Optional[Backend]] = {}
        self._graphs: dict[str, plan.Graph] = {}
        content = os.path.join(self.root, s.CONTENT_DIR) if self.root else None
        self.content_dir = ContentDir(content) if content and os.path.isdir(content) else None

    def close(self) -> None:
        """Drop the copy (nothing is held open between calls)."""
        self._v1, self._outside, self._backends, self._graphs = decode.EMPTY, {}, {}, {}

    def __enter__(self) -> "Host":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Host({self.root or self.meta_path!r}, db_version={self.db_version}, rules={self.rules!r})"

    # -- raw records -----------------------------------------------------------------------------

    def _namespace(self, ns: str) -> Tree:
        validate_identifier(ns, "namespace")
        return decode.bucket(self._v1, ns.encode(), f"namespace {ns!r}")

    def _objects(self, ns: str, *path: bytes) -> Tree:
        found = self._namespace(ns)
        for part in path:
            found = decode.bucket(found, part, f"namespace {ns!r}")
        return found

    def now(self) -> int:
        """The clock's time, in ns."""
        return to_ns(self._clock())

    def backend(self, snapshotter: str) -> Optional[Backend]:
        """The snapshotter's own metastore and directories, or None when the root has none for it."""
        if snapshotter not in self._backends:
            self._backends[snapshotter] = snapshotters.open_backend(self.root, snapshotter)
        return self._backends[snapshotter]

    def namespace_labels(self, ns: str) -> dict:
        return decode.string_map(self._namespace(ns), s.LABELS, f"namespace {ns!r}")

    def snapshotters(self, ns: str) -> list[str]:
        """The snapshotters that have records in namespace `ns`."""
        return [name for name, _ in decode.children(self._objects(ns, s.SNAPSHOTS), "snapshotter")]

    def snapshot_records(self, ns: str, snapshotter: str) -> list[SnapshotRecord]:
        require_str(snapshotter, "snapshotter")
        keys = self._objects(ns, s.SNAPSHOTS).bucket(snapshotter.encode())
        if keys is None:
            return []
        return [decode.snapshot(snapshotter, key, sub, ns) for key, sub in decode.children(keys, "snapshot")]

    def ingest_records(self, ns: str) -> list[IngestRecord]:
        return decode.ingests(self._namespace(ns), ns)

    # -- listings (what ctr lists) --------------------------------------------------------------

    def namespaces(self) -> list[str]:
        return [name for name, _ in decode.children(self._v1, "namespace")]

    def images(self, ns: str) -> list[Image]:
        return [decode.image(name, sub, ns) for name, sub in decode.children(self._objects(ns, s.IMAGES), "image")]

    def containers(self, ns: str) -> list[Container]:
        return [decode.container(cid, sub, ns)
                for cid, sub in decode.children(self._objects(ns, s.CONTAINERS), "container")]

    def sandboxes(self, ns: str) -> list[Sandbox]:
        """The namespace's sandboxes where its db version keeps them (version 3: outside ``v1``)."""
        if self.db_version >= 4:
            found = self._objects(ns, s.SANDBOXES)
        else:
            validate_identifier(ns, "namespace")
            found = self._outside.get(ns.encode(), decode.EMPTY)
        return [decode.sandbox(sid, sub, ns) for sid, sub in decode.children(found, "sandbox")]

    def leases(self, ns: str) -> list[Lease]:
        return [decode.lease(lid, sub, ns) for lid, sub in decode.children(self._objects(ns, s.LEASES), "lease")]

    def lease_resources(self, ns: str, lease_id: str) -> list[Resource]:
        require_str(lease_id, "lease id")
        found = self._objects(ns, s.LEASES).bucket(lease_id.encode())
        if found is None:
            raise NotFound(f"lease {lease_id!r} not found in namespace {ns!r}")
        return decode.lease_resources(lease_id, found, ns, images=self.db_version >= 4)

    def content(self, ns: str) -> list[Info]:
        return [decode.blob(digest, sub, ns)
                for digest, sub in decode.children(self._objects(ns, s.CONTENT, s.BLOB), "content")]

    def ingests(self, ns: str) -> list[Status]:
        """The namespace's ingests in progress, as ``ctr content active`` lists them.

        Those whose directory lacks its data are left out, as containerd does;
        with no content store to look in (a bare meta.db), every record is listed
        with what the record alone says.
        """
        records = self.ingest_records(ns)
        if self.content_dir is None:
            return [Status(r.ref, expected=r.expected) for r in records]
        return [status for status in map(self.content_dir.status, records) if status is not None]

    def snapshots(self, ns: str, snapshotter: str) -> list[SnapshotInfo]:
        """The snapshots of one snapshotter, as ``ctr snapshots ls`` lists them.

        Kind and backend labels come from the snapshotter's metastore; a record
        its backend does not know is left out, as containerd does. Without a
        metastore to read, every record is listed with kind UNKNOWN.
        """
        backend = self.backend(snapshotter)
        out = []
        for record in self.snapshot_records(ns, snapshotter):
            labels, kind = record.labels, Kind.UNKNOWN
            if backend is not None:
                found = backend.get(record.backend_key)
                if found is None:
                    continue
                labels, kind = {**found.labels, **record.labels}, found.kind
            out.append(SnapshotInfo(record.key, record.parent, kind, labels,
                                    record.created_at, record.updated_at))
        return out

    # -- garbage collection -----------------------------------------------------------------------

    def graph(self, rules: Optional[str] = None) -> plan.Graph:
        """The node table the plan marks: under the host's rules, or the `rules` given."""
        rules = rules or self.rules
        if rules not in plan.RULES:
            raise InvalidArgument(f"rules {rules!r} must be one of {', '.join(plan.RULES)}")
        if rules not in self._graphs:
            self._graphs[rules] = plan.graph(self._v1, rules)
        return self._graphs[rules]

    def nodes(self) -> list[Node]:
        """Every resource a collection looks at (containerd's ``scanAll``), in key order."""
        return self.graph().collectible()

    def unreachable(self) -> list[Node]:
        """What containerd's collector would remove now (judged at the clock's time), in key order."""
        return plan.unreachable(plan.mark(self.graph(), self.now()))

    def explain(self, node: Node) -> Optional[list[Node]]:
        """The chain of nodes from a root down to `node`, or None if no root reaches it."""
        return plan.explain(plan.mark(self.graph(), self.now()), node)


def open_root(path: "str | os.PathLike[str]", rules: Optional[str] = None, clock: Optional[Clock] = None) -> Host:
    """Open a containerd root directory (or a meta.db file) read-only; use it as a context manager.

    `rules` picks the collector to plan with: None for the release line that
    wrote the database (db version 3: "1.x", 4: "2.x"), or "1.x" / "2.x".
    `clock` returns the time expiries are judged against (default: now).
    """
    return Host(path, rules, clock)
