"""Containers (``ns.containers``): metadata of a container, with containerd's rules.

A container is a root for the garbage collector: it holds its snapshot
(``<snapshotter>/<snapshot_key>``) and whatever its labels reference. The
snapshotter and the runtime name are fixed at creation: a full update that
changes them is refused, and no field path reaches them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Optional

from . import filters, schema
from ._native import encode_container
from .errors import InvalidArgument
from .fieldpaths import clean_labels
from .gc import index
from .model import Container, ResourceType, RuntimeInfo, snapshotter_name
from .records import (RecordStore, apply_fieldpaths, check_extensions, check_runtime, check_spec,
                      require_unchanged)
from .validation import require_str, validate_identifier, validate_key

if TYPE_CHECKING:
    from .transaction import Transaction

_FIELDS = {"spec": "spec", "image": "image", "snapshotkey": "snapshot_key", "sandbox": "sandbox_id"}
_MAPS = {"labels": "labels", "extensions": "extensions"}
_FULL_UPDATE = ("labels", "spec", "extensions", "image", "snapshotkey")
"""What an update without field paths replaces (containerd's list)."""



def container_adaptor(c: Container) -> filters.Adaptor:
    """containerd's container filter fields: id, runtime.name, image, snapshotter, labels."""
    fields = {"id": c.id, "runtime.name": c.runtime.name, "image": c.image, "snapshotter": c.snapshotter}
    return filters.adaptor(fields, {"labels": c.labels})

class ContainerStore(RecordStore[Container]):
    """create / get / list / update / delete of the containers of one namespace.

    Filter fields: ``id``, ``runtime.name``, ``image``, ``snapshotter``,
    ``labels.<key>``. Update field paths: ``labels``, ``labels.<key>``,
    ``spec``, ``extensions``, ``extensions.<name>``, ``image``,
    ``snapshotkey``, ``sandbox``.
    """

    kind = schema.K_CONTAINER
    node_type = ResourceType.CONTAINER
    what = "container"
    model = Container

    def _check_id(self, ident: object) -> str:
        return validate_identifier(ident, "container id")

    def _validate(self, c: Container) -> Container:
        ident = self._check_id(c.id)
        what = f"container {ident!r}"
        require_str(c.image, f"image of {what}")
        require_str(c.snapshotter, f"snapshotter of {what}")
        require_str(c.snapshot_key, f"snapshot key of {what}")
        require_str(c.sandbox_id, f"sandbox id of {what}")
        if c.snapshot_key:
            if not c.snapshotter:
                raise InvalidArgument(f"snapshotter of {what} must be set when its snapshot key "
                                      f"{c.snapshot_key!r} is")
            validate_key(c.snapshot_key, f"snapshot key of {what}")
        if c.snapshotter:
            validate_identifier(c.snapshotter, f"snapshotter of {what}")
        if c.sandbox_id:
            validate_identifier(c.sandbox_id, f"sandbox id of {what}")
        return replace(c, snapshotter=snapshotter_name(c.snapshotter),
                       runtime=check_runtime(c.runtime, f"runtime of {what}", required=True),
                       spec=check_spec(c.spec, f"spec of {what}"), labels=clean_labels(c.labels),
                       extensions=check_extensions(c.extensions, f"extension of {what}"))

    def _encode(self, c: Container) -> dict:
        return {"r": c.runtime.name, "o": c.runtime.options, "s": c.spec, "sn": c.snapshotter,
                "k": c.snapshot_key, "i": c.image, "l": c.labels, "x": c.extensions, "sb": c.sandbox_id}

    def _decode(self, ident: str, r: dict) -> Container:
        return Container(ident, RuntimeInfo(r["r"], r["o"]), r["s"], r["sn"], r["k"], r["i"], r["l"],
                         r["x"], r["sb"])

    def _adaptor(self, c: Container) -> filters.Adaptor:
        return container_adaptor(c)

    def _index(self, t: "Transaction", c: Container) -> None:
        index.index_container(t, self._ns.name, c.id, c.snapshotter if c.snapshot_key else "",
                              c.snapshot_key, c.labels)

    def _prepare(self, t: "Transaction", c: object) -> Optional[tuple]:
        return encode_container(c, self._ns.name, t.now, t.now_at)

    def _merge(self, current: Container, new: Container, paths: tuple) -> Container:
        what = f"container {current.id!r}"
        if not paths:
            require_unchanged("snapshotter", current.snapshotter, snapshotter_name(require_str(
                new.snapshotter, f"snapshotter of {what}")), what)
            require_unchanged("runtime name", current.runtime.name, getattr(new.runtime, "name", new.runtime), what)
            paths = _FULL_UPDATE
        return apply_fieldpaths(current, new, paths, fields=_FIELDS, maps=_MAPS, what=what)
