"""Legacy ``docker save`` archives: reading them as containerd does, and the manifest.json an export writes.

What ``docker save`` before Docker 25 and ``skopeo copy ... docker-archive:``
write: ``manifest.json``, a list of ``{"Config", "RepoTags", "Layers"}`` whose
paths name files of the archive (``<id>/layer.tar``, ``<hex>.tar``,
``<hex>.json``, or ``blobs/sha256/<hex>``; a path may be a symlink to the
file, followed once, as containerd follows it), beside a ``repositories``
file and per-layer ``json``/``VERSION`` files nobody needs. There is no
manifest: containerd's importer (`archive.ImportIndex`) makes one, and
`DockerArchive.plan` makes the very same bytes, so the digests match
``ctr images import``'s:

- the config is ``application/vnd.docker.container.image.v1+json``;
- each layer keeps its bytes; it is ``...rootfs.diff.tar`` when its first
  bytes show no compression, else ``...rootfs.diff.tar.gzip`` (zstd too, as
  containerd says); but when the content store already holds a blob labelled
  ``containerd.io/uncompressed`` = the layer's digest (a compressed copy an
  unpack made), that blob stands in for the layer (`StoredLayers`);
- the manifest is a Docker schema 2 manifest of those, in Go's JSON bytes;
- the index lists it once per ``RepoTags`` entry, annotated with the
  normalised name (``busybox:latest`` is ``docker.io/library/busybox:latest``)
  and its tag, with the config's os and architecture as platform; an image
  without tags gets one unnamed entry.

cargohold checks more than containerd before anything is stored: every path
must stay inside the archive and name a regular file (or a symlink to one),
manifest.json must be a list of such objects (at most MAX_DOCUMENT_SIZE, 100
levels deep), every config must be an image config, and each layer must
have the diff ID its config lists (a compressed layer is decompressed to
check it, bounded as an unpack is). Every error names the archive and the
manifest.json entry.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterable, Mapping, Optional, Sequence

from ..errors import InvalidArgument
from ..model import Descriptor
from . import compression, gojson, mediatypes, naming, reference
from .archive import Archive, ImportPlan, plan_index
from .digests import CHUNK, ReadTap, VerifiedReader, blob_path, digest_bytes
from .documents import Manifest, check_document_size, check_json_depth, parse_config
from .limits import SizeBudget
from .platforms import Platform, PlatformSpec, normalize, platform_matcher
from .sources import Source, clean, escapes
from .walk import describe

MANIFEST_FILE = "manifest.json"

StoredLayers = Callable[[Sequence[str]], Mapping[str, Descriptor]]
"""Given layer digests, the blobs a content store holds labelled ``containerd.io/uncompressed`` = each
(descriptor with its media type, by `stored_layer_media_type`), keyed by that digest."""

DETECT_BYTES = 10
"""Bytes containerd looks at to detect a layer's compression."""


@dataclass(frozen=True)
class SavedImage:
    """One entry of manifest.json: the config's path, the tags, and the layers' paths (bottom first)."""

    config: str
    repo_tags: tuple
    layers: tuple


@dataclass(frozen=True)
class _Layer:
    """What reading a layer file found: its digest and size, media type, and diff ID."""

    digest: str
    size: int
    media_type: str
    diff_id: str


def _is_compressed(head: bytes) -> bool:
    """containerd's `DetectCompression`: gzip, zstd, or a zstd skippable frame."""
    if compression.detect(head):
        return True
    return len(head) >= 8 and int.from_bytes(head[:4], "little") & 0xFFFFFFF0 == 0x184D2A50


def layer_media_type(head: bytes) -> str:
    """The media type containerd gives a layer starting with `head`: plain tar, else "gzip" whatever it is."""
    return mediatypes.DOCKER_LAYER_GZIP if _is_compressed(head) else mediatypes.DOCKER_LAYER


def stored_layer_media_type(head: bytes) -> str:
    """The same for a blob found in the content store (containerd's `detectLayerMediaType`): one shorter
    than the bytes it looks at is a plain tar."""
    return mediatypes.DOCKER_LAYER if len(head) < DETECT_BYTES else layer_media_type(head)


