"""Exporting images from a namespace as an OCI image layout tar (containerd's `archive.Export`).

Each image's target is walked through the namespace's content store with the
platform filter (the host's platform by default, as ``ctr export`` does;
`all_platforms` for every one); every blob reached is streamed into the tar,
verified against its descriptor. index.json names every image with
``io.containerd.image.name`` and ``org.opencontainers.image.ref.name``, so
importing the archive gives back the same names and digests; manifest.json
(unless `oci_only`) lists each image's manifest for the platform, so
``docker load`` and ``skopeo copy docker-archive:...`` read it as well.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, BinaryIO, Iterable, Iterator, Optional

from .. import oci
from ..errors import InvalidArgument
from ..model import Descriptor
from ..oci.export import Destination
from ..oci.platforms import PlatformSpec, platform_matcher
from .progress import Progress, counting
from .unpacker import document_fetcher

if TYPE_CHECKING:
    from ..namespaces import Namespace


def export_image(ns: "Namespace", names: Iterable[str], dest: Destination, *, platform: PlatformSpec = None,
                 all_platforms: bool = False, progress: Optional[Progress] = None,
                 oci_only: bool = False) -> Descriptor:
    """Write the named images to `dest` (a path or a writable binary file); returns index.json's descriptor.

    The archive is an OCI image layout with a Docker-compatible manifest.json
    beside index.json (for the manifest of `platform`, the host's by default,
    also with `all_platforms`); `oci_only` leaves manifest.json out.
    Raises NotFound for an unknown image or a blob missing from the content
    store (before anything is written), InvalidArgument for no name or a blob
    that no longer matches its descriptor. Written to a path, a failed export
    leaves no file behind.
    """
    names = list(dict.fromkeys(names))
    if not names:
        raise InvalidArgument("nothing to export: give at least one image name")
    images = [ns.images.get(name) for name in names]
    matcher = platform_matcher(platform, all_platforms)
    descriptors = [blob.descriptor for blob in oci.walk([image.target for image in images], document_fetcher(ns),
                                                        matcher)]
    for descriptor in descriptors:
        ns.content.info(descriptor.digest)  # a missing blob fails before a byte is written
    return oci.write_archive(dest, [(image.name, image.target) for image in images],
                             _streams(ns, descriptors, progress), docker_manifest=not oci_only, platform=platform)


def _streams(ns: "Namespace", descriptors: Iterable[Descriptor],
             progress: Optional[Progress]) -> Iterator[tuple[Descriptor, BinaryIO]]:
    """(descriptor, open blob) pairs, each blob closed when the next is asked for."""
    for descriptor in descriptors:
        with ns.content.open(descriptor.digest) as blob:
            yield descriptor, counting(blob, progress, "export", descriptor)
