"""One garbage collection's view of the database: roots, references, all nodes, removal.

containerd splits this between `scanRoots`, `references`, `scanAll` and
`remove`. Here the node table (`gc.index`) already holds roots and edges, so
building the marking is two table scans handed to the compiled `Marker`;
this module adds what only Python knows: registered collectors (their
active, leased and known resources and their reference labels), the clock,
and the per-kind removal each store provides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional

from .. import schema
from .._native import Marker
from ..errors import AlreadyExists, InvalidArgument
from ..logs import LazyLogger
from ..model import RESOURCE_END, RESOURCE_MAX, Node, ResourceType
from . import index, load

if TYPE_CHECKING:
    from ..transaction import Transaction

log = LazyLogger("cargohold.gc")


def validate_collectible_type(rtype: int, registered: dict) -> int:
    if isinstance(rtype, bool) or not isinstance(rtype, int) or not RESOURCE_END <= rtype < RESOURCE_MAX:
        raise InvalidArgument(
            f"collectible resource type {rtype!r} must be an integer in [{RESOURCE_END}, {RESOURCE_MAX})"
        )
    if rtype in registered:
        raise AlreadyExists(f"a collector is already registered for resource type {rtype}")
    return int(rtype)


def _as_node(value: Any) -> Node:
    try:
        rtype, namespace, key = value
    except (TypeError, ValueError):
        raise InvalidArgument(f"collector returned {value!r}, not a Node(type, namespace, key)") from None
    return Node(rtype, namespace, key)


def node_key(node: Any) -> bytes:
    """The packed node-table key of a Node; InvalidArgument for anything else."""
    try:
        rtype, namespace, key = node
        return schema.pack_node(int(rtype), namespace, key)
    except (TypeError, ValueError, OverflowError, AttributeError):
        raise InvalidArgument(f"{node!r} is not a Node(type, namespace, key)") from None


class Contexts:
    """The collection contexts of the registered collectors, for one collection.

    A collector whose ``start_collection()`` fails is skipped for this round,
    as containerd does.
    """

    def __init__(self, collectors: dict) -> None:
        self.contexts: dict[int, Any] = {}
        self.labels: list[tuple[bytes, int]] = []
        for rtype, collector in collectors.items():
            try:
                ctx = collector.start_collection()
            except Exception:
                log.exception("collector for type %d failed to start; skipped this round", rtype)
                continue
            self.contexts[rtype] = ctx
            label = collector.reference_label()
            if label:
                self.labels.append((label.encode(), rtype))

    def all(self) -> list[Node]:
        nodes: list[Node] = []
        for ctx in self.contexts.values():
            ctx.all(lambda n: nodes.append(_as_node(n)))
        return nodes

    def active(self, namespace: str, fn: Callable[[Node], None]) -> None:
        for ctx in self.contexts.values():
            ctx.active(namespace, lambda n: fn(_as_node(n)))

    def leased(self, namespace: str, lease: str, fn: Callable[[Node], None]) -> None:
        for ctx in self.contexts.values():
            ctx.leased(namespace, lease, lambda n: fn(_as_node(n)))

    def remove(self, node: Node) -> bool:
        ctx = self.contexts.get(node.type)
        if ctx is None:
            return False
        ctx.remove(node)
        return True

    def cancel(self) -> None:
        for rtype, ctx in self.contexts.items():
            try:
                ctx.cancel()
            except Exception:
                log.exception("collector for type %d failed to cancel", rtype)

    def finish_all(self) -> list[Callable[[], None]]:
        """One callable per context, to run in parallel after the commit."""
        def finisher(rtype: int, ctx: Any) -> Callable[[], None]:
            def run() -> None:
                try:
                    ctx.finish()
                except Exception:
                    log.exception("collector for type %d failed to finish", rtype)
            return run
        return [finisher(rtype, ctx) for rtype, ctx in self.contexts.items()]


class Marking:
    """One collection's marking: of a snapshot first, then continued with what writers changed.

    `load` reads the node table and the lease rows and asks the collectors for
    their active and leased nodes; `mark` marks at the snapshot's time;
    `update` reloads journaled nodes from a later transaction and continues.
    """

    def __init__(self, marker: Marker, contexts: Contexts, now: int, extra: list[bytes],
                 namespaces: set[str]) -> None:
        self.marker = marker
        self.contexts = contexts
        self.now = now
        self.extra = extra
        self.namespaces = namespaces
        self.named: Optional[set[bytes]] = None
        """On metadata several hosts share: the unscoped snapshot nodes that have entries of their own."""

    @classmethod
    def load(cls, tx: "Transaction", contexts: Contexts) -> "Marking":
        marker = Marker(contexts.labels)
        named: Optional[set[bytes]] = None
        if getattr(getattr(tx, "db", None), "fleet", False):
            aliases: dict[bytes, tuple[list, list]] = {}
            named = set()
            marker.add_nodes(_noting_aliases(tx.kv.scan(schema.T_GC), aliases, named))
            marker.add_nodes(_alias_entries(aliases, named))
        else:
            load.node_table(tx, marker)
        load.lease_resources(tx, marker)
        marking = cls(marker, contexts, tx.now, [], set())
        marking.named = named
        if contexts.contexts:
            for packed in marker.live_leases(tx.now):
                lease = schema.unpack_node(packed)
                contexts.leased(lease.namespace, lease.key, marking._add_extra)
            marking._new_namespaces(tx)
        return marking

    def _add_extra(self, node: Node) -> None:
        self.extra.append(node_key(node))

    def _new_namespaces(self, tx: "Transaction") -> None:
        """Ask the collectors for the active nodes of every namespace not asked about yet."""
        for key, _ in tx.kv.scan(schema.T_NAMESPACES):
            name = schema.text(key, "namespace")
            if name not in self.namespaces:
                self.namespaces.add(name)
                self.contexts.active(name, self._add_extra)

    def mark(self) -> None:
        self.marker.mark(self.now, self.extra)

    def update(self, tx: "Transaction", keys: list[bytes]) -> int:
        """Continue the marking with the nodes `keys` as they are in `tx`; returns how many
        nodes it marked that were not marked before.

        A node that still has an entry is reloaded and marked gray: it and all
        it reaches now are kept, whether or not a root still reaches it (a
        writer touched it during the collection). A node without one is
        forgotten. The collectors are asked about the leases among them that
        are live, and about namespaces created since.
        """
        present, gone = [], []
        for key in keys:
            value = tx.kv.get(schema.T_GC, key)
            if value is None:
                gone.append(key)
            else:
                present.append((key, value))
        self.marker.forget_nodes(gone)
        self.marker.update_nodes(present)
        if self.named is not None:
            aliases: dict[bytes, tuple[list, list]] = {}
            for _ in _noting_aliases(present, aliases, self.named):
                pass
            self.marker.update_nodes(_alias_entries(aliases, self.named))
        gray = [key for key, _ in present]
        if self.contexts.contexts:
            self.extra = []
            for key, value in present:
                if key[0] == ResourceType.LEASE and _live(value, tx.now):
                    lease = schema.unpack_node(key)
                    self.contexts.leased(lease.namespace, lease.key, self._add_extra)
            self._new_namespaces(tx)
            gray.extend(self.extra)
        return self.marker.remark(tx.now, gray)


def _noting_aliases(rows: Iterable, aliases: dict, named: set) -> Iterator:
    """Pass node-table rows on, noting each host's snapshot node (``<name>@<scope>/<key>``, see
    `cargohold.snapshots.scope`) under the node that references by name lead to (``<name>/<key>``).

    On metadata several hosts share, labels, containers and lease resources name a snapshot
    ``<name>/<key>``, and every host may have one: each such name gets a stand-in entry with a
    strong edge to every host's snapshot of that name (`_alias_entries`), so that whatever
    keeps the name keeps them all, through flat leases too, and their usedat times, so that a
    conditional reference to the name holds when it holds for one of them. An entry of the name itself
    (written before snapshots were scoped) keeps its own edges and gets no stand-in: such
    nodes are added to `named`.
    """
    for key, value in rows:
        if key[0] == ResourceType.SNAPSHOT:
            packed = bytes(key)
            ns_end = packed.index(0, 1)
            name_end = packed.find(b"/", ns_end)
            scope_at = packed.find(b"@", ns_end, name_end) if name_end > 0 else -1
            if scope_at < 0:
                named.add(packed)
            else:
                targets, used = aliases.setdefault(packed[:scope_at] + packed[name_end:], ([], []))
                targets.append(packed)
                if value[0] & index.F_USEDAT:
                    used.extend(index.decode(bytes(value)).usedat)
        yield key, value


def _alias_entries(aliases: dict, named: set) -> list[tuple[bytes, bytes]]:
    """The stand-in entries of `_noting_aliases` (hidden: never swept or listed; no root)."""
    return [(alias, index.encode(hidden=True, strong=targets, usedat=sorted(used)[-255:]))
            for alias, (targets, used) in aliases.items() if alias not in named]


def _live(value: bytes, now: int) -> bool:
    entry = index.decode(value)
    return bool(entry.flags & index.F_ROOT) and (entry.expire is None or now <= entry.expire)


def marking(tx: "Transaction", contexts: Contexts) -> Marker:
    """Mark every node reachable at the transaction's time."""
    marking = Marking.load(tx, contexts)
    marking.mark()
    return marking.marker


