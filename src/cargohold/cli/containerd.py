"""`cargohold containerd ...`: work read-only on a containerd root (default /var/lib/containerd).

``ls`` lists what ctr lists, ``gc --dry-run`` / ``gc --explain`` plan containerd's
collection (the dry run prints ``cargohold gc --dry-run``'s lines, each node with
the bytes its removal frees: ``TYPE NAMESPACE KEY SIZE``, then ``TYPE - KEY SIZE``
per leftover, the data no record owns that the cleanup deletes too), ``du`` and ``fsck`` measure and check the root, ``import`` copies it
into a cargohold root. Nothing here writes to the containerd root: there is no
collecting ``gc``.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

import click

from cargohold import Leftover, Node, filters
from cargohold.containerd import Host, fsck as fsck_mod, open_root, usage
from cargohold.containerd.importer import import_root
from cargohold.containerd.plan import RULES
from cargohold.containerd.schema import DEFAULT_ROOT
from cargohold.errors import NotFound

from .context import Settings, emit_json, emit_table, json_option, pass_settings
from .df import emit_usage
from .fsck import emit_findings
from .gc import leftover_line, node_json, node_line, nodes_named
from .groups import examples
from .output import Column, Listing, format_labels, listing_options

root_option = click.option("--root-dir", default=DEFAULT_ROOT, show_default=True, metavar="DIR",
                           help="The containerd root (or its meta.db file).")
namespace_option = click.option("-n", "--namespace", "namespace", default=None, metavar="NS",
                                help="Namespace [default: the global --namespace].")
rules_option = click.option("--rules", type=click.Choice(RULES), default=None,
                            help="Collector rules [default: those of the release that wrote the database].")

KINDS = ("images", "containers", "sandboxes", "leases", "content", "snapshots", "ingests", "namespaces")


@click.group("containerd")
def command() -> None:
    """Read a containerd root: list, plan its GC, measure, check, import (never writes to it)."""


def _namespace(settings: Settings, namespace: Optional[str]) -> str:
    return namespace or settings.namespace


@command.command("ls", epilog=examples("cargohold containerd ls", "cargohold containerd ls -n k8s.io -q content",
                                       "cargohold containerd ls containers --filter image~=nginx --format wide"))
@click.argument("kind", type=click.Choice(KINDS), default="images")
@root_option
@namespace_option
@click.option("--snapshotter", metavar="NAME", help="snapshots: only this snapshotter [default: every one].")
@listing_options("names, digests, keys or ids", filter_example="labels.team==infra")
@pass_settings
def ls(settings: Settings, kind: str, root_dir: str, namespace: Optional[str], snapshotter: Optional[str],
       listing: Listing) -> None:
    """List KIND of the namespace as ctr lists them (images by default), with ctr's filter fields."""
    if listing.filters:
        filters.parse(*listing.filters)  # a bad filter is refused before the root is read
    ns = _namespace(settings, namespace)
    with open_root(root_dir) as host:
        items, columns, adapt = _listing(host, kind, ns, snapshotter)
    if listing.filters:
        matcher = filters.parse(*listing.filters)
        items = [item for item in items if matcher.match(adapt(item))]
    listing.emit(items, columns)


def _labels_column(get=lambda item: item.labels) -> Column:
    return Column("LABELS", lambda item: format_labels(get(item)))


_COLUMNS = {
    "namespaces": (Column("NAME", lambda n: n["name"]), _labels_column(lambda n: n["labels"])),
    "images": (Column("NAME", lambda i: i.name, "key"), Column("TYPE", lambda i: i.target.media_type),
               Column("DIGEST", lambda i: i.target.digest), Column("SIZE", lambda i: i.target.size, "size"),
               Column("CREATED", lambda i: i.created_at, "time", wide=True),
               Column("UPDATED", lambda i: i.updated_at, "time", wide=True), _labels_column()),
    "containers": (Column("ID", lambda c: c.id), Column("IMAGE", lambda c: c.image, "key"),
                   Column("RUNTIME", lambda c: c.runtime.name), Column("SNAPSHOTTER", lambda c: c.snapshotter),
                   Column("SNAPSHOT", lambda c: c.snapshot_key, "key"),
                   Column("CREATED", lambda c: c.created_at, "time", wide=True), _labels_column()),
    "sandboxes": (Column("ID", lambda s: s.id), Column("SANDBOXER", lambda s: s.sandboxer),
                  Column("RUNTIME", lambda s: s.runtime.name),
                  Column("CREATED", lambda s: s.created_at, "time", wide=True), _labels_column()),
    "leases": (Column("ID", lambda le: le["id"]), Column("CREATED", lambda le: le["created_at"], "time"),
               Column("RESOURCES", lambda le: len(le["resources"])), _labels_column(lambda le: le["labels"])),
    "content": (Column("DIGEST", lambda i: i.digest), Column("SIZE", lambda i: i.size, "size"),
                Column("CREATED", lambda i: i.created_at, "time"),
                Column("UPDATED", lambda i: i.updated_at, "time", wide=True), _labels_column()),
    "ingests": (Column("REF", lambda s: s.ref, "key"), Column("OFFSET", lambda s: s.offset, "size"),
                Column("TOTAL", lambda s: s.total, "size"), Column("EXPECTED", lambda s: s.expected),
                Column("UPDATED", lambda s: s.updated_at, "time")),
    "snapshots": (Column("KEY", lambda s: s["name"], "key"), Column("SNAPSHOTTER", lambda s: s["snapshotter"]),
                  Column("PARENT", lambda s: s["parent"], "key"), Column("KIND", lambda s: str(s["kind"]).lower()),
                  Column("CREATED", lambda s: s["created_at"], "time", wide=True), _labels_column(lambda s: s["labels"])),
}
"""The table of each KIND: ctr's columns (sizes and ages for people), more with --format wide."""


