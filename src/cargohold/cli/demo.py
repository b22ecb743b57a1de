"""`cargohold demo`: a guided tour of import, unpack, containers and garbage collection.

It builds a small three-layer OCI image in Python, imports and unpacks it,
creates a container on it, deletes the image, and shows what a collection
removes, what it keeps and why (`db.explain`). It works without root and
without any external tool.

It never collects anything it did not create: it works in its own namespace
(``demo``) and collects only that namespace (``garbage_collect(namespace=...)``),
which leaves every other namespace and every backend leftover alone. On a
given root it refuses to start when namespace ``demo`` already holds garbage
it would collect. Without ``--root`` it works in a new temporary root, which it
removes at the end unless ``--keep`` is given.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import click

import cargohold
from cargohold import Container, Node, ResourceType, RuntimeInfo, transfer
from cargohold.errors import FailedPrecondition, NotFound
from cargohold.oci.build import LayerBuilder, write_image

from .containers import create_container, delete_container
from .context import Settings, echo, pass_settings
from .gc import node_line, report_lines
from .groups import examples

NAMESPACE = "demo"
IMAGE = "example.com/cargohold/hello:1.0"
CONTAINER = "hello-1"
SNAPSHOTTER = "native"


def demo_layers() -> list:
    """Three layers that exercise what an unpack must get right: hard links, whiteouts, opaque directories."""
    base = (LayerBuilder().dir("etc").file("etc/motd", b"hello from layer 1\n")
            .dir("usr").dir("usr/share").dir("usr/share/doc").file("usr/share/doc/README", b"docs\n")
            .dir("var").dir("var/cache").file("var/cache/old", b"stale\n")
            .dir("bin").file("bin/hello", b"#!/bin/sh\necho hello\n", mode=0o755).hardlink("bin/hello-again", "bin/hello").symlink("bin/hi", "hello"))
    update = (LayerBuilder().whiteout("usr/share/doc").file("etc/motd", b"hello from layer 2\n")
              .opaque("var/cache").file("var/cache/new", b"fresh\n"))
    app = LayerBuilder().dir("app").file("app/config.json", b'{"greeting": "hello"}\n')
    return [(base.tar(), "gzip"), (update.tar(), "zstd"), (app.tar(), "")]


def _tree(directory: str) -> list[str]:
    found = []
    for top, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            found.append(os.path.relpath(os.path.join(top, name), directory))
    return found


def _things(count: int) -> str:
    return f"{count} thing{'' if count == 1 else 's'}"


@click.command("demo", epilog=examples("cargohold demo", "cargohold demo --keep",
                                       "cargohold --root /tmp/tour demo    # kept, for a look around"))
@click.option("--keep", is_flag=True, help="Keep the temporary root at the end (a given --root is always kept).")
@pass_settings
def command(settings: Settings, keep: bool) -> None:
    """Build, import and unpack an image, create a container on it, delete the image, collect
    garbage, and report what was kept, what was removed and why.

    Works in namespace 'demo' and collects nothing else. Uses a new temporary
    root, removed at the end unless --keep, or the --root given (kept).
    """
    temporary = not settings.root_given
    root = tempfile.mkdtemp(prefix="cargohold-demo-") if temporary else settings.root
    try:
        _tour(root, temporary)
    finally:
        if temporary and not keep:
            shutil.rmtree(root, ignore_errors=True)
    if temporary and not keep:
        say(f"\nRemoved the temporary root {root} (run with --keep to look around in it).")
    else:
        say(f"\nThe root stays: try `cargohold --root {root} --namespace {NAMESPACE} snapshots tree`.")


def say(text: str = "") -> None:
    """One line of the tour, after a blank line when `text` starts with a newline; escaped as `echo` does."""
    if text.startswith("\n"):
        echo()
        text = text[1:]
    echo(text)


def _tour(root: str, temporary: bool) -> None:
    where = "a new temporary root" if temporary else "the root"
    say(f"cargohold demo, in namespace {NAMESPACE!r} of {where} {root}")
    say("(it collects only what it creates there; other namespaces are left alone)")
    with cargohold.open(root) as db:
        ns = db.namespace(NAMESPACE)
        _forget_earlier_run(db, ns)

        with tempfile.TemporaryDirectory(prefix="cargohold-demo-image-") as scratch:
            archive = os.path.join(scratch, "hello.tar")
            write_image(archive, IMAGE, demo_layers())
            say(f"\n1. Built the image {IMAGE} in Python: three layers (gzip, zstd and a plain tar)")
            say("   with a hard link, a whiteout that deletes usr/share/doc and an opaque var/cache.")
            images = transfer.import_archive(ns, archive, unpack=True, snapshotter=SNAPSHOTTER)
        image = images[0]
        config, layers = transfer.image_layers(ns, image.target)
        roles = {image.target.digest: "the manifest", config.digest: "the config",
                 **{layer.descriptor.digest: f"layer {i}" for i, layer in enumerate(layers, 1)}}
        roles.update({f"{SNAPSHOTTER}/{layer.chain_id}": f"layer {i}, unpacked" for i, layer in enumerate(layers, 1)})
        say(f"\n2. Imported and unpacked it: the image {image.name} points at {image.target.digest}.")
        say("   It is stored as these blobs:")
        for digest, role in roles.items():
            if not digest.startswith(f"{SNAPSHOTTER}/"):
                say(f"     {digest}  {role}")
        say(f"   and unpacked into these {SNAPSHOTTER} snapshots, each named by its layer's chain ID:")
        for i, layer in enumerate(layers, 1):
            say(f"     {layer.chain_id}  layer {i}")

        create_container(ns, Container(CONTAINER, RuntimeInfo("io.containerd.runc.v2"), snapshotter=SNAPSHOTTER,
                                       snapshot_key=CONTAINER, image=IMAGE))
        roles[f"{SNAPSHOTTER}/{CONTAINER}"] = "the container's writable snapshot"
        rootfs = ns.snapshotter(SNAPSHOTTER).mounts(CONTAINER)[0].source
        with open(os.path.join(rootfs, "etc/motd")) as f:
            motd = f.read().strip()
        original, link = (os.stat(os.path.join(rootfs, p)) for p in ("bin/hello", "bin/hello-again"))
        say(f"\n3. Created the container {CONTAINER} on a writable snapshot of the top layer. It sees these files:")
        say(f"     {' '.join(_tree(rootfs))}")
        say(f"   usr/share/doc and var/cache/old are gone, etc/motd says {motd!r}, and bin/hello-again "
            f"{'is a hard link of' if original.st_ino == link.st_ino else 'is NOT a hard link of'} bin/hello.")

        ns.images.delete(IMAGE)
        doomed = db.unreachable(namespace=NAMESPACE)
        say(f"\n4. Deleted the image. A dry run (`cargohold gc --dry-run --namespace {NAMESPACE}`) finds "
            f"{_things(len(doomed))} no root references any more:")
        for node in doomed:
            say(f"     {node_line(node)}  {_role(roles, node)}")

        stats = db.garbage_collect(namespace=NAMESPACE)
        summary, _ = report_lines(stats)
        say(f"\n5. Collected the garbage (`cargohold gc --namespace {NAMESPACE}`): {summary}.")
        say("   Removed, because the image was their only root:")
        for node in stats.removed:
            say(f"     {node_line(node)}  {_role(roles, node)}")

        roles[CONTAINER] = "the container itself: a root"
        kept = sorted((node for node in db.mark() if node.namespace == NAMESPACE),
                      key=lambda n: (n.type != ResourceType.CONTAINER, n.type, n.key))
        say(f"\n6. Kept, because the container still needs them ({_things(len(kept))}):")
        for node in kept:
            say(f"     {node_line(node)}  {_role(roles, node)}")
        bottom = Node(ResourceType.SNAPSHOT, NAMESPACE, f"{SNAPSHOTTER}/{layers[0].chain_id}")
        say("   Why the bottom layer stays (`cargohold gc --explain`), from the root down:")
        for depth, node in enumerate(db.explain(bottom) or []):
            say(f"     {'  ' * depth}{'-> ' if depth else ''}{node_line(node)}")


def _role(roles: dict, node: Node) -> str:
    return roles.get(node.key, "")


def _forget_earlier_run(db, ns) -> None:
    """Refuse garbage the demo did not make; remove what an earlier demo left, so this run starts alike."""
    garbage = db.unreachable(namespace=NAMESPACE)
    if garbage:
        raise FailedPrecondition(
            f"namespace {NAMESPACE!r} of this root already holds {_things(len(garbage))} no root references "
            f"(such as {node_line(garbage[0])}); the demo collects that namespace, so it would delete them: "
            "run it on another root, or without --root")
    try:
        delete_container(ns, CONTAINER)
    except NotFound:
        pass
