"""Importing an image archive into a namespace (containerd's `client.Import`, as ``ctr import`` runs it).

The archive is an OCI image layout (directory or tar) or a legacy ``docker
save`` archive (manifest.json), plain or gzip/zstd-compressed (`oci.open_archive`).

Order, so that a failure leaves no image and only garbage behind:

1. The archive's `plan` reads and checks every document and the presence
   and size of every blob, and names the images; names are validated. For
   a ``docker save`` archive it also makes the manifests and index
   containerd makes (`oci.dockerarchive`), looking up compressed copies of
   its layers in the namespace's content store as containerd does.
2. Inside a lease (`transfer_lease`), every planned blob is streamed into the
   content store, its size and digest verified as it goes, and labelled with
   references to its children exactly as containerd labels them
   (``containerd.io/gc.ref.content.m.<i>`` on indexes, ``.config`` and
   ``.l.<i>`` on manifests). A blob the namespace has already gets the labels
   by an update, as containerd's `SetChildrenLabels` does.
3. With ``unpack``, each image is unpacked for the platform (`unpacker`).
4. The images are created, or their target replaced (containerd updates an
   existing image's target), all in one transaction.
5. The lease ends. What a failed import stored is referenced by nothing and
   goes at the next garbage collection.

The archive's own index is stored only when `index_name` names it
(containerd stores it unnamed too, leaving it to the collector).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional, Union

from .. import oci
from ..errors import AlreadyExists, Error, InvalidArgument, NotFound
from ..fieldpaths import label_paths
from ..model import Descriptor, Image, Info
from ..oci import naming
from ..oci.digests import CHUNK
from ..oci.dockerarchive import DETECT_BYTES, DockerArchive, stored_layer_media_type
from ..oci.limits import validate_max_size
from ..oci.platforms import PlatformSpec
from ..validation import validate_key
from .lease import transfer_lease
from .progress import Progress, counting
from .unpacker import UNCOMPRESSED_LABEL, unpack_target

if TYPE_CHECKING:
    from ..namespaces import Namespace


def import_archive(ns: "Namespace", path: Union[str, "os.PathLike[str]"], *, base_name: Optional[str] = None,
                   index_name: Optional[str] = None, unpack: bool = False, snapshotter: str = "native",
                   all_platforms: bool = False, platform: PlatformSpec = None,
                   progress: Optional[Progress] = None, max_layer_size: Optional[int] = None) -> list[Image]:
    """Import the image archive at `path` and return the images it created.

    `path` is an OCI image layout (a directory or a tar) or a ``docker save``
    archive (manifest.json: Docker before 25, ``skopeo ... docker-archive:``),
    a tar maybe gzip- or zstd-compressed. Images are named from each index
    entry's ``io.containerd.image.name``, else its
    ``org.opencontainers.image.ref.name`` (whole when it is a full reference,
    else as a tag of `base_name`, by default ``import-<YYYY-MM-DD>`` as ctr
    names them); a ``docker save`` image by each of its ``RepoTags``,
    normalised as containerd does (``busybox:latest`` is
    ``docker.io/library/busybox:latest``), with the digests ``ctr images
    import`` gives. Entries without a name are not imported unless
    `index_name` names the whole index. `platform` keeps only that platform,
    `all_platforms` keeps all, the default keeps the host's. `unpack` unpacks
    every image for `platform` (the host's by default) into `snapshotter`.
    `max_layer_size` bounds each layer's uncompressed size (see
    `unpack_image`; also a ``docker save`` layer's while its diff ID is
    checked, and a compressed archive's). `progress` is told how far each
    blob has got.

    Raises InvalidArgument for a bad archive (missing or corrupt blob, size
    mismatch, bad JSON, bad name, diff IDs that do not match, no named
    image), Unsupported for an unsupported media type, NotFound when no
    manifest matches the platform or for an unknown snapshotter. A failed
    import creates no image.
    """
    validate_max_size(max_layer_size)
    if unpack:
        ns.db.snapshotter_backend(snapshotter)
    if base_name is not None:
        validate_key(base_name, "base name")
    if index_name is not None:
        validate_key(index_name, "index name")
    base = base_name if base_name is not None else naming.default_base_name(ns.db.clock())
    with oci.open_archive(path, max_size=max_layer_size) as archive:
        if isinstance(archive, DockerArchive):
            plan = archive.plan(base_name=base, platform=platform, all_platforms=all_platforms,
                                stored_layers=_stored_layers(ns), max_layer_size=max_layer_size)
        else:
            plan = archive.plan(base_name=base, platform=platform, all_platforms=all_platforms)
        refs = _named(plan, index_name, archive)
        blobs = ((plan.index,) if index_name is not None else ()) + plan.blobs
        with transfer_lease(ns) as leased:
            for blob in blobs:
                _store(leased, archive, blob, progress)
            if unpack:
                for target in {ref.target.digest: ref.target for ref in refs.values()}.values():
                    unpack_target(leased, target, snapshotter, platform, progress, max_layer_size)
            return _create_images(ns, refs)


def _stored_layers(ns: "Namespace"):
    """containerd's lookup of compressed copies of a ``docker save`` archive's layers in the content store:
    blobs labelled ``containerd.io/uncompressed`` = a layer's digest (the last one found wins)."""
    def lookup(digests) -> dict[str, Descriptor]:
        found: dict[str, Info] = {}
        for info in ns.content.walk(*(f'labels."{UNCOMPRESSED_LABEL}"=={d}' for d in digests)):
            found[info.labels[UNCOMPRESSED_LABEL]] = info
        out = {}
        for digest, info in found.items():
            with ns.content.open(info.digest) as blob:
                head = blob.read(DETECT_BYTES)
            out[digest] = Descriptor(stored_layer_media_type(head), info.digest, info.size)
        return out
    return lookup


def _named(plan: oci.ImportPlan, index_name: Optional[str], archive: oci.Archive) -> dict[str, oci.ImageRef]:
    """The images to create by name (a later entry wins a name, as in containerd), names validated."""
    refs: dict[str, oci.ImageRef] = {}
    for ref in plan.images:
        if ref.name is not None:
            refs[validate_key(ref.name, "image name")] = ref
    if index_name is not None:
        refs[index_name] = oci.ImageRef(index_name, plan.index.descriptor)
    if not refs:
        if archive.format == "docker":
            why = "no image in manifest.json has RepoTags"
        else:
            why = ("no entry of index.json has an image name (io.containerd.image.name or "
                   "org.opencontainers.image.ref.name)")
        raise InvalidArgument(f"image archive {archive.path}: {why}; name the whole index with "
                              "--index-name NAME (index_name=) to import it")
    return refs


def _store(leased: "Namespace", archive: oci.ImageArchive, blob: oci.Blob, progress: Optional[Progress]) -> None:
    """Stream one blob into the content store (verified as it goes) with its GC labels."""
    descriptor = blob.descriptor
    labels = blob.labels or {}
    content = leased.content
    ref = f"import-{leased.lease}-{descriptor.digest}"  # fresh: never resumes a stranger's ingest
    try:
        writer = content.writer(ref, total=descriptor.size, expected=descriptor.digest)
    except AlreadyExists:  # the namespace has it (and it now joins the lease)
        _label(leased, descriptor.digest, labels)
        _done(progress, descriptor)
        return
    committed = False
    try:
        with writer:
            if writer.status().offset == 0:  # else shareable content already stored: nothing to copy
                with archive.open_blob(descriptor) as raw:
                    source = counting(raw, progress, "store", descriptor)
                    while chunk := source.read(CHUNK):
                        writer.write(chunk)
            try:
                writer.commit(descriptor.size, descriptor.digest, labels)
                committed = True
            except AlreadyExists:  # committed meanwhile by another writer; the ingest is consumed
                committed = True
                _label(leased, descriptor.digest, labels)
    finally:
        if not committed:
            try:
                content.abort(ref)
            except Error:
                pass  # the first error is the one to report; the lease's end leaves the ingest to the collector
    _done(progress, descriptor)


def _done(progress: Optional[Progress], descriptor) -> None:
    if progress is not None:
        progress("store", descriptor, descriptor.size)


def _label(leased: "Namespace", digest: str, labels: dict) -> None:
    if labels:
        leased.content.update(Info(digest, labels=labels), *label_paths(labels))


def _create_images(ns: "Namespace", refs: dict[str, oci.ImageRef]) -> list[Image]:
    db = ns.db
    created = []
    with db.update() as tx:
        for name, ref in refs.items():
            image = Image(name, ref.target)
            try:
                ns.images.get(name, tx=tx)
            except NotFound:
                created.append(ns.images.create(image, tx=tx))
            else:
                created.append(ns.images.update(image, "target", tx=tx))
    return created
