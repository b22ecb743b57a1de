"""Builders of real OCI images for the tests: in Python, and with umoci and skopeo.

`Layer` writes a layer tar entry by entry (whiteouts, opaque directories, hard
links, symlinks, xattrs, devices, and deliberately unsafe entries); `Layout`
writes an OCI image layout directory blob by blob, with OCI or Docker media
types, nested multi-platform indexes and hand-made bad documents;
`tar_layout` packs a layout into a tar. `umoci_image` builds a multi-layer
image with umoci from real directory trees, and `skopeo_archive` turns a
layout into the tar skopeo writes. The helpers write independently of
cargohold.oci, so the tests check the package against them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from typing import Optional

import pytest
import zstandard

from cargohold.model import Descriptor

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"

LAYER_TYPES = {
    (False, ""): OCI_LAYER, (False, "gzip"): OCI_LAYER + "+gzip", (False, "zstd"): OCI_LAYER + "+zstd",
    (True, ""): DOCKER_LAYER, (True, "gzip"): DOCKER_LAYER + ".gzip", (True, "zstd"): DOCKER_LAYER + ".zstd",
}

UMOCI = shutil.which("umoci")
SKOPEO = shutil.which("skopeo")
needs_umoci = pytest.mark.skipif(UMOCI is None, reason="umoci is not installed (apt-get install umoci)")
needs_skopeo = pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed (apt-get install skopeo)")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def compress(data: bytes, kind: str) -> bytes:
    """`data` compressed with "gzip", "zstd" or left as is ("")."""
    if kind == "gzip":
        return gzip.compress(data, mtime=0)
    if kind == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    assert kind == ""
    return data


class Layer:
    """A layer tar built entry by entry (PAX format, fixed times unless given)."""

    def __init__(self, mtime: int = 1_600_000_000) -> None:
        self._buffer = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._buffer, mode="w", format=tarfile.PAX_FORMAT)
        self._mtime = mtime

    def _info(self, name: str, kind: bytes, mode: int, uid: int = 0, gid: int = 0,
              mtime: Optional[int] = None, xattrs: Optional[dict] = None) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.uid, info.gid = uid, gid
        info.mtime = self._mtime if mtime is None else mtime
        if xattrs:
            info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
        return info

    def add(self, info: tarfile.TarInfo, data: bytes = b"") -> "Layer":
        info.size = len(data) if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
        self._tar.addfile(info, io.BytesIO(data) if info.size else None)
        return self

    def file(self, name: str, data: bytes = b"", mode: int = 0o644, **kw) -> "Layer":
        return self.add(self._info(name, tarfile.REGTYPE, mode, **kw), data)

    def dir(self, name: str, mode: int = 0o755, **kw) -> "Layer":
        return self.add(self._info(name, tarfile.DIRTYPE, mode, **kw))

    def symlink(self, name: str, target: str, **kw) -> "Layer":
        info = self._info(name, tarfile.SYMTYPE, 0o777, **kw)
        info.linkname = target
        return self.add(info)

    def hardlink(self, name: str, target: str, **kw) -> "Layer":
        info = self._info(name, tarfile.LNKTYPE, 0o644, **kw)
        info.linkname = target
        return self.add(info)

    def fifo(self, name: str, mode: int = 0o640) -> "Layer":
        return self.add(self._info(name, tarfile.FIFOTYPE, mode))

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> "Layer":
        info = self._info(name, tarfile.CHRTYPE, mode)
        info.devmajor, info.devminor = major, minor
        return self.add(info)

    def whiteout(self, path: str) -> "Layer":
        head, _, base = path.rpartition("/")
        return self.file(f"{head}/.wh.{base}" if head else f".wh.{base}")

    def opaque(self, directory: str) -> "Layer":
        return self.file(f"{directory}/.wh..wh..opq")

    def bytes(self) -> bytes:
        self._tar.close()
        return self._buffer.getvalue()


def platform_json(os_name: str, arch: str, variant: str = "") -> dict:
    out = {"architecture": arch, "os": os_name}
    if variant:
        out["variant"] = variant
    return out


def descriptor_json(d: Descriptor, platform: Optional[dict] = None) -> dict:
    out = {"mediaType": d.media_type, "digest": d.digest, "size": d.size}
    if d.annotations:
        out["annotations"] = d.annotations
    if platform:
        out["platform"] = platform
    return out


@dataclass
class BuiltImage:
    """What `Layout.image` wrote: the manifest and config descriptors, layers and diff IDs."""

    manifest: Descriptor
    config: Descriptor
    layers: list
    diff_ids: list
    platform: dict = field(default_factory=dict)


class Layout:
    """An OCI image layout directory, written blob by blob."""

    def __init__(self, root: "str | os.PathLike[str]", docker: bool = False) -> None:
        self.root = os.fspath(root)
        self.docker = docker
        os.makedirs(os.path.join(self.root, "blobs", "sha256"), exist_ok=True)
        self.write_file("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')

    def write_file(self, name: str, data: bytes) -> None:
        with open(os.path.join(self.root, name), "wb") as f:
            f.write(data)

    def blob_file(self, digest: str) -> str:
        return os.path.join(self.root, "blobs", *digest.split(":"))

    def blob(self, data: bytes, media_type: str, annotations: Optional[dict] = None) -> Descriptor:
        digest = sha256(data)
        with open(self.blob_file(digest), "wb") as f:
            f.write(data)
        return Descriptor(media_type, digest, len(data), annotations)

    def document(self, obj: dict, media_type: str) -> Descriptor:
        return self.blob(json.dumps(obj, separators=(",", ":")).encode(), media_type)

    def image(self, layers: list, *, compression: str = "gzip", os_name: str = "linux",
              arch: str = "amd64", variant: str = "", layer_type: Optional[str] = None,
              config_media_type: Optional[str] = None) -> BuiltImage:
        """An image of `layers` (tar bytes), compressed alike, with its config and manifest."""
        descriptors, diff_ids = [], []
        for tar in layers:
            media_type = layer_type or LAYER_TYPES[self.docker, compression]
            descriptors.append(self.blob(compress(tar, compression), media_type))
            diff_ids.append(sha256(tar))
        platform = platform_json(os_name, arch, variant)
        config = self.document({**platform, "config": {}, "rootfs": {"type": "layers", "diff_ids": diff_ids}},
                               config_media_type or (DOCKER_CONFIG if self.docker else OCI_CONFIG))
        manifest_type = DOCKER_MANIFEST if self.docker else OCI_MANIFEST
        manifest = self.document({"schemaVersion": 2, "mediaType": manifest_type,
                                  "config": descriptor_json(config),
                                  "layers": [descriptor_json(d) for d in descriptors]}, manifest_type)
        return BuiltImage(manifest, config, descriptors, diff_ids, platform)

    def index(self, images: list) -> Descriptor:
        """A (nested) index of BuiltImages, each entry with its platform."""
        media_type = DOCKER_LIST if self.docker else OCI_INDEX
        return self.document({"schemaVersion": 2, "mediaType": media_type,
                              "manifests": [descriptor_json(i.manifest, i.platform) for i in images]},
                             media_type)

    def write_index(self, entries: list) -> bytes:
        """Write index.json listing (descriptor, annotations[, platform]) entries."""
        manifests = []
        for entry in entries:
            descriptor, annotations, *platform = entry
            d = Descriptor(descriptor.media_type, descriptor.digest, descriptor.size, annotations)
            manifests.append(descriptor_json(d, platform[0] if platform else None))
        data = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}).encode()
        self.write_file("index.json", data)
        return data


def tar_layout(layout_dir: "str | os.PathLike[str]", tar_path: "str | os.PathLike[str]",
               extra: Optional[list] = None) -> str:
    """Pack a layout directory into a tar (as oci-archive does), plus `extra` (TarInfo, data) members."""
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(os.listdir(layout_dir)):
            tar.add(os.path.join(layout_dir, name), arcname=name)
        for info, data in extra or []:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return os.fspath(tar_path)


def run(*args: str) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def _umoci_unpack(layout: str, tag: str, bundle: str) -> None:
    rootless = [] if os.geteuid() == 0 else ["--rootless"]
    run(UMOCI, "unpack", *rootless, "--image", f"{layout}:{tag}", bundle)


def umoci_image(workdir: "str | os.PathLike[str]") -> tuple[str, str]:
    """A three-layer image built with umoci from real trees; returns (layout dir, tag).

    Layer 1 creates files (one setuid, one owned by 1000:1000 when root),
    directories, a hard link, absolute and relative symlinks; layer 2 deletes
    a file, a hard link and a directory (whiteouts), replaces a directory's
    content and changes a file; layer 3 turns a file into a directory.
    """
    workdir = os.fspath(workdir)
    layout, bundle = os.path.join(workdir, "layout"), os.path.join(workdir, "bundle")
    run(UMOCI, "init", "--layout", layout)
    run(UMOCI, "new", "--image", f"{layout}:base")
    _umoci_unpack(layout, "base", bundle)
    rootfs = os.path.join(bundle, "rootfs")

    def write(rel: str, data: bytes, mode: int = 0o644) -> None:
        path = os.path.join(rootfs, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)

    write("etc/motd", b"hello\n")
    write("etc/app.conf", b"threads=4\n", 0o600)
    write("usr/bin/tool", b"#!/bin/sh\necho tool\n", 0o755)
    write("usr/bin/suid", b"suid\n", 0o4755)
    write("data/keep", b"keep\n")
    write("data/gone", b"gone\n")
    write("cache/a", b"a\n")
    write("cache/b", b"b\n")
    write("tmp/later-a-dir", b"file for now\n")
    write("home/user/owned", b"mine\n")
    if os.geteuid() == 0:
        os.chown(os.path.join(rootfs, "home/user/owned"), 1000, 1000)
    os.link(os.path.join(rootfs, "etc/motd"), os.path.join(rootfs, "etc/motd.link"))
    os.symlink("/etc/motd", os.path.join(rootfs, "motd-abs"))
    os.symlink("../etc/app.conf", os.path.join(rootfs, "usr/app.conf"))
    run(UMOCI, "repack", "--refresh-bundle", "--image", f"{layout}:v1", bundle)

    os.unlink(os.path.join(rootfs, "data/gone"))
    os.unlink(os.path.join(rootfs, "etc/motd.link"))
    shutil.rmtree(os.path.join(rootfs, "cache"))
    write("cache/c", b"c\n")
    write("etc/motd", b"hello again\n")
    run(UMOCI, "repack", "--refresh-bundle", "--image", f"{layout}:v2", bundle)

    os.unlink(os.path.join(rootfs, "tmp/later-a-dir"))
    write("tmp/later-a-dir/inside", b"now a directory\n")
    run(UMOCI, "repack", "--refresh-bundle", "--image", f"{layout}:v3", bundle)
    return layout, "v3"


def umoci_rootfs(layout: str, tag: str, workdir: "str | os.PathLike[str]") -> str:
    """umoci's own unpack of an image: the reference tree for ours."""
    bundle = os.path.join(os.fspath(workdir), "reference-bundle")
    _umoci_unpack(layout, tag, bundle)
    return os.path.join(bundle, "rootfs")


