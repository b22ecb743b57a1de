"""containerd's garbage collection of a meta.db, planned with cargohold's compiled mark phase.

`graph` reads the GC-relevant fields of every object of a metadata tree (labels,
parents, targets, snapshot keys, expiries, lease resources) into node-table
entries and lease-resource rows, exactly as cargohold's stores keep them
(`cargohold.gc.index`), and `mark` hands them to `cargohold._native.Marker`, the
mark phase `DB.garbage_collect` runs. Only the rules that differ between
containerd's release lines are adapted here:

=========================  ======================================  =====================================
                           1.x (db version 3: 1.6, 1.7)            2.x (db version 4; cargohold's rules)
=========================  ======================================  =====================================
images                     roots, never collected: no expiry       roots until ``containerd.io/gc.expire``
                           (``scanAll`` does not list them)        passes, then collectable nodes
label references           ``gc.ref.content[.x|/x]``,              also ``gc.ref.image``, back references
                           ``gc.ref.snapshot.<sn>[/x]`` only       ``gc.bref.*``, ``gc.cond.snapshot.*``
roots by label             the exact key ``containerd.io/gc.root`` any key starting with it
lease resources            content, ingests, snapshots             also images
=========================  ======================================  =====================================

Everything else is common: unexpired leases root their resources (a flat lease
only those, plus a snapshot's parents); containers root their snapshot;
sandboxes under ``v1/<ns>/sandboxes`` root their label references (1.7 stored
its sandboxes outside ``v1``, where its collector never looked, so they root
nothing there); an ingest is a root until its ``expireat`` and holds the
content it expects; a snapshot holds its parent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .. import _native as native
from .. import schema
from .._native import Marker
from ..gc import index
from ..gc import labels as gclabels
from ..gc.context import node_key
from ..model import Node, ResourceType
from . import decode
from . import schema as s
from .decode import Tree
from .tree import bulk

RULES = ("1.x", "2.x")

_LABEL_REF_TYPES_1X = (ResourceType.CONTENT, ResourceType.SNAPSHOT)


def parse_1x(ns: str, labels: Optional[dict]) -> gclabels.LabelRefs:
    """What containerd 1.x reads from an object's labels: content and snapshot references, exact gc.root."""
    refs = gclabels.parse(ns, labels)
    return gclabels.LabelRefs(root=bool(labels) and gclabels.GC_ROOT in labels,
                              refs=[ref for ref in refs.refs if ref[0] in _LABEL_REF_TYPES_1X])


@dataclass
class Graph:
    """The node table and lease-resource rows of a containerd database, as the Marker takes them."""

    nodes: list
    """(packed node key, entry) pairs, in the file's order (namespace by namespace, kind by kind)."""
    lease_rows: list
    """(lease-resource key, b"") pairs."""

    def all_nodes(self) -> list[Node]:
        """Every node, root holders (containers, sandboxes, 1.x images) included."""
        return [schema.unpack_node(key) for key, _ in sorted(self.nodes)]

    def collectible(self) -> list[Node]:
        """Every node a collection could remove (containerd's ``scanAll``), in key order."""
        return [schema.unpack_node(key) for key, value in sorted(self.nodes) if not value[0] & index.F_HIDDEN]


def graph(v1: Tree, rules: str) -> Graph:
    """The graph of every namespace of the ``v1`` tree under `rules` ("1.x" or "2.x")."""
    nodes: list = []
    rows: list = []
    with bulk():
        for ns, namespace in decode.children(v1, "namespace"):
            _namespace(ns, namespace, rules, nodes, rows)
    return Graph(nodes, rows)


