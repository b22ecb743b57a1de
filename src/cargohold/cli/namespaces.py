"""`cargohold namespaces ...`"""

from __future__ import annotations

import click

from .context import (Settings, echo, emit_json, emit_table, format_labels, json_option, parse_labels, pass_settings,
                      remove_all)


@click.group("namespaces")
def command() -> None:
    """Create, list, label and remove namespaces."""


@command.command("ls")
@json_option
@pass_settings
def ls(settings: Settings, as_json: bool) -> None:
    """List namespaces with their labels."""
    db = settings.db()
    rows = [(name, db.namespaces.labels(name)) for name in db.namespaces.list()]
    if as_json:
        emit_json([{"name": name, "labels": labels} for name, labels in rows])
    else:
        emit_table(["NAME", "LABELS"], [(name, format_labels(labels)) for name, labels in rows])


@command.command("create")
@click.argument("name")
@click.argument("labels", nargs=-1, metavar="[KEY=VALUE]...")
@pass_settings
def create(settings: Settings, name: str, labels: tuple) -> None:
    """Create namespace NAME with optional labels."""
    settings.db().namespaces.create(name, parse_labels(labels))
    echo(name)


@command.command("rm")
@click.argument("names", nargs=-1, required=True)
@pass_settings
def rm(settings: Settings, names: tuple) -> None:
    """Remove empty namespaces, all or none."""
    namespaces = settings.db().namespaces
    remove_all(settings, names, lambda name, tx: namespaces.delete(name, tx=tx))


@command.command("label")
@click.argument("name")
@click.argument("labels", nargs=-1, metavar="[KEY=VALUE]...")
@pass_settings
def label(settings: Settings, name: str, labels: tuple) -> None:
    """Set labels on namespace NAME (KEY= with an empty value removes KEY)."""
    db = settings.db()
    with db.update() as tx:
        for key, value in parse_labels(labels).items():
            db.namespaces.set_label(name, key, value, tx=tx)
        current = db.namespaces.labels(name, tx=tx)
    echo(format_labels(current))

