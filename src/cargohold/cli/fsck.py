"""`cargohold fsck`: check every invariant the root relies on, and repair what needs no guess.

Output for people: one table row per finding, ``PROBLEM NAMESPACE STORE KEY SIZE REPAIR PATH
DETAIL`` (REPAIR is what ``--repair`` does about it: rebuild, drop, quarantine, prune, or
``-`` when nothing can be done without guessing), then, with ``--repair``, one line per
repair, then one summary line. ``--json`` prints the whole report. The exit code is 1 when a
problem was found (with ``--repair``: when one is left unrepaired); notes (``dirty-backend``,
``quarantined``) are not problems. ``cargohold containerd fsck`` prints its findings the same way.
"""

from __future__ import annotations

from typing import Optional

import click

import cargohold
from cargohold.integrity import findings as f

from .groups import examples
from .context import Settings, echo, emit_json, emit_table, json_option, pass_settings

COLUMNS = ["PROBLEM", "NAMESPACE", "STORE", "KEY", "SIZE", "REPAIR", "PATH", "DETAIL"]


def emit_findings(findings: list, repairs: Optional[list] = None) -> None:
    """The findings as a table (or "no findings"), the repairs, and the summary line."""
    if findings:
        emit_table(COLUMNS, [(x.kind, x.namespace, x.store, x.key, x.size, x.repair, x.path, x.detail)
                             for x in findings])
    for r in repairs or ():
        state = "done" if r.done else "not done"
        echo(f"{r.action} {r.finding.kind} {r.finding.namespace} {r.finding.store} {r.finding.key}: "
             f"{state}: {r.message}")
    echo(f.summary(findings, repairs))


def unrepaired(report: f.Report) -> list:
    """The problems a repair did not fix (all of them without one)."""
    fixed = {id(r.finding) for r in report.repairs if r.done}
    return [x for x in report.problems if id(x) not in fixed]


@click.command("fsck", epilog=examples("cargohold fsck", "cargohold fsck --verify-content", "cargohold fsck --repair --prune-orphans --json"))
@click.option("--repair", is_flag=True,
              help="Fix what can be fixed without guessing, each fix in its own transaction: rebuild derived "
                   "metadata, drop records whose data is gone when no root reaches them, quarantine blobs whose "
                   "bytes do not match their digest.")
@click.option("--verify-content", is_flag=True, help="Also hash every blob a record names.")
@click.option("--prune-orphans", is_flag=True,
              help="With --repair: also delete blobs, ingest and snapshot directories no record owns.")
@json_option
@pass_settings
@click.pass_context
def command(ctx: click.Context, settings: Settings, repair: bool, verify_content: bool, prune_orphans: bool,
            as_json: bool) -> None:
    """Check every invariant of the root: records against the node table, parents, leases, and the
    blobs, ingests and snapshot directories on disk; list data no record owns.

    Exit status 1 when a problem is found (with --repair: when one is left).
    """
    if prune_orphans and not repair:
        raise click.UsageError("--prune-orphans needs --repair")
    report = cargohold.fsck(settings.db(), repair=repair, verify_content=verify_content, prune_orphans=prune_orphans)
    if as_json:
        emit_json({"root": report.root, "schema": report.schema, "version": report.version,
                   "identity": report.identity, "checked": report.checked, "findings": report.findings,
                   "repairs": report.repairs, "summary": f.summary(report.findings, report.repairs)})
    else:
        emit_findings(report.findings, report.repairs)
    if unrepaired(report):
        ctx.exit(1)