def _namespace(ns: str, tree: Tree, rules: str, nodes: list, rows: list) -> None:
    """Append the entries of one namespace.

    The bulk (blobs, snapshots, images, containers) is walked by the compiled
    core (`cargohold._native.ctrd_*`): an object whose labels cannot matter to
    the collector gets its entry from a constant and at most one STRONG edge,
    byte for byte what the `index` entry functions give it; any other object,
    and the few leases, ingests and sandboxes, go through the entry functions.
    """
    legacy = rules == "1.x"
    parse = parse_1x if legacy else gclabels.parse
    pack = schema.pack_node
    what = f"namespace {ns!r}"
    sep = schema.SEP
    raw_ns = ns.encode()
    labels_key = s.LABELS

    def labels(obj: Tree) -> dict:
        return decode.string_map(obj, labels_key, what)

    def name(raw: bytes) -> str:
        return decode.text(raw, f"{what}: key")

    content = decode.bucket(tree, s.CONTENT, what)
    content_prefix = bytes((ResourceType.CONTENT,)) + raw_ns + sep
    native.ctrd_blobs(decode.bucket(content, s.BLOB, what), content_prefix, index.content_entry(ns, None, parse),
                      lambda blob: index.content_entry(ns, labels(blob), parse), nodes)
    for record in decode.ingests(tree, ns):
        expire = None if record.expire_at is None else record.expire_at.ns
        nodes.append((pack(ResourceType.INGEST, ns, record.ref), index.ingest_entry(ns, expire, record.expected)))
    snap_prefix = bytes((ResourceType.SNAPSHOT,)) + raw_ns + sep

    def snapshot(snapshotter: bytes, snap: Tree) -> bytes:
        parent = name(snap.get(s.PARENT) or b"")
        return index.snapshot_entry(ns, name(snapshotter), parent, labels(snap), parse)

    native.ctrd_snapshots(decode.bucket(tree, s.SNAPSHOTS, what), snap_prefix,
                          index.snapshot_entry(ns, "", "", None, parse), snapshot, nodes)

    def image(obj: Tree) -> bytes:
        target = decode.bucket(obj, s.TARGET, what).get(s.DIGEST)
        if legacy:
            edges = [content_prefix + target] if target else []
            return index.encode(root=True, hidden=True, strong=edges, refs=parse_1x(ns, labels(obj)))
        return index.image_entry(ns, name(target or b""), labels(obj))

    native.ctrd_images(decode.bucket(tree, s.IMAGES, what), bytes((ResourceType.IMAGE,)) + raw_ns + sep,
                       content_prefix, index.encode(root=True, hidden=True) if legacy else index.image_entry(ns, "", None),
                       image, nodes)

    def container(ctr: Tree) -> bytes:
        return index.container_entry(ns, name(ctr.get(s.SNAPSHOTTER) or b""), name(ctr.get(s.SNAPSHOT_KEY) or b""),
                                     labels(ctr), parse)

    native.ctrd_containers(decode.bucket(tree, s.CONTAINERS, what), bytes((ResourceType.CONTAINER,)) + raw_ns + sep,
                           snap_prefix, index.container_entry(ns, "", "", None, parse), container, nodes)
    for sid, sandbox in decode.children(decode.bucket(tree, s.SANDBOXES, what), "sandbox"):
        nodes.append((pack(index.SANDBOX, ns, sid), index.sandbox_entry(ns, labels(sandbox), parse)))
    for lid, lease in decode.children(decode.bucket(tree, s.LEASES, what), "lease"):
        nodes.append((pack(ResourceType.LEASE, ns, lid), index.lease_entry(labels(lease))))
        for resource in decode.lease_resources(lid, lease, ns, images=not legacy):
            rtype, key = index.resource_ref(resource)
            rows.append((schema.lease_resource_key(ns, lid, rtype, key), b""))


def mark(plan: Graph, now: int) -> Marker:
    """The marking of `plan` at time `now` (ns since the epoch)."""
    marker = Marker(())
    marker.add_nodes(plan.nodes)
    marker.add_lease_resources(plan.lease_rows)
    marker.mark(now)
    return marker


def unreachable(marker: Marker) -> list[Node]:
    """What the collection would remove, in key order."""
    return [schema.unpack_node(key) for key in sorted(marker.unreachable())]


def explain(marker: Marker, node: Node) -> Optional[list[Node]]:
    """The chain of nodes from a root down to `node`, or None if no root reaches it."""
    chain = marker.chain(node_key(node))
    return None if chain is None else [schema.unpack_node(key) for key in chain]
