"""`cargohold leases ...`: leases hold resources so the garbage collector keeps them."""

from __future__ import annotations

from datetime import timedelta
from typing import Optional

import click

from cargohold.gc.labels import GC_EXPIRE
from cargohold.timeutil import format_rfc3339, parse_go_duration

from .context import (Settings, echo, emit_list, format_labels, json_option, parse_labels, pass_settings,
                      remove_all)


def parse_duration(text: str) -> timedelta:
    """A positive duration in Go's notation, such as ``24h``, ``1h30m`` or ``90s``, of at most
    int64 nanoseconds (about 292 years), as Go's time.ParseDuration allows."""
    ns = parse_go_duration(text)
    if ns is None or ns < 0:
        raise click.BadParameter(f"duration {text!r} must look like 24h, 1h30m or 90s, "
                                 "and be at most 2562047h (about 292 years)", param_hint="--expires")
    return timedelta(microseconds=ns // 1000)


@click.group("leases")
def command() -> None:
    """Create, list and remove leases, and list what they hold."""


@command.command("ls")
@click.argument("filters", nargs=-1)
@json_option
@pass_settings
def ls(settings: Settings, filters: tuple, as_json: bool) -> None:
    """List leases, optionally matching FILTERS (e.g. 'id~=^import')."""
    emit_list(settings.ns().leases.list(*filters), as_json, ["ID", "CREATED", "LABELS"],
              lambda lease: (lease.id, lease.created_at, format_labels(lease.labels)))


@command.command("create")
@click.option("--id", "lease_id", metavar="ID", help="Lease id [default: generated].")
@click.option("--expires", metavar="DURATION", help="Expire after DURATION (e.g. 24h, 90m); never by default.")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Label the lease (repeatable).")
@pass_settings
def create(settings: Settings, lease_id: Optional[str], expires: Optional[str], labels: tuple) -> None:
    """Create a lease and print its id."""
    values = parse_labels(labels)
    if expires is not None:
        values[GC_EXPIRE] = format_rfc3339(settings.db().clock() + parse_duration(expires))
    echo(settings.ns().leases.create(lease_id, values).id)


@command.command("rm")
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@click.option("--sync", is_flag=True, help="Run a garbage collection before returning.")
@pass_settings
def rm(settings: Settings, ids: tuple, sync: bool) -> None:
    """Remove leases, all or none (what only they held goes at the next garbage collection)."""
    leases = settings.ns().leases
    remove_all(settings, ids, lambda lease_id, tx: leases.delete(lease_id, tx=tx), sync=sync)


@command.command("resources")
@click.argument("lease_id", metavar="ID")
@json_option
@pass_settings
def resources(settings: Settings, lease_id: str, as_json: bool) -> None:
    """List the resources lease ID holds."""
    emit_list(settings.ns().leases.list_resources(lease_id), as_json, ["TYPE", "ID"], lambda r: (r.type, r.id))
