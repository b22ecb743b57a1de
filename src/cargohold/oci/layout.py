"""Reading an OCI image layout, given as a directory or as a tar of one.

This is what ``skopeo copy ... oci:DIR`` / ``oci-archive:FILE``, ``umoci`` and
``docker save`` (OCI mode) write: ``oci-layout``, ``index.json`` and
``blobs/<alg>/<hex>``. Blobs are read on demand, never extracted, and every
read is checked against its descriptor's size and digest while it streams.
A tar is read in place: one scan of its headers (`tarheaders.SafeTarFile`:
bounded and linear), then each blob is a byte range of the file, so any
number of blobs may be open at once. Only regular files are ever opened, and
without blocking: a FIFO, device node or socket in place of the archive or
of a file of a layout directory is refused, never read or waited on.

`ImageArchive.plan` decides what an import stores (containerd's `Import`):
every blob index.json reaches for the chosen platforms, each with the GC
labels containerd gives it, and the images to create with their names.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import stat
import tarfile
from dataclasses import dataclass
from typing import BinaryIO, Iterator, Optional, Union

from ..errors import Error, InvalidArgument, NotFound, Unsupported
from ..model import Descriptor
from . import mediatypes, naming
from .digests import VerifiedReader, blob_path, digest_bytes
from .documents import check_document_size, load_json, parse_index
from .platforms import PlatformSpec, platform_matcher
from .tarheaders import SafeTarFile
from .walk import Blob, describe, walk

LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
LAYOUT_VERSION = "1.0.0"

_COMPRESSED_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd", b"BZh": "bzip2",
                     b"\xfd7zXZ\x00": "xz"}


@dataclass(frozen=True)
class ImageRef:
    """An image an import creates: its name (None when the archive gives none) and target."""

    name: Optional[str]
    target: Descriptor


@dataclass(frozen=True)
class ImportPlan:
    """What importing an archive stores.

    `index` is index.json itself (containerd stores it too, unnamed);
    `blobs` are the blobs it reaches, parents before children, each with its
    GC labels; `images` are the images to create, in index.json order.
    """

    index: Blob
    blobs: tuple
    images: tuple


def _open_regular(path: str, what: str, *, follow: bool = True,
                  identity: Optional[tuple] = None) -> tuple[io.FileIO, os.stat_result]:
    """Open the regular file `path` for reading, refusing anything else without opening or waiting on it.

    The file is checked before it is opened (a device is never opened) and
    after (O_NONBLOCK: a FIFO swapped in meanwhile cannot block). `follow`
    False refuses a symlink as the last component; `identity`, when given,
    is the (st_dev, st_ino) the file must still have.
    """
    st = os.stat(path, follow_symlinks=follow)
    if not stat.S_ISREG(st.st_mode):
        raise InvalidArgument(f"{what} is not a regular file")
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    f = io.FileIO(os.open(path, flags), "r")
    opened = os.fstat(f.fileno())
    if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (
            identity or (st.st_dev, st.st_ino)):
        f.close()
        raise InvalidArgument(f"{what} changed while it was being read")
    return f, opened


class _Section(io.RawIOBase):
    """A byte range of the archive file, read through its own handle."""

    def __init__(self, path: str, identity: tuple, offset: int, size: int) -> None:
        super().__init__()
        self._file, _ = _open_regular(path, "the archive file", identity=identity)
        self._file.seek(offset)
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._file.readinto(memoryview(buffer)[: min(len(buffer), self._left)])
        self._left -= n
        return n

    def close(self) -> None:
        self._file.close()
        super().close()


def _escapes(name: str) -> bool:
    return name.startswith("/") or ".." in name.split("/")


def _clean_member(member: tarfile.TarInfo, archive: str) -> str:
    if _escapes(member.name):
        raise InvalidArgument(f"image archive {archive}: member {member.name!r} escapes the archive")
    name = "/".join(part for part in member.name.split("/") if part not in ("", "."))
    if member.issym() or member.islnk():
        target = member.linkname
        if member.issym() and not target.startswith("/"):
            target = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
        if _escapes(target):
            raise InvalidArgument(f"image archive {archive}: member {member.name!r} links to "
                                  f"{member.linkname!r}, which escapes the archive")
    return name


def _wanted(name: str) -> bool:
    """Whether a member may ever be opened (the layout files and blobs): only those are remembered."""
    return name in (LAYOUT_FILE, INDEX_FILE) or name.startswith("blobs/")


class _TarSource:
    def __init__(self, path: str) -> None:
        self.path = path
        f, st = _open_regular(path, f"image archive {path}")
        self._identity = (st.st_dev, st.st_ino)
        self._members: dict[str, Optional[tuple[int, int]]] = {}
        with io.BufferedReader(f) as buffered:
            head = buffered.peek(6)[:6]
            for magic, kind in _COMPRESSED_MAGIC.items():
                if head.startswith(magic):
                    raise InvalidArgument(f"image archive {path} is {kind}-compressed: decompress it first")
            what = f"image archive {path} is not a readable tar"  # the prefix of SafeTarFile's errors
            try:
                with SafeTarFile.open(fileobj=buffered, mode="r:", what=what) as tar:
                    while (member := tar.next()) is not None:
                        tar.members.clear()  # tarfile keeps every header otherwise
                        name = _clean_member(member, path)
                        if _wanted(name):
                            regular = member.isreg() and not member.issparse()
                            self._members[name] = (member.offset_data, member.size) if regular else None
            except tarfile.TarError as exc:
                raise InvalidArgument(f"image archive {path} is not a readable tar: {exc}") from None

    def open(self, name: str) -> tuple[BinaryIO, int]:
        if name not in self._members:
            raise FileNotFoundError(name)
        entry = self._members[name]
        if entry is None:
            raise InvalidArgument(f"{name} is not a regular file in the archive")
        offset, size = entry
        return _Section(self.path, self._identity, offset, size), size


class _DirectorySource:
    def __init__(self, path: str) -> None:
        self.path = path
        self._real = os.path.realpath(path)

    def open(self, name: str) -> tuple[BinaryIO, int]:
        full = os.path.realpath(os.path.join(self._real, name))
        if os.path.commonpath([full, self._real]) != self._real:
            raise InvalidArgument(f"{name} points outside the layout directory")
        f, st = _open_regular(full, name, follow=False)
        return f, st.st_size


class ImageArchive:
    """An OCI image layout opened for reading (a context manager).

    ``index`` is the descriptor of index.json. Not for concurrent use from
    several threads, but several blobs may be open at once.
    """

    def __init__(self, path: "str | os.PathLike[str]") -> None:
        self.path = os.fspath(path)
        try:
            mode = os.stat(self.path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"image archive {self.path} does not exist") from None
        except OSError as exc:
            raise InvalidArgument(f"image archive {self.path} cannot be read: {exc.strerror}") from None
        if stat.S_ISDIR(mode):
            self._source: Union[_TarSource, _DirectorySource] = _DirectorySource(self.path)
        elif stat.S_ISREG(mode):
            self._source = _TarSource(self.path)
        else:
            raise InvalidArgument(f"image archive {self.path} is neither a directory nor a regular file")
        with self._context():
            self._check_layout()
            data = self._read_file(INDEX_FILE)
            parse_index(data, mediatypes.OCI_INDEX, INDEX_FILE)
            self.index = Descriptor(mediatypes.OCI_INDEX, digest_bytes(data), len(data))

    def __enter__(self) -> "ImageArchive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the archive (nothing is held open between reads)."""

    @contextlib.contextmanager
    def _context(self) -> Iterator[None]:
        try:
            yield
        except Error as exc:
            raise type(exc)(f"image archive {self.path}: {exc}") from None

    def _locate(self, name: str, missing: str) -> tuple[BinaryIO, int]:
        try:
            return self._source.open(name)
        except FileNotFoundError:
            raise InvalidArgument(missing) from None
        except OSError as exc:
            raise InvalidArgument(f"{name} cannot be read: {exc.strerror}") from None

    def _read_file(self, name: str) -> bytes:
        f, size = self._locate(name, f"not an OCI image layout: {name} is missing")
        with f:
            check_document_size(size, name)
            return f.read(size)

    def _check_layout(self) -> None:
        layout = load_json(self._read_file(LAYOUT_FILE), LAYOUT_FILE)
        version = layout.get("imageLayoutVersion")
        if version != LAYOUT_VERSION:
            raise Unsupported(f"unsupported {LAYOUT_FILE} version {version!r} (expected {LAYOUT_VERSION})")

    def _open(self, descriptor: Descriptor, prefix: str = "") -> BinaryIO:
        what = describe(descriptor)
        if descriptor.digest == self.index.digest and descriptor.size == self.index.size:
            name = INDEX_FILE
        else:
            name = blob_path(descriptor.digest)
        f, size = self._locate(name, f"{what} is missing from the archive")
        if size != descriptor.size:
            f.close()
            raise InvalidArgument(
                f"{what}: size mismatch, the archive holds {size} bytes, its descriptor declares "
                f"{descriptor.size}")
        return VerifiedReader(f, descriptor.digest, descriptor.size, prefix + what)

    def _fetch(self, descriptor: Descriptor) -> bytes:
        what = describe(descriptor)
        check_document_size(descriptor.size, what)
        with self._open(descriptor) as f:
            return f.read()

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        """A binary stream of a blob that raises InvalidArgument if it proves not to match `descriptor`.

        A missing blob or a size mismatch fails at once; a wrong digest when
        the last byte is read. Close it after use (it is a context manager).
        """
        with self._context():
            return io.BufferedReader(self._open(descriptor, f"image archive {self.path}: "))

    def read_blob(self, descriptor: Descriptor) -> bytes:
        """The verified bytes of a document blob (at most MAX_DOCUMENT_SIZE)."""
        with self._context():
            return self._fetch(descriptor)

    def plan(self, *, base_name: Optional[str] = None, platform: PlatformSpec = None,
             all_platforms: bool = False) -> ImportPlan:
        """Decide what importing this archive stores, reading and checking every document.

        `platform` (a specifier such as ``"linux/arm64"``, or a Platform)
        keeps only that platform, as ``ctr import --platform`` does; by
        default the host platform and those it can run are kept
        (containerd's `platforms.Default()`); `all_platforms` keeps all.
        Every blob's presence and size are checked; digests are checked as
        blobs are streamed. Raises NotFound when no manifest matches.
        """
        matcher = platform_matcher(platform, all_platforms)
        with self._context():
            blobs = list(walk([self.index], self._fetch, matcher))
            root = blobs[0]
            if not root.children:
                raise NotFound(f"no manifest in index.json matches platform {matcher!r}")
            for blob in blobs[1:]:
                self._open(blob.descriptor).close()
        # the index's entries for the chosen platforms, in order, with their annotations
        images = tuple(ImageRef(naming.image_name(d.annotations, base_name), d) for d in root.children)
        return ImportPlan(root, tuple(blobs[1:]), images)


def open_archive(path: "str | os.PathLike[str]") -> ImageArchive:
    """Open an OCI image layout directory or tar for reading.

    Raises NotFound if `path` does not exist, InvalidArgument if it is not an
    OCI layout (no oci-layout or index.json, a compressed or unreadable tar,
    a member path escaping the archive), Unsupported for another layout version.
    """
    return ImageArchive(path)
