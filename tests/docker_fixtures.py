"""Legacy ``docker save`` archives written file by file in Python, independently of cargohold.oci.

`SavedArchive` writes what ``docker save`` before Docker 25 writes (style
``"legacy"``: ``<v1 id>/layer.tar`` with ``json`` and ``VERSION`` beside it,
a repeated layer as a symlink ``<v1 id>/layer.tar -> ../<first v1 id>/layer.tar``,
the config as ``<hex>.json``, ``manifest.json`` and ``repositories``) or the
same with ``blobs/sha256/<hex>`` paths and no ``oci-layout`` (style
``"blobs"``), as a tar (plain, gzip or zstd) or a directory. Configs carry a
history with empty layers (ENV, CMD) between the real ones. Bad archives are
made by editing `manifest`, `files` and `links` before writing.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from typing import Optional

import zstandard

from oci_fixtures import compress


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class SavedImage:
    """What `SavedArchive.image` wrote: the config bytes, and each layer's file bytes and diff ID."""

    config: bytes
    layer_files: list
    diff_ids: list
    tags: list
    entry: dict = field(default_factory=dict)

    @property
    def config_digest(self) -> str:
        return sha256(self.config)


def image_config(diff_ids: list, *, arch: str = "amd64", os_name: str = "linux", history: bool = True,
                 extra: Optional[dict] = None) -> dict:
    """A Docker image config over `diff_ids`, its history with empty layers between the real ones."""
    steps = []
    for i, _ in enumerate(diff_ids):
        steps.append({"created": f"2024-01-0{i % 9 + 1}T00:00:00Z", "created_by": f"/bin/sh -c #(nop) ADD file{i} /"})
        steps.append({"created": f"2024-01-0{i % 9 + 1}T00:00:01Z", "created_by": f"/bin/sh -c #(nop) ENV N={i}",
                      "empty_layer": True})
    steps.append({"created": "2024-02-01T00:00:00Z", "created_by": '/bin/sh -c #(nop) CMD ["sh"]',
                  "empty_layer": True})
    config = {"architecture": arch, "os": os_name, "created": "2024-02-01T00:00:00Z",
              "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["sh"]},
              "rootfs": {"type": "layers", "diff_ids": list(diff_ids)}}
    if history:
        config["history"] = steps
    config.update(extra or {})
    return config


class SavedArchive:
    """A ``docker save`` archive being assembled: `image` adds images, `write` writes it."""

    def __init__(self, style: str = "legacy") -> None:
        assert style in ("legacy", "blobs")
        self.style = style
        self.files: dict = {}       # path -> bytes
        self.links: dict = {}       # path -> symlink target
        self.manifest: list = []    # manifest.json's entries
        self.repositories: dict = {}
        self._layer_paths: dict = {}  # file digest -> first path

    def _layer_path(self, data: bytes, v1_id: str) -> str:
        digest = sha256(data)
        if self.style == "blobs":
            path = f"blobs/sha256/{digest[7:]}"
            self.files[path] = data
            return path
        path = f"{v1_id}/layer.tar"
        first = self._layer_paths.get(digest)
        if first is None:
            self._layer_paths[digest] = path
            self.files[path] = data
        elif first != path:
            self.links[path] = f"../{first}"  # how docker save writes a layer it already wrote
        self.files[f"{v1_id}/json"] = json.dumps({"id": v1_id, "created": "2024-01-01T00:00:00Z"}).encode()
        self.files[f"{v1_id}/VERSION"] = b"1.0"
        return path

    def image(self, layers: list, tags: list, *, compression: Optional[list] = None, **config_options) -> SavedImage:
        """An image of `layers` (tar bytes), each stored compressed as `compression` says ("" by default)."""
        compression = compression or [""] * len(layers)
        diff_ids = [sha256(tar) for tar in layers]
        config = json.dumps(image_config(diff_ids, **config_options), separators=(",", ":")).encode()
        config_hex = sha256(config)[7:]
        config_path = f"blobs/sha256/{config_hex}" if self.style == "blobs" else f"{config_hex}.json"
        self.files[config_path] = config
        paths, files, chain = [], [], ""
        for tar, kind in zip(layers, compression):
            data = compress(tar, kind)
            chain = hashlib.sha256(f"{chain} {sha256(tar)} {config_hex}".encode()).hexdigest()
            paths.append(self._layer_path(data, chain))
            files.append(data)
        entry = {"Config": config_path, "RepoTags": list(tags) or None, "Layers": paths}
        self.manifest.append(entry)
        for tag in tags:
            repo, _, version = tag.rpartition(":") if ":" in tag.split("/")[-1] else (tag, "", "latest")
            self.repositories.setdefault(repo, {})[version] = chain
        return SavedImage(config, files, diff_ids, list(tags), entry)

    def members(self) -> list:
        """(TarInfo, data) pairs, in the order docker save writes them (layers, configs, then manifest.json)."""
        out = []
        for path in sorted(set(self.files) | set(self.links)):
            if path in self.links:
                info = tarfile.TarInfo(path)
                info.type, info.linkname = tarfile.SYMTYPE, self.links[path]
                out.append((info, b""))
            else:
                out.append((tarfile.TarInfo(path), self.files[path]))
        out.append((tarfile.TarInfo("manifest.json"), json.dumps(self.manifest).encode()))
        out.append((tarfile.TarInfo("repositories"), json.dumps(self.repositories).encode()))
        return out

    def tar_bytes(self) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            directories = set()
            for info, data in self.members():
                parent = os.path.dirname(info.name)
                if parent and parent not in directories:
                    directories.add(parent)
                    tar.addfile(_fixed(tarfile.TarInfo(parent), tarfile.DIRTYPE))
                info.size = len(data)
                tar.addfile(_fixed(info, info.type), io.BytesIO(data))
        return buffer.getvalue()

    def write(self, path, *, compression: str = "") -> str:
        """Write the archive as a tar at `path`, compressed with "gzip" or "zstd" or not at all."""
        data = self.tar_bytes()
        if compression == "gzip":
            data = gzip.compress(data, mtime=0)
        elif compression == "zstd":
            data = zstandard.ZstdCompressor().compress(data)
        with open(path, "wb") as f:
            f.write(data)
        return os.fspath(path)

    def write_dir(self, path) -> str:
        """Write the archive's files into the directory `path` (an extracted archive)."""
        for info, data in self.members():
            full = os.path.join(path, info.name)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            if info.type == tarfile.SYMTYPE:
                os.symlink(info.linkname, full)
            else:
                with open(full, "wb") as f:
                    f.write(data)
        return os.fspath(path)


def _fixed(info: tarfile.TarInfo, kind: bytes) -> tarfile.TarInfo:
    info.type = kind
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info
