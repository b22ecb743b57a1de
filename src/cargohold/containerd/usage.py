"""What a containerd root holds on disk, and what its next garbage collection would free.

`reclaim` follows containerd's collection past the metadata sweep: once the
unreachable records are gone, the content store's cleanup (run when content or
ingests were removed) deletes every blob that no remaining blob record and no
remaining ingest's expected digest names, and every ingest directory no
remaining ingest record owns; each snapshotter's cleanup (run when one of its
snapshots was removed) removes the backend snapshots no remaining record names,
leaves first (one whose child stays is kept), and overlayfs then removes the
directories its metastore no longer knows. Each freed file or directory is
credited to the removed record that owned it, or is an orphan (no record owned
it before either: `fsck` lists those).

Sizes: blobs and ingests by their files' length (as ``ctr content ls`` shows
them), snapshot directories by the 512-byte blocks they allocate, each inode
once (containerd's ``fs.DiskUsage``).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Optional

from ..df import StoreUsage
from ..integrity.backends import dir_size
from ..model import Node, ResourceType
from .root import Host
from .snapshotters import Backend, known_backends


@dataclass(frozen=True)
class Freed:
    """One file or directory a collection deletes."""

    store: str
    """``content``, ``ingests`` or ``snapshots/<snapshotter>``."""
    name: str
    """A digest, an ingest's backend ref, or a backend snapshot key (or directory name)."""
    path: str
    size: int
    node: Optional[Node] = None
    """The removed record it belonged to; None for an orphan."""