def skopeo_archive(layout: str, tag: str, out: "str | os.PathLike[str]", *, zstd: bool = False,
                   ref_name: Optional[str] = None) -> str:
    """``skopeo copy oci:LAYOUT:TAG oci-archive:OUT[:REF]``, optionally recompressing layers with zstd."""
    dest = f"oci-archive:{os.fspath(out)}" + (f":{ref_name}" if ref_name else "")
    extra = ["--dest-compress-format", "zstd"] if zstd else []
    run(SKOPEO, "copy", "-q", *extra, f"oci:{layout}:{tag}", dest)
    return os.fspath(out)


def tree(root: "str | os.PathLike[str]", *, owners: bool = True, mtimes: bool = False) -> dict:
    """A comparable picture of a directory tree: type, mode, owner, content or link target, file times;
    hard links grouped."""
    root = os.fspath(root)
    out, inodes = {}, {}
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            kind = "l" if os.path.islink(path) else "d" if os.path.isdir(path) else "f"
            if kind == "l":
                detail = os.readlink(path)
            elif kind == "f" and os.path.isfile(path):
                with open(path, "rb") as f:
                    detail = f.read()
            else:
                detail = None
            entry = [kind, st.st_mode & 0o7777 if kind != "l" else None, detail]
            if owners:
                entry.append((st.st_uid, st.st_gid))
            if mtimes and kind == "f":  # a whiteout changes its directory's time at apply time
                entry.append(int(st.st_mtime))
            if kind == "f" and st.st_nlink > 1:
                entry.append(("links", inodes.setdefault(st.st_ino, rel)))
            out[rel] = tuple(entry)
    return out
