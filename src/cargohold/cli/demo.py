"""`cargohold demo`: a guided tour of import, unpack, containers and garbage collection.

It builds a small three-layer OCI image in Python, imports and unpacks it,
creates a container on it, deletes the image, and shows what a collection
removes, what it keeps and why (`db.explain`). It works without root and
without any external tool.

It never deletes, replaces or collects anything it did not create. It works
in its own namespace (``demo``, or the one ``--namespace`` gives) and collects
only that namespace (``garbage_collect(namespace=...)``), which leaves every
other namespace and every backend leftover no namespace owns alone.
Everything it creates there (its image, container, snapshots and lease)
carries the label `MARK`. Before it changes anything it refuses
(FailedPrecondition, nothing changed) when the namespace holds garbage
without that label or backend data no record owns (both of which its
collection would delete), or when the image, container, snapshot keys or
lease it would use exist without the label; so a run on its own earlier
output starts over and nothing else is touched. Each collection it runs (of
what an earlier run left, when it starts over, and of its deleted image) first
checks that a dry run holds only what it created, and passes that dry run as
``allowed``: the collector refuses, in the transaction that sweeps, if
anything else would go by then (another process wrote meanwhile), and its
backend cleanup deletes only the data of the records it removed. Without
``--root`` it works in a new temporary root, which it removes at the end
unless ``--keep`` is given.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import click
from click.core import ParameterSource

import cargohold
from cargohold import Container, Descriptor, Image, Node, Resource, ResourceType, RuntimeInfo, SnapshotInfo, transfer
from cargohold.content.store import backend_ref_namespace
from cargohold.errors import FailedPrecondition, NotFound
from cargohold.gc.labels import GC_EXPIRE
from cargohold.oci.build import LayerBuilder, write_image
from cargohold.oci.digests import digest_bytes
from cargohold.oci.identity import chain_ids
from cargohold.timeutil import format_rfc3339
from cargohold.transfer.lease import EXPIRY
from cargohold.validation import validate_identifier

from .containers import create_container, delete_container
from .context import Settings, echo, pass_settings
from .gc import node_line, report_lines
from .groups import examples

NAMESPACE = "demo"
IMAGE = "example.com/cargohold/hello:1.0"
CONTAINER = "hello-1"
SNAPSHOTTER = "native"
LEASE = "cargohold-demo"
MARK = "cargohold.demo"
"""The label on everything the demo creates: the only objects it replaces, deletes or collects."""
MARKED = {MARK: "created"}


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

    Works in namespace 'demo' (or the one --namespace gives) and never deletes,
    replaces or collects anything it did not create there: it refuses to start
    when something in its way lacks its label cargohold.demo. Uses a new
    temporary root, removed at the end unless --keep, or the --root given (kept).
    """
    namespace = _namespace(settings)
    temporary = not settings.root_given
    root = tempfile.mkdtemp(prefix="cargohold-demo-") if temporary else settings.root
    try:
        _tour(root, temporary, namespace)
    finally:
        if temporary and not keep:
            shutil.rmtree(root, ignore_errors=True)
    if temporary and not keep:
        say(f"\nRemoved the temporary root {root} (run with --keep to look around in it).")
    else:
        say(f"\nThe root stays: try `cargohold --root {root} --namespace {namespace} snapshots tree`.")


def _namespace(settings: Settings) -> str:
    """The namespace --namespace names, when it is given; else `NAMESPACE` (not the CLI's default one)."""
    source = click.get_current_context().find_root().get_parameter_source("namespace")
    if source in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP):
        return NAMESPACE
    return validate_identifier(settings.namespace, "namespace")


def say(text: str = "") -> None:
    """One line of the tour, after a blank line when `text` starts with a newline; escaped as `echo` does."""
    if text.startswith("\n"):
        echo()
        text = text[1:]
    echo(text)