def _string(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{what} must be a non-empty string, not {value!r}"[:300])
    return value


def _strings(value: object, what: str) -> tuple:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidArgument(f"{what} must be a list of strings")
    return tuple(_string(item, f"{what}[{i}]") for i, item in enumerate(value))


def parse_manifest_json(data: bytes) -> list[SavedImage]:
    """The entries of a manifest.json, validated; InvalidArgument naming the entry at fault."""
    check_json_depth(data, MANIFEST_FILE)
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"{MANIFEST_FILE} is not valid JSON: {exc}") from None
    if not isinstance(doc, list):
        raise InvalidArgument(f"{MANIFEST_FILE} is not a JSON list (of {{Config, RepoTags, Layers}} objects)")
    if not doc:
        raise InvalidArgument(f"{MANIFEST_FILE} lists no image")
    images = []
    for i, item in enumerate(doc):
        what = f"{MANIFEST_FILE}[{i}]"
        if not isinstance(item, dict):
            raise InvalidArgument(f"{what} is not a JSON object")
        images.append(SavedImage(_string(item.get("Config"), f"{what}: Config"),
                                 _strings(item.get("RepoTags"), f"{what}: RepoTags"),
                                 _strings(item.get("Layers"), f"{what}: Layers")))
    return images


def _descriptor_json(d: Descriptor, platform: Optional[Platform] = None) -> dict:
    """A descriptor as containerd's Go struct writes it (field order, omitted empty fields)."""
    obj: dict = {}
    if d.media_type:
        obj["mediaType"] = d.media_type
    obj["digest"] = d.digest
    obj["size"] = d.size
    if d.annotations:
        obj["annotations"] = gojson.go_map(d.annotations)
    if platform is not None:
        p: dict = {"architecture": platform.architecture, "os": platform.os}
        if platform.os_version:
            p["os.version"] = platform.os_version
        if platform.os_features:
            p["os.features"] = list(platform.os_features)
        if platform.variant:
            p["variant"] = platform.variant
        obj["platform"] = p
    return obj


def docker_manifest(config: Descriptor, layers: Sequence[Descriptor]) -> tuple[Descriptor, bytes]:
    """The Docker schema 2 manifest containerd writes for a saved image, and its descriptor."""
    data = gojson.marshal({"schemaVersion": 2, "mediaType": mediatypes.DOCKER_MANIFEST,
                           "config": _descriptor_json(config),
                           "layers": [_descriptor_json(layer) for layer in layers]})
    return Descriptor(mediatypes.DOCKER_MANIFEST, digest_bytes(data), len(data)), data


def docker_index(entries: Sequence[tuple[Descriptor, Platform]]) -> tuple[Descriptor, bytes]:
    """The OCI index containerd writes over the manifests (entries: descriptor with annotations, platform)."""
    data = gojson.marshal({"schemaVersion": 2,
                           "manifests": [_descriptor_json(d, p) for d, p in entries] or None})
    return Descriptor(mediatypes.OCI_INDEX, digest_bytes(data), len(data)), data


def index_entries(manifest: Descriptor, platform: Platform, repo_tags: Sequence[str],
                  what: str) -> list[tuple[Descriptor, Platform]]:
    """One index entry per tag, annotated with its normalised name and tag (none without tags)."""
    if not repo_tags:
        return [(manifest, platform)]
    entries = []
    for i, tag in enumerate(repo_tags):
        try:
            name = reference.normalize(tag)
        except InvalidArgument as exc:
            raise InvalidArgument(f"{what}: RepoTags[{i}]: {exc}") from None
        annotations = {naming.IMAGE_NAME: name, naming.REF_NAME: naming.oci_reference_name(name)}
        entries.append((Descriptor(manifest.media_type, manifest.digest, manifest.size, annotations), platform))
    return entries


