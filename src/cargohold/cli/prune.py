"""`cargohold prune`: remove every image no container uses, then collect (like ``docker image prune -a``).

Prints the removed images (``NAMESPACE NAME``), then the collection's report as ``gc`` prints
it. ``--dry-run`` changes nothing: it prints the images that would go, then one ``TYPE
NAMESPACE KEY`` line per node the collection would then remove, then the bytes it would free.
"""

from __future__ import annotations

import click

from cargohold.df import prune

from .groups import examples
from .context import Settings, echo, emit_json, emit_table, json_option, pass_settings
from .gc import format_bytes, node_json, node_line, report_lines, stats_json


@click.command("prune", epilog=examples("cargohold prune --dry-run", "cargohold prune -A"))
@click.option("--dry-run", is_flag=True, help="Only list what would be removed and the bytes that would be freed.")
@click.option("--all-namespaces", "-A", is_flag=True,
              help="Prune every namespace (and collect the whole root) [default: the global --namespace only].")
@json_option
@pass_settings
def command(settings: Settings, dry_run: bool, all_namespaces: bool, as_json: bool) -> None:
    """Remove every image no container uses, then collect what that leaves unreachable."""
    result = prune(settings.db(), None if all_namespaces else settings.namespace, dry_run=dry_run)
    if as_json:
        report = {"images": [{"namespace": ns, "name": name} for ns, name in result.images],
                  "removed_nodes": [node_json(n) for n in result.removed], "freed_bytes": result.freed,
                  "dry_run": dry_run}
        if result.stats is not None:
            report["collection"] = stats_json(result.stats)
        emit_json(report)
        return
    if result.images:
        emit_table(["NAMESPACE", "IMAGE"], result.images)
    if dry_run:
        for node in result.removed:
            echo(node_line(node))
        echo(f"would remove {len(result.images)} image(s) and free {format_bytes(result.freed)}")
        return
    for line in report_lines(result.stats):
        echo(line)
