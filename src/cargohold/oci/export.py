"""Writing an OCI image layout tar from a stream of blobs (containerd's `archive.Export`).

The archive holds ``oci-layout``, ``blobs/<alg>/<hex>`` for every blob given,
and an ``index.json`` with one entry per image: the image's target descriptor
annotated with ``io.containerd.image.name`` (the full name) and
``org.opencontainers.image.ref.name`` (its tag part), so that importing it
back names the images alike, and ``skopeo``/``umoci`` find them by tag.
Entries have zero timestamps and owners: the same input gives the same bytes.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from typing import BinaryIO, Iterable, Union

from ..errors import InvalidArgument
from ..model import Descriptor
from ..validation import validate_digest, validate_key
from . import mediatypes, naming
from .digests import VerifiedReader, blob_path, digest_bytes
from .documents import descriptor_json
from .layout import INDEX_FILE, LAYOUT_FILE, LAYOUT_VERSION
from .walk import describe

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


def _write(out: BinaryIO, entries: list[Descriptor], blobs: Iterable[tuple[Descriptor, BinaryIO]]) -> bytes:
    index = json.dumps({"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX,
                        "manifests": [descriptor_json(d) for d in entries]},
                       separators=(",", ":")).encode()
    written: set[str] = set()
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
            reader = VerifiedReader(stream, descriptor.digest, descriptor.size,
                                    f"exported {describe(descriptor)}")
            buffered = io.BufferedReader(reader)  # tarfile wants full reads; streams may give less
            tar.addfile(_member(path, descriptor.size), buffered)
            buffered.read(1)  # checks that the stream ends where the descriptor says
            written.add(descriptor.digest)
        missing = sorted({d.digest for d in entries} - written)
        if missing:
            raise InvalidArgument(f"the exported blobs do not include the image target(s) {', '.join(missing)}")
        _add_bytes(tar, INDEX_FILE, index)
    return index


def write_archive(dest: Destination, images: Iterable[tuple[str, Descriptor]],
                  blobs: Iterable[tuple[Descriptor, BinaryIO]]) -> Descriptor:
    """Write an OCI image layout tar to `dest` (a path or a writable binary file).

    `images` are (name, target descriptor) pairs; `blobs` yields
    (descriptor, readable stream) for every blob the images reach (for
    example a generator over a content store), each read once in order and
    checked against its descriptor's size and digest; repeated digests are
    skipped. Each stream must be fully read before the next is asked for.
    A path is written to a temporary file renamed into place at the end,
    so a failed export leaves nothing behind. Returns index.json's descriptor.
    Raises InvalidArgument for a bad name, target or blob.
    """
    entries = [index_entry(name, target) for name, target in images]
    if not entries:
        raise InvalidArgument("nothing to export: no image given")
    if not isinstance(dest, (str, os.PathLike)):
        index = _write(dest, entries, blobs)
        return Descriptor(mediatypes.OCI_INDEX, digest_bytes(index), len(index))
    path = os.path.abspath(os.fspath(dest))
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise InvalidArgument(f"cannot export to {path}: {directory} is not a directory")
    fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            index = _write(out, entries, blobs)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
    return Descriptor(mediatypes.OCI_INDEX, digest_bytes(index), len(index))
