"""Unpacking an image into snapshots, as containerd's unpacker does (`rootfs.ApplyLayers`).

Each layer of the platform's manifest becomes a committed snapshot named by
its chain ID, on top of the previous layer's: prepare ``extract-<random>
<chain ID>``, apply the layer into it (verifying the blob and the diff ID),
commit it as the chain ID, then label the layer blob
``containerd.io/uncompressed`` = its diff ID (as containerd's unpacker does,
only for a layer this unpack applied and committed). A layer whose chain-ID
snapshot already exists is skipped. Then the config blob gets
``containerd.io/gc.ref.snapshot.<name>`` = the top chain ID, so the image
keeps its snapshots alive. `max_layer_size` bounds what each layer may
expand to (see `oci.limits`: None for the default, 0 for no limit). Everything is made
inside a lease (see `transfer_lease`), so a collection meanwhile removes none of it.

Where a layer is applied: with ``native``, into the snapshot's bind-mount
source (a full copy of the parent's tree). With ``overlayfs``, the bottom layer
into its bind-mount source, every other one into the overlay mount's
``upperdir`` with overlay whiteouts (0/0 character devices and the
``trusted.overlay.opaque`` xattr), onto the tree its ``lowerdir`` list shows,
as containerd's overlay applier does: the mounted result equals the native
one (lower symlinks are followed, a lower directory written into is copied up
with its mode, owner, times and xattrs, a directory that replaces a whiteout
is opaque; see `oci.apply`). Nothing is mounted, so no mount privilege is
needed, but overlay whiteouts need root (CAP_MKNOD, CAP_SYS_ADMIN for the
xattr). One limit remains: a hard link to a file of a lower layer is refused
(the upper directory cannot link to another layer's inode).
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Optional, Union

from .. import oci
from ..errors import AlreadyExists, Error, NotFound, Unsupported
from ..model import Descriptor, Image, Info, Mount, Resource
from ..oci.documents import check_document_size
from ..oci.limits import validate_max_size
from ..oci.platforms import PlatformSpec, platform_matcher
from .lease import transfer_lease
from .progress import Progress, counting

if TYPE_CHECKING:
    from ..namespaces import Namespace

UNCOMPRESSED_LABEL = "containerd.io/uncompressed"
"""The label containerd's unpacker gives a layer blob it applied: the layer's diff ID."""


def document_fetcher(ns: "Namespace") -> oci.Fetch:
    """Read index, manifest and config blobs from the namespace's content store."""
    def fetch(descriptor: Descriptor) -> bytes:
        check_document_size(descriptor.size, f"{descriptor.media_type} {descriptor.digest}")
        return ns.content.read(descriptor.digest)
    return fetch


def image_layers(ns: "Namespace", target: Descriptor, platform: PlatformSpec = None) -> tuple[Descriptor, list]:
    """The config descriptor and the layers (`oci.RootfsLayer`, bottom first) of the platform's manifest.

    NotFound when the image has no manifest for the platform or a document is
    not in the namespace's content store.
    """
    fetch = document_fetcher(ns)
    _, manifest = oci.resolve_manifest(target, fetch, platform_matcher(platform))
    config = oci.parse_config(fetch(manifest.config), f"config {manifest.config.digest}")
    return manifest.config, oci.rootfs_layers(manifest, config)


def unpack_image(ns: "Namespace", image: Union[str, Image], *, snapshotter: str = "native",
                 platform: PlatformSpec = None, progress: Optional[Progress] = None,
                 max_layer_size: Optional[int] = None) -> str:
    """Unpack a stored image for `platform` (the host's by default); returns the top chain ID.

    The image's layers must be in the namespace's content store. Returns ""
    for an image without layers. Idempotent: layers already unpacked are
    skipped. `max_layer_size` bounds each layer's uncompressed size: None
    for max(1 GiB, 100 x its compressed size), a number of bytes, or 0 for
    no limit; a layer past it fails with InvalidArgument. On failure the
    snapshots made so far are garbage for the next collection; the image
    itself is unchanged.
    """
    validate_max_size(max_layer_size)
    ns.db.snapshotter_backend(snapshotter)
    if not isinstance(image, Image):
        image = ns.images.get(image)
    with transfer_lease(ns) as leased:
        return unpack_target(leased, image.target, snapshotter, platform, progress, max_layer_size)


def unpack_target(leased: "Namespace", target: Descriptor, snapshotter: str, platform: PlatformSpec,
                  progress: Optional[Progress], max_layer_size: Optional[int] = None) -> str:
    """Unpack `target` through a leased handle (see the module docstring); returns the top chain ID."""
    config, layers = image_layers(leased, target, platform)
    sn = leased.snapshotter(snapshotter)
    for layer in layers:
        _unpack_layer(leased, sn, layer, progress, max_layer_size)
    if not layers:
        return ""
    top = layers[-1].chain_id
    label = oci.snapshot_label(sn.name)
    leased.content.update(Info(config.digest, labels={label: top}), f"labels.{label}")
    return top


def _hold(leased: "Namespace", sn, chain_id: str) -> bool:
    """Whether the chain-ID snapshot exists; if it does, the lease holds it from now on."""
    try:
        sn.stat(chain_id)
    except NotFound:
        return False
    leased.leases.add_resource(leased.lease, Resource(chain_id, f"snapshots/{sn.name}"))
    return True


def _unpack_layer(leased: "Namespace", sn, layer: oci.RootfsLayer, progress: Optional[Progress],
                  max_layer_size: Optional[int]) -> None:
    if _hold(leased, sn, layer.chain_id):
        return
    key = f"extract-{secrets.token_hex(8)} {layer.chain_id}"
    mounts = sn.prepare(key, layer.parent)
    try:
        directory, lowers = _apply_target(mounts)
        with leased.content.open(layer.descriptor.digest) as blob:
            applied = oci.apply_layer(directory, counting(blob, progress, "unpack", layer.descriptor),
                                      descriptor=layer.descriptor, diff_id=layer.diff_id,
                                      overlay_whiteouts=lowers is not None, lower_dirs=lowers or (),
                                      max_size=max_layer_size)
        try:
            sn.commit(layer.chain_id, key)
        except AlreadyExists:  # another unpack committed it meanwhile: use theirs (and leave the label to it)
            if not _hold(leased, sn, layer.chain_id):
                raise
            sn.remove(key)
            return
    except BaseException:
        try:
            sn.remove(key)
        except Error:
            pass  # the first error is the one to report; the lease's end leaves the snapshot to the collector
        raise
    leased.content.update(Info(layer.descriptor.digest, labels={UNCOMPRESSED_LABEL: applied.diff_id}),
                          f"labels.{UNCOMPRESSED_LABEL}")


def _apply_target(mounts: list[Mount]) -> tuple[str, Optional[list[str]]]:
    """The directory to apply a layer into and, for an overlay upper directory (which takes overlay
    whiteouts), the lower directories beneath it, nearest first; None for a bind mount."""
    if len(mounts) == 1 and mounts[0].type == "bind":
        return mounts[0].source, None
    if len(mounts) == 1 and mounts[0].type == "overlay":
        options = dict(option.partition("=")[::2] for option in mounts[0].options)
        if options.get("upperdir"):
            lowers = options.get("lowerdir", "")
            return options["upperdir"], lowers.split(":") if lowers else []
    raise Unsupported(f"cannot unpack into snapshot mounts {mounts!r}: expected a bind mount "
                      "or an overlay mount with an upper directory")
