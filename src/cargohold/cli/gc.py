"""`cargohold gc`: run a garbage collection, show what one would remove, or why something is kept."""

from __future__ import annotations

from typing import Optional

import click

from cargohold import DB, GCStats, Node, ResourceType
from cargohold.errors import InvalidArgument, NotFound
from cargohold.gc.index import SANDBOX

from .context import Settings, echo, emit_json, emit_table, json_option, pass_settings


def type_name(rtype: int) -> str:
    """The lower-case name of a node type (``content``, ``snapshot``, ...; ``type<N>`` for a collector's)."""
    if rtype == SANDBOX:
        return "sandbox"
    try:
        return ResourceType(rtype).name.lower()
    except ValueError:
        return f"type{int(rtype)}"


def node_line(node: Node) -> str:
    """``TYPE NAMESPACE KEY``, the one-line form of a node."""
    return f"{type_name(node.type)} {node.namespace} {node.key}"


def node_json(node: Node) -> dict:
    return {"type": type_name(node.type), "namespace": node.namespace, "key": node.key}


def find_nodes(db: DB, namespace: str, name: str) -> list[Node]:
    """The nodes of `namespace` called `name`: a digest, an image or lease name, an ingest ref,
    a snapshot key (with or without its ``<snapshotter>/`` prefix), or a container id."""
    found = [node for node in db.nodes() if node.namespace == namespace and
             (node.key == name or (node.type == ResourceType.SNAPSHOT and node.key.partition("/")[2] == name))]
    try:
        db.namespace(namespace).containers.get(name)
        found.append(Node(ResourceType.CONTAINER, namespace, name))
    except (NotFound, InvalidArgument):  # no such container, or not even a valid container id
        pass
    if not found:
        raise NotFound(f"nothing called {name!r} in namespace {namespace!r} "
                       "(give a digest, an image name, a snapshot key, a lease or container id)")
    return found


def stats_json(stats: GCStats) -> dict:
    return {"removed": [node_json(n) for n in stats.removed], "meta_d": stats.meta_d,
            "content_d": stats.content_d, "snapshot_d": dict(stats.snapshot_d)}


def stats_lines(stats: GCStats) -> list[str]:
    """A short summary of a collection's durations."""
    lines = [f"removed {len(stats.removed)} node(s); writers held off {stats.meta_d * 1000:.2f} ms",
             f"content cleanup {stats.content_d * 1000:.2f} ms"]
    lines += [f"snapshot cleanup ({name}) {seconds * 1000:.2f} ms" for name, seconds in sorted(stats.snapshot_d.items())]
    return lines


@click.command("gc")
@click.option("--dry-run", is_flag=True, help="Only list what a collection would remove: TYPE NAMESPACE KEY.")
@click.option("--explain", metavar="DIGEST|KEY",
              help="Print the chain of references from a root to DIGEST|KEY (in --namespace), one node a line.")
@json_option
@pass_settings
def command(settings: Settings, dry_run: bool, explain: Optional[str], as_json: bool) -> None:
    """Run a garbage collection and print what it removed and how long it took.

    Every namespace is collected. --dry-run removes nothing; --explain says
    why something is kept.
    """
    db = settings.db()
    if explain is not None:
        if dry_run:
            raise click.UsageError("--explain and --dry-run cannot be combined")
        _explain(db, settings.namespace, explain, as_json)
    elif dry_run:
        nodes = db.unreachable()
        if as_json:
            emit_json([node_json(n) for n in nodes])
        else:
            for node in nodes:
                echo(node_line(node))
    else:
        stats = db.garbage_collect()
        if as_json:
            emit_json(stats_json(stats))
            return
        if stats.removed:
            emit_table(["TYPE", "NAMESPACE", "KEY"],
                       [(type_name(n.type), n.namespace, n.key) for n in stats.removed])
        for line in stats_lines(stats):
            echo(line)


def _explain(db: DB, namespace: str, name: str, as_json: bool) -> None:
    results = [(node, db.explain(node)) for node in find_nodes(db, namespace, name)]
    if as_json:
        emit_json([{"node": node_json(node), "chain": None if chain is None else [node_json(n) for n in chain]}
                   for node, chain in results])
        return
    for i, (node, chain) in enumerate(results):
        if i:
            echo()
        if chain is None:
            echo(f"{node_line(node)} is reachable from no root: the next collection removes it")
            continue
        echo(f"{node_line(node)} is kept by this chain of references, root first:")
        for n in chain:
            echo(f"  {node_line(n)}")
