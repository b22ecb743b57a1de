"""OCI images: reading image archives (OCI layouts, docker save), unpacking layers, writing layouts.

Store-agnostic machinery; its inputs and outputs are paths, descriptors,
streams and callbacks, so the same code imports into the content store and
snapshotters and exports from them.

Import::

    with oci.open_archive("image.tar") as archive:          # a layout directory or tar, or a docker save
        plan = archive.plan(base_name="example.com/app")     # what to store, per containerd
        for blob in plan.blobs:                              # parents first, with GC labels
            with archive.open_blob(blob.descriptor) as src:  # verified while it streams
                ...store src, labelled blob.labels...
        for ref in plan.images: ...create Image(ref.name, ref.target)...

Unpack: `resolve_manifest` picks the platform's manifest, `parse_config` and
`rootfs_layers` give each layer's diff ID and chain ID, `apply_layer` applies
a layer into a directory, verifying its diff ID. Export: `write_archive`.
"""

from . import platforms
from .apply import AppliedLayer, apply_layer
from .documents import ImageConfig, Manifest, parse_config, parse_manifest
from .archive import Archive, ImageRef, ImportPlan
from .dockerarchive import DockerArchive
from .export import write_archive
from .gclabels import children_labels, snapshot_label
from .identity import RootfsLayer, chain_id, chain_ids, rootfs_layers
from .layout import ImageArchive, open_archive
from .naming import IMAGE_NAME, REF_NAME, image_name, oci_reference_name
from .platforms import Platform
from .walk import Blob, Fetch, resolve_manifest, walk

__all__ = [
    "platforms", "AppliedLayer", "apply_layer", "ImageConfig", "Manifest", "parse_config",
    "parse_manifest", "write_archive", "children_labels", "snapshot_label", "RootfsLayer",
    "chain_id", "chain_ids", "rootfs_layers", "Archive", "DockerArchive", "ImageArchive", "ImageRef", "ImportPlan",
    "open_archive", "IMAGE_NAME", "REF_NAME", "image_name", "oci_reference_name", "Platform",
    "Blob", "Fetch", "resolve_manifest", "walk",
]