def _tour(root: str, temporary: bool, namespace: str) -> None:
    where = "a new temporary root" if temporary else "the root"
    say(f"cargohold demo, in namespace {namespace!r} of {where} {root}")
    say("(it collects only what it creates there; other namespaces are left alone)")
    built = demo_layers()
    chains = chain_ids([digest_bytes(tar) for tar, _ in built])
    with tempfile.TemporaryDirectory(prefix="cargohold-demo-image-") as scratch, cargohold.open(root) as db:
        archive = os.path.join(scratch, "hello.tar")
        manifest = write_image(archive, IMAGE, built)
        ns = db.namespace(namespace)
        _start_over(db, ns, manifest, chains)

        say(f"\n1. Built the image {IMAGE} in Python: three layers (gzip, zstd and a plain tar)")
        say("   with a hard link, a whiteout that deletes usr/share/doc and an opaque var/cache.")
        images = transfer.import_archive(ns.with_lease(LEASE), archive, unpack=True, snapshotter=SNAPSHOTTER)
        sn = ns.snapshotter(SNAPSHOTTER)
        with db.update() as tx:  # the lease held the new snapshots until they carry the mark
            for chain in chains:
                sn.update(SnapshotInfo(chain, labels=MARKED), f"labels.{MARK}", tx=tx)
            ns.leases.delete(LEASE, tx=tx)
        image = images[0]
        config, layers = transfer.image_layers(ns, image.target)
        roles = {image.target.digest: "the manifest", config.digest: "the config",
                 **{layer.descriptor.digest: f"layer {i}" for i, layer in enumerate(layers, 1)}}
        created = set(roles)  # the blobs this run stored: the only unmarked things its collection may take
        roles.update({f"{SNAPSHOTTER}/{layer.chain_id}": f"layer {i}, unpacked" for i, layer in enumerate(layers, 1)})
        say(f"\n2. Imported and unpacked it: the image {image.name} points at {image.target.digest}.")
        say("   It is stored as these blobs:")
        for digest, role in roles.items():
            if not digest.startswith(f"{SNAPSHOTTER}/"):
                say(f"     {digest}  {role}")
        say(f"   and unpacked into these {SNAPSHOTTER} snapshots, each named by its layer's chain ID:")
        for i, layer in enumerate(layers, 1):
            say(f"     {layer.chain_id}  layer {i}")

        with db.update() as tx:  # the container and its snapshot appear together, both marked
            create_container(ns, Container(CONTAINER, RuntimeInfo("io.containerd.runc.v2"), snapshotter=SNAPSHOTTER,
                                           snapshot_key=CONTAINER, image=IMAGE, labels=MARKED))
            sn.update(SnapshotInfo(CONTAINER, labels=MARKED), f"labels.{MARK}", tx=tx)
        roles[f"{SNAPSHOTTER}/{CONTAINER}"] = "the container's writable snapshot"
        rootfs = sn.mounts(CONTAINER)[0].source
        with open(os.path.join(rootfs, "etc/motd")) as f:
            motd = f.read().strip()
        original, link = (os.stat(os.path.join(rootfs, p)) for p in ("bin/hello", "bin/hello-again"))
        say(f"\n3. Created the container {CONTAINER} on a writable snapshot of the top layer. It sees these files:")
        say(f"     {' '.join(_tree(rootfs))}")
        say(f"   usr/share/doc and var/cache/old are gone, etc/motd says {motd!r}, and bin/hello-again "
            f"{'is a hard link of' if original.st_ino == link.st_ino else 'is NOT a hard link of'} bin/hello.")

        ns.images.delete(IMAGE)
        doomed = db.unreachable(namespace=ns.name)
        say(f"\n4. Deleted the image. A dry run (`cargohold gc --dry-run --namespace {ns.name}`) finds "
            f"{_things(len(doomed))} no root references any more:")
        for node in doomed:
            say(f"     {node_line(node)}  {_role(roles, node)}")
        _require_own(db, ns, doomed, created)

        stats = _collect_own(db, ns, doomed)
        summary, _ = report_lines(stats)
        say(f"\n5. Collected the garbage (`cargohold gc --namespace {ns.name}`): {summary}.")
        say("   Removed, because the image was their only root:")
        for node in stats.removed:
            say(f"     {node_line(node)}  {_role(roles, node)}")

        roles[CONTAINER] = "the container itself: a root"
        kept = sorted((node for node in db.mark() if node.namespace == ns.name),
                      key=lambda n: (n.type != ResourceType.CONTAINER, n.type, n.key))
        say(f"\n6. Kept, because the container still needs them ({_things(len(kept))}):")
        for node in kept:
            say(f"     {node_line(node)}  {_role(roles, node)}")
        bottom = Node(ResourceType.SNAPSHOT, ns.name, f"{SNAPSHOTTER}/{layers[0].chain_id}")
        say("   Why the bottom layer stays (`cargohold gc --explain`), from the root down:")
        for depth, node in enumerate(db.explain(bottom) or []):
            say(f"     {'  ' * depth}{'-> ' if depth else ''}{node_line(node)}")


