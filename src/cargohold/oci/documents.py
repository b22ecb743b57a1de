"""The JSON documents of an image: indexes, manifests, configs and their descriptors.

Parsing validates as it goes and raises InvalidArgument (Unsupported for
Docker schema 1) with a message naming the document, so a bad archive fails
with one clear error; one nested deeper than MAX_JSON_DEPTH is refused by a
linear scan before it is parsed (the parser recurses once per level). The
cross-type checks are containerd's `validateMediaType`: a manifest must not
look like an index and vice versa.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from ..errors import InvalidArgument, Unsupported
from ..model import Descriptor
from ..validation import validate_digest
from . import mediatypes
from .platforms import Platform

MAX_DOCUMENT_SIZE = 16 << 20
"""Largest index, manifest or config read into memory."""

MAX_JSON_DEPTH = 100
"""Deepest nesting of arrays and objects in a document (real ones nest a handful of levels)."""

# A JSON string; one left open runs to the end, so no match is ever retried from inside another (linear).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


def check_document_size(size: int, what: str) -> None:
    """InvalidArgument naming `what` if a document of `size` bytes is too large to read into memory."""
    if size > MAX_DOCUMENT_SIZE:
        raise InvalidArgument(f"{what} is {size} bytes, larger than {MAX_DOCUMENT_SIZE}")


@dataclass(frozen=True)
class IndexEntry:
    """One entry of an index: a manifest (or nested index) and the platform it is for."""

    descriptor: Descriptor
    platform: Optional[Platform] = None


@dataclass(frozen=True)
class Index:
    manifests: tuple
    annotations: Optional[dict] = None


@dataclass(frozen=True)
class Manifest:
    config: Descriptor
    layers: tuple
    annotations: Optional[dict] = None


@dataclass(frozen=True)
class ImageConfig:
    """What an unpack needs from an image config: its platform and the layers' diff IDs."""

    platform: Platform
    diff_ids: tuple


def check_json_depth(data: bytes, what: str) -> None:
    """InvalidArgument naming `what` if `data` nests arrays and objects deeper than MAX_JSON_DEPTH."""
    if data.count(b"[") + data.count(b"{") <= MAX_JSON_DEPTH:
        return
    depth = 0
    for char in _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS):  # brackets outside strings
        if char in b"[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise InvalidArgument(f"{what} nests arrays and objects deeper than {MAX_JSON_DEPTH} levels")
        else:
            depth -= 1


def load_json(data: bytes, what: str) -> dict:
    """Decode a JSON object, raising InvalidArgument naming `what` if it is not one."""
    check_json_depth(data, what)
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidArgument(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} is not a JSON object")
    return value


def _string(obj: Mapping, key: str, what: str, default: str = "") -> str:
    value = obj.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidArgument(f"{what}: {key!r} must be a string, not {value!r}")
    return value


def _string_map(value: Any, what: str) -> Optional[dict]:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidArgument(f"{what}: annotations must map strings to strings")
    return value


def parse_platform(obj: Any, what: str) -> Platform:
    """An OCI platform object (``os``, ``architecture``, ``variant``, ``os.version``, ``os.features``)."""
    if not isinstance(obj, dict):
        raise InvalidArgument(f"{what}: platform must be a JSON object")
    features = obj.get("os.features") or []
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise InvalidArgument(f"{what}: 'os.features' must be a list of strings")
    return Platform(_string(obj, "os", what), _string(obj, "architecture", what),
                    _string(obj, "variant", what), _string(obj, "os.version", what), tuple(features))


def parse_descriptor(obj: Any, what: str) -> IndexEntry:
    """A descriptor object, validated: media type, digest, size, annotations and platform."""
    if not isinstance(obj, dict):
        raise InvalidArgument(f"{what} is not a JSON object")
    media_type = _string(obj, "mediaType", what)
    digest = obj.get("digest")
    try:
        validate_digest(digest)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{what}: {exc}") from None
    size = obj.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidArgument(f"{what}: size must be a non-negative integer, not {size!r}")
    annotations = _string_map(obj.get("annotations"), what)
    platform = obj.get("platform")
    return IndexEntry(Descriptor(media_type, digest, size, annotations),
                      None if platform is None else parse_platform(platform, what))


def _check_kind(doc: dict, media_type: str, what: str) -> None:
    if doc.get("fsLayers"):
        raise Unsupported(f"{what}: Docker schema 1 manifests are not supported")
    declared = doc.get("mediaType")
    if mediatypes.is_manifest(media_type) and (doc.get("manifests") or mediatypes.is_index(declared)):
        raise InvalidArgument(f"{what}: expected a manifest ({media_type}) but found an index")
    if mediatypes.is_index(media_type) and (
            doc.get("config") or doc.get("layers") or mediatypes.is_manifest(declared)):
        raise InvalidArgument(f"{what}: expected an index ({media_type}) but found a manifest")


def _list(doc: dict, key: str, what: str) -> list:
    value = doc.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidArgument(f"{what}: {key!r} must be a list")
    return value


def parse_index(data: bytes, media_type: str, what: str) -> Index:
    """An image index (or Docker manifest list, or a layout's index.json)."""
    doc = load_json(data, what)
    _check_kind(doc, media_type, what)
    entries = tuple(parse_descriptor(item, f"{what}: manifests[{i}]")
                    for i, item in enumerate(_list(doc, "manifests", what)))
    return Index(entries, _string_map(doc.get("annotations"), what))


def parse_manifest(data: bytes, media_type: str, what: str) -> Manifest:
    """An image manifest (OCI or Docker schema 2)."""
    doc = load_json(data, what)
    _check_kind(doc, media_type, what)
    if doc.get("config") is None:
        raise InvalidArgument(f"{what}: the manifest has no config")
    config = parse_descriptor(doc["config"], f"{what}: config").descriptor
    layers = tuple(parse_descriptor(item, f"{what}: layers[{i}]").descriptor
                   for i, item in enumerate(_list(doc, "layers", what)))
    return Manifest(config, layers, _string_map(doc.get("annotations"), what))


def parse_config(data: bytes, what: str) -> ImageConfig:
    """An image config: its platform and ``rootfs.diff_ids``."""
    doc = load_json(data, what)
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, dict):
        raise InvalidArgument(f"{what}: the config has no rootfs")
    diff_ids = _list(rootfs, "diff_ids", f"{what}: rootfs")
    for i, diff_id in enumerate(diff_ids):
        try:
            validate_digest(diff_id)
        except InvalidArgument as exc:
            raise InvalidArgument(f"{what}: rootfs.diff_ids[{i}]: {exc}") from None
    return ImageConfig(parse_platform(doc, what), tuple(diff_ids))


def descriptor_json(descriptor: Descriptor) -> dict:
    """The JSON object of a descriptor, as OCI documents spell it."""
    obj: dict = {"mediaType": descriptor.media_type, "digest": descriptor.digest,
                 "size": descriptor.size}
    if descriptor.annotations:
        obj["annotations"] = dict(descriptor.annotations)
    return obj
