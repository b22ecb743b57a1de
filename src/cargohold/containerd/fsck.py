"""Consistency of a containerd root: records without their data, data without its record.

Each `Finding` names one problem and the bytes involved. Missing data (a blob,
an ingest's data, a backend snapshot or its directory) breaks what containerd
serves from the record; unowned data is what only a collection's cleanup (or
nothing, for a snapshotter that has no cleanup) would ever delete.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .contentstore import is_digest_name
from .root import Host
from .snapshotters import known_backends
from .usage import Sizes, dir_size

MISSING_BLOB = "missing-blob"
MISSING_INGEST = "missing-ingest"
NO_BACKEND = "no-backend"
MISSING_BACKEND_SNAPSHOT = "missing-backend-snapshot"
MISSING_SNAPSHOT_DIR = "missing-snapshot-dir"
UNOWNED_BLOB = "unowned-blob"
STRAY_FILE = "stray-file"
UNOWNED_INGEST = "unowned-ingest"
UNOWNED_BACKEND_SNAPSHOT = "unowned-backend-snapshot"
UNOWNED_SNAPSHOT_DIR = "unowned-snapshot-dir"


@dataclass(frozen=True)
class Finding:
    kind: str
    namespace: str
    """The record's namespace; "-" for data no record owns."""
    store: str
    name: str
    """A digest, an ingest ref, a snapshot key (or backend key / directory name for unowned data)."""
    path: str
    size: int
    """Bytes on disk involved (0 for missing data)."""


def check(host: Host) -> list[Finding]:
    """Every inconsistency between the metadata and the data under the root."""
    sizes = Sizes(host)
    return _content(host, sizes) + _snapshots(host, sizes)


def _content(host: Host, sizes: Sizes) -> list[Finding]:
    content = host.content_dir
    if content is None:
        return []
    out: list[Finding] = []
    owned_blobs: set[str] = set()
    owned_ingests: set[str] = set()
    for ns in host.namespaces():
        for info in host.content(ns):
            owned_blobs.add(info.digest)
            if content.blob_size(info.digest) is None:
                out.append(Finding(MISSING_BLOB, ns, "content", info.digest, content.blob_path(info.digest), 0))
        for record in host.ingest_records(ns):
            owned_ingests.add(record.backend_ref)
            if record.expected:
                owned_blobs.add(record.expected)
            if content.ingest(record.backend_ref) is None:
                out.append(Finding(MISSING_INGEST, ns, "ingests", record.ref,
                                   content.ingest_path(record.backend_ref), 0))
    for name, path, size in content.blobs():
        if not is_digest_name(name):
            out.append(Finding(STRAY_FILE, "-", "content", name, path, size))
        elif name not in owned_blobs:
            out.append(Finding(UNOWNED_BLOB, "-", "content", name, path, size))
    by_path = {path: ref for ref, path in content.ingest_refs().items()}
    for entry in content.ingest_dirs():
        path = os.path.join(content.directory, "ingest", entry)
        ref = by_path.get(path)
        if ref is None or ref not in owned_ingests:
            out.append(Finding(UNOWNED_INGEST, "-", "ingests", ref or entry, path, dir_size(path)))
    return out


def _snapshots(host: Host, sizes: Sizes) -> list[Finding]:
    out: list[Finding] = []
    owned: dict[str, set] = {}
    for ns in host.namespaces():
        for snapshotter in host.snapshotters(ns):
            backend = host.backend(snapshotter)
            store = f"snapshots/{snapshotter}"
            for record in host.snapshot_records(ns, snapshotter):
                owned.setdefault(snapshotter, set()).add(record.backend_key)
                if backend is None:
                    out.append(Finding(NO_BACKEND, ns, store, record.key, "", 0))
                    continue
                found = backend.get(record.backend_key)
                if found is None:
                    out.append(Finding(MISSING_BACKEND_SNAPSHOT, ns, store, record.key, "", 0))
                elif not os.path.isdir(backend.snapshot_dir(found.id)):
                    out.append(Finding(MISSING_SNAPSHOT_DIR, ns, store, record.key,
                                       backend.snapshot_dir(found.id), 0))
    for name in known_backends(host.root):
        backend = host.backend(name)
        if backend is None:
            continue
        store = f"snapshots/{name}"
        keys = owned.get(name, set())
        ids = set()
        for key, snap in sorted(backend.snapshots.items()):
            ids.add(str(snap.id))
            if key not in keys:
                out.append(Finding(UNOWNED_BACKEND_SNAPSHOT, "-", store, key, backend.snapshot_dir(snap.id),
                                   sizes.snapshot(backend, snap.id)))
        for entry in backend.directories():
            if entry not in ids:
                path = os.path.join(backend.directory, "snapshots", entry)
                out.append(Finding(UNOWNED_SNAPSHOT_DIR, "-", store, entry, path, dir_size(path)))
    return out
