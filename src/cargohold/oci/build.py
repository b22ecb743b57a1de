"""Building small OCI images in Python, without any external tool (`cargohold demo` uses it).

`LayerBuilder` writes a layer's tar entry by entry, whiteouts included;
`build_image` turns layer tars into compressed layer blobs, a config (with the
diff IDs) and a manifest; `write_image` writes them as an OCI layout tar
naming the image. Times and owners are fixed, so the same input gives the
same digests.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from typing import Optional, Sequence, Union

import zstandard

from ..model import Descriptor
from . import mediatypes
from .digests import digest_bytes
from .documents import descriptor_json
from .export import Destination, write_archive
from .platforms import Platform, host

_LAYER_TYPES = {"": mediatypes.OCI_LAYER, "gzip": mediatypes.OCI_LAYER_GZIP, "zstd": mediatypes.OCI_LAYER_ZSTD}


class LayerBuilder:
    """A layer tar (PAX format), built entry by entry; `tar()` returns its bytes."""

    def __init__(self, mtime: int = 1_700_000_000) -> None:
        self._buffer = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._buffer, mode="w", format=tarfile.PAX_FORMAT)
        self._mtime = mtime

    def _add(self, name: str, kind: bytes, mode: int, data: bytes = b"", linkname: str = "") -> "LayerBuilder":
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime, info.linkname = kind, mode, self._mtime, linkname
        info.size = len(data)
        self._tar.addfile(info, io.BytesIO(data) if data else None)
        return self

    def file(self, name: str, data: bytes = b"", mode: int = 0o644) -> "LayerBuilder":
        return self._add(name, tarfile.REGTYPE, mode, data)

    def dir(self, name: str, mode: int = 0o755) -> "LayerBuilder":
        return self._add(name, tarfile.DIRTYPE, mode)

    def symlink(self, name: str, target: str) -> "LayerBuilder":
        return self._add(name, tarfile.SYMTYPE, 0o777, linkname=target)

    def hardlink(self, name: str, target: str) -> "LayerBuilder":
        return self._add(name, tarfile.LNKTYPE, 0o644, linkname=target)

    def whiteout(self, path: str) -> "LayerBuilder":
        """Delete `path` of the lower layers (``.wh.<name>``)."""
        head, _, base = path.rpartition("/")
        return self.file(f"{head}/.wh.{base}" if head else f".wh.{base}")

    def opaque(self, directory: str) -> "LayerBuilder":
        """Hide everything lower layers put in `directory` (``.wh..wh..opq``)."""
        return self.file(f"{directory}/.wh..wh..opq")

    def tar(self) -> bytes:
        self._tar.close()
        return self._buffer.getvalue()


def _compress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


def _document(obj: dict, media_type: str) -> tuple[Descriptor, bytes]:
    data = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
    return Descriptor(media_type, digest_bytes(data), len(data)), data


def build_image(layers: Sequence[Union[bytes, tuple[bytes, str]]], *, platform: Optional[Platform] = None,
                config: Optional[dict] = None) -> tuple[Descriptor, list[tuple[Descriptor, bytes]]]:
    """An image of `layers` (tar bytes, or (tar bytes, "gzip"|"zstd"|"") pairs; gzip by default).

    Returns the manifest's descriptor and every blob as (descriptor, bytes):
    manifest, config, layers. The config names `platform` (the host's by
    default) and the layers' diff IDs; `config` adds an OCI ``config`` object.
    """
    platform = platform or host()
    blobs, diff_ids = [], []
    for layer in layers:
        tar, compression = (layer, "gzip") if isinstance(layer, bytes) else layer
        data = _compress(tar, compression)
        blobs.append((Descriptor(_LAYER_TYPES[compression], digest_bytes(data), len(data)), data))
        diff_ids.append(digest_bytes(tar))
    image_config = {"architecture": platform.architecture, "os": platform.os, "config": config or {},
                    "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    if platform.variant:
        image_config["variant"] = platform.variant
    config_desc, config_data = _document(image_config, mediatypes.OCI_CONFIG)
    manifest_desc, manifest_data = _document(
        {"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST, "config": descriptor_json(config_desc),
         "layers": [descriptor_json(d) for d, _ in blobs]}, mediatypes.OCI_MANIFEST)
    return manifest_desc, [(manifest_desc, manifest_data), (config_desc, config_data), *blobs]


def write_image(dest: Destination, name: str,
                layers: Sequence[Union[bytes, tuple[bytes, str]]], **options) -> Descriptor:
    """Write an OCI layout tar holding one image `name` built from `layers`; returns its manifest descriptor.

    `options` are `build_image`'s.
    """
    manifest, blobs = build_image(layers, **options)
    write_archive(dest, [(name, manifest)], ((d, io.BytesIO(data)) for d, data in blobs))
    return manifest
