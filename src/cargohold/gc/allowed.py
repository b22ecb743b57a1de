"""A collection restricted to the nodes its caller allows (``garbage_collect(allowed=...)``).

A caller that looked at a dry run (``unreachable()``) and checked what it would
remove cannot collect in the same step: a write landing in between (an image
deleted, leaving its blobs unreferenced; an unreferenced record created) would
be collected too. `Allowed` closes that window: the sweep hands it the nodes it
is about to remove inside its write transaction, with every writer held off,
before it removes any. One outside the set refuses the whole collection
(FailedPrecondition; the transaction aborts, nothing changes). Otherwise it
notes the backend data of the records that go, and its `Scope` lets the
backend cleanup delete that alone (no leftover of the namespace, no other
namespace's data).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any, Callable, Optional

from ..errors import FailedPrecondition, InvalidArgument
from ..model import Node, ResourceType
from .context import node_key, type_name
from .scope import Scope

if TYPE_CHECKING:
    from ..transaction import Transaction


class Allowed:
    """The nodes a collection may remove, as node-table keys, and the backend data of those it removed."""

    def __init__(self, allowed: Any, stored: Callable[[Node], Node], present: Callable[[Node], Optional[Node]]
                 ) -> None:
        """`allowed` as the caller gave it (validated here); `stored` maps a node as the caller names it to
        the node table's name, `present` back (for the refusal's message)."""
        if isinstance(allowed, (str, bytes, bytearray)) or not isinstance(allowed, Collection):
            raise InvalidArgument(f"allowed must be a collection of Node (such as unreachable() returns), "
                                  f"not {allowed!r}")
        keys = set()
        for node in allowed:
            try:
                keys.add(node_key(stored(node)))
            except InvalidArgument:
                raise InvalidArgument(f"allowed holds {node!r}, which is not a Node(type, namespace, key)") from None
        self.keys = frozenset(keys)
        self._present = present
        self.snapshots: set[tuple[str, str]] = set()
        self.ingests: set[str] = set()

    def __call__(self, tx: "Transaction", nodes: list[Node]) -> None:
        """Refuse the sweep of `nodes` (FailedPrecondition naming the first node not allowed), or note
        the backend data their records own; runs in the sweep's transaction, before any removal."""
        from ..content.store import ingest_backend_ref
        from ..snapshots.store import backend_key_for_gc

        for node in nodes:
            if node_key(node) not in self.keys:
                shown = self._present(node) or node
                error = FailedPrecondition(
                    f"the collection would remove {type_name(shown.type)} {shown.namespace} {shown.key}, "
                    f"which allowed does not hold (written since that set was taken), so it removed nothing")
                error.node = shown
                raise error
        for node in nodes:
            if node.type == ResourceType.SNAPSHOT:
                owned = backend_key_for_gc(tx, node.namespace, node.key)
                if owned is not None:
                    self.snapshots.add(owned)
            elif node.type == ResourceType.INGEST:
                ref = ingest_backend_ref(tx, node.namespace, node.key)
                if ref is not None:
                    self.ingests.add(ref)

    def scope(self, namespace: Optional[str], digests: frozenset) -> Scope:
        """What the backend cleanup after the sweep may delete: the data of the records it removed."""
        return Scope(namespace, digests, frozenset(self.snapshots), frozenset(self.ingests))
