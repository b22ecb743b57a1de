"""Reading image archives: OCI image layouts, and telling them from ``docker save`` archives.

An OCI image layout is what ``skopeo copy ... oci:DIR`` / ``oci-archive:FILE``,
``umoci``, ``ctr export`` and ``docker save`` (Docker 25 and later) write:
``oci-layout``, ``index.json`` and ``blobs/<alg>/<hex>``. Blobs are read on
demand through a `sources` source (a directory, or a tar read in place, gzip
or zstd decompressed first), never extracted, and every read is checked
against its descriptor's size and digest while it streams.

`open_archive` tells the formats apart as containerd's importer does: an
``oci-layout`` with a version makes an OCI layout (even when ``manifest.json``
is there too, as Docker 25 writes both); else a ``manifest.json`` makes a
legacy ``docker save`` archive (`dockerarchive.DockerArchive`).

`ImageArchive.plan` decides what an import stores (containerd's `Import`):
every blob index.json reaches for the chosen platforms, each with the GC
labels containerd gives it, and the images to create with their names.
"""

from __future__ import annotations

import os
from typing import BinaryIO, Optional, Union

from ..errors import InvalidArgument, Unsupported
from ..model import Descriptor
from . import mediatypes
from .archive import Archive, ImageRef, ImportPlan, plan_index
from .digests import VerifiedReader, blob_path, digest_bytes
from .documents import check_document_size, load_json, parse_index
from .dockerarchive import MANIFEST_FILE, DockerArchive
from .platforms import PlatformSpec, platform_matcher
from .sources import Source, open_source
from .walk import describe

LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
LAYOUT_VERSION = "1.0.0"

__all__ = ["LAYOUT_FILE", "INDEX_FILE", "LAYOUT_VERSION", "ImageArchive", "ImageRef", "ImportPlan",
           "open_archive"]


def _first_scan(name: str) -> bool:
    """What a tar's first scan remembers: the layout files, blobs, and a docker save archive's manifest.json."""
    return name in (LAYOUT_FILE, INDEX_FILE, MANIFEST_FILE) or name.startswith("blobs/")


def _locate(source: Source, name: str, missing: str) -> tuple[BinaryIO, int]:
    try:
        return source.open(name)
    except FileNotFoundError:
        raise InvalidArgument(missing) from None
    except OSError as exc:
        raise InvalidArgument(f"{name} cannot be read: {exc.strerror}") from None


def _read_file(source: Source, name: str, missing: str) -> bytes:
    f, size = _locate(source, name, missing)
    with f:
        check_document_size(size, name)
        return f.read(size)


def _exists(source: Source, name: str) -> bool:
    try:
        source.open(name)[0].close()
    except FileNotFoundError:
        return False
    except (OSError, InvalidArgument):
        return True  # there, but unusable: the format's own reading says why
    return True


class ImageArchive(Archive):
    """An OCI image layout opened for reading (a context manager); ``index`` is index.json's descriptor."""

    format = "oci"

    def __init__(self, path: "str | os.PathLike[str]", *, source: Optional[Source] = None) -> None:
        path = os.fspath(path)
        if source is None:
            source = open_source(path)
            try:
                source.scan(_first_scan)
            except BaseException:
                source.close()
                raise
        super().__init__(path, source)
        with self._context():
            self._check_layout()
            data = self._read_file(INDEX_FILE)
            parse_index(data, mediatypes.OCI_INDEX, INDEX_FILE)
            self.index = Descriptor(mediatypes.OCI_INDEX, digest_bytes(data), len(data))

    def _read_file(self, name: str) -> bytes:
        return _read_file(self._source, name, f"not an OCI image layout: {name} is missing")

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
        f, size = _locate(self._source, name, f"{what} is missing from the archive")
        if size != descriptor.size:
            f.close()
            raise InvalidArgument(
                f"{what}: size mismatch, the archive holds {size} bytes, its descriptor declares "
                f"{descriptor.size}")
        return VerifiedReader(f, descriptor.digest, descriptor.size, prefix + what)

    def plan(self, *, base_name: Optional[str] = None, platform: PlatformSpec = None,
             all_platforms: bool = False) -> ImportPlan:
        """Decide what importing this archive stores, reading and checking every document.

        `platform` (a specifier such as ``"linux/arm64"``, or a Platform)
        keeps only that platform, as ``ctr import --platform`` does; by
        default the host platform and those it can run are kept
        (containerd's `platforms.Default()`); `all_platforms` keeps all.
        Entries are named by `naming.image_name` with `base_name`. Every
        blob's presence and size are checked; digests are checked as blobs
        are streamed. Raises NotFound when no manifest matches.
        """
        matcher = platform_matcher(platform, all_platforms)
        with self._context():
            return plan_index(self.index, self._fetch, lambda d: self._open(d).close(), matcher, base_name,
                              INDEX_FILE)


def _is_oci_layout(source: Source) -> bool:
    """containerd's rule: an oci-layout naming a version makes an OCI layout; without one, manifest.json decides."""
    if not _exists(source, LAYOUT_FILE):
        return False
    if not _exists(source, MANIFEST_FILE):
        return True  # an OCI layout or nothing: ImageArchive says which, and why
    try:
        layout = load_json(_read_file(source, LAYOUT_FILE, ""), LAYOUT_FILE)
    except InvalidArgument:
        return True
    return bool(layout.get("imageLayoutVersion"))


def open_archive(path: "str | os.PathLike[str]", *,
                 max_size: Optional[int] = None) -> Union[ImageArchive, DockerArchive]:
    """Open an image archive for reading: an OCI layout (directory or tar) or a ``docker save`` archive.

    A tar may be gzip- or zstd-compressed; it is then decompressed into a
    temporary file first, at most `max_size` bytes (`limits`: None for
    max(1 GiB, 100 x its size), 0 for no limit). Raises NotFound if `path`
    does not exist, InvalidArgument if it is neither format (no oci-layout or
    index.json, nor manifest.json), an unreadable or otherwise compressed tar,
    or has a member path escaping the archive; Unsupported for another
    layout version.
    """
    path = os.fspath(path)
    source = open_source(path, max_size=max_size)
    try:
        source.scan(_first_scan)
        if _is_oci_layout(source):
            return ImageArchive(path, source=source)
        if _exists(source, MANIFEST_FILE):
            return DockerArchive(path, source)
        raise InvalidArgument(f"image archive {path}: not an OCI image layout: {LAYOUT_FILE} is missing "
                              f"(nor a docker save archive: {MANIFEST_FILE} is missing)")
    except BaseException:
        source.close()
        raise