def _listing(host: Host, kind: str, ns: str, snapshotter: Optional[str]) -> tuple[list, tuple, Callable]:
    """(items, as JSON prints them; the table's columns; the filter fields of an item) of one listing."""
    from cargohold.containers import container_adaptor
    from cargohold.content.local import info_adaptor
    from cargohold.images import image_adaptor
    from cargohold.snapshots.storage import adaptor as snapshot_adaptor

    def id_and_labels(get_id: Callable, get_labels: Callable) -> Callable:
        return lambda item: filters.adaptor({"id": get_id(item)}, {"labels": get_labels(item)})

    columns = _COLUMNS[kind]
    if kind == "namespaces":
        items = [{"name": n, "labels": host.namespace_labels(n)} for n in host.namespaces()]
        return items, columns, lambda n: filters.adaptor({"name": n["name"]}, {"labels": n["labels"]})
    if kind == "images":
        return host.images(ns), columns, image_adaptor
    if kind == "containers":
        return host.containers(ns), columns, container_adaptor
    if kind == "sandboxes":
        return host.sandboxes(ns), columns, id_and_labels(lambda s: s.id, lambda s: s.labels)
    if kind == "leases":
        items = [{"id": lease.id, "created_at": lease.created_at, "labels": lease.labels,
                  "resources": host.lease_resources(ns, lease.id)} for lease in host.leases(ns)]
        return items, columns, id_and_labels(lambda le: le["id"], lambda le: le["labels"])
    if kind == "content":
        return host.content(ns), columns, info_adaptor
    if kind == "ingests":
        return host.ingests(ns), columns, lambda s: filters.adaptor({"ref": s.ref})
    names = [snapshotter] if snapshotter else host.snapshotters(ns)
    found = [(name, info) for name in names for info in host.snapshots(ns, name)]
    items = [{"snapshotter": name, **_as_dict(info)} for name, info in found]
    by_item = {id(item): info for item, (_, info) in zip(items, found)}
    return items, columns, lambda item: snapshot_adaptor(by_item[id(item)])


def _as_dict(info) -> dict:
    return {"name": info.name, "parent": info.parent, "kind": info.kind, "labels": info.labels,
            "created_at": info.created_at, "updated_at": info.updated_at}


@command.command("gc")
@click.option("--dry-run", is_flag=True,
              help="List what containerd's next collection removes (TYPE NAMESPACE KEY SIZE: the bytes its removal "
                   "frees) and the leftovers its cleanup deletes too (TYPE - KEY SIZE).")
@click.option("--explain", metavar="DIGEST|SNAPSHOTTER/KEY",
              help="Print the chain of references from a root to DIGEST|SNAPSHOTTER/KEY (in the namespace; "
                   "a digest prefix does).")
@root_option
@namespace_option
@rules_option
@json_option
@pass_settings
def gc(settings: Settings, dry_run: bool, explain: Optional[str], root_dir: str, namespace: Optional[str],
       rules: Optional[str], as_json: bool) -> None:
    """Plan containerd's garbage collection of the root, exactly as its collector would run now.

    Read-only: --dry-run or --explain is required (cargohold never collects a
    containerd root; containerd does that itself).
    """
    if dry_run == (explain is not None):
        raise click.UsageError("give exactly one of --dry-run and --explain (a containerd root is never collected here)")
    with open_root(root_dir, rules=rules) as host:
        if explain is not None:
            _explain(host, _namespace(settings, namespace), explain, as_json)
        else:
            _dry_run(host, as_json)


