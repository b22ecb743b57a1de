"""`cargohold snapshots [--snapshotter NAME] ...`: one snapshotter's snapshots in the namespace."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Optional

import click

from .context import Settings, echo, emit_json, emit_labels, emit_list, pass_settings, remove_all
from .groups import Group, examples
from .output import Column, format_labels, listing_options, parse_labels

if TYPE_CHECKING:
    from cargohold import Mount


class _Snapshots:
    """The settings plus the snapshotter chosen on the group."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.settings = settings
        self.name = name

    def store(self, write: bool = True):
        return self.settings.ns(write).snapshotter(self.name)

    def reader(self):
        """The snapshotter, opened only to read (MissingRoot without a root, once its name is checked)."""
        from .context import MissingRoot

        try:
            return self.store(write=False)
        except MissingRoot:
            import cargohold
            from cargohold.errors import NotFound
            from cargohold.model import snapshotter_name

            if snapshotter_name(self.name) not in cargohold._SNAPSHOTTERS:
                raise NotFound(f"snapshotter {self.name!r} not found "
                               f"(have: {', '.join(cargohold._SNAPSHOTTERS)})") from None
            raise


pass_snapshots = click.make_pass_decorator(_Snapshots)


def resolve_keys(store, keys) -> list:
    """Each key as given, or, when no snapshot has it and it is a digest prefix, the one snapshot
    key (a chain ID, as unpacking names them) it starts."""
    from cargohold.errors import NotFound

    from .prefixes import as_prefix, resolve

    found, digests = [], None
    for key in keys:
        if as_prefix(key) is not None:
            try:
                store.stat(key)
            except NotFound:
                if digests is None:
                    digests = [info.name for info in store.walk() if ":" in info.name]
                key = resolve(key, digests, "snapshot key")
        found.append(key)
    return found

label_option = click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
                            help="Label the snapshot (repeatable).")


@click.group("snapshots", cls=Group, epilog=examples("cargohold snapshots tree", "cargohold snapshots --snapshotter overlayfs ls"))
@click.option("--snapshotter", default="native", show_default=True,
              help="Snapshotter to work with: native or overlayfs (overlay is an alias).")
@pass_settings
@click.pass_context
def command(ctx: click.Context, settings: Settings, snapshotter: str) -> None:
    """Prepare, view, commit, inspect, label and remove snapshots."""
    ctx.obj = _Snapshots(settings, snapshotter)


def _emit_mounts(mounts: "list[Mount]", as_json: bool, target: Optional[str] = None) -> None:
    if target is not None and not as_json:
        for m in mounts:
            options = f" -o {shlex.quote(','.join(m.options))}" if m.options else ""
            echo(f"mount -t {m.type} {shlex.quote(m.source)} {shlex.quote(target)}{options}")
    else:
        emit_list(mounts, as_json, ["TYPE", "SOURCE", "OPTIONS"], lambda m: (m.type, m.source, ",".join(m.options)))


LIST_COLUMNS = (
    Column("KEY", lambda i: i.name, "key"),
    Column("PARENT", lambda i: i.parent, "key"),
    Column("KIND", lambda i: str(i.kind).lower()),
    Column("CREATED", lambda i: i.created_at, "time", wide=True),
    Column("UPDATED", lambda i: i.updated_at, "time", wide=True),
    Column("LABELS", lambda i: format_labels(i.labels)),
)


@command.command("ls", epilog=examples("cargohold snapshots ls", "cargohold snapshots --snapshotter overlayfs ls -q kind==committed",
                                       "cargohold snapshot ls --filter parent==base --format wide"))
@click.argument("filters", nargs=-1)
@listing_options("keys", filter_example="kind==committed")
@pass_snapshots
def ls(snapshots: _Snapshots, listing) -> None:
    """List snapshots, optionally matching FILTERS (e.g. 'kind==committed', 'parent==KEY')."""
    listing.emit(listing.fetch(lambda: snapshots.reader().walk(*listing.filters)), LIST_COLUMNS)


@command.command("tree", epilog=examples("cargohold snapshots tree", "cargohold snapshots tree --json"))
@click.option("--json", "as_json", is_flag=True,
              help="Print the tree as JSON: a list of roots, each {name, kind, children: [...]}.")
@pass_snapshots
def tree(snapshots: _Snapshots, as_json: bool) -> None:
    """Show snapshots as a tree of parents and children."""
    from .context import MissingRoot

    try:
        found = {info.name: info for info in snapshots.reader().walk()}
    except MissingRoot:
        found = {}
    children: dict[str, list[str]] = {}
    for info in found.values():
        children.setdefault(info.parent if info.parent in found else "", []).append(info.name)
    if as_json:
        def node(name: str) -> dict:
            return {"name": name, "kind": str(found[name].kind).lower(),
                    "children": [node(child) for child in children.get(name, [])]}
        emit_json([node(name) for name in children.get("", [])])
        return
    pending = [(name, 0) for name in reversed(children.get("", []))]
    while pending:
        name, depth = pending.pop()
        branch = "  " * (depth - 1) + "\\_ " if depth else ""
        echo(f"{branch}{name} ({str(found[name].kind).lower()})")
        pending.extend((child, depth + 1) for child in reversed(children.get(name, [])))


