"""`cargohold leases ...`: leases hold resources so the garbage collector keeps them."""

from __future__ import annotations

from datetime import timedelta
from typing import Optional

import click

from .context import Settings, echo, pass_settings, remove_all
from .groups import Group, examples
from .output import Column, format_labels, listing_options, parse_labels


def parse_duration(text: str) -> timedelta:
    """A positive duration in Go's notation, such as ``24h``, ``1h30m`` or ``90s``, of at most
    int64 nanoseconds (about 292 years), as Go's time.ParseDuration allows."""
    from cargohold.timeutil import parse_go_duration

    ns = parse_go_duration(text)
    if ns is None or ns < 0:
        raise click.BadParameter(f"duration {text!r} must look like 24h, 1h30m or 90s, "
                                 "and be at most 2562047h (about 292 years)", param_hint="--expires")
    return timedelta(microseconds=ns // 1000)


@click.group("leases", cls=Group, epilog=examples("cargohold leases create --expires 1h", "cargohold leases ls"))
def command() -> None:
    """Create, list and remove leases, and list what they hold."""


LIST_COLUMNS = (
    Column("ID", lambda le: le["id"]),
    Column("CREATED", lambda le: le["created_at"], "time"),
    Column("RESOURCES", lambda le: len(le["resources"]), wide=True),
    Column("LABELS", lambda le: format_labels(le["labels"])),
)


@command.command("ls", epilog=examples("cargohold leases ls", "cargohold leases ls -q 'id~=^import'",
                                       "cargohold leases ls --format wide"))
@click.argument("filters", nargs=-1)
@listing_options("ids", filter_example="id~=^import")
@pass_settings
def ls(settings: Settings, listing) -> None:
    """List leases, optionally matching FILTERS (e.g. 'id~=^import'); wide: how many resources each holds."""
    def read() -> list:
        leases = settings.reader().leases
        found = leases.list(*listing.filters)
        if listing.format != "wide":
            return [{"id": le.id, "created_at": le.created_at, "labels": le.labels, "resources": ()} for le in found]
        return [{"id": le.id, "created_at": le.created_at, "labels": le.labels,
                 "resources": leases.list_resources(le.id)} for le in found]

    listing.emit(listing.fetch(read), LIST_COLUMNS,
                 as_json=lambda le: {"id": le["id"], "created_at": le["created_at"], "labels": le["labels"]})


@command.command("create", epilog=examples("cargohold leases create --id build-1 --expires 1h",
                                           "cargohold leases create --label team=ci"))
@click.option("--id", "lease_id", metavar="ID", help="Lease id [default: generated].")
@click.option("--expires", metavar="DURATION", help="Expire after DURATION (e.g. 24h, 90m); never by default.")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Label the lease (repeatable).")
@pass_settings
def create(settings: Settings, lease_id: Optional[str], expires: Optional[str], labels: tuple) -> None:
    """Create a lease and print its id."""
    from cargohold.gc.labels import GC_EXPIRE
    from cargohold.timeutil import format_rfc3339

    values = parse_labels(labels)
    if expires is not None:
        values[GC_EXPIRE] = format_rfc3339(settings.db().clock() + parse_duration(expires))
    echo(settings.ns().leases.create(lease_id, values).id)


@command.command("rm", epilog=examples("cargohold leases rm build-1", "cargohold leases rm --sync build-1 build-2"))
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@click.option("--sync", is_flag=True, help="Run a garbage collection before returning.")
@pass_settings
def rm(settings: Settings, ids: tuple, sync: bool) -> None:
    """Remove leases, all or none (what only they held goes at the next garbage collection)."""
    leases = settings.ns().leases
    remove_all(settings, ids, lambda lease_id, tx: leases.delete(lease_id, tx=tx), sync=sync)


RESOURCE_COLUMNS = (Column("TYPE", lambda r: r.type), Column("ID", lambda r: r.id, "key"))


@command.command("resources", epilog=examples("cargohold leases resources build-1",
                                              "cargohold leases resources -q --filter type==content build-1"))
@click.argument("lease_id", metavar="ID")
@listing_options("resource ids", filter_example="type==content")
@pass_settings
def resources(settings: Settings, lease_id: str, listing) -> None:
    """List the resources lease ID holds, optionally only those matching --filter (fields: id, type)."""
    found = settings.reader().leases.list_resources(lease_id)
    listing.emit(listing.select(found, lambda r: {"id": r.id, "type": r.type}), RESOURCE_COLUMNS,
                 key=lambda r: r.id)