def _dry_run(host: Host, as_json: bool) -> None:
    """Nodes as ``TYPE NAMESPACE KEY SIZE``, then leftovers as ``TYPE - KEY SIZE`` (``cargohold gc --dry-run``'s
    lines, each node with the bytes its removal frees)."""
    nodes = host.unreachable()
    freed = usage.reclaim(host, nodes)
    by_node: dict = {}
    for item in freed:
        if item.node is not None:
            by_node[item.node] = by_node.get(item.node, 0) + item.size
    leftovers = [Leftover(_LEFTOVER_TYPES[item.store.partition("/")[0]], _leftover_key(item), item.size)
                 for item in freed if item.node is None]
    if as_json:
        emit_json([{**node_json(n), "size": by_node.get(n, 0)} for n in nodes]
                  + [{"type": x.type, "namespace": None, "key": x.key, "size": x.size} for x in leftovers])
        return
    for n in nodes:
        click.echo(f"{node_line(n)} {by_node.get(n, 0)}")
    for leftover in leftovers:
        click.echo(leftover_line(leftover))


_LEFTOVER_TYPES = {"content": "blob", "ingests": "ingest-dir", "snapshots": "snapshot-dir"}


def _leftover_key(item: usage.Freed) -> str:
    if item.store.startswith("snapshots/"):
        return f"{item.store.partition('/')[2]}/{os.path.basename(item.path)}"
    return item.name


def _find(host: Host, ns: str, name: str) -> list[Node]:
    """The nodes of `ns` called `name` (`gc.nodes_named`): a digest or a prefix of one, an ingest ref, an
    image name, a lease or container id, ``<snapshotter>/<key>`` or a bare snapshot key."""
    found = nodes_named((node for node in host.graph().all_nodes() if node.namespace == ns), name)
    if not found:
        raise NotFound(f"nothing called {name!r} in namespace {ns!r} (give a digest, an image name, "
                       "<snapshotter>/<key> or a snapshot key, a lease, ingest or container id)")
    return found


def _explain(host: Host, ns: str, name: str, as_json: bool) -> None:
    results = [(node, host.explain(node)) for node in _find(host, ns, name)]
    if as_json:
        emit_json([{"node": node_json(node), "chain": None if chain is None else [node_json(n) for n in chain]}
                   for node, chain in results])
        return
    for i, (node, chain) in enumerate(results):
        if i:
            click.echo()
        line = node_line(node)
        if chain is None:
            click.echo(f"{line} is reachable from no root: containerd's next collection removes it")
            continue
        click.echo(f"{line} is kept by this chain of references, root first:")
        for n in chain:
            click.echo(f"  {node_line(n)}")


@command.command("du")
@root_option
@json_option
def du(root_dir: str, as_json: bool) -> None:
    """Bytes per namespace and store: total, shared with other namespaces, reclaimable by the next collection.

    Rows with namespace '-' are the stores on disk as a whole.
    """
    with open_root(root_dir) as host:
        rows = usage.du(host)
    emit_usage(rows, as_json)


@command.command("fsck")
@root_option
@click.option("--verify-content", is_flag=True, help="Also hash every blob a record names.")
@json_option
@click.pass_context
def fsck(ctx: click.Context, root_dir: str, verify_content: bool, as_json: bool) -> None:
    """Records whose blob, ingest or snapshot is missing or differs, and data no record owns
    (the checks `cargohold fsck` makes where containerd's layout is the same; nothing is repaired).

    Exit status 1 when there is any finding.
    """
    with open_root(root_dir) as host:
        findings = fsck_mod.check(host, verify_content=verify_content)
    if as_json:
        emit_json(findings)
    else:
        emit_findings(findings)
    if findings:
        ctx.exit(1)


@command.command("import")
@root_option
@click.option("--into", "dest", required=True, metavar="DEST", help="The new cargohold root (absent or empty).")
@click.option("--copy", is_flag=True, help="Copy blobs even where hard links are possible.")
@json_option
def import_(root_dir: str, dest: str, copy: bool, as_json: bool) -> None:
    """Copy the containerd root's state into a new cargohold root (blobs hard-linked where possible).

    Every blob's digest is verified; snapshot trees are copied with owners,
    modes, xattrs and hard links. Nothing is left at DEST if it fails.
    """
    report = import_root(root_dir, dest, copy=copy)
    if as_json:
        emit_json(report)
        return
    snapshots = ", ".join(f"{n} {name}" for name, n in sorted(report.snapshots.items())) or "no"
    click.echo(f"imported {report.source} (db version {report.db_version}) into {report.dest}: "
               f"{len(report.namespaces)} namespace(s), {report.images} image(s), {report.containers} "
               f"container(s), {report.sandboxes} sandbox(es), {report.leases} lease(s), {report.content} "
               f"content record(s) of {report.blobs} blob(s) ({report.blob_bytes} bytes; {report.linked} "
               f"linked, {report.copied} copied), {report.ingests} ingest(s), {snapshots} snapshot(s)")
    for warning in report.warnings:
        click.echo(f"warning: {warning}")