def _role(roles: dict, node: Node) -> str:
    return roles.get(node.key, "")


_ELSEWHERE = "run it on another root (or without --root), or in another namespace (--namespace NAME)"


def _start_over(db, ns, manifest: Descriptor, chains: list[str]) -> None:
    """Refuse to start if the demo would delete, replace or collect what it did not create; else remove
    what an earlier run left (all of it marked), so this run starts alike, and make its lease and image.

    Either it refuses and changes nothing, or all of it happens in one transaction; then the earlier
    run's container snapshot, unreferenced by that transaction, is collected (`_collect_earlier`).
    """
    garbage = [node for node in db.unreachable(namespace=ns.name) if not _marked_node(ns, node)]
    if garbage:
        raise FailedPrecondition(
            f"namespace {ns.name!r} of this root already holds {_things(len(garbage))} no root references "
            f"(such as {node_line(garbage[0])}); the demo collects that namespace, so it would delete them: "
            f"{_collect_or_elsewhere(ns)}")
    _require_no_leftovers(db, ns)
    sn = ns.snapshotter(SNAPSHOTTER)
    with db.update() as tx:
        lease, container, image = (_lease(ns, LEASE, tx), _lookup(lambda: ns.containers.get(CONTAINER, tx=tx)),
                                   _lookup(lambda: ns.images.get(IMAGE, tx=tx)))
        held = set(ns.leases.list_resources(LEASE, tx=tx)) if lease else set()  # what an interrupted run made
        _require_ours(ns, sn, chains, lease, container, image, held, tx)
        if container is not None:
            delete_container(ns, CONTAINER, keep_snapshot=True, tx=tx)  # its snapshot, marked, is garbage now
        if image is not None:
            ns.images.delete(IMAGE, tx=tx)
        if lease is not None:
            ns.leases.delete(LEASE, tx=tx)
        ns.leases.create(LEASE, {**MARKED, GC_EXPIRE: format_rfc3339(db.clock() + EXPIRY)}, tx=tx)
        layers = {Resource(chain, f"snapshots/{SNAPSHOTTER}") for chain in chains
                  if _lookup(lambda: sn.stat(chain, tx=tx)) is not None}  # kept for the import to reuse
        for resource in held | layers:
            ns.leases.add_resource(LEASE, resource, tx=tx)
        # The import only moves an existing image's target, so the image carries the mark from the start.
        ns.images.create(Image(IMAGE, manifest, labels=MARKED), tx=tx)
    _collect_earlier(db, ns)


def _collect_earlier(db, ns) -> None:
    """Collect what an earlier run left unreferenced (its container snapshot, marked; its lease holds the
    layers; nothing else, or the start would have been refused), through a collection that may remove
    that alone: its backend data goes with it, and whatever else another process made garbage meanwhile
    stays (the demo stops)."""
    doomed = db.unreachable(namespace=ns.name)
    if doomed:
        _require_own(db, ns, doomed, set())
        _collect_own(db, ns, doomed)


def _require_ours(ns, sn, chains: list[str], lease, container, image, held: set, tx) -> None:
    """Refuse if the lease, container, image or a snapshot key the demo uses exists without its mark.

    An unpacked layer its lease holds is its own too: a run stopped before it marked its layers left them so.
    """
    _require_marked(ns, f"lease {LEASE!r}", lease)
    _require_marked(ns, f"container {CONTAINER!r}", container)
    if container is not None and container.snapshot_key:
        _require_marked(ns, f"snapshot {container.snapshot_key!r} of container {CONTAINER!r}", _lookup(
            lambda: ns.snapshotter(container.snapshotter).stat(container.snapshot_key, tx=tx)))
    _require_marked(ns, f"snapshot {CONTAINER!r}", _lookup(lambda: sn.stat(CONTAINER, tx=tx)))
    _require_marked(ns, f"image {IMAGE!r}", image)
    for chain in chains:
        if Resource(chain, f"snapshots/{SNAPSHOTTER}") not in held:
            _require_marked(ns, f"snapshot {chain!r} (the demo's layer, unpacked)",
                            _lookup(lambda: sn.stat(chain, tx=tx)))


