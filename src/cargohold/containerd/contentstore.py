"""containerd's local content store on disk (``content/local``), read-only.

``blobs/<alg>/<hex>`` holds each committed blob once for every namespace;
``ingest/<hex of sha256(backend ref)>/`` holds an ingest in progress: ``ref``
(the backend ref), ``data`` (the bytes so far), ``total`` (decimal, optional)
and ``startedat``/``updatedat`` (Go ``MarshalText`` times).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Iterator, Optional

from ..errors import InvalidArgument
from ..integrity.backends import blob_files
from ..model import Status
from ..validation import validate_digest
from . import gotime
from . import schema as s
from .decode import IngestRecord


@dataclass(frozen=True)
class IngestDir:
    """An ingest directory as containerd's local store reads it."""

    path: str
    ref: str
    offset: int
    total: int
    started_at: gotime.GoTime
    updated_at: gotime.GoTime


class ContentDir:
    """The content store directory of a containerd root."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def blob_path(self, digest: str) -> str:
        validate_digest(digest)
        algorithm, _, encoded = digest.partition(":")
        return os.path.join(self.directory, s.BLOBS_DIR, algorithm, encoded)

    def blob_size(self, digest: str) -> Optional[int]:
        """The size of the blob's file, or None if there is none."""
        try:
            return os.stat(self.blob_path(digest)).st_size
        except (FileNotFoundError, InvalidArgument):
            return None

    def blobs(self) -> Iterator[tuple[str, str, int]]:
        """(name, path, size) of every file under ``blobs/<alg>/``; name is a digest when it looks like one."""
        return blob_files(self.directory)

    def ingest_path(self, backend_ref: str) -> str:
        return os.path.join(self.directory, s.INGEST_DIR, hashlib.sha256(backend_ref.encode()).hexdigest())

    def ingest_dirs(self) -> list[str]:
        try:
            return sorted(os.listdir(os.path.join(self.directory, s.INGEST_DIR)))
        except FileNotFoundError:
            return []

    def ingest_refs(self) -> dict[str, str]:
        """Backend ref → path of every ingest directory that has a ``ref`` file."""
        out: dict[str, str] = {}
        for name in self.ingest_dirs():
            path = os.path.join(self.directory, s.INGEST_DIR, name)
            try:
                with open(os.path.join(path, s.INGEST_REF), encoding="utf-8", errors="replace") as f:
                    out[f.read()] = path
            except (FileNotFoundError, NotADirectoryError):
                continue
        return out

    def ingest(self, backend_ref: str) -> Optional[IngestDir]:
        """What containerd's local store reports for an ingest, or None when it reports nothing
        (``data``, ``ref``, ``startedat`` or ``updatedat`` missing: containerd skips it too)."""
        path = self.ingest_path(backend_ref)
        try:
            offset = os.stat(os.path.join(path, s.INGEST_DATA)).st_size
            with open(os.path.join(path, s.INGEST_REF), encoding="utf-8", errors="replace") as f:
                ref = f.read()
        except (FileNotFoundError, NotADirectoryError):
            return None
        started, updated = _time(path, s.INGEST_STARTED), _time(path, s.INGEST_UPDATED)
        if started is None or updated is None:
            return None
        return IngestDir(path, ref, offset, _total(path), started,
                         _latest(updated, os.path.join(path, s.INGEST_DATA)))

    def status(self, record: IngestRecord) -> Optional[Status]:
        """The Status of a namespace's ingest record (containerd's ``ListStatuses``), None without its data."""
        found = self.ingest(record.backend_ref)
        if found is None:
            return None
        return Status(record.ref, found.offset, found.total, record.expected,
                      found.started_at.datetime(), found.updated_at.datetime())


def _total(path: str) -> int:
    try:
        with open(os.path.join(path, s.INGEST_TOTAL)) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 0  # containerd: absent or unreadable means unknown


def _time(path: str, name: str) -> Optional[gotime.GoTime]:
    try:
        with open(os.path.join(path, name), encoding="utf-8", errors="replace") as f:
            return gotime.decode_text(f.read(), f"ingest {name} {path!r}")
    except FileNotFoundError:
        return None


def _latest(updated: gotime.GoTime, data: str) -> gotime.GoTime:
    """containerd reports the data file's mtime when it is newer than ``updatedat``."""
    try:
        mtime = os.stat(data).st_mtime_ns
    except FileNotFoundError:
        return updated
    if mtime > updated.ns:
        return gotime.GoTime(mtime, 0)
    return updated