@command.command("info", epilog=examples("cargohold snapshots info base", "cargohold snapshots --snapshotter overlayfs info sha256:<chain ID>"))
@click.argument("key")
@pass_snapshots
def info(snapshots: _Snapshots, key: str) -> None:
    """Print snapshot KEY's record as JSON: name, parent, kind, labels and times (as `ctr snapshots info`)."""
    store = snapshots.reader()
    emit_json(store.stat(*resolve_keys(store, [key])))


@command.command("prepare", epilog=examples("cargohold snapshots prepare work", "cargohold snapshots prepare --label a=1 --json child base"))
@click.argument("key")
@click.argument("parent", default="")
@label_option
@click.option("--json", "as_json", is_flag=True, help="Print the mounts as JSON.")
@pass_snapshots
def prepare(snapshots: _Snapshots, key: str, parent: str, labels: tuple, as_json: bool) -> None:
    """Create active snapshot KEY on committed PARENT (none: empty; a chain-ID prefix does) and print its mounts."""
    wanted = parse_labels(labels)
    store = snapshots.store()
    if parent:
        (parent,) = resolve_keys(store, [parent])
    _emit_mounts(store.prepare(key, parent, wanted), as_json)


@command.command("view", epilog=examples("cargohold snapshots view look base", "cargohold snapshots view --json look base"))
@click.argument("key")
@click.argument("parent")
@label_option
@click.option("--json", "as_json", is_flag=True, help="Print the mounts as JSON.")
@pass_snapshots
def view(snapshots: _Snapshots, key: str, parent: str, labels: tuple, as_json: bool) -> None:
    """Create read-only view KEY of committed PARENT (a chain-ID prefix does) and print its mounts."""
    wanted = parse_labels(labels)
    store = snapshots.store()
    (parent,) = resolve_keys(store, [parent])
    _emit_mounts(store.view(key, parent, wanted), as_json)


@command.command("commit", epilog=examples("cargohold snapshots commit base work", "cargohold snapshots commit --label layer=1 base work"))
@click.argument("name")
@click.argument("key")
@label_option
@pass_snapshots
def commit(snapshots: _Snapshots, name: str, key: str, labels: tuple) -> None:
    """Commit active snapshot KEY as NAME."""
    wanted = parse_labels(labels)
    snapshots.store().commit(name, key, wanted)
    echo(name)


@command.command("rm", epilog=examples("cargohold snapshots rm child", "cargohold snapshots rm child look base"))
@click.argument("keys", nargs=-1, required=True, metavar="KEY...")
@pass_snapshots
def rm(snapshots: _Snapshots, keys: tuple) -> None:
    """Remove snapshots, all or none, children before parents (the files go at the next garbage collection)."""
    store = snapshots.store()
    remove_all(snapshots.settings, resolve_keys(store, keys), lambda key, tx: store.remove(key, tx=tx))


USAGE_COLUMNS = (
    Column("KEY", lambda u: u["key"], "key"),
    Column("SIZE", lambda u: u["size"], "size"),
    Column("INODES", lambda u: u["inodes"]),
)


@command.command("usage", epilog=examples("cargohold snapshots usage", "cargohold snapshots usage base child",
                                          "cargohold snapshots usage --filter kind==active --json"))
@click.argument("keys", nargs=-1, metavar="[KEY]...")
@listing_options("keys", filter_example="kind==active")
@pass_snapshots
def usage(snapshots: _Snapshots, keys: tuple, listing) -> None:
    """Disk usage of snapshots KEY... (every snapshot, or those matching --filter, when none is given)."""
    def read() -> list:
        store = snapshots.reader()
        names = resolve_keys(store, keys) or tuple(info.name for info in store.walk(*listing.filters))
        return [{"key": key, **_usage(store.usage(key))} for key in names]

    listing.emit(listing.fetch(read), USAGE_COLUMNS)


def _usage(u) -> dict:
    return {"size": u.size, "inodes": u.inodes}


@command.command("mounts", epilog=examples("cargohold snapshots mounts web", "cargohold snapshots mounts web /mnt | sh"))
@click.argument("key")
@click.argument("target", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the mounts as JSON.")
@pass_snapshots
def mounts(snapshots: _Snapshots, key: str, target: Optional[str], as_json: bool) -> None:
    """Print the mounts of active snapshot or view KEY; with TARGET, as mount commands for it."""
    store = snapshots.reader()
    _emit_mounts(store.mounts(*resolve_keys(store, [key])), as_json, target)


@command.command("label", epilog=examples("cargohold snapshots label base layer=1", "cargohold snapshots label base layer="))
@click.argument("key")
@click.argument("labels", nargs=-1, required=True, metavar="KEY=VALUE...")
@click.option("--json", "as_json", is_flag=True, help="Print the labels as JSON.")
@pass_snapshots
def label(snapshots: _Snapshots, key: str, labels: tuple, as_json: bool) -> None:
    """Set labels on snapshot KEY (KEY= with an empty value removes it)."""
    from cargohold import SnapshotInfo
    from cargohold.fieldpaths import label_paths

    changes = parse_labels(labels)
    store = snapshots.store()
    (key,) = resolve_keys(store, [key])
    info = store.update(SnapshotInfo(key, labels=changes), *label_paths(changes))
    emit_labels(info.labels, as_json)

