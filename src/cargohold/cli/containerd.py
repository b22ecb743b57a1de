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
from typing import Optional

import click

from cargohold import Leftover, Node, ResourceType
from cargohold.containerd import Host, fsck as fsck_mod, open_root, usage
from cargohold.containerd.importer import import_root
from cargohold.containerd.plan import RULES
from cargohold.containerd.schema import DEFAULT_ROOT
from cargohold.errors import NotFound

from .context import Settings, emit_json, emit_table, format_labels, json_option, pass_settings
from .df import emit_usage
from .fsck import emit_findings
from .gc import leftover_line, node_json, node_line

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


@command.command("ls")
@click.argument("kind", type=click.Choice(KINDS), default="images")
@root_option
@namespace_option
@click.option("--snapshotter", metavar="NAME", help="snapshots: only this snapshotter [default: every one].")
@click.option("-q", "--quiet", is_flag=True, help="Print only names, digests, keys or ids.")
@json_option
@pass_settings
def ls(settings: Settings, kind: str, root_dir: str, namespace: Optional[str], snapshotter: Optional[str],
       quiet: bool, as_json: bool) -> None:
    """List KIND of the namespace as ctr lists them (images by default)."""
    ns = _namespace(settings, namespace)
    with open_root(root_dir) as host:
        rows, columns, items = _listing(host, kind, ns, snapshotter)
    if as_json:
        emit_json(items)
    elif quiet:
        for row in rows:
            click.echo(row[0])
    else:
        emit_table(columns, rows)


def _listing(host: Host, kind: str, ns: str, snapshotter: Optional[str]) -> tuple[list, list, list]:
    """(table rows, columns, JSON items) of one listing."""
    if kind == "namespaces":
        names = host.namespaces()
        items = [{"name": n, "labels": host.namespace_labels(n)} for n in names]
        return [(i["name"], format_labels(i["labels"])) for i in items], ["NAME", "LABELS"], items
    if kind == "images":
        found = host.images(ns)
        return ([(i.name, i.target.media_type, i.target.digest, i.target.size, format_labels(i.labels))
                 for i in found], ["NAME", "TYPE", "DIGEST", "SIZE", "LABELS"], found)
    if kind == "containers":
        found = host.containers(ns)
        return ([(c.id, c.image, c.runtime.name, c.snapshotter, c.snapshot_key, format_labels(c.labels))
                 for c in found], ["ID", "IMAGE", "RUNTIME", "SNAPSHOTTER", "SNAPSHOT", "LABELS"], found)
    if kind == "sandboxes":
        found = host.sandboxes(ns)
        return ([(s.id, s.sandboxer, s.runtime.name, format_labels(s.labels)) for s in found],
                ["ID", "SANDBOXER", "RUNTIME", "LABELS"], found)
    if kind == "leases":
        found = [(lease, host.lease_resources(ns, lease.id)) for lease in host.leases(ns)]
        items = [{"id": lease.id, "created_at": lease.created_at, "labels": lease.labels, "resources": res}
                 for lease, res in found]
        return ([(lease.id, lease.created_at, len(res), format_labels(lease.labels)) for lease, res in found],
                ["ID", "CREATED", "RESOURCES", "LABELS"], items)
    if kind == "content":
        found = host.content(ns)
        return ([(i.digest, i.size, i.created_at, format_labels(i.labels)) for i in found],
                ["DIGEST", "SIZE", "CREATED", "LABELS"], found)
    if kind == "ingests":
        found = host.ingests(ns)
        return ([(s.ref, s.offset, s.total, s.expected, s.updated_at) for s in found],
                ["REF", "OFFSET", "TOTAL", "EXPECTED", "UPDATED"], found)
    names = [snapshotter] if snapshotter else host.snapshotters(ns)
    found = [(name, info) for name in names for info in host.snapshots(ns, name)]
    items = [{"snapshotter": name, **_as_dict(info)} for name, info in found]
    return ([(info.name, name, info.parent, str(info.kind).lower(), format_labels(info.labels))
             for name, info in found], ["KEY", "SNAPSHOTTER", "PARENT", "KIND", "LABELS"], items)


def _as_dict(info) -> dict:
    return {"name": info.name, "parent": info.parent, "kind": info.kind, "labels": info.labels,
            "created_at": info.created_at, "updated_at": info.updated_at}


@command.command("gc")
@click.option("--dry-run", is_flag=True,
              help="List what containerd's next collection removes (TYPE NAMESPACE KEY SIZE: the bytes its removal "
                   "frees) and the leftovers its cleanup deletes too (TYPE - KEY SIZE).")
@click.option("--explain", metavar="DIGEST|SNAPSHOTTER/KEY",
              help="Print the chain of references from a root to DIGEST|SNAPSHOTTER/KEY (in the namespace).")
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
    """The nodes of `ns` called `name`: a digest, an ingest ref, an image name, a lease or container id,
    ``<snapshotter>/<key>`` or a bare snapshot key."""
    found = []
    for node in host.graph().all_nodes():
        if node.namespace != ns:
            continue
        if node.key == name or (node.type == ResourceType.SNAPSHOT and node.key.partition("/")[2] == name):
            found.append(node)
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
