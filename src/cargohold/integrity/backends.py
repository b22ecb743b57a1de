"""The checks a cargohold root and a containerd root share: records against the data on disk.

Both keep blobs as ``blobs/<alg>/<hex>`` and each snapshot in ``snapshots/<id>`` of its
snapshotter's directory, described by the snapshotter's own metastore. The functions here
take what each root's reader lists (records, files, backend snapshots) and return findings;
sizes are the files' lengths for blobs and ingests and the 512-byte blocks a directory
allocates, each inode once, for snapshots (containerd's ``fs.DiskUsage``).
"""

from __future__ import annotations

import os
from typing import Iterable, Iterator, Mapping, Optional

from ..snapshots.fsutil import disk_usage
from ..errors import InvalidArgument
from ..validation import validate_digest
from . import findings as f


def dir_size(path: str) -> int:
    """Bytes a directory tree allocates (0 if it is gone)."""
    try:
        return disk_usage(path).size
    except FileNotFoundError:
        return 0


def is_digest_name(name: str) -> bool:
    """Whether a blob file name ``alg:hex`` is a digest a content store could have written."""
    try:
        validate_digest(name)
    except InvalidArgument:
        return False
    return True


def blob_files(directory: str) -> Iterator[tuple[str, str, int]]:
    """(name, path, size) of every file under ``<directory>/blobs/<alg>/``, in order; name is
    ``alg:file`` (a digest when it looks like one)."""
    base = os.path.join(directory, "blobs")
    try:
        algorithms = sorted(os.listdir(base))
    except FileNotFoundError:
        return
    for algorithm in algorithms:
        sub = os.path.join(base, algorithm)
        try:
            names = sorted(os.listdir(sub))
        except (NotADirectoryError, FileNotFoundError):
            continue
        for name in names:
            path = os.path.join(sub, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            yield f"{algorithm}:{name}", path, st.st_size


def content_findings(records: Iterable[tuple[str, str, int]], files: Iterable[tuple[str, str, int]],
                     retained: Iterable[str] = (), blob_path=None) -> list[f.Finding]:
    """Content records (namespace, digest, recorded size) against the blob files on disk.

    A record whose file is missing or of another length is a finding (the length says the
    bytes cannot match the digest); a file no record names (nor `retained`: what ingests will
    commit) is unowned, or stray when its name is no digest.
    """
    on_disk = {name: (path, size) for name, path, size in files}
    out: list[f.Finding] = []
    owned = set(retained)
    for ns, digest, size in records:
        owned.add(digest)
        found = on_disk.get(digest)
        if found is None:
            out.append(f.Finding(f.MISSING_BLOB, ns, "content", digest, blob_path(digest) if blob_path else "", 0,
                                 "the record's blob is not in the content store"))
        elif found[1] != size:
            out.append(f.Finding(f.WRONG_SIZE, ns, "content", digest, found[0], found[1],
                                 f"the blob has {found[1]} bytes, the record says {size}: it cannot match its digest"))
    for name, (path, size) in on_disk.items():
        if not is_digest_name(name):
            out.append(f.Finding(f.STRAY_FILE, "-", "content", name, path, size, "not a blob: its name is no digest"))
        elif name not in owned:
            out.append(f.Finding(f.UNOWNED_BLOB, "-", "content", name, path, size, "no record names this blob"))
    return out


def unowned_snapshots(store: str, unreferenced: Mapping[str, int], kept: "set[str]", entries: Iterable[str],
                      ids: "set[int]", snapshot_dir, sizes: Optional[dict] = None) -> list[f.Finding]:
    """Backend snapshots no record names (`unreferenced`: backend key → id; except `kept`:
    interrupted commits that will be reverted), and the entries of ``snapshots/`` that are the
    directory of no backend snapshot (`ids`: every backend snapshot's id)."""
    sizes = {} if sizes is None else sizes

    def size(path: str) -> int:
        if path not in sizes:
            sizes[path] = dir_size(path)
        return sizes[path]

    out: list[f.Finding] = []
    for key, sid in sorted(unreferenced.items()):
        if key not in kept:
            path = snapshot_dir(sid)
            out.append(f.Finding(f.UNOWNED_BACKEND_SNAPSHOT, "-", store, key, path, size(path),
                                 "no record names this backend snapshot"))
    names = {str(sid) for sid in ids}
    for entry in entries:
        if entry not in names:
            path = os.path.join(os.path.dirname(snapshot_dir(0)), entry)
            out.append(f.Finding(f.UNOWNED_SNAPSHOT_DIR, "-", store, entry, path, size(path),
                                 "no backend snapshot owns this directory"))
    return out
