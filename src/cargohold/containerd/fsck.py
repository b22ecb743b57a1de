"""Consistency of a containerd root: records without their data, data without its record.

The checks a cargohold root's `fsck` makes where containerd's layout is the same, through the
same code (`cargohold.integrity.backends`) and with the same finding kinds: content records
against the blob files (missing, of another length, and with `verify_content` of another
digest), blobs and ingest directories no record owns, snapshot records against their
backend snapshots (present, of the same kind and parent) and directories, backend
snapshots and directories no record owns. Nothing is repaired: the root is containerd's.
"""

from __future__ import annotations

import os
from typing import Optional

from ..integrity import backends
from ..integrity import findings as f
from ..integrity.findings import (  # noqa: F401 - the kinds, importable from here as before
    BACKEND_KIND, BACKEND_PARENT, BAD_DIGEST, MISSING_BACKEND_SNAPSHOT, MISSING_BLOB, MISSING_INGEST,
    MISSING_SNAPSHOT_DIR, NO_BACKEND, STRAY_FILE, UNOWNED_BACKEND_SNAPSHOT, UNOWNED_BLOB, UNOWNED_INGEST,
    UNOWNED_SNAPSHOT_DIR, WRONG_SIZE, Finding)
from ..integrity.verify import verify_files
from ..model import Kind
from .root import Host
from .snapshotters import known_backends
from .usage import Sizes


def check(host: Host, *, verify_content: bool = False, workers: Optional[int] = None) -> list[Finding]:
    """Every inconsistency between the metadata and the data under the root."""
    sizes = Sizes(host)
    return _content(host, verify_content, workers) + _snapshots(host, sizes)


def _content(host: Host, verify_content: bool, workers: Optional[int]) -> list[Finding]:
    content = host.content_dir
    if content is None:
        return []
    records = []
    retained = []
    owned_ingests: set[str] = set()
    out: list[Finding] = []
    for ns in host.namespaces():
        records.extend((ns, info.digest, info.size) for info in host.content(ns))
        for record in host.ingest_records(ns):
            owned_ingests.add(record.backend_ref)
            if record.expected:
                retained.append(record.expected)
            if content.ingest(record.backend_ref) is None:
                out.append(Finding(MISSING_INGEST, ns, "ingests", record.ref, content.ingest_path(record.backend_ref),
                                   0, "the ingest's data is gone"))
    found = backends.content_findings(records, backends.blob_files(content.directory), retained, content.blob_path)
    if verify_content:
        skip = {x.key for x in found if x.kind in (MISSING_BLOB, WRONG_SIZE)}
        owners = {digest: ns for ns, digest, _ in reversed(records) if digest not in skip}
        for digest, actual, size in verify_files([(d, content.blob_path(d)) for d in sorted(owners)], workers):
            if actual is not None and actual != digest:
                found.append(Finding(BAD_DIGEST, owners[digest], "content", digest, content.blob_path(digest), size,
                                     f"the blob's bytes have digest {actual}"))
    by_path = {path: ref for ref, path in content.ingest_refs().items()}
    for entry in content.ingest_dirs():
        path = os.path.join(content.directory, "ingest", entry)
        ref = by_path.get(path)
        if ref is None or ref not in owned_ingests:
            found.append(Finding(UNOWNED_INGEST, "-", "ingests", ref or entry, path, backends.dir_size(path),
                                 "an ingest directory no record owns"))
    return found + out


def _snapshots(host: Host, sizes: Sizes) -> list[Finding]:
    out: list[Finding] = []
    owned: dict[str, set] = {}
    for ns in host.namespaces():
        for snapshotter in host.snapshotters(ns):
            backend = host.backend(snapshotter)
            store = f"snapshots/{snapshotter}"
            records = host.snapshot_records(ns, snapshotter)
            by_key = {record.key: record for record in records}
            for record in records:
                owned.setdefault(snapshotter, set()).add(record.backend_key)
                if backend is None:
                    out.append(Finding(NO_BACKEND, ns, store, record.key, "", 0,
                                       f"the root has no snapshotter {snapshotter!r}"))
                    continue
                found = backend.get(record.backend_key)
                if found is None:
                    out.append(Finding(MISSING_BACKEND_SNAPSHOT, ns, store, record.key, "", 0,
                                       f"backend snapshot {record.backend_key!r} does not exist"))
                    continue
                out.extend(_backend_mismatches(ns, store, record, found, by_key))
                if not os.path.isdir(backend.snapshot_dir(found.id)):
                    out.append(Finding(MISSING_SNAPSHOT_DIR, ns, store, record.key, backend.snapshot_dir(found.id), 0,
                                       f"the directory of backend snapshot {record.backend_key!r} is gone"))
    for name in known_backends(host.root):
        backend = host.backend(name)
        if backend is None:
            continue
        keys = owned.get(name, set())
        unreferenced = {key: snap.id for key, snap in backend.snapshots.items() if key not in keys}
        cache = {backend.snapshot_dir(sid): sizes.snapshot(backend, sid) for sid in unreferenced.values()}
        out.extend(backends.unowned_snapshots(f"snapshots/{name}", unreferenced, set(), backend.directories(),
                                              {snap.id for snap in backend.snapshots.values()}, backend.snapshot_dir,
                                              cache))
    return out


def _backend_mismatches(ns: str, store: str, record, found, by_key: dict) -> list[Finding]:
    """The backend snapshot's kind and parent against the record's (the same checks as cargohold's)."""
    out = []
    kind = getattr(record, "kind", None)
    if kind is not None and found.kind is not None and int(found.kind) != int(kind):
        out.append(Finding(BACKEND_KIND, ns, store, record.key, detail=(
            f"the record is {_kind(kind)}, backend snapshot {record.backend_key!r} is {_kind(found.kind)}")))
    parent = by_key.get(record.parent) if getattr(record, "parent", "") else None
    if parent is not None and found.parent != parent.backend_key:
        out.append(Finding(BACKEND_PARENT, ns, store, record.key, detail=(
            f"backend snapshot {record.backend_key!r} has parent {found.parent!r}, the record's parent is "
            f"{parent.backend_key!r}")))
    return out


def _kind(value) -> str:
    try:
        return str(Kind(int(value))).lower()
    except (TypeError, ValueError):
        return f"kind {value!r}"


def summary(findings: list) -> str:
    return f.summary(findings)
