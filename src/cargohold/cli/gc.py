"""`cargohold gc`: run a garbage collection, show what one would remove, or why something is kept.

Output of ``gc`` for people: the removed nodes as a ``TYPE NAMESPACE KEY``
table, then one summary line (``removed 5 records (4 content, 1 snapshot);
freed 12.3 MiB (3 blobs, 2 snapshot directories); writers held off 2.10 ms``)
and one line of cleanup durations. A backend removal that failed is one
``cargohold: ...`` line on stderr each, followed by a line saying that the
metadata collection itself committed, and the exit code is 1.

``gc --dry-run`` prints one ``TYPE NAMESPACE KEY`` line per node it would
remove, then one ``TYPE - KEY SIZE`` line per backend leftover: data no
record owns, which a cleanup deletes (``-`` stands for the namespace, as
leftovers belong to none). TYPE is ``blob`` (KEY: the digest),
``ingest-dir`` (the backend ingest ref, or the directory name when the ingest
has no meta) or ``snapshot-dir`` (``<snapshotter>/<directory name>``); SIZE
is in bytes; a dry run limited to one namespace (``--namespace NS``) lists
no leftovers, as they belong to none. With ``--json`` it prints one list: an object ``{"type",
"namespace", "key"}`` per node, then ``{"type", "namespace": null, "key",
"size"}`` per leftover.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Optional

import click

from cargohold.errors import InvalidArgument, NotFound
from cargohold.model import Node, ResourceType

from .context import MissingRoot, Settings, echo, emit_json, emit_table, json_option, one_line, pass_settings
from .groups import examples
from .prefixes import as_prefix, resolve

if TYPE_CHECKING:
    from cargohold import DB, Freed, GCStats, Leftover


def type_name(resource_type: int) -> str:
    """How lines name a node's type (the collector's names)."""
    from cargohold.gc.context import type_name as name

    return name(resource_type)


def node_line(node: Node) -> str:
    """``TYPE NAMESPACE KEY``, the one-line form of a node."""
    return f"{type_name(node.type)} {node.namespace} {node.key}"


def node_json(node: Node) -> dict:
    return {"type": type_name(node.type), "namespace": node.namespace, "key": node.key}


def nodes_named(nodes: Iterable[Node], name: str) -> list[Node]:
    """The `nodes` called `name`: by key, a snapshot also by its key without ``<snapshotter>/``, and a
    digest also by a prefix of it (one that matches several digests is refused, naming them)."""
    nodes = list(nodes)

    def named(key: str) -> list[Node]:
        return [node for node in nodes
                if node.key == key or (node.type == ResourceType.SNAPSHOT and node.key.partition("/")[2] == key)]

    found = named(name)
    if not found and as_prefix(name) is not None:
        keys = {node.key.partition("/")[2] if node.type == ResourceType.SNAPSHOT else node.key for node in nodes}
        try:
            found = named(resolve(name, (key for key in keys if ":" in key)))
        except NotFound:
            pass
    return found


def find_nodes(db: "DB", namespace: str, name: str) -> list[Node]:
    """The nodes of `namespace` called `name` (`nodes_named`): a digest or a prefix of one, an image
    or lease name, an ingest ref, a snapshot key, or a container id."""
    found = nodes_named((node for node in db.nodes() if node.namespace == namespace), name)
    try:
        db.namespace(namespace).containers.get(name)
        found.append(Node(ResourceType.CONTAINER, namespace, name))
    except (NotFound, InvalidArgument):  # no such container, or not even a valid container id
        pass
    if not found:
        raise NotFound(f"nothing called {name!r} in namespace {namespace!r} "
                       "(give a digest, an image name, a snapshot key, a lease or container id)")
    return found


def leftover_line(leftover: "Leftover") -> str:
    """``TYPE - KEY SIZE``, the one-line form of a backend leftover."""
    return f"{leftover.type} - {leftover.key} {leftover.size}"


def _freed_json(freed: "Freed") -> dict:
    return {"count": freed.count, "bytes": freed.bytes}


def stats_json(stats: "GCStats") -> dict:
    """A collection's report with self-explaining keys; ``removed``, ``meta_d``, ``content_d``
    and ``snapshot_d`` stay as aliases of the keys earlier versions printed."""
    nodes = [node_json(n) for n in stats.removed]
    return {"removed_nodes": nodes, "removed_records": dict(stats.records),
            "writers_blocked_s": stats.meta_d, "mark_s": stats.mark_d, "sweep_s": stats.sweep_d,
            "total_s": stats.total_d, "content_cleanup_s": stats.content_d,
            "snapshot_cleanup_s": dict(stats.snapshot_d), "freed_bytes": stats.freed_bytes,
            "freed": {"blobs": _freed_json(stats.blobs), "ingests": _freed_json(stats.ingests),
                      "snapshot_dirs": {name: _freed_json(f) for name, f in sorted(stats.snapshot_dirs.items())}},
            "errors": list(stats.errors),
            "removed": nodes, "meta_d": stats.meta_d, "content_d": stats.content_d,
            "snapshot_d": dict(stats.snapshot_d)}


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def format_bytes(size: int) -> str:
    """``512 B``, ``1.5 KiB``, ``12.3 MiB``, ...: binary units, one decimal."""
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def report_lines(stats: "GCStats") -> list[str]:
    """What a collection removed and freed, and how long it held writers off and cleaned, for people."""
    records = _count(len(stats.removed), "record", "records")
    if stats.records:
        records += " (" + ", ".join(f"{n} {kind}" for kind, n in sorted(stats.records.items())) + ")"
    parts = [_count(stats.blobs.count, "blob", "blobs"), _count(stats.ingests.count, "ingest", "ingests")]
    for name, freed in sorted(stats.snapshot_dirs.items()):
        parts.append(_count(freed.count, f"{name} snapshot directory", f"{name} snapshot directories"))
    parts = [part for part in parts if not part.startswith("0 ")]
    freed = format_bytes(stats.freed_bytes) + (f" ({', '.join(parts)})" if parts else "")
    cleanups = [f"content {stats.content_d * 1000:.2f} ms"] if stats.content_d else []
    cleanups += [f"{name} snapshots {seconds * 1000:.2f} ms" for name, seconds in sorted(stats.snapshot_d.items())]
    return [f"removed {records}; freed {freed}; writers held off {stats.meta_d * 1000:.2f} ms",
            "cleanup took " + (", ".join(cleanups) if cleanups else "no time: no backend needed cleaning")]


def _report_errors(ctx: click.Context, stats: "GCStats") -> None:
    """One stderr line per failed cleanup, then exit 1."""
    if not stats.errors:
        return
    for line in stats.errors:
        echo(f"cargohold: {one_line(line)}", err=True)
    echo("cargohold: the metadata collection itself committed; what was not cleaned stays for a later gc "
         "(each line above says why)", err=True)
    ctx.exit(1)


@click.command("gc", epilog=examples("cargohold gc", "cargohold gc --dry-run",
                                     "cargohold gc --explain sha256:4f3a      # a digest prefix does",
                                     "cargohold gc --namespace k8s.io --json"))
@click.option("--dry-run", is_flag=True,
              help="Only list what a collection would remove (TYPE NAMESPACE KEY) and the backend leftovers "
                   "no record owns (TYPE - KEY SIZE).")
@click.option("--explain", metavar="DIGEST|KEY",
              help="Print the chain of references from a root to DIGEST|KEY (in the global --namespace), "
                   "one node a line.")
@click.option("--namespace", "scope", metavar="NS",
              help="Collect only namespace NS: its garbage, and in the backends only what was its own "
                   "(no leftovers) [default: the whole root].")
@click.option("--adopt-backends", is_flag=True,
              help="Make this metadata database the owner of backends it does not own (their data may be "
                   "described by records it lost) and delete everything in them it does not reference.")
@json_option
@pass_settings
@click.pass_context
def command(ctx: click.Context, settings: Settings, dry_run: bool, explain: Optional[str], scope: Optional[str],
            adopt_backends: bool, as_json: bool) -> None:
    """Run a garbage collection and print what it removed, what it freed and how long it took.

    Every namespace is collected, unless --namespace NS limits it to one.
    --dry-run removes nothing; --explain says why something is kept. Exits 1
    when a backend cleanup failed or was refused (the metadata collection has
    committed all the same): a backend this database does not own is cleaned
    only with --adopt-backends.
    """
    if adopt_backends and (dry_run or explain is not None):
        raise click.UsageError("--adopt-backends cannot be combined with --dry-run or --explain")
    if explain is not None:
        if dry_run or scope is not None:
            raise click.UsageError("--explain cannot be combined with --dry-run or --namespace")
        _explain(settings.db(write=False), settings.namespace, explain, as_json)
    elif dry_run:
        try:
            db = settings.db(write=False)
        except MissingRoot:
            nodes, leftovers = [], []
        else:
            nodes = db.unreachable(namespace=scope)
            leftovers = [] if scope is not None else db.leftovers()
        if as_json:
            emit_json([node_json(n) for n in nodes]
                      + [{"type": x.type, "namespace": None, "key": x.key, "size": x.size} for x in leftovers])
        else:
            for node in nodes:
                echo(node_line(node))
            for leftover in leftovers:
                echo(leftover_line(leftover))
    else:
        stats = settings.db().garbage_collect(namespace=scope, adopt_backends=adopt_backends)
        if as_json:
            emit_json(stats_json(stats))
        else:
            if stats.removed:
                emit_table(["TYPE", "NAMESPACE", "KEY"],
                           [(type_name(n.type), n.namespace, n.key) for n in stats.removed])
            for line in report_lines(stats):
                echo(line)
        _report_errors(ctx, stats)


def _explain(db: "DB", namespace: str, name: str, as_json: bool) -> None:
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
