"""Image names: how an archive's index entries are named, and how exports annotate them.

Import (containerd's `imageName` with ctr's `archive.AddRefPrefix`): the
``io.containerd.image.name`` annotation wins; else
``org.opencontainers.image.ref.name`` is used whole when it is a full reference
(it contains ``/``, ``:`` or ``@``), else appended as a tag to `base_name`,
which is ``import-<YYYY-MM-DD>`` (today, local time) when none is given, as
``ctr images import`` names them (`default_base_name`). ctr, given a base
name, drops full references outside it; cargohold keeps them (DESIGN.md).
Export (containerd's `addNameAnnotation`): both annotations are set, the OCI one
to the reference's tag part (`oci_reference_name`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Mapping, Optional

IMAGE_NAME = "io.containerd.image.name"
"""containerd's annotation with an image's full name."""

REF_NAME = "org.opencontainers.image.ref.name"
"""The OCI annotation with an image's reference name (usually just a tag)."""


def default_base_name(now: datetime) -> str:
    """ctr's base name for bare tags when none is given: ``import-`` and the local date of `now`."""
    return f"import-{now.astimezone().strftime('%Y-%m-%d')}"


def image_name(annotations: Optional[Mapping[str, str]], base_name: Optional[str] = None) -> Optional[str]:
    """The image name for an index entry with these annotations, or None when it has none.

    A bare tag has a name only with a `base_name` (see `default_base_name`).
    """
    annotations = annotations or {}
    name = annotations.get(IMAGE_NAME)
    if name:
        return name
    ref = annotations.get(REF_NAME)
    if not ref:
        return None
    if any(c in ref for c in "/:@"):
        return ref
    return f"{base_name}:{ref}" if base_name else None


def oci_reference_name(name: str) -> str:
    """The object part of a reference (containerd's `ociReferenceName`).

    ``docker.io/library/alpine:3.18`` gives ``3.18``, ``host/repo@sha256:...``
    gives ``@sha256:...``; a name that does not parse as ``host/path[:tag][@digest]``
    is returned unchanged.
    """
    if "://" in name:
        return name
    end = len(name)
    for stop in "/?#":
        at = name.find(stop)
        if at != -1:
            end = min(end, at)
    host, rest = name[:end], name[end:]
    _, colon, port = host.rpartition(":")
    if not host or (colon and port and not port.isdigit()):
        return name
    path = rest.partition("?")[0].partition("#")[0]
    cut = min((i for i in (path.find(":"), path.find("@")) if i != -1), default=-1)
    if cut == -1:
        obj, locator = "", path
    else:
        obj, locator = path[cut:], path[:cut]
        if obj.startswith(":"):
            obj = obj[1:]
    if ".." in locator.split("/"):
        return name
    return obj
