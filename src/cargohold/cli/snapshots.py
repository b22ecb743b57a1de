"""`cargohold snapshots [--snapshotter NAME] ...`: one snapshotter's snapshots in the namespace."""

from __future__ import annotations

import shlex
from typing import Optional

import click

from cargohold import Mount, SnapshotInfo
from cargohold.fieldpaths import label_paths

from .context import (Settings, echo, emit_json, emit_labels, emit_list, emit_table, format_labels, json_option,
                      parse_labels, pass_settings, remove_all)


class _Snapshots:
    """The settings plus the snapshotter chosen on the group."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.settings = settings
        self.name = name

    def store(self):
        return self.settings.ns().snapshotter(self.name)


pass_snapshots = click.make_pass_decorator(_Snapshots)

label_option = click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
                            help="Label the snapshot (repeatable).")


@click.group("snapshots")
@click.option("--snapshotter", default="native", show_default=True, help="Snapshotter to work with: native or overlayfs (overlay is an alias).")
@pass_settings
@click.pass_context
def command(ctx: click.Context, settings: Settings, snapshotter: str) -> None:
    """Prepare, view, commit, inspect, label and remove snapshots."""
    ctx.obj = _Snapshots(settings, snapshotter)


def _emit_mounts(mounts: list[Mount], as_json: bool, target: Optional[str] = None) -> None:
    if target is not None and not as_json:
        for m in mounts:
            options = f" -o {shlex.quote(','.join(m.options))}" if m.options else ""
            echo(f"mount -t {m.type} {shlex.quote(m.source)} {shlex.quote(target)}{options}")
    else:
        emit_list(mounts, as_json, ["TYPE", "SOURCE", "OPTIONS"], lambda m: (m.type, m.source, ",".join(m.options)))


@command.command("ls")
@click.argument("filters", nargs=-1)
@json_option
@pass_snapshots
def ls(snapshots: _Snapshots, filters: tuple, as_json: bool) -> None:
    """List snapshots, optionally matching FILTERS (e.g. 'kind==committed', 'parent==KEY')."""
    emit_list(list(snapshots.store().walk(*filters)), as_json, ["KEY", "PARENT", "KIND", "LABELS"],
              lambda i: (i.name, i.parent, str(i.kind).lower(), format_labels(i.labels)))


@command.command("tree")
@pass_snapshots
def tree(snapshots: _Snapshots) -> None:
    """Show snapshots as a tree of parents and children."""
    found = {info.name: info for info in snapshots.store().walk()}
    children: dict[str, list[str]] = {}
    for info in found.values():
        children.setdefault(info.parent if info.parent in found else "", []).append(info.name)
    pending = [(name, 0) for name in reversed(children.get("", []))]
    while pending:
        name, depth = pending.pop()
        branch = "  " * (depth - 1) + "\\_ " if depth else ""
        echo(f"{branch}{name} ({str(found[name].kind).lower()})")
        pending.extend((child, depth + 1) for child in reversed(children.get(name, [])))


@command.command("prepare")
@click.argument("key")
@click.argument("parent", default="")
@label_option
@json_option
@pass_snapshots
def prepare(snapshots: _Snapshots, key: str, parent: str, labels: tuple, as_json: bool) -> None:
    """Create active snapshot KEY on committed PARENT (none: empty) and print its mounts."""
    _emit_mounts(snapshots.store().prepare(key, parent, parse_labels(labels)), as_json)


@command.command("view")
@click.argument("key")
@click.argument("parent")
@label_option
@json_option
@pass_snapshots
def view(snapshots: _Snapshots, key: str, parent: str, labels: tuple, as_json: bool) -> None:
    """Create read-only view KEY of committed PARENT and print its mounts."""
    _emit_mounts(snapshots.store().view(key, parent, parse_labels(labels)), as_json)


@command.command("commit")
@click.argument("name")
@click.argument("key")
@label_option
@pass_snapshots
def commit(snapshots: _Snapshots, name: str, key: str, labels: tuple) -> None:
    """Commit active snapshot KEY as NAME."""
    snapshots.store().commit(name, key, parse_labels(labels))
    echo(name)


@command.command("rm")
@click.argument("keys", nargs=-1, required=True, metavar="KEY...")
@pass_snapshots
def rm(snapshots: _Snapshots, keys: tuple) -> None:
    """Remove snapshots, all or none, children before parents (the files go at the next garbage collection)."""
    store = snapshots.store()
    remove_all(snapshots.settings, keys, lambda key, tx: store.remove(key, tx=tx))


@command.command("usage")
@click.argument("keys", nargs=-1, metavar="[KEY]...")
@json_option
@pass_snapshots
def usage(snapshots: _Snapshots, keys: tuple, as_json: bool) -> None:
    """Disk usage of snapshots KEY... (every snapshot when none is given)."""
    store = snapshots.store()
    keys = keys or tuple(info.name for info in store.walk())
    rows = [(key, store.usage(key)) for key in keys]
    if as_json:
        emit_json([{"key": key, "size": u.size, "inodes": u.inodes} for key, u in rows])
    else:
        emit_table(["KEY", "SIZE", "INODES"], [(key, u.size, u.inodes) for key, u in rows])


@command.command("mounts")
@click.argument("key")
@click.argument("target", required=False)
@json_option
@pass_snapshots
def mounts(snapshots: _Snapshots, key: str, target: Optional[str], as_json: bool) -> None:
    """Print the mounts of active snapshot or view KEY; with TARGET, as mount commands for it."""
    _emit_mounts(snapshots.store().mounts(key), as_json, target)


@command.command("label")
@click.argument("key")
@click.argument("labels", nargs=-1, required=True, metavar="KEY=VALUE...")
@json_option
@pass_snapshots
def label(snapshots: _Snapshots, key: str, labels: tuple, as_json: bool) -> None:
    """Set labels on snapshot KEY (KEY= with an empty value removes it)."""
    changes = parse_labels(labels)
    info = snapshots.store().update(SnapshotInfo(key, labels=changes), *label_paths(changes))
    emit_labels(info.labels, as_json)
