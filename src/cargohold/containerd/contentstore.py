"""containerd's local content store on disk (``content/local``), read-only.

``blobs/<alg>/<hex>`` holds each committed blob once for every namespace;
``ingest/<hex of sha256(backend ref)>/`` holds an ingest in progress: ``ref``
(the backend ref), ``data`` (the bytes so far), ``total`` (decimal, optional)
and ``startedat``/``updatedat`` (Go ``MarshalText`` times).

Whoever can write into the root (a compromised daemon, a hostile image unpack)
could plant symlinks to host files, or devices, there: every directory here is
opened component by component without following a symlink, every file read must
be a regular file opened with O_NOFOLLOW, and the small files are read up to a
cap (Corrupted, naming the path, otherwise).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from typing import Iterator, Optional

from ..errors import Corrupted, InvalidArgument
from ..integrity.backends import blob_files
from ..snapshots.fsutil import open_dirs
from ..model import Status
from ..validation import validate_digest
from . import gotime
from . import schema as s
from .decode import IngestRecord

SMALL_FILE_CAP = 64 << 10
"""The most an ingest's ``ref``, ``total``, ``startedat`` or ``updatedat`` may hold (each is a line)."""

_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_SYMLINK_OR_NOT_DIR = (errno.ELOOP, errno.ENOTDIR)


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

    def open_blob_dir(self, digest: str) -> Optional[int]:
        """A descriptor of the blob's directory (``blobs/<alg>``), no component a symlink; None if it is missing.

        Corrupted when a component is a symlink or not a directory.
        """
        validate_digest(digest)
        algorithm = digest.partition(":")[0]
        try:
            return open_dirs(self.directory, s.BLOBS_DIR, algorithm)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno not in _SYMLINK_OR_NOT_DIR:
                raise
            raise Corrupted(f"blob {digest}: {exc.filename!r} is a symlink or not a directory; "
                            "refusing to follow it out of the containerd root") from None

    def blob_file(self, digest: str) -> Optional[os.stat_result]:
        """The lstat of the blob's file, reached without following a symlink; None if it is missing.

        Corrupted when it (or a directory above it) is a symlink or it is not a regular file.
        """
        fd = self.open_blob_dir(digest)
        if fd is None:
            return None
        try:
            st = os.stat(os.path.basename(self.blob_path(digest)), dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        finally:
            os.close(fd)
        if not stat.S_ISREG(st.st_mode):
            raise not_regular(f"blob {digest}", self.blob_path(digest))
        return st

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

    def _open_ingest(self, path: str) -> Optional[int]:
        """A descriptor of ingest directory `path` (no component a symlink), None when there is none."""
        try:
            return open_dirs(self.directory, s.INGEST_DIR, os.path.basename(path))
        except (FileNotFoundError, NotADirectoryError):
            return None   # containerd skips an entry of ``ingest/`` that is not a directory
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise Corrupted(f"ingest directory {exc.filename!r} is a symlink; "
                            "refusing to follow it out of the containerd root") from None

    def ingest_refs(self) -> dict[str, str]:
        """Backend ref → path of every ingest directory that has a ``ref`` file."""
        out: dict[str, str] = {}
        for name in self.ingest_dirs():
            path = os.path.join(self.directory, s.INGEST_DIR, name)
            fd = self._open_ingest(path)
            if fd is None:
                continue
            try:
                ref = read_small(fd, s.INGEST_REF, path)
            finally:
                os.close(fd)
            if ref is not None:
                out[ref] = path
        return out

    def ingest(self, backend_ref: str) -> Optional[IngestDir]:
        """What containerd's local store reports for an ingest, or None when it reports nothing
        (``data``, ``ref``, ``startedat`` or ``updatedat`` missing: containerd skips it too)."""
        path = self.ingest_path(backend_ref)
        fd = self._open_ingest(path)
        if fd is None:
            return None
        try:
            data = _lstat(fd, s.INGEST_DATA)
            if data is None:
                return None
            if not stat.S_ISREG(data.st_mode):
                raise not_regular("ingest data", os.path.join(path, s.INGEST_DATA))
            ref = read_small(fd, s.INGEST_REF, path)
            started, updated = _time(fd, path, s.INGEST_STARTED), _time(fd, path, s.INGEST_UPDATED)
            if ref is None or started is None or updated is None:
                return None
            total = _total(fd, path)
        finally:
            os.close(fd)
        if data.st_mtime_ns > updated.ns:   # containerd reports the data's mtime when it is newer
            updated = gotime.GoTime(data.st_mtime_ns, 0)
        return IngestDir(path, ref, data.st_size, total, started, updated)

    def open_ingest_data(self, found: IngestDir) -> int:
        """A descriptor of the ingest's ``data``, read-only: a regular file, not reached through a symlink.

        FileNotFoundError when it is gone meanwhile, Corrupted when it is not a regular file.
        """
        fd = self._open_ingest(found.path)
        if fd is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), found.path)
        try:
            return open_regular(fd, s.INGEST_DATA, os.path.join(found.path, s.INGEST_DATA), "ingest data")
        finally:
            os.close(fd)

    def status(self, record: IngestRecord) -> Optional[Status]:
        """The Status of a namespace's ingest record (containerd's ``ListStatuses``), None without its data."""
        found = self.ingest(record.backend_ref)
        if found is None:
            return None
        return Status(record.ref, found.offset, found.total, record.expected,
                      found.started_at.datetime(), found.updated_at.datetime())


def not_regular(what: str, path: str) -> Corrupted:
    return Corrupted(f"{what} {path!r} is not a regular file (a symlink, device or fifo?); "
                     "refusing to read it from the containerd root")


def open_regular(dir_fd: int, name: str, path: str, what: str) -> int:
    """A read-only descriptor of regular file `name` of `dir_fd`, never through a symlink and never
    blocking on a fifo; Corrupted naming `what` and `path` if it is anything else."""
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise not_regular(what, path) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise not_regular(what, path)
    return fd


def read_small(dir_fd: int, name: str, directory: str) -> Optional[str]:
    """The text of small file `name` of ingest directory `dir_fd` (at `directory`), None if it is missing.

    Corrupted when it is not a regular file or holds more than `SMALL_FILE_CAP` bytes.
    """
    path = os.path.join(directory, name)
    try:
        fd = open_regular(dir_fd, name, path, f"ingest {name}")
    except FileNotFoundError:
        return None
    try:
        data = b""
        while len(data) <= SMALL_FILE_CAP and (chunk := os.read(fd, SMALL_FILE_CAP + 1 - len(data))):
            data += chunk
    finally:
        os.close(fd)
    if len(data) > SMALL_FILE_CAP:
        raise Corrupted(f"ingest {name} {path!r} holds more than {SMALL_FILE_CAP} bytes")
    return data.decode("utf-8", errors="replace")


def _lstat(dir_fd: int, name: str) -> Optional[os.stat_result]:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _total(dir_fd: int, directory: str) -> int:
    try:
        text = read_small(dir_fd, s.INGEST_TOTAL, directory)
        return int(text.strip()) if text is not None else 0
    except (OSError, ValueError):
        return 0  # containerd: absent or unreadable means unknown


def _time(dir_fd: int, directory: str, name: str) -> Optional[gotime.GoTime]:
    text = read_small(dir_fd, name, directory)
    return None if text is None else gotime.decode_text(text, f"ingest {name} {os.path.join(directory, name)!r}")
