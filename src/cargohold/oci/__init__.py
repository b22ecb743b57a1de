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

import importlib

from .walk import Blob, Fetch, resolve_manifest, walk  # eagerly: `walk` the function, not the module

_NAMES = {
    "AppliedLayer": "apply", "apply_layer": "apply",
    "ImageConfig": "documents", "Manifest": "documents", "parse_config": "documents", "parse_manifest": "documents",
    "Archive": "archive", "ImageRef": "archive", "ImportPlan": "archive",
    "DockerArchive": "dockerarchive",
    "write_archive": "export",
    "children_labels": "gclabels", "snapshot_label": "gclabels",
    "RootfsLayer": "identity", "chain_id": "identity", "chain_ids": "identity", "rootfs_layers": "identity",
    "ImageArchive": "layout", "open_archive": "layout",
    "IMAGE_NAME": "naming", "REF_NAME": "naming", "image_name": "naming", "oci_reference_name": "naming",
    "Platform": "platforms",
}
"""Where each other name of the package lives: loaded on first use, so that reading an image's
documents (`cargohold.oci.walk`) does not pay for unpacking, compression or archives."""

__all__ = ["platforms", "Blob", "Fetch", "resolve_manifest", "walk", *_NAMES]


def __getattr__(name: str):
    if name not in _NAMES:
        if name == "platforms":
            return importlib.import_module(".platforms", __name__)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
