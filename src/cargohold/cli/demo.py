"""`cargohold demo`: a guided tour of import, unpack, containers and garbage collection.

It builds a small three-layer OCI image in Python, imports and unpacks it,
creates a container on it, deletes the image, and shows what a collection
removes, what it keeps and why (`db.explain`). It works without root and
without any external tool, on a new temporary root unless --root is given
(there it works in namespace ``demo``, but the collection covers the whole root).
"""

from __future__ import annotations

import os
import tempfile

import click

import cargohold
from cargohold import Container, Node, ResourceType, RuntimeInfo, transfer
from cargohold.errors import NotFound
from cargohold.oci.build import LayerBuilder, write_image

from .containers import create_container, delete_container
from .context import Settings, echo, pass_settings
from .gc import node_line, stats_lines, type_name

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


@click.command("demo")
@pass_settings
def command(settings: Settings) -> None:
    """Build, import and unpack an image, create a container on it, delete the image, collect
    garbage, and report what was kept, what was removed and why.

    Uses a new temporary root unless --root was given.
    """
    root = settings.root if settings.root_given else tempfile.mkdtemp(prefix="cargohold-demo-")
    say = echo
    say(f"cargohold demo under {root}")
    with cargohold.open(root) as db:
        ns = db.namespace(NAMESPACE)
        _forget_earlier_run(ns)

        with tempfile.TemporaryDirectory(prefix="cargohold-demo-image-") as scratch:
            archive = os.path.join(scratch, "hello.tar")
            write_image(archive, IMAGE, demo_layers())
            say(f"\n1. Built {IMAGE} in Python: three layers (gzip, zstd, plain tar) with a hard link,")
            say("   a whiteout deleting usr/share/doc and an opaque var/cache.")
            images = transfer.import_archive(ns, archive, unpack=True, snapshotter=SNAPSHOTTER)
        image = images[0]
        config, layers = transfer.image_layers(ns, image.target)
        roles = {image.target.digest: "manifest", config.digest: "config",
                 **{layer.descriptor.digest: f"layer {i}" for i, layer in enumerate(layers, 1)}}
        say(f"\n2. Imported and unpacked it into namespace {NAMESPACE!r}: image {image.name} -> {image.target.digest}")
        for digest, role in roles.items():
            say(f"     content {digest}  {role}")
        for i, layer in enumerate(layers, 1):
            say(f"     snapshot {SNAPSHOTTER}/{layer.chain_id}  layer {i} (chain ID)")

        create_container(ns, Container(CONTAINER, RuntimeInfo("io.containerd.runc.v2"), snapshotter=SNAPSHOTTER,
                                       snapshot_key=CONTAINER, image=IMAGE))
        rootfs = ns.snapshotter(SNAPSHOTTER).mounts(CONTAINER)[0].source
        with open(os.path.join(rootfs, "etc/motd")) as f:
            motd = f.read().strip()
        original, link = (os.stat(os.path.join(rootfs, p)) for p in ("bin/hello", "bin/hello-again"))
        say(f"\n3. Created container {CONTAINER} on a writable snapshot of the top layer. It sees:")
        say(f"     {' '.join(_tree(rootfs))}")
        say(f"     (usr/share/doc and var/cache/old are gone, etc/motd says {motd!r}, and bin/hello-again "
            f"{'is a hard link of' if original.st_ino == link.st_ino else 'is NOT a hard link of'} bin/hello)")

        ns.images.delete(IMAGE)
        doomed = db.unreachable()
        say(f"\n4. Deleted the image. A dry run (`cargohold gc --dry-run`) lists {len(doomed)} node(s) to remove:")
        for node in doomed:
            say(f"     {node_line(node)}")

        stats = db.garbage_collect()
        say(f"\n5. Collected garbage (`cargohold gc`): {'; '.join(stats_lines(stats))}.")

        say("\nRemoved, because no root references them any more (the image was their only root):")
        for node in stats.removed:
            role = roles.get(node.key, "")
            say(f"     {type_name(node.type)} {node.key}{'  ' + role if role else ''}")
        bottom = Node(ResourceType.SNAPSHOT, NAMESPACE, f"{SNAPSHOTTER}/{layers[0].chain_id}")
        chain = db.explain(bottom)
        say("\nKept, because the container still needs them. Why the bottom layer stays (`cargohold gc --explain`):")
        for depth, node in enumerate(chain or []):
            say(f"     {'  ' * depth}{'-> ' if depth else ''}{node_line(node)}")
        say(f"\nTry: cargohold --root {root} --namespace {NAMESPACE} snapshots tree")


def _forget_earlier_run(ns) -> None:
    """Remove what an earlier demo on the same root left, so this run starts alike."""
    try:
        delete_container(ns, CONTAINER)
    except NotFound:
        pass