class Sizes:
    """Sizes of a host's blobs, ingests and snapshot directories, each measured once."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._snapshots: dict[tuple[str, int], int] = {}

    def blob(self, digest: str) -> int:
        content = self.host.content_dir
        found = content.blob_size(digest) if content else None
        return found or 0

    def ingest(self, backend_ref: str) -> int:
        content = self.host.content_dir
        found = content.ingest(backend_ref) if content else None
        return found.offset if found else 0

    def snapshot(self, backend: Backend, snapshot_id: int) -> int:
        key = (backend.name, snapshot_id)
        if key not in self._snapshots:
            self._snapshots[key] = dir_size(backend.snapshot_dir(snapshot_id))
        return self._snapshots[key]


def reclaim(host: Host, removed: Optional[Iterable[Node]] = None, sizes: Optional[Sizes] = None) -> list[Freed]:
    """Everything the collection that removes `removed` (default: `host.unreachable()`) deletes on disk."""
    removed = set(host.unreachable() if removed is None else removed)
    sizes = sizes or Sizes(host)
    freed: list[Freed] = []
    gone = {(n.type, n.namespace, n.key) for n in removed}
    dirty_content = any(n.type in (ResourceType.CONTENT, ResourceType.INGEST) for n in removed)
    dirty_snapshotters = sorted({n.key.partition("/")[0] for n in removed if n.type == ResourceType.SNAPSHOT})
    if dirty_content and host.content_dir is not None:
        freed += _content(host, gone, sizes)
    for snapshotter in dirty_snapshotters:
        backend = host.backend(snapshotter)
        if backend is not None:
            freed += _snapshots(host, backend, gone, sizes)
    return freed


def _content(host: Host, gone: set, sizes: Sizes) -> list[Freed]:
    content = host.content_dir
    kept_blobs: set[str] = set()
    owners: dict[str, Node] = {}
    kept_ingests: set[str] = set()
    ingest_owners: dict[str, Node] = {}
    for ns in host.namespaces():
        for info in host.content(ns):
            if (ResourceType.CONTENT, ns, info.digest) in gone:
                owners.setdefault(info.digest, Node(ResourceType.CONTENT, ns, info.digest))
            else:
                kept_blobs.add(info.digest)
        for record in host.ingest_records(ns):
            if (ResourceType.INGEST, ns, record.ref) in gone:
                ingest_owners.setdefault(record.backend_ref, Node(ResourceType.INGEST, ns, record.ref))
            else:
                kept_ingests.add(record.backend_ref)
                if record.expected:
                    kept_blobs.add(record.expected)
    out = [Freed("content", name, path, size, owners.get(name))
           for name, path, size in content.blobs() if name not in kept_blobs]
    for ref, path in sorted(host.content_dir.ingest_refs().items()):
        if ref not in kept_ingests:
            out.append(Freed("ingests", ref, path, sizes.ingest(ref), ingest_owners.get(ref)))
    return out


def _snapshots(host: Host, backend: Backend, gone: set, sizes: Sizes) -> list[Freed]:
    name = backend.name
    kept: set[str] = set()
    owners: dict[str, Node] = {}
    for ns in host.namespaces():
        for record in host.snapshot_records(ns, name):
            node_key = (ResourceType.SNAPSHOT, ns, f"{name}/{record.key}")
            if node_key in gone:
                owners.setdefault(record.backend_key, Node(*node_key))
            elif record.backend_key:
                kept.add(record.backend_key)
    children = defaultdict(list)
    for snap in backend.snapshots.values():
        children[snap.parent].append(snap.key)
    removable: dict[str, bool] = {}

    def can_remove(key: str) -> bool:
        # iterative post-order, as chains can be long
        stack = [(key, False)]
        while stack:
            current, expanded = stack.pop()
            if current in removable:
                continue
            if not expanded:
                stack.append((current, True))
                stack.extend((child, False) for child in children[current] if child not in removable)
            else:
                removable[current] = current not in kept and all(removable[c] for c in children[current])
        return removable[key]

    out = []
    for key in sorted(backend.snapshots):
        snap = backend.snapshots[key]
        if can_remove(key):
            out.append(Freed(f"snapshots/{name}", key, backend.snapshot_dir(snap.id),
                             sizes.snapshot(backend, snap.id), owners.get(key)))
    if name == "overlayfs":  # its Cleanup: directories the metastore does not know
        known = {str(snap.id) for snap in backend.snapshots.values()}
        for entry in backend.directories():
            if entry not in known:
                out.append(Freed(f"snapshots/{name}", entry, os.path.join(backend.directory, "snapshots", entry),
                                 dir_size(os.path.join(backend.directory, "snapshots", entry))))
    return out


# -- du ---------------------------------------------------------------------------------------


def du(host: Host, sizes: Optional[Sizes] = None) -> list[StoreUsage]:
    """Usage per namespace and store, then the whole disk per store (namespace "-")."""
    sizes = sizes or Sizes(host)
    freed = reclaim(host, sizes=sizes)
    freed_by_node = defaultdict(int)
    freed_names = defaultdict(set)
    for item in freed:
        freed_names[item.store].add(item.name)
        if item.node is not None:
            freed_by_node[item.node] += item.size
    holders = defaultdict(set)  # (store, name) -> namespaces
    namespaces = host.namespaces()
    per_ns: dict = {}
    for ns in namespaces:
        rows: dict = {}
        rows["content"] = [(i.digest, sizes.blob(i.digest)) for i in host.content(ns)]
        rows["ingests"] = [(r.backend_ref, sizes.ingest(r.backend_ref)) for r in host.ingest_records(ns)]
        for snapshotter in host.snapshotters(ns):
            backend = host.backend(snapshotter)
            items = []
            for record in host.snapshot_records(ns, snapshotter):
                found = backend.get(record.backend_key) if backend else None
                items.append((record.backend_key, sizes.snapshot(backend, found.id) if found else 0))
            rows[f"snapshots/{snapshotter}"] = items
        for store, items in rows.items():
            for name, _ in items:
                holders[(store, name)].add(ns)
        per_ns[ns] = rows
    out = []
    for ns in namespaces:
        for store, items in per_ns[ns].items():
            total = sum(size for _, size in items)
            shared = sum(size for name, size in items if len(holders[(store, name)]) > 1)
            reclaimable = sum(size for name, size in items if name in freed_names[store])
            out.append(StoreUsage(ns, store, len(items), total, shared, reclaimable))
    out += _disk(host, sizes, freed)
    return out


def _disk(host: Host, sizes: Sizes, freed: list[Freed]) -> list[StoreUsage]:
    """Whole-store rows: every blob, ingest directory and backend snapshot on disk."""
    out = []
    by_store = defaultdict(int)
    for item in freed:
        by_store[item.store] += item.size
    content = host.content_dir
    if content is not None:
        blobs = list(content.blobs())
        out.append(StoreUsage("-", "content", len(blobs), sum(size for _, _, size in blobs), 0, by_store["content"]))
        refs = content.ingest_refs()
        out.append(StoreUsage("-", "ingests", len(refs), sum(sizes.ingest(r) for r in refs), 0, by_store["ingests"]))
    for name in known_backends(host.root):
        backend = host.backend(name)
        if backend is None:
            continue
        total = sum(sizes.snapshot(backend, s.id) for s in backend.snapshots.values())
        out.append(StoreUsage("-", f"snapshots/{name}", len(backend.snapshots), total, 0,
                              by_store[f"snapshots/{name}"]))
    return out