def table_nodes(tx: "Transaction") -> Iterable[Node]:
    """Every collectible node of the node table (containerd's scanAll: no containers)."""
    for key, value in tx.kv.scan(schema.T_GC):
        if value and not value[0] & index.F_HIDDEN:
            yield schema.unpack_node(key)


def _removers() -> dict:
    from ..content.store import remove_blob_for_gc, remove_ingest_for_gc
    from ..images import remove_for_gc as remove_image
    from ..leases import remove_for_gc as remove_lease
    from ..snapshots.store import remove_for_gc as remove_snapshot

    return {
        ResourceType.CONTENT: remove_blob_for_gc,
        ResourceType.INGEST: remove_ingest_for_gc,
        ResourceType.IMAGE: remove_image,
        ResourceType.LEASE: remove_lease,
        ResourceType.SNAPSHOT: remove_snapshot,
    }


def reachable(marker: Marker, contexts: Contexts) -> set[Node]:
    """Every known node the marking reached: the node table's, then the collectors'."""
    found = {schema.unpack_node(key) for key in marker.reachable()}
    found.update(node for node in contexts.all() if marker.is_reachable(node_key(node)))
    return found


def _unreachable_collected(marker: Marker, contexts: Contexts, namespace: Optional[str]) -> Iterator[Node]:
    for node in contexts.all():
        if (namespace is None or node.namespace == namespace) and not marker.is_reachable(node_key(node)):
            yield node


