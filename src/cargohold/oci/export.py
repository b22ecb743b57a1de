"""Writing an OCI image layout tar from a stream of blobs (containerd's `archive.Export`).

The archive holds ``oci-layout``, ``blobs/<alg>/<hex>`` for every blob given,
and an ``index.json`` with one entry per image: the image's target descriptor
annotated with ``io.containerd.image.name`` (the full name) and
``org.opencontainers.image.ref.name`` (its tag part), so that importing it
back names the images alike, and ``skopeo``/``umoci`` find them by tag.
Beside them, as ``ctr images export`` and Docker 25's ``docker save`` write
it, a Docker-compatible ``manifest.json`` (`dockerarchive.saved_manifest_json`)
lists each image's manifest for the platform (an index's best entry for it,
as containerd picks it) with its config, layers and names, so ``docker load``
and ``skopeo ... docker-archive:`` read the archive too; ``docker_manifest``
False leaves it out (ctr's ``--skip-manifest-json``). Docker 25 also writes a
``repositories`` file; only Docker's loader of pre-1.10 archives (without
manifest.json) reads it, and ctr does not write it, so neither does this.
Entries have zero timestamps and owners: the same input gives the same bytes.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from typing import BinaryIO, Iterable, Optional, Union

from ..errors import InvalidArgument, NotFound
from ..kvguard import sync_dir
from ..model import Descriptor
from ..validation import validate_digest, validate_key
from . import mediatypes, naming
from .digests import ReadTap, VerifiedReader, blob_path, digest_bytes
from .dockerarchive import MANIFEST_FILE, saved_manifest_json
from .documents import MAX_DOCUMENT_SIZE, descriptor_json
from .layout import INDEX_FILE, LAYOUT_FILE, LAYOUT_VERSION
from .platforms import Matcher, PlatformSpec, platform_matcher
from .walk import describe, resolve_manifest

Destination = Union[str, "os.PathLike[str]", BinaryIO]


def _member(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    if directory:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.mode = 0o444 if name.startswith("blobs/") else 0o644
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_member(name, len(data)), io.BytesIO(data))


def index_entry(name: str, target: Descriptor) -> Descriptor:
    """`target` annotated with an image's name, as index.json lists it (containerd's `addNameAnnotation`)."""
    validate_key(name, "image name")
    if not (mediatypes.is_manifest(target.media_type) or mediatypes.is_index(target.media_type)):
        raise InvalidArgument(f"image {name!r}: only manifests and indexes can be exported, "
                              f"its target is {target.media_type!r}")
    validate_digest(target.digest, f"target digest of image {name!r}")
    annotations = dict(target.annotations or {})
    annotations[naming.IMAGE_NAME] = name
    reference = naming.oci_reference_name(name)
    if reference:
        annotations[naming.REF_NAME] = reference
    return Descriptor(target.media_type, target.digest, target.size, annotations)


def _is_document(descriptor: Descriptor) -> bool:
    media_type = descriptor.media_type
    return descriptor.size <= MAX_DOCUMENT_SIZE and (
        mediatypes.is_index(media_type) or mediatypes.is_manifest(media_type) or mediatypes.is_config(media_type))


def _docker_manifest(entries: list[Descriptor], documents: dict[str, bytes], matcher: Matcher) -> Optional[bytes]:
    """manifest.json for the exported images (None when no image has a manifest for the platform).

    Images sharing a manifest share its entry (names in order); an image
    whose index has no manifest for the platform in the archive is left out
    (containerd fails the whole export instead).
    """
    def fetch(descriptor: Descriptor) -> bytes:
        if descriptor.digest not in documents:
            raise NotFound(f"{describe(descriptor)} is not in the archive")
        return documents[descriptor.digest]

    manifests: dict = {}
    for entry in entries:
        try:
            chosen, manifest = resolve_manifest(entry, fetch, matcher)
        except NotFound:
            continue
        manifests.setdefault(chosen.digest, (manifest, []))[1].append(entry.annotations[naming.IMAGE_NAME])
    return saved_manifest_json(manifests.values()) if manifests else None


def _write(out: BinaryIO, entries: list[Descriptor], blobs: Iterable[tuple[Descriptor, BinaryIO]],
           matcher: Optional[Matcher]) -> bytes:
    index = json.dumps({"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX,
                        "manifests": [descriptor_json(d) for d in entries]},
                       separators=(",", ":")).encode()
    written: set[str] = set()
    documents: dict[str, bytes] = {}  # what manifest.json is made from, kept as it streams by
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, LAYOUT_FILE, json.dumps({"imageLayoutVersion": LAYOUT_VERSION}).encode())
        directories: set[str] = set()
        for descriptor, stream in blobs:
            validate_digest(descriptor.digest, "blob digest")
            if descriptor.digest in written:
                continue
            path = blob_path(descriptor.digest)
            for directory in ("blobs/", path[: path.rindex("/") + 1]):
                if directory not in directories:
                    directories.add(directory)
                    tar.addfile(_member(directory, directory=True))
            raw: BinaryIO = VerifiedReader(stream, descriptor.digest, descriptor.size,
                                           f"exported {describe(descriptor)}")
            if matcher is not None and _is_document(descriptor):
                chunks: list = []
                raw = ReadTap(raw, chunks.append)
            buffered = io.BufferedReader(raw)  # tarfile wants full reads; streams may give less
            tar.addfile(_member(path, descriptor.size), buffered)
            buffered.read(1)  # checks that the stream ends where the descriptor says
            written.add(descriptor.digest)
            if matcher is not None and _is_document(descriptor):
                documents[descriptor.digest] = b"".join(chunks)
        missing = sorted({d.digest for d in entries} - written)
        if missing:
            raise InvalidArgument(f"the exported blobs do not include the image target(s) {', '.join(missing)}")
        _add_bytes(tar, INDEX_FILE, index)
        if matcher is not None:
            compat = _docker_manifest(entries, documents, matcher)
            if compat is not None:
                _add_bytes(tar, MANIFEST_FILE, compat)
    return index


def write_archive(dest: Destination, images: Iterable[tuple[str, Descriptor]],
                  blobs: Iterable[tuple[Descriptor, BinaryIO]], *, docker_manifest: bool = True,
                  platform: PlatformSpec = None) -> Descriptor:
    """Write an OCI image layout tar to `dest` (a path or a writable binary file).

    `images` are (name, target descriptor) pairs; `blobs` yields
    (descriptor, readable stream) for every blob the images reach (for
    example a generator over a content store), each read once in order and
    checked against its descriptor's size and digest; repeated digests are
    skipped. Each stream must be fully read before the next is asked for.
    `docker_manifest` adds manifest.json, each image's manifest chosen for
    `platform` (the host's by default). A path is written to a temporary
    file, flushed and renamed into place at the end (the rename flushed
    too), so a failed export leaves nothing behind and one that returned
    survives a power cut. Returns index.json's descriptor. Raises InvalidArgument for a
    bad name, target or blob.
    """
    entries = [index_entry(name, target) for name, target in images]
    if not entries:
        raise InvalidArgument("nothing to export: no image given")
    matcher = platform_matcher(platform) if docker_manifest else None
    if not isinstance(dest, (str, os.PathLike)):
        index = _write(dest, entries, blobs, matcher)
        return Descriptor(mediatypes.OCI_INDEX, digest_bytes(index), len(index))
    path = os.path.abspath(os.fspath(dest))
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise InvalidArgument(f"cannot export to {path}: {directory} is not a directory")
    fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            index = _write(out, entries, blobs, matcher)
            out.flush()
            os.fsync(out.fileno())  # on disk before it replaces anything: its images may be deleted next
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
    sync_dir(directory)
    return Descriptor(mediatypes.OCI_INDEX, digest_bytes(index), len(index))
