"""`cargohold df`: bytes per namespace and store, shared with other namespaces, and reclaimable
by a collection now (like ``docker system df``).

One ``NAMESPACE STORE COUNT TOTAL SHARED RECLAIMABLE`` row per namespace and store (bytes),
then the stores on disk as a whole (namespace ``-``, data no record owns included), then one
summary line. ``cargohold containerd du`` prints a containerd root's usage the same way.
"""

from __future__ import annotations

import click

from .groups import examples
from .context import Settings, echo, emit_json, emit_table, json_option, pass_settings
from .gc import format_bytes

COLUMNS = ["NAMESPACE", "STORE", "COUNT", "TOTAL", "SHARED", "RECLAIMABLE"]


def emit_usage(rows: list, as_json: bool) -> None:
    """The rows as JSON, or as a table and a summary line."""
    if as_json:
        emit_json(rows)
        return
    emit_table(COLUMNS, [(r.namespace, r.store, r.count, r.total, r.shared, r.reclaimable) for r in rows])
    disk = [r for r in rows if r.namespace == "-"]
    echo(f"on disk {format_bytes(sum(r.total for r in disk))}, reclaimable by a collection now "
         f"{format_bytes(sum(r.reclaimable for r in disk))}")


@click.command("df", epilog=examples("cargohold df", "cargohold df --json"))
@json_option
@pass_settings
def command(settings: Settings, as_json: bool) -> None:
    """Bytes per namespace and store: total, shared with other namespaces, reclaimable by a collection now.

    Rows with namespace '-' are the stores on disk as a whole.
    """
    emit_usage(settings.db().df(), as_json)
