"""`cargohold images ...`: list, inspect, import, export, pull, push, tag, label and remove images."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Optional

import click

from cargohold.errors import AlreadyExists, Error

from .context import Settings, echo, emit_json, emit_labels, emit_table, json_option, pass_settings, \
    refuse_terminal, remove_all
from .groups import Group, examples
from .output import listing_options, parse_labels

if TYPE_CHECKING:
    from cargohold.transfer.registry.auth import Credentials

platform_option = click.option("--platform", metavar="OS/ARCH[/VARIANT]",
                               help="Only this platform [default: the host's].")
all_platforms_option = click.option("--all-platforms", is_flag=True, help="Every platform of the image.")
plain_http_option = click.option("--plain-http", is_flag=True, help="Talk HTTP to the registry, not HTTPS.")
user_option = click.option("--user", "-u", metavar="USER[:PASSWORD]",
                           help="Registry credentials (asks for the password when it is left out) "
                                "[default: the Docker config file's, if any].")
snapshotter_option = click.option("--snapshotter", default="native", show_default=True,
                                  help="Snapshotter to unpack into: native or overlayfs (overlay is an alias).")


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


_LISTING = ("Details", "details", "stored_size", "LIST_COLUMNS")
"""What `images ls` and `images inspect` show of an image, in `imagelist` (click-free): loaded from there
when first asked for here."""


def __getattr__(name: str):
    if name in _LISTING:
        from . import imagelist

        return getattr(imagelist, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@click.group("images", cls=Group, epilog=examples("cargohold images import --unpack alpine.tar", "cargohold i ls"))
def command() -> None:
    """Import, export, pull, push, list, inspect, tag, label and remove images."""


@command.command("ls", epilog=examples(
    "cargohold images ls", "cargohold images ls -q 'name~=^docker.io/'",
    "cargohold images ls --filter 'labels.env==prod' --format wide"))
@click.argument("filters", nargs=-1)
@listing_options("names", filter_example="name~=^docker.io/library/")
@pass_settings
def ls(settings: Settings, listing) -> None:
    """List images, optionally only those matching FILTERS (containerd's syntax, e.g. 'name~=^app').

    SIZE counts the image's blobs the namespace holds; PLATFORMS are those of
    an index's entries, else the one of the image's config.
    """
    from .imagelist import list_images

    list_images(settings, listing)


@command.command("inspect", epilog=examples("cargohold images inspect docker.io/library/alpine:3.19",
                                            "cargohold images inspect example.com/app:1 | jq .platforms"))
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@pass_settings
def inspect(settings: Settings, names: tuple) -> None:
    """Print images as JSON: the record, the bytes stored, the platforms and every blob reached.

    Each blob is listed with its digest, media type, size, the platform of the
    index entry that leads to it, and whether the namespace holds it.
    """
    import dataclasses

    from .imagelist import details

    ns = settings.reader()
    found = []
    for name in dict.fromkeys(names):
        image = ns.images.get(name)
        more = details(ns, image)
        found.append({**dataclasses.asdict(image), "size": more.size, "platforms": more.platforms,
                      "content": more.content})
    emit_json(found)


@command.command("tag", epilog=examples("cargohold images tag example.com/app:1 example.com/app:latest",
                                        "cargohold images tag --force docker.io/library/alpine:3.19 alpine"))
@click.argument("source", metavar="SOURCE")
@click.argument("targets", nargs=-1, required=True, metavar="TARGET...")
@click.option("--force", "-f", is_flag=True, help="Point an existing TARGET at SOURCE's target instead of refusing.")
@pass_settings
def tag(settings: Settings, source: str, targets: tuple, force: bool) -> None:
    """Create images TARGET... pointing at what image SOURCE points at, with its labels (all or none).

    An existing TARGET is AlreadyExists unless --force.
    """
    from cargohold import Image

    db = settings.db()
    images = settings.ns().images
    targets = tuple(dict.fromkeys(targets))
    with db.update() as tx:
        original = images.get(source, tx=tx)
        for name in targets:
            if name == source:
                continue
            copy = Image(name, original.target, original.labels)
            try:
                images.create(copy, tx=tx)
            except AlreadyExists:
                if not force:
                    raise AlreadyExists(f"image {name!r} already exists in namespace {settings.namespace!r} "
                                        "(--force points it at the new target)") from None
                images.update(copy, "target", "labels", tx=tx)
    for name in targets:
        echo(name)


@command.command("import", epilog=examples(
    "cargohold images import --unpack alpine.tar",
    "skopeo copy docker://alpine:3.19 oci-archive:/dev/stdout | cargohold images import -",
    "cargohold images import --base-name example.com/app --all-platforms app-oci-dir/"))
@click.argument("source", metavar="FILE|DIR|-")
@click.option("--base-name", metavar="NAME",
              help="Name prefix for entries whose org.opencontainers.image.ref.name is a bare tag "
                   "[default: import-YYYY-MM-DD, today's date, as ctr names them].")
@click.option("--index-name", metavar="NAME", help="Also create an image NAME for the archive's index.json.")
@click.option("--unpack", is_flag=True, help="Unpack the layers into snapshots named by chain ID.")
@snapshotter_option
@max_layer_size_option
@platform_option
@all_platforms_option
@json_option
@pass_settings
def import_(settings: Settings, source: str, base_name: Optional[str], index_name: Optional[str], unpack: bool,
            snapshotter: str, max_layer_size: Optional[int], platform: Optional[str], all_platforms: bool,
            as_json: bool) -> None:
    """Import an OCI image layout or a `docker save` archive (a directory or a tar, maybe gzip/zstd; '-': stdin).

    OCI layouts are what `skopeo copy ... oci-archive:`, `ctr images export`
    and Docker 25+ write; legacy `docker save` archives (manifest.json, as
    Docker before 25 and `skopeo copy ... docker-archive:` write them) import
    with the names (RepoTags, normalised: busybox:latest is
    docker.io/library/busybox:latest) and digests `ctr images import` gives.
    Every blob is verified while it is stored. A bad archive fails with one
    error and creates no image; what it stored is garbage for the next `gc`.
    An archive read from standard input is spooled to a temporary file first
    (in $TMPDIR).
    """
    from cargohold import transfer

    from .progress import blob_progress

    ns = settings.ns()
    with _archive(source) as path:
        with blob_progress(not as_json) as progress:
            created = transfer.import_archive(ns, path, base_name=base_name, index_name=index_name,
                                              unpack=unpack, snapshotter=snapshotter, platform=platform,
                                              all_platforms=all_platforms, progress=progress,
                                              max_layer_size=max_layer_size)
    if as_json:
        emit_json(created)
    else:
        emit_table(["NAME", "DIGEST"], [(image.name, image.target.digest) for image in created])


class _archive:
    """The path of the archive to import: SOURCE itself, or for '-' a temporary copy of stdin
    (removed at the end; error messages name it ``<stdin>``)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.path: Optional[str] = None

    def __enter__(self) -> str:
        if self.source != "-":
            return self.source
        import tempfile

        if sys.stdin.isatty():
            raise click.UsageError("'-' reads the archive from standard input, which is a terminal: "
                                   "pipe or redirect an archive into it")
        fd, self.path = tempfile.mkstemp(prefix="cargohold-stdin-", suffix=".tar")
        try:
            with os.fdopen(fd, "wb") as spool:
                _copy(sys.stdin.buffer, spool)
        except BaseException:
            self._remove()
            raise
        return self.path

    def __exit__(self, exc_type, exc, tb) -> None:
        path = self.path
        self._remove()
        if isinstance(exc, Error) and path and path in str(exc):
            raise type(exc)(str(exc).replace(path, "<stdin>")) from None

    def _remove(self) -> None:
        if self.path is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def _copy(source, dest, chunk: int = 1 << 20) -> None:
    while data := source.read(chunk):
        dest.write(data)


@command.command("export", epilog=examples(
    "cargohold images export example.com/app:1 app.tar",
    "cargohold images export example.com/app:1 - | skopeo inspect oci-archive:/dev/stdin",
    "cargohold images export --all-platforms --oci-only a:1 b:2 both.tar"))
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.argument("dest", metavar="FILE|-")
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
    docker-archive:FILE ...` read it too. A tar is never written to a terminal.
    """
    from cargohold import transfer

    from .progress import blob_progress

    ns = settings.reader()
    if dest == "-":
        refuse_terminal("a tar archive")
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


def credentials(user: Optional[str]) -> "Optional[Credentials]":
    """Credentials from --user, asking for a password left out; None without --user."""
    if user is None:
        return None
    from cargohold.transfer.registry.auth import Credentials, parse_user

    name, password = parse_user(user)
    if password is None:
        password = click.prompt("Password", hide_input=True, err=True)
    return Credentials(name, password)


@command.command("pull", epilog=examples(
    "cargohold images pull docker.io/library/alpine:3.19",
    "cargohold images pull --unpack --platform linux/arm64 ghcr.io/org/app:1",
    "cargohold images pull --plain-http localhost:5000/app@sha256:<digest>"))
@click.argument("ref", metavar="REF")
@click.option("--unpack", is_flag=True, help="Unpack the layers into snapshots named by chain ID.")
@snapshotter_option
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
    from cargohold import transfer

    from .progress import blob_progress

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


@command.command("push", epilog=examples(
    "cargohold images push example.com/app:1",
    "cargohold images push --plain-http example.com/app:1 localhost:5000/app:1",
    "cargohold images push -u ci --all-platforms ghcr.io/org/app:1"))
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
    from cargohold import transfer
    from cargohold.transfer.registry import parse_reference

    from .progress import blob_progress

    ns = settings.reader()
    creds = credentials(user)
    with blob_progress(not as_json) as progress:
        pushed = transfer.push(ns, name, ref, platform=platform, all_platforms=all_platforms,
                               plain_http=plain_http, credentials=creds, max_concurrent=max_concurrent_uploads,
                               progress=progress)
    target = parse_reference(ref or name)
    if as_json:
        emit_json({"name": name, "ref": str(target), "target": pushed})
    else:
        echo(f"pushed {name} to {target} ({pushed.digest})")


@command.command("rm", epilog=examples("cargohold images rm example.com/app:1",
                                       "cargohold images ls -q 'name~=^import-' | xargs cargohold images rm --sync"))
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.option("--sync", is_flag=True, help="Run a garbage collection before returning.")
@pass_settings
def rm(settings: Settings, names: tuple, sync: bool) -> None:
    """Remove images, all or none (their content goes at the next garbage collection)."""
    images = settings.ns().images
    remove_all(settings, names, lambda name, tx: images.delete(name, tx=tx), sync=sync)


@command.command("label", epilog=examples("cargohold images label example.com/app:1 env=prod team=web",
                                          "cargohold images label example.com/app:1 env="))
@click.argument("name")
@click.argument("labels", nargs=-1, required=True, metavar="KEY=VALUE...")
@json_option
@pass_settings
def label(settings: Settings, name: str, labels: tuple, as_json: bool) -> None:
    """Set labels on image NAME (KEY= with an empty value removes KEY)."""
    from cargohold import Image
    from cargohold.fieldpaths import label_paths

    changes = parse_labels(labels)
    images = settings.ns().images
    current = images.get(name)
    updated = images.update(Image(name, current.target, changes), *label_paths(changes))
    emit_labels(updated.labels, as_json)
