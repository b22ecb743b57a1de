"""`cargohold compact`: rewrite the metadata file compacted (it holds the snapshotters' records too).

Prints one ``PATH BEFORE AFTER`` row per file (bytes), then the bytes given back. It needs
the files to itself: while another process keeps the root open it waits up to ``--timeout``
seconds, then fails (exit 1) having changed nothing.
"""

from __future__ import annotations

import click

from .groups import examples
from .context import Settings, echo, emit_json, emit_table, json_option, pass_settings
from .gc import format_bytes


@click.command("compact", epilog=examples("cargohold compact", "cargohold compact --timeout 60 --json"))
@click.option("--timeout", type=click.FloatRange(min=0), default=10.0, show_default=True, metavar="SECONDS",
              help="How long to wait for other processes to close the root and for open transactions.")
@json_option
@pass_settings
def command(settings: Settings, timeout: float, as_json: bool) -> None:
    """Rewrite the LMDB files compacted and swap them in atomically; print each file's size before and after."""
    done = settings.db().compact(timeout)
    if as_json:
        emit_json([{"path": path, "before": before, "after": after} for path, before, after in done])
        return
    emit_table(["PATH", "BEFORE", "AFTER"], done)
    freed = sum(before - after for _, before, after in done)
    echo(f"compacted {len(done)} file(s): {format_bytes(freed)} given back")
