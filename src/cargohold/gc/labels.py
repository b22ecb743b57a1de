"""What an object's labels mean to the garbage collector (containerd's label handlers).

`parse` turns one object's labels into the references it holds, once, when the
object is written; the result is stored in the node table (`gc.index`) so the
mark phase never decodes labels. The rules:

* ``containerd.io/gc.ref.content[.name|/name]`` → content (the value is a digest);
  ``containerd.io/gc.ref.image[...]`` → image; ``containerd.io/gc.ref.snapshot.<sn>[/name]``
  → snapshot ``<sn>/<value>``. A near miss (``gc.ref.contentbad``) is not a content
  reference; any other ``containerd.io/gc.ref.<suffix>`` is kept as a *collector*
  reference, resolved at collection time against the registered collectors.
* ``containerd.io/gc.bref.content|image|container[.name|/name]`` and
  ``containerd.io/gc.bref.snapshot.<sn>[/name]``: back references, the labelled
  object is reachable whenever the named one is.
* ``containerd.io/gc.root`` (as a prefix): the object is a root.
* ``containerd.io/gc.cond.snapshot[.|/]<sn>`` = ``usedat<2h,usedat>1d|key``: a reference to
  snapshot ``<sn>/key`` that holds only while one of its conditions holds against the
  snapshot's ``containerd.io/gc.cond.value-usedat`` (RFC 3339) label.
* ``containerd.io/gc.expire`` (RFC 3339) and ``containerd.io/gc.flat`` are read by the
  image and lease indexers.

Times and durations are parsed as Go parses them (`cargohold.timeutil`); a time
outside the int64 nanosecond range is saturated when the node table stores it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping, Optional

from .. import schema
from ..model import ResourceType, snapshotter_name
from ..timeutil import parse_go_duration, parse_rfc3339

GC_ROOT = "containerd.io/gc.root"
GC_REF = "containerd.io/gc.ref."
GC_REF_CONTENT = "containerd.io/gc.ref.content"
GC_REF_IMAGE = "containerd.io/gc.ref.image"
GC_REF_SNAPSHOT = "containerd.io/gc.ref.snapshot."
GC_BREF_CONTAINER = "containerd.io/gc.bref.container"
GC_BREF_CONTENT = "containerd.io/gc.bref.content"
GC_BREF_IMAGE = "containerd.io/gc.bref.image"
GC_BREF_SNAPSHOT = "containerd.io/gc.bref.snapshot."
GC_EXPIRE = "containerd.io/gc.expire"
GC_FLAT = "containerd.io/gc.flat"
GC_COND_SNAPSHOT = "containerd.io/gc.cond.snapshot"
GC_COND_USEDAT = "containerd.io/gc.cond.value-usedat"


def _named(key: str, prefix: str) -> bool:
    """True if key is prefix itself or prefix followed by '.' or '/' (a named reference)."""
    return len(key) == len(prefix) or key[len(prefix)] in "./"


def _snapshotter_of(rest: str) -> str:
    return snapshotter_name(rest.split("/", 1)[0])


@dataclass
class LabelRefs:
    """The garbage-collection meaning of one object's labels."""

    root: bool = False
    refs: list = field(default_factory=list)        # packed node keys referenced
    brefs: list = field(default_factory=list)       # packed node keys that reference this object
    conds: list = field(default_factory=list)       # (packed snapshot key, op '<' or '>', duration ns)
    collector: list = field(default_factory=list)   # (label suffix after gc.ref., value)
    usedat: list = field(default_factory=list)      # ns timestamps of gc.cond.value-usedat labels


def parse(ns: str, labels: Optional[Mapping[str, str]]) -> LabelRefs:
    """Every garbage-collection reference the labels of an object in `ns` express."""
    out = LabelRefs()
    if not labels:
        return out
    node = schema.pack_node
    for key, value in sorted(labels.items()):
        if not key.startswith("containerd.io/gc."):
            continue
        if key.startswith(GC_REF):
            if key.startswith(GC_REF_CONTENT) and _named(key, GC_REF_CONTENT):
                out.refs.append(node(ResourceType.CONTENT, ns, value))
            elif key.startswith(GC_REF_IMAGE) and _named(key, GC_REF_IMAGE):
                out.refs.append(node(ResourceType.IMAGE, ns, value))
            elif key.startswith(GC_REF_SNAPSHOT):
                sn = _snapshotter_of(key[len(GC_REF_SNAPSHOT):])
                out.refs.append(node(ResourceType.SNAPSHOT, ns, f"{sn}/{value}"))
            else:
                out.collector.append((key[len(GC_REF):], value))
        elif key.startswith(GC_BREF_CONTENT) and _named(key, GC_BREF_CONTENT):
            out.brefs.append(node(ResourceType.CONTENT, ns, value))
        elif key.startswith(GC_BREF_IMAGE) and _named(key, GC_BREF_IMAGE):
            out.brefs.append(node(ResourceType.IMAGE, ns, value))
        elif key.startswith(GC_BREF_CONTAINER) and _named(key, GC_BREF_CONTAINER):
            out.brefs.append(node(ResourceType.CONTAINER, ns, value))
        elif key.startswith(GC_BREF_SNAPSHOT):
            sn = _snapshotter_of(key[len(GC_BREF_SNAPSHOT):])
            out.brefs.append(node(ResourceType.SNAPSHOT, ns, f"{sn}/{value}"))
        elif key.startswith(GC_ROOT):
            out.root = True
        elif key.startswith(GC_COND_USEDAT):
            stamp = parse_rfc3339(value)
            if stamp is not None:
                out.usedat.append(stamp)
        elif key.startswith(GC_COND_SNAPSHOT):
            sn = _snapshotter_of(key[len(GC_COND_SNAPSHOT):].lstrip("./"))
            conditions, bar, target = value.partition("|")
            if not bar:
                continue
            for cond in conditions.split(","):
                m = re.search(r"[<>=]", cond)
                if m is None or cond[: m.start()] != "usedat" or m.group() == "=":
                    continue
                duration = parse_go_duration(cond[m.end():])
                if duration is not None:
                    out.conds.append((node(ResourceType.SNAPSHOT, ns, f"{sn}/{target}"), m.group(), duration))
    return out


def expiry(labels: Optional[Mapping[str, str]]) -> Optional[int]:
    """The ns timestamp of a valid ``containerd.io/gc.expire`` label (an invalid one is ignored)."""
    if not labels or GC_EXPIRE not in labels:
        return None
    return parse_rfc3339(labels[GC_EXPIRE])


def is_flat(labels: Optional[Mapping[str, str]]) -> bool:
    return bool(labels) and GC_FLAT in labels