class DockerArchive(Archive):
    """A ``docker save`` archive opened for reading (a context manager); ``images`` are its manifest.json.

    ``index`` is None until `plan` made it (it depends on the content store).
    """

    format = "docker"

    def __init__(self, path: str, source: Source) -> None:
        super().__init__(path, source)
        self.index = None
        self._layers: dict[str, _Layer] = {}       # by (resolved) member name, read once
        self._documents: dict[str, bytes] = {}     # manifests and index made here, by digest
        self._files: dict[str, str] = {}           # member name of each archive blob, by digest
        self._stored: set = set()                  # blobs the content store stands in with
        with self._context():
            f, size = self._member(MANIFEST_FILE, "the file")
            with f:
                check_document_size(size, MANIFEST_FILE)
                self.images = parse_manifest_json(f.read(size))
            paths = set()
            for i, image in enumerate(self.images):
                paths.add(self._path(image.config, f"{MANIFEST_FILE}[{i}]: config"))
                paths.update(self._path(path, f"{MANIFEST_FILE}[{i}]: layer") for path in image.layers)
        # the files manifest.json names (a tar's first scan remembered only the layout's), then link targets
        source.scan(paths.__contains__)
        targets = {source.link(p) for p in paths} - {None}
        if targets - paths:
            source.scan(targets.__contains__)

    @staticmethod
    def _path(path: str, what: str) -> str:
        if escapes(path):
            raise InvalidArgument(f"{what} path {path!r} escapes the archive")
        return clean(path)

    def _member(self, name: str, what: str) -> tuple[BinaryIO, int]:
        """A member of the archive by clean name, following one symlink; InvalidArgument naming `what`."""
        shown = repr(name)
        target = self._source.link(name)
        if target is not None:
            if self._source.link(target) is not None:
                raise InvalidArgument(f"{what} {name!r} is a symlink to {target!r}, itself a symlink "
                                      "(one level is followed)")
            name, shown = target, f"{name!r} (a symlink to {target!r})"
        try:
            return self._source.open(name)
        except FileNotFoundError:
            raise InvalidArgument(f"{what} {shown} is missing from the archive") from None
        except OSError as exc:
            raise InvalidArgument(f"{what} {shown} cannot be read: {exc.strerror}") from None
        except InvalidArgument as exc:
            raise InvalidArgument(f"{what} {shown}: {exc}") from None

    def _resolved(self, name: str) -> str:
        return self._source.link(name) or name

    def _open(self, descriptor: Descriptor, prefix: str = "") -> BinaryIO:
        what = prefix + describe(descriptor)
        data = self._documents.get(descriptor.digest)
        if data is not None:
            return VerifiedReader(io.BytesIO(data), descriptor.digest, descriptor.size, what)
        name = self._files.get(descriptor.digest)
        if name is None:
            where = "the content store, not in the archive" if descriptor.digest in self._stored else "the archive"
            raise InvalidArgument(f"{describe(descriptor)} is not in {where}")
        f, size = self._member(name, describe(descriptor))
        if size != descriptor.size:
            f.close()
            raise InvalidArgument(f"{describe(descriptor)}: size mismatch, the archive holds {size} bytes "
                                  f"in {name!r}, {descriptor.size} were planned")
        return VerifiedReader(f, descriptor.digest, descriptor.size, what)

    def _check(self, descriptor: Descriptor) -> None:
        if descriptor.digest not in self._stored:
            self._open(descriptor).close()

    def _read_layer(self, path: str, what: str, max_layer_size: Optional[int]) -> _Layer:
        """Digest, size, media type and diff ID of a layer file (read once per archive)."""
        name = self._resolved(clean(path))
        if name in self._layers:
            return self._layers[name]
        f, size = self._member(clean(path), what)
        with f:
            head = f.read(DETECT_BYTES)
        raw = hashlib.sha256()
        f, _ = self._member(clean(path), what)
        what = f"{what} {path!r}"
        with f:
            tap = ReadTap(f, raw.update)
            if _is_compressed(head):
                budget = SizeBudget(what, max_layer_size, lambda: size)
                plain = hashlib.sha256()
                stream = compression.decompressed(io.BufferedReader(tap), what)
                while chunk := stream.read(CHUNK):
                    budget.stream(len(chunk))
                    plain.update(chunk)
                while tap.read(CHUNK):  # what follows the compressed stream is part of the blob too
                    pass
                diff_id = "sha256:" + plain.hexdigest()
            else:
                while tap.read(CHUNK):
                    pass
                diff_id = "sha256:" + raw.hexdigest()
        layer = _Layer("sha256:" + raw.hexdigest(), size, layer_media_type(head), diff_id)
        self._layers[name] = layer
        self._files.setdefault(layer.digest, name)
        return layer

    def _read_config(self, path: str, what: str) -> tuple[Descriptor, bytes]:
        name = clean(path)
        f, size = self._member(name, what)
        with f:
            check_document_size(size, f"{what} {path!r}")
            data = f.read(size)
        descriptor = Descriptor(mediatypes.DOCKER_CONFIG, digest_bytes(data), len(data))
        self._files.setdefault(descriptor.digest, self._resolved(name))
        return descriptor, data

    def plan(self, *, base_name: Optional[str] = None, platform: PlatformSpec = None,
             all_platforms: bool = False, stored_layers: Optional[StoredLayers] = None,
             max_layer_size: Optional[int] = None) -> ImportPlan:
        """Decide what importing this archive stores: the manifests and index containerd makes, and the blobs.

        Reads every config and layer (layers to check their diff IDs,
        decompressing a compressed one within `max_layer_size`, see
        `limits`). `stored_layers` looks up compressed copies of layers in
        the content store (containerd's ``containerd.io/uncompressed``
        lookup); without it none is used. Platforms and names as
        `ImageArchive.plan`; every image with tags is named by them.
        """
        matcher = platform_matcher(platform, all_platforms)
        with self._context():
            saved = [self._resolve(i, image, max_layer_size) for i, image in enumerate(self.images)]
            stand_ins = self._stand_ins([layers for _, _, layers in saved], stored_layers)
            entries = []
            for i, (image, (config, image_platform, layers)) in enumerate(zip(self.images, saved)):
                manifest, data = docker_manifest(config, self._substitute(layers, stand_ins))
                self._documents[manifest.digest] = data
                entries += index_entries(manifest, image_platform, image.repo_tags, f"{MANIFEST_FILE}[{i}]")
            self.index, data = docker_index(entries)
            self._documents[self.index.digest] = data
            return plan_index(self.index, self._fetch, self._check, matcher, base_name, MANIFEST_FILE)

    def _resolve(self, i: int, image: SavedImage,
                 max_layer_size: Optional[int]) -> tuple[Descriptor, Platform, list[Descriptor]]:
        """The config, platform (containerd's: the config's os and architecture) and layers of one
        manifest.json entry, checked against each other."""
        what = f"{MANIFEST_FILE}[{i}]"
        config, data = self._read_config(image.config, f"{what}: config")
        parsed = parse_config(data, f"{what}: config {image.config!r}")
        diff_ids = parsed.diff_ids
        if len(diff_ids) != len(image.layers):
            raise InvalidArgument(f"{what} lists {len(image.layers)} layers but its config {image.config!r} "
                                  f"has {len(diff_ids)} diff IDs")
        layers = []
        for j, (path, diff_id) in enumerate(zip(image.layers, diff_ids)):
            layer = self._read_layer(path, f"{what}: layer", max_layer_size)
            if layer.diff_id != diff_id:
                raise InvalidArgument(f"{what}: layer {path!r} has diff ID {layer.diff_id}, but its config "
                                      f"{image.config!r} lists {diff_id} for layer {j}")
            layers.append(Descriptor(layer.media_type, layer.digest, layer.size))
        return config, normalize(Platform(parsed.platform.os, parsed.platform.architecture)), layers

    def _stand_ins(self, layer_lists: Iterable[list],
                   stored_layers: Optional[StoredLayers]) -> Mapping[str, Descriptor]:
        digests = list(dict.fromkeys(layer.digest for layers in layer_lists for layer in layers))
        if stored_layers is None or not digests:
            return {}
        found = dict(stored_layers(digests))
        self._stored |= {d.digest for d in found.values()}
        return found

    @staticmethod
    def _substitute(layers: list[Descriptor], stand_ins: Mapping[str, Descriptor]) -> list[Descriptor]:
        """Layers with their stored stand-ins; as in containerd, only the last of repeated layers is replaced."""
        last = {layer.digest: j for j, layer in enumerate(layers)}
        return [stand_ins.get(layer.digest, layer) if last[layer.digest] == j else layer
                for j, layer in enumerate(layers)]


def _repo_tag(name: str) -> Optional[str]:
    """How manifest.json names an image (containerd's `familiarizeReference`); None for a name that is no
    reference, or one with a digest and no tag (``docker load`` and skopeo refuse those)."""
    try:
        ref = reference.parse(name)
    except InvalidArgument:
        return None
    if ref.digest and not ref.tag:
        return None
    return reference.familiar(name)


def saved_manifest_json(manifests: Iterable[tuple[Manifest, Sequence[str]]]) -> bytes:
    """The manifest.json of an export (containerd's `manifestsRecord`), in Go's JSON bytes.

    `manifests` are (manifest, image names) pairs; paths are the blobs'
    ``blobs/<alg>/<hex>``, names are written as Docker shows them
    (``busybox:latest``, a name without tag gets ``:latest``); names that
    ``docker load`` and skopeo would refuse (not a reference, or a digest
    without a tag) are left out, where containerd fails the export.
    """
    items = []
    for manifest, names in manifests:
        tags = [tag for tag in map(_repo_tag, names) if tag is not None]
        items.append({"Config": blob_path(manifest.config.digest), "RepoTags": tags or None,
                      "Layers": [blob_path(layer.digest) for layer in manifest.layers] or None})
    return gojson.marshal(items)
