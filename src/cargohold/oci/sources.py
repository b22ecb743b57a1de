"""Where an image archive's files are read from: a tar (plain, gzip or zstd) or a directory.

Both formats (`layout`, OCI; `dockerarchive`, ``docker save``) read their
files by name through a source and never extract anything:

- `TarSource`: the archive is opened once and held; its headers are read by
  `tarheaders.SafeTarFile` (bounded and linear), and each member is a byte
  range read with ``pread``, so any number may be open at once. A ``scan``
  remembers only the members a format asks for (a second scan can ask for
  more), never every header of a hostile archive. A gzip or zstd archive (a
  ``docker save | gzip`` file) is first decompressed into an anonymous
  temporary file, bounded as a layer is (`limits`: max(1 GiB, 100 x the
  compressed size) by default, `max_size` bytes, or 0 for no limit).
- `DirectorySource`: files of a directory, symlinks followed only inside it.

Only regular files are ever opened, and without blocking: a FIFO, device node
or socket in place of the archive or a file is refused, never read or waited on.
A member whose path (or symlink target) leads out of the archive fails the
whole archive.
"""

from __future__ import annotations

import io
import os
import posixpath
import stat
import tarfile
import tempfile
from typing import Any, BinaryIO, Callable, Optional, Union

from ..errors import InvalidArgument, NotFound
from . import compression
from .digests import CHUNK
from .limits import SizeBudget
from .tarheaders import SafeTarFile

Wanted = Callable[[str], bool]
"""Whether a scan should remember the member of this (clean) path."""