def _lookup(get):
    """What `get()` returns, or None when it raises NotFound."""
    try:
        return get()
    except NotFound:
        return None


def _lease(ns, lease_id: str, tx=None):
    return next((lease for lease in ns.leases.list(tx=tx) if lease.id == lease_id), None)


def _require_marked(ns, what: str, record) -> None:
    """Refuse an object the demo would replace or delete that it did not create (a missing one is fine)."""
    if record is not None and MARK not in (record.labels or {}):
        raise FailedPrecondition(
            f"{what} in namespace {ns.name!r} was not created by the demo (it has no label {MARK}), "
            f"and the demo would replace or delete it: {_ELSEWHERE}")


def _marked_node(ns, node: Node) -> bool:
    """Whether a garbage-collector node is an image, container, snapshot or lease the demo created."""
    if node.type == ResourceType.IMAGE:
        record = _lookup(lambda: ns.images.get(node.key))
    elif node.type == ResourceType.CONTAINER:
        record = _lookup(lambda: ns.containers.get(node.key))
    elif node.type == ResourceType.SNAPSHOT:
        snapshotter, _, key = node.key.partition("/")
        record = _lookup(lambda: ns.snapshotter(snapshotter).stat(key))
    elif node.type == ResourceType.LEASE:
        record = _lease(ns, node.key)
    else:
        record = None
    return record is not None and MARK in (record.labels or {})


def _require_no_leftovers(db, ns, snapshots: bool = True) -> None:
    """Refuse when the backends hold data of the namespace that no record owns (an upload or, with
    `snapshots`, a snapshot whose record was lost): a collection of the namespace deletes it, and the demo
    did not make it."""
    found = db.leftovers()
    stray = [f"ingest {item.key}" for item in found
             if item.type == "ingest-dir" and backend_ref_namespace(item.key) == ns.name]
    directories = {item.key for item in found if item.type == "snapshot-dir"}
    for name in sorted(db.snapshotters) if snapshots else ():
        backend = db.snapshotter_backend(name)
        for info in backend.walk():
            snapshot_id = backend.snapshot_id(info.name) if info.name.startswith(f"{ns.name}/") else None
            if snapshot_id is not None and \
                    f"{name}/{os.path.basename(backend.snapshot_dir(snapshot_id))}" in directories:
                stray.append(f"{name} snapshot {info.name}")
    if stray:
        raise FailedPrecondition(
            f"namespace {ns.name!r} of this root has {_things(len(stray))} in the backends that no record owns "
            f"(such as {stray[0]}); a collection of that namespace would delete them: {_collect_or_elsewhere(ns)}")


def _collect_or_elsewhere(ns) -> str:
    return f"collect them first (`cargohold gc --namespace {ns.name}`) if they are not needed, or {_ELSEWHERE}"


def _require_own(db, ns, doomed: list[Node], created: set[str]) -> None:
    """Refuse to collect when the collection would take something this run did not create or mark
    (another process wrote unreferenced data into the namespace since the run started).

    Snapshot directories are not looked at: those of the records this run removed are leftovers by now.
    """
    _require_no_leftovers(db, ns, snapshots=False)
    for node in doomed:
        if not (node.type == ResourceType.CONTENT and node.key in created) and not _marked_node(ns, node):
            raise _not_own(ns, node)


def _collect_own(db, ns, doomed: list[Node]):
    """Collect the namespace, removing nothing but `doomed` (the dry run `_require_own` checked): a write
    since then that would add to it makes the collector refuse in its sweep's transaction, changing nothing."""
    try:
        return db.garbage_collect(namespace=ns.name, allowed=doomed)
    except FailedPrecondition as exc:
        node = getattr(exc, "node", None)
        if node is None:
            raise
        raise _not_own(ns, node) from None


def _not_own(ns, node: Node) -> FailedPrecondition:
    return FailedPrecondition(
        f"a collection of namespace {ns.name!r} would now delete {node_line(node)}, which the demo "
        f"did not create (something else wrote there while it ran), so it collects nothing: {_ELSEWHERE}")
