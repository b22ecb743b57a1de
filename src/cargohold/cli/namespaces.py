"""`cargohold namespaces ...`"""

from __future__ import annotations

import click

from .context import Settings, echo, pass_settings, remove_all
from .groups import Group, examples
from .output import Column, format_labels, listing_options, parse_labels


@click.group("namespaces", cls=Group, epilog=examples("cargohold namespaces create dev", "cargohold ns ls"))
def command() -> None:
    """Create, list, label and remove namespaces."""


COLUMNS = (Column("NAME", lambda n: n["name"]), Column("LABELS", lambda n: format_labels(n["labels"])))


@command.command("ls", epilog=examples("cargohold namespaces ls", "cargohold ns ls -q", "cargohold ns ls --filter labels.team==infra"))
@click.argument("filters", nargs=-1)
@listing_options("names", filter_example="labels.team==infra")
@pass_settings
def ls(settings: Settings, listing) -> None:
    """List namespaces with their labels, optionally only those matching FILTERS (fields: name, labels.KEY)."""
    def read() -> list:
        db = settings.db(write=False)
        return [{"name": name, "labels": db.namespaces.labels(name)} for name in db.namespaces.list()]

    found = listing.select(listing.fetch(read), lambda n: {"name": n["name"]}, lambda n: {"labels": n["labels"]})
    listing.emit(found, COLUMNS)


@command.command("create", epilog=examples("cargohold namespaces create dev", "cargohold ns create prod team=web tier=1"))
@click.argument("name")
@click.argument("labels", nargs=-1, metavar="[KEY=VALUE]...")
@pass_settings
def create(settings: Settings, name: str, labels: tuple) -> None:
    """Create namespace NAME with optional labels."""
    wanted = parse_labels(labels)
    settings.db().namespaces.create(name, wanted)
    echo(name)


@command.command("rm", epilog=examples("cargohold namespaces rm dev", "cargohold ns rm a b c"))
@click.argument("names", nargs=-1, required=True)
@pass_settings
def rm(settings: Settings, names: tuple) -> None:
    """Remove empty namespaces, all or none."""
    namespaces = settings.db().namespaces
    remove_all(settings, names, lambda name, tx: namespaces.delete(name, tx=tx))


@command.command("label", epilog=examples("cargohold namespaces label dev team=infra", "cargohold ns label dev team="))
@click.argument("name")
@click.argument("labels", nargs=-1, metavar="[KEY=VALUE]...")
@pass_settings
def label(settings: Settings, name: str, labels: tuple) -> None:
    """Set labels on namespace NAME (KEY= with an empty value removes KEY)."""
    changes = parse_labels(labels)
    db = settings.db()
    with db.update() as tx:
        for key, value in changes.items():
            db.namespaces.set_label(name, key, value, tx=tx)
        current = db.namespaces.labels(name, tx=tx)
    echo(format_labels(current))
