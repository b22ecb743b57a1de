"""`cargohold demo`: a guided tour on a scratch root (or the one given with --root)."""

from __future__ import annotations

import tempfile

import click

import cargohold

from .context import Settings, pass_settings


@click.command("demo")
@pass_settings
def command(settings: Settings) -> None:
    """Run a short tour of cargohold and report what it did.

    Uses a new temporary root unless --root was given.
    """
    root = settings.root if settings.root_given else tempfile.mkdtemp(prefix="cargohold-demo-")
    say = click.echo
    say(f"cargohold demo under {root}")
    with cargohold.open(root) as db:
        names = db.namespaces.list()
        if "demo" not in names:
            db.namespaces.create("demo", {"purpose": "tour"})
        with db.update() as tx:
            db.namespaces.set_label("demo", "step", "atomic", tx=tx)
            db.namespaces.set_label("demo", "owner", "cargohold", tx=tx)
        say(f"  namespaces: {', '.join(db.namespaces.list())}")
        try:
            with db.update() as tx:
                db.namespaces.set_label("demo", "step", "rolled-back", tx=tx)
                raise RuntimeError("a failing update")
        except RuntimeError:
            pass
        say(f"  a failed update changed nothing: step={db.namespaces.labels('demo')['step']}")
    with cargohold.open(root) as db:
        say(f"  after reopening, labels of 'demo': {db.namespaces.labels('demo')}")
        say(f"  schema version {db.version}")
