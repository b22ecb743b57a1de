"""Media types of image content: the OCI ones and their Docker schema 2 equivalents.

Classification follows containerd's `images` package (`IsIndexType`,
`IsManifestType`, `IsKnownConfig`, `IsLayerType`). `check_supported` is
stricter: it names the types cargohold can import, and rejects everything else
(Docker schema 1, encrypted layers, unknown types) with Unsupported.
"""

from __future__ import annotations

from ..errors import Unsupported

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = OCI_LAYER + "+gzip"
OCI_LAYER_ZSTD = OCI_LAYER + "+zstd"
OCI_LAYER_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_V1 = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = DOCKER_LAYER + ".gzip"
DOCKER_LAYER_ZSTD = DOCKER_LAYER + ".zstd"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar"
DOCKER_LAYER_FOREIGN_GZIP = DOCKER_LAYER_FOREIGN + ".gzip"

CONTAINERD_CHECKPOINT = "application/vnd.containerd.container.criu.checkpoint.criu.tar"
CONTAINERD_CHECKPOINT_CONFIG = "application/vnd.containerd.container.checkpoint.config.v1+proto"
IN_TOTO = "application/vnd.in-toto+json"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})
_KNOWN_CONFIGS = CONFIG_TYPES | {CONTAINERD_CHECKPOINT, CONTAINERD_CHECKPOINT_CONFIG}
_DOCKER_LAYERS = frozenset({DOCKER_LAYER, DOCKER_LAYER_GZIP, DOCKER_LAYER_ZSTD,
                            DOCKER_LAYER_FOREIGN, DOCKER_LAYER_FOREIGN_GZIP})
_EROFS_LAYERS = frozenset({"application/vnd.erofs.layer.v1", "application/vnd.erofs",
                           "application/vnd.erofs.chunk-index.v1"})
_OCI_LAYER_BASES = frozenset({OCI_LAYER, OCI_LAYER_NONDIST})
# Blobs that are neither documents nor layers but that real archives carry
# (BuildKit attestations, the OCI empty descriptor of artifact manifests).
_OPAQUE_TYPES = frozenset({IN_TOTO, OCI_EMPTY})


def _split(media_type: str) -> tuple[str, list[str]]:
    base, _, suffix = media_type.partition("+")
    return base, suffix.split("+") if suffix else []


def is_index(media_type: str) -> bool:
    return media_type in INDEX_TYPES


def is_manifest(media_type: str) -> bool:
    return media_type in MANIFEST_TYPES


def is_config(media_type: str) -> bool:
    """An image configuration (what rootfs diff IDs and the platform are read from)."""
    return media_type in CONFIG_TYPES


def is_known_config(media_type: str) -> bool:
    """A config as containerd labels it: image configs and checkpoint configs."""
    return media_type in _KNOWN_CONFIGS


def is_layer(media_type: str) -> bool:
    """A layer as containerd's `IsLayerType` sees it (any OCI layer type, Docker diffs, EROFS)."""
    if media_type.startswith("application/vnd.oci.image.layer."):
        return True
    base, _ = _split(media_type)
    return base in _DOCKER_LAYERS or base in _EROFS_LAYERS


_NOT_A_LAYER = "not a tar layer (plain, gzip or zstd)"
_NOT_KNOWN = "not an index, manifest, config or tar layer (plain, gzip or zstd)"


def _layer(media_type: str) -> tuple[str, str]:
    """(compression, "") for a tar layer type cargohold can apply, else ("", why not)."""
    base, suffixes = _split(media_type)
    if base in _OCI_LAYER_BASES and len(suffixes) <= 1:
        compression = suffixes[0] if suffixes else ""
        if compression in ("", "gzip", "zstd"):
            return compression, ""
    elif not suffixes:
        if base in (DOCKER_LAYER, DOCKER_LAYER_FOREIGN):
            return "", ""
        if base in (DOCKER_LAYER_GZIP, DOCKER_LAYER_FOREIGN_GZIP):
            return "gzip", ""
        if base == DOCKER_LAYER_ZSTD:
            return "zstd", ""
    if "encrypted" in suffixes:
        return "", "encrypted layers are not supported"
    if media_type == DOCKER_MANIFEST_V1:
        return "", "Docker schema 1 is not supported"
    return "", _NOT_A_LAYER


def layer_compression(media_type: str) -> str:
    """The compression a supported layer type declares: "gzip", "zstd" or "" (none).

    Raises Unsupported for anything that is not a tar layer cargohold can apply.
    """
    compression, problem = _layer(media_type)
    if problem:
        raise Unsupported(f"unsupported media type {media_type!r}: {problem}")
    return compression


def check_supported(media_type: str, what: str) -> None:
    """Raise Unsupported, naming `what`, unless cargohold can import content of this type."""
    if media_type in INDEX_TYPES or media_type in MANIFEST_TYPES or media_type in CONFIG_TYPES:
        return
    if media_type in _OPAQUE_TYPES:
        return
    if not media_type:
        raise Unsupported(f"unsupported media type of {what}: its descriptor has none")
    problem = _layer(media_type)[1]
    if problem:
        problem = _NOT_KNOWN if problem == _NOT_A_LAYER else problem
        raise Unsupported(f"unsupported media type {media_type!r} of {what}: {problem}")
