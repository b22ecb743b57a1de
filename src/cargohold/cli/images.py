"""`cargohold images ...`: list, import, export, pull, push, label and remove images."""

from __future__ import annotations

import dataclasses
import sys
from typing import Optional

import click

from cargohold import Image, errors, transfer
from cargohold.fieldpaths import label_paths
from cargohold.oci import mediatypes
from cargohold.oci.walk import children
from cargohold.transfer.registry.auth import Credentials, parse_user
from cargohold.transfer.unpacker import document_fetcher

from .context import (Settings, echo, emit_json, emit_labels, emit_table, format_labels, json_option, parse_labels,
                      pass_settings, remove_all)
from .progress import blob_progress

platform_option = click.option("--platform", metavar="OS/ARCH[/VARIANT]",
                               help="Only this platform [default: the host's].")
all_platforms_option = click.option("--all-platforms", is_flag=True, help="Every platform of the image.")
plain_http_option = click.option("--plain-http", is_flag=True, help="Talk HTTP to the registry, not HTTPS.")
user_option = click.option("--user", "-u", metavar="USER[:PASSWORD]",
                           help="Registry credentials (asks for the password when it is left out) "
                                "[default: the Docker config file's, if any].")


class ByteSize(click.ParamType):
    """A number of bytes, optionally with a binary suffix: 512, 64K, 10M, 8G, 2T (KiB, MiB... and KB also)."""

    name = "SIZE"
    _UNITS = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40, "P": 50}

    def convert(self, value, param, ctx) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().upper().removesuffix("B").removesuffix("I")
        digits, unit = text.rstrip("KMGTP"), text[len(text.rstrip("KMGTP")):]
        if not digits.isdigit() or unit not in self._UNITS:
            self.fail(f"{value!r} is not a size (a number of bytes, e.g. 512, 64K, 10M, 8G)", param, ctx)
        return int(digits) << self._UNITS[unit]


max_layer_size_option = click.option(
    "--max-layer-size", type=ByteSize(), metavar="SIZE",
    help="Refuse a layer that expands past SIZE bytes (e.g. 8G; 0: no limit) "
         "[default: max(1G, 100 x its compressed size)].")


@click.group("images")
def command() -> None:
    """Import, export, list, label and remove images."""


def stored_size(ns, image: Image) -> int:
    """Bytes of the image's content that the namespace holds (each blob counted once)."""
    fetch = document_fetcher(ns)
    total, seen, pending = 0, set(), [image.target]
    while pending:
        descriptor = pending.pop()
        if descriptor.digest in seen:
            continue
        seen.add(descriptor.digest)
        try:
            total += ns.content.info(descriptor.digest).size
            if mediatypes.is_index(descriptor.media_type) or mediatypes.is_manifest(descriptor.media_type):
                pending.extend(entry.descriptor for entry in children(descriptor, fetch))
        except (errors.NotFound, errors.InvalidArgument, errors.Unsupported):
            continue  # not stored (another platform), or not a document we can read
    return total


@command.command("ls")
@click.argument("filters", nargs=-1)
@click.option("-q", "--quiet", is_flag=True, help="Print only the names.")
@json_option
@pass_settings
def ls(settings: Settings, filters: tuple, quiet: bool, as_json: bool) -> None:
    """List images, optionally only those matching FILTERS (containerd's syntax, e.g. 'name~=^app').

    SIZE counts the image's blobs the namespace holds.
    """
    ns = settings.ns()
    found = ns.images.list(*filters)
    if quiet:
        for image in found:
            echo(image.name)
    elif as_json:
        emit_json([{**dataclasses.asdict(image), "size": stored_size(ns, image)} for image in found])
    else:
        emit_table(["NAME", "TYPE", "DIGEST", "SIZE", "LABELS"],
                   [(image.name, image.target.media_type, image.target.digest, stored_size(ns, image),
                     format_labels(image.labels)) for image in found])