_REFUSED_COMPRESSION = {b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz"}


def open_regular(path: str, what: str, *, follow: bool = True) -> tuple[io.FileIO, os.stat_result]:
    """Open the regular file `path` for reading, refusing anything else without opening or waiting on it.

    The file is checked before it is opened (a device is never opened) and
    after (O_NONBLOCK: a FIFO swapped in meanwhile cannot block). `follow`
    False refuses a symlink as the last component.
    """
    st = os.stat(path, follow_symlinks=follow)
    if not stat.S_ISREG(st.st_mode):
        raise InvalidArgument(f"{what} is not a regular file")
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    f = io.FileIO(os.open(path, flags), "r")
    opened = os.fstat(f.fileno())
    if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
        f.close()
        raise InvalidArgument(f"{what} changed while it was being read")
    return f, opened


def escapes(name: str) -> bool:
    """Whether a path inside an archive leads out of it (absolute, or a ``..`` component)."""
    return name.startswith("/") or ".." in name.split("/")


def clean(name: str) -> str:
    """`name` without empty and ``.`` components (how members are looked up)."""
    return "/".join(part for part in name.split("/") if part not in ("", "."))


class _Section(io.RawIOBase):
    """A byte range of an open file, read with pread (so sections never disturb each other)."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        super().__init__()
        self._fd = fd
        self._offset = offset
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer) -> int:
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        data = os.pread(self._fd, want, self._offset + self._pos)
        n = len(data)
        buffer[:n] = data
        self._pos += n
        return n


class TarSource:
    """A tar archive read in place (see the module docstring); `what` names it in errors."""

    def __init__(self, path: str, *, max_size: Optional[int] = None) -> None:
        self.path = path
        self.what = f"image archive {path}"
        self.compression = ""
        self._members: dict[str, Optional[tuple[int, int]]] = {}
        self._links: dict[str, str] = {}
        f, st = open_regular(path, self.what)
        try:
            head = os.pread(f.fileno(), 6, 0)
            for magic, kind in _REFUSED_COMPRESSION.items():
                if head.startswith(magic):
                    raise InvalidArgument(f"{self.what} is {kind}-compressed: decompress it first "
                                          "(gzip and zstd are read as they are)")
            self.compression = compression.detect(head)
            if self.compression:
                self._file: BinaryIO = self._spool(f, st.st_size, max_size)
                f.close()
            else:
                self._file = f
        except BaseException:
            f.close()
            raise
        self._size = os.fstat(self._file.fileno()).st_size

    def _spool(self, f: io.FileIO, compressed_size: int, max_size: Optional[int]) -> BinaryIO:
        """The decompressed archive in an anonymous temporary file (gone when closed, or if the process dies)."""
        budget = SizeBudget(self.what, max_size, lambda: compressed_size)
        spool = tempfile.TemporaryFile(prefix="cargohold-archive-")
        try:
            source = compression.decompressed(io.BufferedReader(f), self.what)
            while chunk := source.read(CHUNK):
                budget.stream(len(chunk))
                spool.write(chunk)
            spool.flush()
        except BaseException:
            spool.close()
            raise
        return spool

    def close(self) -> None:
        self._file.close()

    def scan(self, wanted: Wanted) -> None:
        """Read every header once, remembering the members `wanted` accepts (regular files and symlinks).

        Every member is checked: one whose path or link target leads out of
        the archive fails it. A later member of the same name wins.
        """
        what = f"{self.what} is not a readable tar"  # the prefix of SafeTarFile's errors
        reader = io.BufferedReader(_Section(self._file.fileno(), 0, self._size))
        try:
            with self._headers(lambda: SafeTarFile.open(fileobj=reader, mode="r:", what=what), first=True) as tar:
                while (member := self._headers(tar.next)) is not None:
                    tar.members.clear()  # tarfile keeps every header otherwise
                    name, target = self._check(member)
                    if not wanted(name):
                        continue
                    self._links.pop(name, None)
                    if target is not None and member.issym():
                        self._links[name] = target
                    regular = member.isreg() and not member.issparse()
                    if regular and member.offset_data + member.size > self._size:
                        raise InvalidArgument(f"{self.what} is truncated: member {member.name!r} needs "
                                              f"{member.offset_data + member.size} bytes, the file has {self._size}")
                    self._members[name] = (member.offset_data, member.size) if regular else None
        except tarfile.TarError as exc:
            raise InvalidArgument(f"{what}: {exc}") from None

    def _headers(self, read: Callable[[], Any], first: bool = False) -> Any:
        """`read()`: the tar's opening (its `first` header) or its next header. A header that
        cannot be read because the file ends, or after the first one in a file that is not whole
        tar blocks, means the archive was cut short, and the error says so."""
        try:
            return read()
        except (tarfile.TarError, InvalidArgument) as exc:
            detail = str(exc).rpartition("is not a readable tar: ")[2]
            ended = "the archive ends" in detail or "unexpected end of data" in detail
            if not (ended or (self._size % tarfile.BLOCKSIZE and not first)):
                raise
            raise InvalidArgument(f"{self.what} is truncated ({self._size} bytes): {detail}") from None

    def _check(self, member: tarfile.TarInfo) -> tuple[str, Optional[str]]:
        """The clean name of a member and, for a link, the clean path it points to."""
        if escapes(member.name):
            raise InvalidArgument(f"{self.what}: member {member.name!r} escapes the archive")
        name = clean(member.name)
        if not (member.issym() or member.islnk()):
            return name, None
        target = member.linkname
        if member.issym() and not target.startswith("/"):
            target = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
        if escapes(target):
            raise InvalidArgument(f"{self.what}: member {member.name!r} links to {member.linkname!r}, "
                                  "which escapes the archive")
        return name, clean(target)

    def link(self, name: str) -> Optional[str]:
        """The clean path a remembered symlink member points to (None if `name` is not one).

        `open` refuses a symlink member as not regular: a format that follows
        links (``docker save`` archives do) asks here first."""
        return self._links.get(name)

    def open(self, name: str) -> tuple[BinaryIO, int]:
        """A stream of a remembered regular member and its size; FileNotFoundError if it is not there."""
        if name not in self._members:
            raise FileNotFoundError(name)
        entry = self._members[name]
        if entry is None:
            raise InvalidArgument(f"{name} is not a regular file in the archive")
        offset, size = entry
        return _Section(self._file.fileno(), offset, size), size


class DirectorySource:
    """Files of a directory (an image layout, or an extracted archive)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.what = f"image archive {path}"
        self.compression = ""
        self._real = os.path.realpath(path)

    def close(self) -> None:
        """Nothing is held open between reads."""

    def scan(self, wanted: Wanted) -> None:
        """Nothing to scan: files are looked up by name."""

    def link(self, name: str) -> Optional[str]:
        """Always None: the filesystem follows links itself (only inside the directory)."""
        return None

    def open(self, name: str) -> tuple[BinaryIO, int]:
        full = os.path.realpath(os.path.join(self._real, name))
        if os.path.commonpath([full, self._real]) != self._real:
            raise InvalidArgument(f"{name} points outside the layout directory")
        f, st = open_regular(full, name, follow=False)
        return f, st.st_size


Source = Union[TarSource, DirectorySource]


def open_source(path: str, *, max_size: Optional[int] = None) -> Source:
    """The source of the archive at `path`: a directory, or a (maybe compressed) tar.

    NotFound if nothing is there; InvalidArgument for anything else than a
    directory or regular file, or for an unreadable one. `max_size` bounds a
    compressed tar's decompressed size (see the module docstring).
    """
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound(f"image archive {path} does not exist") from None
    except OSError as exc:
        raise InvalidArgument(f"image archive {path} cannot be read: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        return DirectorySource(path)
    if stat.S_ISREG(mode):
        return TarSource(path, max_size=max_size)
    raise InvalidArgument(f"image archive {path} is neither a directory nor a regular file")
