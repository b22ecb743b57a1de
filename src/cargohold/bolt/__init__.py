"""Read-only reader of bbolt files (go.etcd.io/bbolt), such as containerd's meta.db.

>>> from cargohold import bolt
>>> with bolt.open("/var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db") as f:
...     v1 = f.bucket(b"v1")
...     for name, ns in v1.buckets(): ...

`open` reads the newest committed transaction into memory and closes the
file: it never locks (a running containerd holds bbolt's flock), writes or
maps the file, and what it returns is one consistent transaction even while a
writer commits (see reader.py). A damaged or foreign file raises Corrupted.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Iterator, Optional

from ..errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from .._native import BoltBucket as Bucket
from .meta import Meta
from .reader import ReadStats, Source, load

__all__ = ["Bucket", "File", "Meta", "ReadStats", "open"]


class File:
    """One transaction of a bbolt file, held in memory (a context manager; `close` drops it)."""

    def __init__(self, path: str, meta: Meta, root: Bucket, stats: ReadStats) -> None:
        self.path = path
        self.meta = meta
        self.stats = stats
        self.txid = meta.txid
        self.page_size = meta.page_size
        self._root: Optional[Bucket] = root

    @property
    def root(self) -> Bucket:
        """The root bucket: its keys are the top-level bucket names."""
        if self._root is None:
            raise Unavailable(f"bbolt file {self.path} is closed")
        return self._root

    def bucket(self, name: bytes) -> Optional[Bucket]:
        """The top-level bucket `name`, or None."""
        return self.root.bucket(name)

    def buckets(self) -> Iterator[tuple[bytes, Bucket]]:
        """(name, bucket) for every top-level bucket, in key order."""
        return self.root.buckets()

    def close(self) -> None:
        self._root = None

    def __enter__(self) -> "File":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<bolt.File {self.path!r} txid={self.txid} page_size={self.page_size}>"


def _open_fd(path: str) -> int:
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK   # O_NONBLOCK: a FIFO must not hang us
    try:
        try:
            # no atime update either, where the kernel lets us (owner or CAP_FOWNER)
            return os.open(path, flags | getattr(os, "O_NOATIME", 0))
        except PermissionError as exc:
            if exc.errno != errno.EPERM:
                raise
            return os.open(path, flags)
    except FileNotFoundError:
        raise NotFound(f"no bbolt file at {path}") from None
    except PermissionError as exc:
        raise FailedPrecondition(f"cannot read bbolt file {path}: {exc.strerror}") from None
    except OSError as exc:
        raise Unavailable(f"cannot open bbolt file {path}: {exc.strerror}") from None


def open(path: "str | os.PathLike[str]") -> File:
    """Read the newest committed transaction of the bbolt file at `path`.

    Raises NotFound (no such file), Corrupted (not bbolt, or damaged: the
    message names the page), Unavailable (unreadable, or a writer committing
    so often that no consistent snapshot could be read).
    """
    try:
        path = os.fspath(path)
    except TypeError:
        raise InvalidArgument(f"a bbolt path is a string or path, not {type(path).__name__}: {path!r}") from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not path or "\0" in path:
        raise InvalidArgument(f"invalid bbolt path {path!r}")
    fd = _open_fd(path)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise InvalidArgument(f"{path} is a directory, not a bbolt file")
        if not stat.S_ISREG(mode):
            raise InvalidArgument(f"{path} is not a regular file")
        meta, root, stats = load(Source(path, fd))
    finally:
        os.close(fd)
    return File(path, meta, root, stats)