@command.command("import")
@click.argument("source", metavar="FILE|DIR")
@click.option("--base-name", metavar="NAME",
              help="Name prefix for entries whose org.opencontainers.image.ref.name is a bare tag "
                   "[default: import-YYYY-MM-DD, today's date, as ctr names them].")
@click.option("--index-name", metavar="NAME", help="Also create an image NAME for the archive's index.json.")
@click.option("--unpack", is_flag=True, help="Unpack the layers into snapshots named by chain ID.")
@click.option("--snapshotter", default="native", show_default=True, help="Snapshotter to unpack into: native or overlayfs (overlay is an alias).")
@max_layer_size_option
@platform_option
@all_platforms_option
@json_option
@pass_settings
def import_(settings: Settings, source: str, base_name: Optional[str], index_name: Optional[str], unpack: bool,
            snapshotter: str, max_layer_size: Optional[int], platform: Optional[str], all_platforms: bool,
            as_json: bool) -> None:
    """Import an OCI image layout or a `docker save` archive (a directory or a tar, maybe gzip/zstd).

    OCI layouts are what `skopeo copy ... oci-archive:`, `ctr images export`
    and Docker 25+ write; legacy `docker save` archives (manifest.json, as
    Docker before 25 and `skopeo copy ... docker-archive:` write them) import
    with the names (RepoTags, normalised: busybox:latest is
    docker.io/library/busybox:latest) and digests `ctr images import` gives.
    Every blob is verified while it is stored. A bad archive fails with one
    error and creates no image; what it stored is garbage for the next `gc`.
    """
    ns = settings.ns()
    with blob_progress(not as_json) as progress:
        created = transfer.import_archive(ns, source, base_name=base_name, index_name=index_name,
                                          unpack=unpack, snapshotter=snapshotter, platform=platform,
                                          all_platforms=all_platforms, progress=progress,
                                          max_layer_size=max_layer_size)
    if as_json:
        emit_json(created)
    else:
        emit_table(["NAME", "DIGEST"], [(image.name, image.target.digest) for image in created])


@command.command("export")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.argument("dest", metavar="FILE")
@platform_option
@all_platforms_option
@click.option("--oci-only", "--skip-manifest-json", "oci_only", is_flag=True,
              help="Leave out the Docker-compatible manifest.json (ctr's --skip-manifest-json).")
@json_option
@pass_settings
def export(settings: Settings, names: tuple, dest: str, platform: Optional[str], all_platforms: bool,
           oci_only: bool, as_json: bool) -> None:
    """Write images to FILE as an OCI image layout tar ('-' for stdout).

    The archive imports back to the same names and digests. Like `ctr images
    export`, it also holds a Docker-compatible manifest.json (each image's
    manifest for the platform), so `docker load` and `skopeo copy
    docker-archive:FILE ...` read it too.
    """
    ns = settings.ns()
    if dest == "-":
        if sys.stdout.isatty():
            raise click.UsageError("refusing to write a tar archive to a terminal; redirect stdout")
        transfer.export_image(ns, names, sys.stdout.buffer, platform=platform,
                              all_platforms=all_platforms, oci_only=oci_only)
        sys.stdout.buffer.flush()
        return
    with blob_progress(not as_json) as progress:
        index = transfer.export_image(ns, names, dest, platform=platform, all_platforms=all_platforms,
                                      progress=progress, oci_only=oci_only)
    if as_json:
        emit_json({"file": dest, "index": index, "images": list(names)})
    else:
        echo(f"exported {', '.join(names)} to {dest}")


def credentials(user: Optional[str]) -> Optional[Credentials]:
    """Credentials from --user, asking for a password left out; None without --user."""
    if user is None:
        return None
    name, password = parse_user(user)
    if password is None:
        password = click.prompt("Password", hide_input=True, err=True)
    return Credentials(name, password)


