"""Sandboxes (``ns.sandboxes``): metadata of a pod-like sandbox, with containerd's rules.

A sandbox is a root for the garbage collector: whatever its labels reference
stays. Its runtime name is fixed unless the ``runtime`` field path replaces
the runtime explicitly; the sandboxer is fixed at creation.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from . import filters, schema
from .fieldpaths import clean_labels
from .gc import index
from .model import RuntimeInfo, Sandbox
from .records import (RecordStore, apply_fieldpaths, check_extensions, check_runtime, check_spec,
                      require_unchanged)
from .validation import require_str, validate_identifier

if TYPE_CHECKING:
    from .transaction import Transaction

_FIELDS = {"spec": "spec", "runtime": "runtime"}
_MAPS = {"labels": "labels", "extensions": "extensions"}
_FULL_UPDATE = ("labels", "extensions", "spec", "runtime")
"""What an update without field paths replaces (containerd's list)."""


class SandboxStore(RecordStore[Sandbox]):
    """create / get / list / update / delete of the sandboxes of one namespace.

    Filter fields: ``id``, ``labels.<key>``. Update field paths: ``labels``,
    ``labels.<key>``, ``extensions``, ``extensions.<name>``, ``spec``, ``runtime``.
    """

    kind = schema.K_SANDBOX
    node_type = index.SANDBOX
    what = "sandbox"
    model = Sandbox

    def _check_id(self, ident: object) -> str:
        return validate_identifier(ident, "sandbox id")

    def _validate(self, sb: Sandbox) -> Sandbox:
        what = f"sandbox {self._check_id(sb.id)!r}"
        require_str(sb.sandboxer, f"sandboxer of {what}")
        return replace(sb, runtime=check_runtime(sb.runtime, f"runtime of {what}", required=False),
                       spec=check_spec(sb.spec, f"spec of {what}"), labels=clean_labels(sb.labels),
                       extensions=check_extensions(sb.extensions, f"extension of {what}"))

    def _encode(self, sb: Sandbox) -> dict:
        return {"r": sb.runtime.name, "o": sb.runtime.options, "s": sb.spec, "sx": sb.sandboxer,
                "l": sb.labels, "x": sb.extensions}

    def _decode(self, ident: str, r: dict) -> Sandbox:
        return Sandbox(ident, RuntimeInfo(r["r"], r["o"]), r["s"], r["sx"], r["l"], r["x"])

    def _adaptor(self, sb: Sandbox) -> filters.Adaptor:
        return filters.adaptor({"id": sb.id}, {"labels": sb.labels})

    def _index(self, t: "Transaction", sb: Sandbox) -> None:
        index.index_sandbox(t, self._ns.name, sb.id, sb.labels)

    def _merge(self, current: Sandbox, new: Sandbox, paths: tuple) -> Sandbox:
        what = f"sandbox {current.id!r}"
        if not paths:
            require_unchanged("runtime name", current.runtime.name, getattr(new.runtime, "name", new.runtime), what)
            paths = _FULL_UPDATE
        return apply_fieldpaths(current, new, paths, fields=_FIELDS, maps=_MAPS, what=what)
