"""`cargohold containers ...`: container records, each holding its image's writable snapshot."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Optional

import click

from cargohold.errors import AlreadyExists, NotFound

from .context import Settings, echo, emit_json, pass_settings, remove_all
from .groups import Group, examples
from .images import max_layer_size_option
from .output import Column, format_labels, listing_options, parse_labels, plain

if TYPE_CHECKING:
    from cargohold import Container
    from cargohold.transfer import Progress


@click.group("containers", cls=Group, epilog=examples("cargohold containers create example.com/app:1 web", "cargohold c ls"))
def command() -> None:
    """Create, list, inspect and remove containers."""


LIST_COLUMNS = (
    Column("ID", lambda c: c.id),
    Column("IMAGE", lambda c: c.image, "key"),
    Column("RUNTIME", lambda c: c.runtime.name),
    Column("SNAPSHOTTER", lambda c: c.snapshotter),
    Column("SNAPSHOT", lambda c: c.snapshot_key, "key"),
    Column("CREATED", lambda c: c.created_at, "time", wide=True),
    Column("UPDATED", lambda c: c.updated_at, "time", wide=True),
    Column("LABELS", lambda c: format_labels(c.labels)),
)


@command.command("ls", epilog=examples("cargohold containers ls", "cargohold c ls -q image==example.com/app:1",
                                       "cargohold containers ls --format wide"))
@click.argument("filters", nargs=-1)
@listing_options("ids", filter_example="image==example.com/app:1")
@pass_settings
def ls(settings: Settings, listing) -> None:
    """List containers, optionally matching FILTERS (e.g. 'image==NAME')."""
    listing.emit(listing.fetch(lambda: settings.reader().containers.list(*listing.filters)), LIST_COLUMNS)


@command.command("info", epilog=examples("cargohold containers info web", "cargohold c info web | jq .spec"))
@click.argument("container_id", metavar="ID")
@pass_settings
def info(settings: Settings, container_id: str) -> None:
    """Print container ID's record as JSON (as `ctr containers info`), its spec decoded when it is JSON."""
    container = settings.reader().containers.get(container_id)
    record = plain(container)
    try:
        record["spec"] = json.loads(container.spec) if container.spec else None
    except ValueError:
        pass  # not JSON: kept as text
    emit_json(record)


@command.command("create", epilog=examples("cargohold containers create example.com/app:1 web",
                                           "cargohold containers create --snapshotter overlayfs --spec config.json example.com/app:1 web"))
@click.argument("image")
@click.argument("container_id", metavar="ID")
@click.option("--snapshotter", default="native", show_default=True, help="Snapshotter of the container's snapshot: native or overlayfs (overlay is an alias).")
@click.option("--runtime", default="io.containerd.runc.v2", show_default=True, help="Runtime name.")
@click.option("--platform", metavar="OS/ARCH[/VARIANT]", help="Platform of the image [default: the host's].")
@click.option("--spec", "spec_file", type=click.File("rb"), help="OCI runtime spec to store (a JSON file).")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Label the container (repeatable).")
@max_layer_size_option
@pass_settings
def create(settings: Settings, image: str, container_id: str, snapshotter: str, runtime: str,
           platform: Optional[str], spec_file, labels: tuple, max_layer_size: Optional[int]) -> None:
    """Create container ID from IMAGE, with a writable snapshot ID on the image's top layer.

    The image is unpacked first if it is not yet.
    """
    from cargohold import Container, RuntimeInfo
    from cargohold.validation import require_str

    from .progress import blob_progress

    container = Container(container_id, RuntimeInfo(require_str(runtime, "runtime name")),
                          spec=spec_file.read() if spec_file else b"", snapshotter=snapshotter,
                          snapshot_key=container_id, image=image, labels=parse_labels(labels))
    with blob_progress(True) as progress:
        create_container(settings.ns(), container, platform=platform, progress=progress,
                         max_layer_size=max_layer_size)
    echo(container_id)


def create_container(ns, container: "Container", *, platform: Optional[str] = None,
                     progress: "Optional[Progress]" = None, max_layer_size: Optional[int] = None) -> "Container":
    """Unpack the container's image if needed, then create the container and its snapshot together.

    The snapshot, keyed ``container.snapshot_key``, is prepared on the image's
    top chain ID in the container's snapshotter.
    """
    from cargohold import transfer

    ns.db.snapshotter_backend(container.snapshotter)
    _require_free(ns, container.id)
    parent = transfer.unpack_image(ns, container.image, snapshotter=container.snapshotter, platform=platform,
                                   progress=progress, max_layer_size=max_layer_size)
    with ns.db.update() as tx:  # the container and its snapshot appear together, or neither does
        created = ns.containers.create(container, tx=tx)
        ns.snapshotter(container.snapshotter).prepare(container.snapshot_key, parent, tx=tx)
    return created


def _require_free(ns, container_id: str) -> None:
    """Refuse a taken id before unpacking anything."""
    try:
        ns.containers.get(container_id)
    except NotFound:
        return
    raise AlreadyExists(f"container {container_id!r} already exists in namespace {ns.name!r}")


@command.command("rm", epilog=examples("cargohold containers rm web", "cargohold containers rm --keep-snapshot web db"))
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@click.option("--keep-snapshot", is_flag=True, help="Keep the containers' snapshots.")
@pass_settings
def rm(settings: Settings, ids: tuple, keep_snapshot: bool) -> None:
    """Remove containers, all or none, with their snapshots unless --keep-snapshot."""
    ns = settings.ns()
    remove_all(settings, ids, lambda container_id, tx: delete_container(ns, container_id, keep_snapshot, tx))


def delete_container(ns, container_id: str, keep_snapshot: bool = False, tx=None) -> None:
    """Delete a container and, unless `keep_snapshot`, its snapshot, in one transaction."""
    with ns.db.transaction(tx, write=True) as t:
        container = ns.containers.get(container_id, tx=t)
        ns.containers.delete(container_id, tx=t)
        if container.snapshot_key and not keep_snapshot:
            try:
                ns.snapshotter(container.snapshotter).remove(container.snapshot_key, tx=t)
            except NotFound:
                pass  # removed already
