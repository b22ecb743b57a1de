"""`cargohold containers ...`: container records, each holding its image's writable snapshot."""

from __future__ import annotations

from typing import Optional

import click

from cargohold import Container, RuntimeInfo, transfer
from cargohold.errors import AlreadyExists, NotFound
from cargohold.transfer import Progress
from cargohold.validation import require_str

from .context import (Settings, echo, emit_list, format_labels, json_option, parse_labels, pass_settings,
                      remove_all)
from .images import max_layer_size_option
from .progress import blob_progress


@click.group("containers")
def command() -> None:
    """Create, list and remove containers."""


@command.command("ls")
@click.argument("filters", nargs=-1)
@json_option
@pass_settings
def ls(settings: Settings, filters: tuple, as_json: bool) -> None:
    """List containers, optionally matching FILTERS (e.g. 'image==NAME')."""
    emit_list(settings.ns().containers.list(*filters), as_json,
              ["ID", "IMAGE", "RUNTIME", "SNAPSHOTTER", "SNAPSHOT", "LABELS"],
              lambda c: (c.id, c.image, c.runtime.name, c.snapshotter, c.snapshot_key, format_labels(c.labels)))


@command.command("create")
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
    container = Container(container_id, RuntimeInfo(require_str(runtime, "runtime name")),
                          spec=spec_file.read() if spec_file else b"", snapshotter=snapshotter,
                          snapshot_key=container_id, image=image, labels=parse_labels(labels))
    with blob_progress(True) as progress:
        create_container(settings.ns(), container, platform=platform, progress=progress,
                         max_layer_size=max_layer_size)
    echo(container_id)


def create_container(ns, container: Container, *, platform: Optional[str] = None,
                     progress: Optional[Progress] = None, max_layer_size: Optional[int] = None) -> Container:
    """Unpack the container's image if needed, then create the container and its snapshot together.

    The snapshot, keyed ``container.snapshot_key``, is prepared on the image's
    top chain ID in the container's snapshotter.
    """
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


@command.command("rm")
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
