"""Pure-Python twin of `_ext/records.pxi` (re-exported by `cargohold._fallback`): an image as the image
store writes it, and a container as the container store writes it, each in one call.

`encode_image` takes an image of the *plain* form, the one nearly every image has, and returns
what the store puts; for any other image it returns None and the store takes its general path
(`cargohold.images`), whose checks raise the error that names the fault. Plain means every check
of that path passes and every value is of its exact built-in type:

* the image is a `cargohold.Image` and its target a `cargohold.Descriptor` (not subclasses);
* the namespace, the name, the media type and the digest are ASCII ``str``; the name is 1 to
  255 characters without NUL, the media type not empty, the digest ``sha256:``, ``sha384:`` or
  ``sha512:`` with 64, 96 or 128 lowercase hex digits (the only valid digests);
* the size and the time are ``int`` in the int64 range, the size above zero;
* labels and annotations are ``dict`` of ASCII ``str``: keys not empty; labels without NUL and
  at most 4096 bytes each, key and value. Empty values are dropped, as validation drops them.

A plain image passes `ImageStore._validate` unchanged but for those dropped values, so the
result is the general path's, byte for byte: the msgpack record (`schema.pack`) with times,
the node-table entry (`gc.index.image_entry`), their keys, and the stored copy.

`encode_container` does the same for a container (`cargohold.containers`). Plain means, besides
the namespace and the time as above:

* the container is a `cargohold.Container` and its runtime a `cargohold.RuntimeInfo` (not
  subclasses), the runtime's name a non-empty ASCII ``str`` and its options None;
* the id an identifier (validation's rule: ASCII letters and digits, single ``.``, ``_`` or
  ``-`` between them, at most 76 characters); the snapshotter empty or an identifier that is no
  other name of one (``overlay``); the sandbox id empty or an identifier; the image any ASCII
  ``str``; the snapshot key an ASCII ``str``, empty or of 1 to 255 characters without NUL with a
  snapshotter set;
* the spec ``bytes``, the extensions an empty ``dict``, the labels as an image's.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Optional

from . import schema
from .errors import InvalidArgument
from .model import SNAPSHOTTER_ALIASES, Container, Descriptor, Image, ResourceType, RuntimeInfo, evolve
from .validation import MAX_KEY_BYTES, MAX_LABEL_SIZE, validate_identifier

_DIGEST = re.compile(r"(?:sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})\Z")
_INT64 = range(-(1 << 63), 1 << 63)
_image_entry: Any = None
_container_entry: Any = None


def _ascii(value: object) -> bool:
    return type(value) is str and value.isascii()


def _plain_map(mapping: object, labels: bool) -> Optional[dict]:
    """The mapping without empty values if it is plain, else None."""
    if type(mapping) is not dict:
        return None
    out = {}
    for key, value in mapping.items():
        if not (_ascii(key) and _ascii(value) and key):
            return None
        if labels and (len(key) + len(value) > MAX_LABEL_SIZE or "\x00" in key or "\x00" in value):
            return None
        if value:
            out[key] = value
    return out


def encode_image(image: Any, ns: Any, now: Any, now_at: datetime) -> Optional[tuple]:
    """(stored image, record key, record, node key, node-table entry) of a new image created at
    `now` (ns; `now_at` as a datetime) in namespace `ns`, or None unless the image is plain."""
    if type(image) is not Image or not _ascii(ns) or type(now) is not int or now not in _INT64:
        return None
    name, target = image.name, image.target
    if not (_ascii(name) and 0 < len(name) <= MAX_KEY_BYTES and "\x00" not in name):
        return None
    if type(target) is not Descriptor:
        return None
    digest, size, media_type = target.digest, target.size, target.media_type
    if not (_ascii(digest) and _DIGEST.match(digest)) or type(size) is not int or not 0 < size < 1 << 63:
        return None
    if not (_ascii(media_type) and media_type):
        return None
    annotations = _plain_map(target.annotations, False)
    labels = _plain_map(image.labels, True)
    if annotations is None or labels is None:
        return None
    global _image_entry
    if _image_entry is None:  # the node-table module loads with the first write, not at start-up
        from .gc.index import image_entry

        _image_entry = image_entry
    record = schema.pack({"t": {"m": media_type, "d": digest, "s": size, "a": annotations}, "l": labels,
                          "c": now, "u": now})
    stored = evolve(image, labels=labels, target=evolve(target, annotations=annotations),
                    created_at=now_at, updated_at=now_at)
    return (stored, schema.object_key(ns, schema.K_IMAGE, name), record,
            schema.pack_node(ResourceType.IMAGE, ns, name), _image_entry(ns, digest, labels))


def _identifier(value: object) -> bool:
    """An ASCII ``str`` that is a valid identifier."""
    if not _ascii(value):
        return False
    try:
        validate_identifier(value)
    except InvalidArgument:
        return False
    return True


def encode_container(container: Any, ns: Any, now: Any, now_at: datetime) -> Optional[tuple]:
    """(stored container, record key, record, node key, node-table entry) of a new container created
    at `now` (ns; `now_at` as a datetime) in namespace `ns`, or None unless the container is plain."""
    if type(container) is not Container or not _ascii(ns) or type(now) is not int or now not in _INT64:
        return None
    ident, runtime, spec = container.id, container.runtime, container.spec
    snapshotter, key, sandbox = container.snapshotter, container.snapshot_key, container.sandbox_id
    if not (_identifier(ident) and type(runtime) is RuntimeInfo and _ascii(runtime.name) and runtime.name
            and runtime.options is None and type(spec) is bytes and _ascii(container.image)):
        return None
    if not (_ascii(snapshotter) and (not snapshotter or (_identifier(snapshotter)
                                                         and snapshotter not in SNAPSHOTTER_ALIASES))):
        return None
    if not (_ascii(key) and (not key or (snapshotter and len(key) <= MAX_KEY_BYTES and "\x00" not in key))):
        return None
    if not (_ascii(sandbox) and (not sandbox or _identifier(sandbox))):
        return None
    labels = _plain_map(container.labels, True)
    if labels is None or type(container.extensions) is not dict or container.extensions:
        return None
    global _container_entry
    if _container_entry is None:  # the node-table module loads with the first write, not at start-up
        from .gc.index import container_entry

        _container_entry = container_entry
    record = schema.pack({"r": runtime.name, "o": None, "s": spec, "sn": snapshotter, "k": key, "i": container.image,
                          "l": labels, "x": {}, "sb": sandbox, "c": now, "u": now})
    stored = evolve(container, labels=labels, extensions={}, created_at=now_at, updated_at=now_at)
    return (stored, schema.object_key(ns, schema.K_CONTAINER, ident), record,
            schema.pack_node(ResourceType.CONTAINER, ns, ident),
            _container_entry(ns, snapshotter if key else "", key, labels))