def _unreachable_table(marker: Marker, namespace: Optional[str]) -> Iterator[Node]:
    for key in marker.unreachable():
        node = schema.unpack_node(key)
        if namespace is None or node.namespace == namespace:
            yield node


def unreachable(marker: Marker, contexts: Contexts, namespace: Optional[str] = None) -> Iterator[Node]:
    """Every known node the marking did not reach (in `namespace` only, if given): the node table's,
    then the collectors'.

    Every reference stays inside its namespace, so a namespace's unreachable
    nodes are the same whether the marking covered one namespace or all.
    """
    yield from _unreachable_table(marker, namespace)
    yield from _unreachable_collected(marker, contexts, namespace)


def type_name(rtype: int) -> str:
    """The lower-case name of a node type (``content``, ``snapshot``, ...; ``type<N>`` for a collector's)."""
    if rtype == index.SANDBOX:
        return "sandbox"
    try:
        return ResourceType(rtype).name.lower()
    except ValueError:
        return f"type{int(rtype)}"


def count_by_type(nodes: Iterable[Node]) -> dict[str, int]:
    """How many of the nodes are of each type, by `type_name` (the sweep's account of records removed)."""
    counts: dict[str, int] = {}
    for node in nodes:
        name = type_name(node.type)
        counts[name] = counts.get(name, 0) + 1
    return counts


def sweep(tx: "Transaction", marker: Marker, contexts: Contexts, namespace: Optional[str] = None,
          candidates: Optional[list[bytes]] = None,
          before: Optional[Callable[["Transaction", list[Node]], None]] = None) -> list[Node]:
    """Remove every unreachable node (of `namespace` only, if given) in `tx`; queue its events;
    return what was removed. `candidates`, if given, are the packed keys the marking found
    unreachable before it was last continued (found ahead, with writers running): only those
    still unreachable are removed. `before`, if given, is called with `tx` and every node about
    to be removed, before any is (`cargohold.gc.allowed`): what it raises stops the sweep with
    nothing removed.

    Node-table entries go to their store's removal (if the node still has an
    entry: a concurrent collection's marking may predate its deletion),
    collectors' nodes to their collector.
    """
    from ..events import TOPIC_IMAGE_DELETE, TOPIC_SNAPSHOT_REMOVE, ImageDelete, SnapshotRemove

    removers = _removers()
    doomed: list[Node] = []
    keys = marker.unreachable() if candidates is None else [k for k in candidates if not marker.is_reachable(k)]
    for key in keys:
        node = schema.unpack_node(key)
        if namespace is not None and node.namespace != namespace:
            continue
        if tx.kv.get(schema.T_GC, key) is None:
            continue
        if node.type not in removers:
            log.info("no removal defined for %r", node)
            continue
        doomed.append(node)
    collected = list(_unreachable_collected(marker, contexts, namespace))
    if before is not None:
        before(tx, doomed + collected)
    for node in doomed:  # each removal drops its own node's entry alone
        removers[node.type](tx, node.namespace, node.key)
        if node.type == ResourceType.SNAPSHOT:
            stored, _, key = node.key.partition("/")
            local = getattr(tx.db, "local_snapshotter", lambda name: None)(stored)
            tx.publish(node.namespace, TOPIC_SNAPSHOT_REMOVE, SnapshotRemove(key, local or stored))
        elif node.type == ResourceType.IMAGE:
            tx.publish(node.namespace, TOPIC_IMAGE_DELETE, ImageDelete(node.key))
    return doomed + [node for node in collected if contexts.remove(node)]