@command.command("pull")
@click.argument("ref", metavar="REF")
@click.option("--unpack", is_flag=True, help="Unpack the layers into snapshots named by chain ID.")
@click.option("--snapshotter", default="native", show_default=True, help="Snapshotter to unpack into: native or overlayfs (overlay is an alias).")
@max_layer_size_option
@platform_option
@all_platforms_option
@plain_http_option
@user_option
@click.option("--max-concurrent-downloads", type=click.IntRange(min=1), default=3, show_default=True,
              help="Blobs downloaded at once.")
@json_option
@pass_settings
def pull_(settings: Settings, ref: str, unpack: bool, snapshotter: str, max_layer_size: Optional[int],
          platform: Optional[str], all_platforms: bool, plain_http: bool, user: Optional[str],
          max_concurrent_downloads: int, as_json: bool) -> None:
    """Pull image REF from its registry (e.g. docker.io/library/alpine:3.19, localhost:5000/app@sha256:...).

    Every blob is verified while it downloads; an interrupted pull resumes
    where it stopped when run again, and blobs already stored are not
    downloaded again. A failed pull creates no image.
    """
    ns = settings.ns()
    creds = credentials(user)
    with blob_progress(not as_json) as progress:
        image = transfer.pull(ns, ref, platform=platform, all_platforms=all_platforms, unpack=unpack,
                              snapshotter=snapshotter, plain_http=plain_http, credentials=creds,
                              max_concurrent=max_concurrent_downloads, progress=progress,
                              max_layer_size=max_layer_size)
    if as_json:
        emit_json(image)
    else:
        emit_table(["NAME", "DIGEST"], [(image.name, image.target.digest)])


@command.command("push")
@click.argument("name")
@click.argument("ref", required=False, metavar="[REF]")
@platform_option
@all_platforms_option
@plain_http_option
@user_option
@click.option("--max-concurrent-uploads", type=click.IntRange(min=1), default=3, show_default=True,
              help="Blobs uploaded at once.")
@json_option
@pass_settings
def push_(settings: Settings, name: str, ref: Optional[str], platform: Optional[str], all_platforms: bool,
          plain_http: bool, user: Optional[str], max_concurrent_uploads: int, as_json: bool) -> None:
    """Push image NAME to REF (default: NAME) on its registry.

    Only blobs the registry lacks are sent (mounted from another repository
    of the registry when they were pulled from one). From a multi-platform
    image, only the platform's manifest is pushed (the host's by default)
    unless --all-platforms.
    """
    ns = settings.ns()
    creds = credentials(user)
    with blob_progress(not as_json) as progress:
        pushed = transfer.push(ns, name, ref, platform=platform, all_platforms=all_platforms,
                               plain_http=plain_http, credentials=creds, max_concurrent=max_concurrent_uploads,
                               progress=progress)
    target = transfer.registry.parse_reference(ref or name)
    if as_json:
        emit_json({"name": name, "ref": str(target), "target": pushed})
    else:
        click.echo(f"pushed {name} to {target} ({pushed.digest})")


@command.command("rm")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.option("--sync", is_flag=True, help="Run a garbage collection before returning.")
@pass_settings
def rm(settings: Settings, names: tuple, sync: bool) -> None:
    """Remove images, all or none (their content goes at the next garbage collection)."""
    images = settings.ns().images
    remove_all(settings, names, lambda name, tx: images.delete(name, tx=tx), sync=sync)


@command.command("label")
@click.argument("name")
@click.argument("labels", nargs=-1, required=True, metavar="KEY=VALUE...")
@json_option
@pass_settings
def label(settings: Settings, name: str, labels: tuple, as_json: bool) -> None:
    """Set labels on image NAME (KEY= with an empty value removes KEY)."""
    images = settings.ns().images
    changes = parse_labels(labels)
    current = images.get(name)
    updated = images.update(Image(name, current.target, changes), *label_paths(changes))
    emit_labels(updated.labels, as_json)
