"""The garbage-collection labels an image's content gets, computed as containerd computes them.

A parent blob is labelled with a reference to each of its children
(containerd's `images.SetChildrenLabels` with `images.ChildGCLabels`): an
index gets ``containerd.io/gc.ref.content.m.<i>`` for its manifests, a
manifest gets ``containerd.io/gc.ref.content.config`` and
``containerd.io/gc.ref.content.l.<i>`` for its layers. Numbering counts per
label key, in child order. An unpacked image's config is labelled
``containerd.io/gc.ref.snapshot.<snapshotter>`` = the top layer's chain ID.
"""

from __future__ import annotations

from typing import Iterable

from ..gc.labels import GC_REF_CONTENT, GC_REF_SNAPSHOT
from ..model import Descriptor
from ..validation import validate_identifier
from . import mediatypes

MANIFEST_SUBJECT = "io.containerd.manifest.subject"
"""Annotation containerd puts on a referrer found for a manifest (its subject's digest)."""

_REFERRER = GC_REF_CONTENT + ".referrer.sha256."


def child_label_keys(child: Descriptor) -> list[str]:
    """The label key(s) a parent uses to reference `child` (containerd's `ChildGCLabels`).

    A key ending in "." is numbered; a referrer key ending in ".sha256." gets
    the first 12 hex characters of the child's digest.
    """
    if child.annotations and MANIFEST_SUBJECT in child.annotations:
        return [_REFERRER]
    if mediatypes.is_known_config(child.media_type):
        return [GC_REF_CONTENT + ".config"]
    if mediatypes.is_manifest(child.media_type):
        return [GC_REF_CONTENT + ".m."]
    if mediatypes.is_layer(child.media_type):
        return [GC_REF_CONTENT + ".l."]
    return [GC_REF_CONTENT + "."]


def children_labels(children: Iterable[Descriptor]) -> dict[str, str]:
    """The labels that reference `children` from their parent (containerd's `SetChildrenMappedLabels`)."""
    labels: dict[str, str] = {}
    seen: dict[str, int] = {}
    for child in children:
        for key in child_label_keys(child):
            index = seen.get(key, 0)
            seen[key] = index + 1
            if key.endswith(".sha256."):
                key += child.digest.partition(":")[2][:12]
            elif index > 0 or key.endswith("."):
                key += str(index)
            labels[key] = child.digest
    return labels


def snapshot_label(snapshotter: str) -> str:
    """The config label key that keeps an unpacked image's snapshots alive.

    ``containerd.io/gc.ref.snapshot.<snapshotter>``, valued with the top chain ID.
    """
    validate_identifier(snapshotter, "snapshotter")
    return GC_REF_SNAPSHOT + snapshotter
