"""Importing OCI archives into a namespace, unpacking them into snapshots, and exporting them back.

Real archives (tests/oci_fixtures.py, skopeo and umoci where installed), a
real database, content store and snapshotters under tmp_path.
"""

from __future__ import annotations

import json
import os
import stat
import tarfile
from datetime import datetime, timezone

import pytest
from oci_fixtures import (
    OCI_CONFIG,
    OCI_MANIFEST,
    SKOPEO,
    Layer,
    Layout,
    compress,
    descriptor_json,
    needs_skopeo,
    needs_umoci,
    run,
    sha256,
    skopeo_archive,
    tar_layout,
    tree,
    umoci_image,
    umoci_rootfs,
)

import cargohold
from cargohold import Descriptor, Image, Kind, Node, ResourceType, transfer
from cargohold.errors import InvalidArgument, NotFound, Unsupported
from cargohold.oci import naming

NAME = "io.containerd.image.name"
REF = "org.opencontainers.image.ref.name"
M = "containerd.io/gc.ref.content.m."
L = "containerd.io/gc.ref.content.l."
CONFIG = "containerd.io/gc.ref.content.config"
IS_ROOT = os.geteuid() == 0


@pytest.fixture
def ns(db):
    return db.namespace("default")


def layers_with_everything() -> list:
    """Three layers: files, dirs, a hard link, a symlink; then whiteouts, an opaque dir, a rewrite, hard links
    (one to a file of the first layer); then more."""
    base = (Layer().dir("etc").file("etc/motd", b"one\n").file("etc/keep", b"keep\n")
            .file("usr/share/doc/README", b"docs\n").file("bin/tool", b"#!/bin/sh\n", mode=0o755)
            .hardlink("bin/tool2", "bin/tool").symlink("bin/t", "tool")
            .file("var/cache/old", b"stale\n").bytes())
    update = (Layer().whiteout("usr/share/doc").file("etc/motd", b"two\n").dir("var/cache").opaque("var/cache")
              .file("var/cache/new", b"fresh\n").file("etc/new", b"new\n").hardlink("etc/new.link", "etc/new")
              .hardlink("etc/keep.link", "etc/keep").bytes())  # a hard link to a lower layer's file
    top = Layer().file("app/x", b"x\n").bytes()
    return [base, update, top]


EXPECTED_FILES = {"app/x": b"x\n", "bin/tool": b"#!/bin/sh\n", "bin/tool2": b"#!/bin/sh\n",
                  "etc/keep": b"keep\n", "etc/keep.link": b"keep\n", "etc/motd": b"two\n", "etc/new": b"new\n", "etc/new.link": b"new\n",
                  "var/cache/new": b"fresh\n"}


def one_image(layout: Layout, name: str = "example.com/app:1", **options):
    image = layout.image(layers_with_everything(), **options)
    layout.write_index([(image.manifest, {NAME: name})])
    return image


def contents(ns) -> list:
    return sorted((i.digest, i.size, tuple(sorted(i.labels.items()))) for i in ns.content.walk())


def files(root) -> dict:
    out = {}
    for top, _, names in os.walk(root):
        for name in names:
            path = os.path.join(top, name)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as f:
                    out[os.path.relpath(path, root)] = f.read()
    return out


def assert_leaves_no_trace(db, ns) -> None:
    """No image, lease or ingest; whatever was stored is garbage the next collection removes entirely."""
    assert ns.images.list() == [] and ns.leases.list() == [] and ns.content.statuses() == []
    stored = [Node(ResourceType.CONTENT, ns.name, i.digest) for i in ns.content.walk()]
    assert set(stored) <= set(db.unreachable())
    db.garbage_collect()
    assert list(ns.content.walk()) == [] and list(db.content_store.walk()) == []
    for name, backend in db.snapshotters.items():
        assert list(ns.snapshotter(name).walk()) == [] and list(backend.walk()) == []


# -- what an import stores ---------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["dir", "tar"])
def test_import_stores_every_blob_with_containerds_labels_inside_a_lease(tmp_path, db, ns, form):
    layout = Layout(tmp_path / "layout")
    image = one_image(layout)
    source = layout.root if form == "dir" else tar_layout(layout.root, tmp_path / "image.tar")
    seen_leases = []
    created = transfer.import_archive(ns, source, progress=lambda *_: seen_leases.extend(ns.leases.list()))
    assert [(i.name, i.target.digest, i.target.size) for i in created] == [
        ("example.com/app:1", image.manifest.digest, image.manifest.size)]
    assert ns.images.get("example.com/app:1").target == created[0].target
    labels = {i.digest: i.labels for i in ns.content.walk()}
    assert labels == {
        image.manifest.digest: {CONFIG: image.config.digest, **{f"{L}{i}": d.digest for i, d in enumerate(image.layers)}},
        image.config.digest: {}, **{d.digest: {} for d in image.layers}}
    for d in [image.manifest, image.config, *image.layers]:
        assert ns.content.read(d.digest) == open(layout.blob_file(d.digest), "rb").read()
    assert len({lease.id for lease in seen_leases}) == 1  # one lease while it ran ...
    assert ns.leases.list() == [] and ns.content.statuses() == []  # ... ended with it
    assert db.unreachable() == []  # the image keeps everything it stored


def test_indexes_get_manifest_labels_and_only_the_platform_is_stored(tmp_path, ns):
    layout = Layout(tmp_path / "layout")
    amd = layout.image([Layer().file("a", b"1").bytes()], arch="amd64")
    arm = layout.image([Layer().file("b", b"2").bytes()], arch="arm64")
    index = layout.index([amd, arm])
    layout.write_index([(index, {NAME: "example.com/multi:1"})])
    transfer.import_archive(ns, layout.root, platform="linux/arm64")
    assert {i.digest for i in ns.content.walk()} == {index.digest, arm.manifest.digest, arm.config.digest,
                                                     arm.layers[0].digest}
    # the index names both manifests although one is stored (containerd's import labels only the kept one)
    assert ns.content.info(index.digest).labels == {f"{M}0": amd.manifest.digest, f"{M}1": arm.manifest.digest}
    transfer.import_archive(ns, layout.root, all_platforms=True)
    assert ns.content.info(index.digest).labels == {f"{M}0": amd.manifest.digest, f"{M}1": arm.manifest.digest}
    assert ns.content.info(amd.manifest.digest).labels[CONFIG] == amd.config.digest


def test_reimporting_one_platform_keeps_the_others_from_the_collector(tmp_path, ns, db):
    """An index stored by an all-platform import, imported again for one platform: its labels used to
    be rewritten to that platform's manifest alone, and the next collection deleted the other
    platform's manifest, config and layers while the image still targeted the index."""
    layout = Layout(tmp_path / "layout")
    amd = layout.image([Layer().file("a", b"1").bytes()], arch="amd64")
    arm = layout.image([Layer().file("b", b"2").bytes()], arch="arm64")
    index = layout.index([amd, arm])
    layout.write_index([(index, {NAME: "example.com/multi:1"})])
    transfer.import_archive(ns, layout.root, all_platforms=True)
    transfer.import_archive(ns, layout.root, platform="linux/arm64")
    db.garbage_collect()
    stored = {i.digest for i in ns.content.walk()}
    assert stored == {index.digest}.union(*({i.manifest.digest, i.config.digest, *(d.digest for d in i.layers)}
                                            for i in (amd, arm)))
    transfer.unpack_image(ns, "example.com/multi:1", platform="linux/amd64")


def test_a_second_namespace_reuses_the_stored_bytes_and_gets_its_own_labels(tmp_path, db):
    layout = Layout(tmp_path / "layout")
    image = one_image(layout)
    first, second = db.namespace("first"), db.namespace("second")
    transfer.import_archive(first, layout.root)
    reported = []
    transfer.import_archive(second, layout.root, progress=lambda phase, d, done: reported.append((d.digest, done)))
    assert contents(second) == contents(first)
    assert len(list(db.content_store.walk())) == 5
    sizes = {d.digest: d.size for d in (image.manifest, image.config, *image.layers)}
    assert reported == [(digest, sizes[digest]) for digest, _ in reported]  # nothing was copied again
    assert {digest for digest, _ in reported} == set(sizes)


def test_image_names_follow_the_annotations(tmp_path, ns):
    layout = Layout(tmp_path / "layout")
    images = [layout.image([Layer().file(str(i), b"x").bytes()]) for i in range(4)]
    layout.write_index([
        (images[0].manifest, {NAME: "example.com/named:1", REF: "ignored"}),
        (images[1].manifest, {REF: "ghcr.io/org/full:2"}),
        (images[2].manifest, {REF: "3"}),
        (images[3].manifest, None),
    ])
    named = transfer.import_archive(ns, layout.root)
    today = naming.default_base_name(ns.db.clock())  # ctr's base name for bare tags: import-YYYY-MM-DD
    assert [i.name for i in named] == ["example.com/named:1", "ghcr.io/org/full:2", f"{today}:3"]
    for image in named:
        ns.images.delete(image.name)
    based = transfer.import_archive(ns, layout.root, base_name="example.com/base")
    assert [i.name for i in based] == ["example.com/named:1", "ghcr.io/org/full:2", "example.com/base:3"]
    assert ns.images.get("example.com/base:3").target.digest == images[2].manifest.digest
    indexed = transfer.import_archive(ns, layout.root, index_name="example.com/everything:1")
    whole = ns.images.get("example.com/everything:1").target
    assert indexed[-1].target == whole and whole.media_type == "application/vnd.oci.image.index.v1+json"
    assert ns.content.info(whole.digest).labels == {f"{M}{i}": im.manifest.digest for i, im in enumerate(images)}
    assert ns.leases.list() == [] and db_unreachable(ns) == []


def db_unreachable(ns) -> list:
    return ns.db.unreachable()


def test_a_bare_tag_without_a_base_name_is_named_as_ctr_names_it(tmp_path, db, ns):
    layout = Layout(tmp_path / "layout")
    image = layout.image([Layer().file("a", b"1").bytes()])
    layout.write_index([(image.manifest, {REF: "bare-tag"})])
    clock = datetime(2024, 2, 29, 12, 0, tzinfo=timezone.utc)
    with cargohold.open(tmp_path / "dated", clock=lambda: clock) as dated:
        (imported,) = transfer.import_archive(dated.namespace("default"), layout.root)
    assert imported.name == f"import-{clock.astimezone():%Y-%m-%d}:bare-tag"
    assert imported.target.digest == image.manifest.digest


def test_an_archive_without_any_name_is_refused_before_anything_is_stored(tmp_path, db, ns):
    layout = Layout(tmp_path / "layout")
    image = layout.image([Layer().file("a", b"1").bytes()])
    layout.write_index([(image.manifest, None)])
    for options in ({}, {"base_name": "example.com/base"}):
        with pytest.raises(InvalidArgument, match=r"index.json has an image name .*--index-name NAME"):
            transfer.import_archive(ns, layout.root, **options)
    assert list(ns.content.walk()) == [] and ns.leases.list() == []


@pytest.mark.parametrize("bad", ["x" * 300, "nul\0name"])
def test_bad_names_are_refused_before_anything_is_stored(tmp_path, ns, bad):
    layout = Layout(tmp_path / "layout")
    image = layout.image([Layer().file("a", b"1").bytes()])
    layout.write_index([(image.manifest, {NAME: bad})])
    with pytest.raises(InvalidArgument, match="image name"):
        transfer.import_archive(ns, layout.root)
    with pytest.raises(InvalidArgument, match="base name"):
        transfer.import_archive(ns, layout.root, base_name=bad)
    assert list(ns.content.walk()) == [] and ns.leases.list() == []


def test_importing_again_replaces_the_target_and_keeps_the_labels(tmp_path, ns):
    layout = Layout(tmp_path / "layout")
    image = one_image(layout)
    old = Descriptor(OCI_MANIFEST, "sha256:" + "ab" * 32, 10)
    ns.images.create(Image("example.com/app:1", old, {"team": "a"}))
    (again,) = transfer.import_archive(ns, layout.root)
    assert again.target.digest == image.manifest.digest and again.labels == {"team": "a"}
    assert transfer.import_archive(ns, layout.root)[0].target == again.target


def test_docker_media_types_import_and_unpack(tmp_path, ns):
    layout = Layout(tmp_path / "layout", docker=True)
    one_image(layout, "docker.io/library/app:1")
    transfer.import_archive(ns, layout.root, unpack=True)
    _, layers = transfer.image_layers(ns, ns.images.get("docker.io/library/app:1").target)
    assert ns.snapshotter("native").stat(layers[-1].chain_id).kind == Kind.COMMITTED


def test_a_docker_save_archive_imports_by_its_containerd_name(tmp_path, ns):
    """`docker save` (OCI mode) writes docker media types, both name annotations
    (the ref name being only the tag) and legacy manifest.json / repositories files."""
    layout = Layout(tmp_path / "layout", docker=True)
    image = layout.image(layers_with_everything())
    layout.write_index([(image.manifest, {NAME: "docker.io/library/app:latest", REF: "latest"})])
    legacy = json.dumps([{"Config": "blobs/" + image.config.digest.replace(":", "/"),
                          "RepoTags": ["app:latest"],
                          "Layers": ["blobs/" + d.digest.replace(":", "/") for d in image.layers]}]).encode()
    layout.write_file("manifest.json", legacy)
    layout.write_file("repositories", json.dumps({"app": {"latest": image.manifest.digest[7:]}}).encode())
    archive = tar_layout(layout.root, tmp_path / "saved.tar")
    (imported,) = transfer.import_archive(ns, archive, unpack=True)
    assert imported.name == "docker.io/library/app:latest"
    assert imported.target.digest == image.manifest.digest
    _, layers = transfer.image_layers(ns, imported.target)
    assert ns.snapshotter("native").stat(layers[-1].chain_id).kind == Kind.COMMITTED


def test_a_handle_with_a_lease_imports_into_that_lease_and_keeps_it(tmp_path, ns):
    layout = Layout(tmp_path / "layout")
    image = one_image(layout)
    lease = ns.leases.create("mine")
    transfer.import_archive(ns.with_lease(lease.id), layout.root, unpack=True)
    held = {(r.type, r.id) for r in ns.leases.list_resources("mine")}
    assert ("content", image.manifest.digest) in held and ("images", "example.com/app:1") in held
    assert any(t == "snapshots/native" for t, _ in held) and [le.id for le in ns.leases.list()] == ["mine"]


# -- unpack -------------------------------------------------------------------------------------------


def snapshot_names(ns, snapshotter: str = "native") -> dict:
    return {i.name: (i.parent, i.kind) for i in ns.snapshotter(snapshotter).walk()}


@pytest.mark.parametrize("compression", ["", "gzip", "zstd"])
def test_unpack_makes_a_snapshot_per_chain_id_with_the_whole_tree(tmp_path, db, ns, compression):
    layout = Layout(tmp_path / "layout")
    tars = layers_with_everything()
    image = layout.image(tars, compression=compression)
    layout.write_index([(image.manifest, {NAME: "example.com/app:1"})])
    transfer.import_archive(ns, layout.root, unpack=True)

    chains = [sha256(tars[0])]
    for tar in tars[1:]:
        chains.append(sha256(f"{chains[-1]} {sha256(tar)}".encode()))
    assert snapshot_names(ns) == {chains[0]: ("", Kind.COMMITTED), chains[1]: (chains[0], Kind.COMMITTED),
                                  chains[2]: (chains[1], Kind.COMMITTED)}
    assert ns.content.info(image.config.digest).labels == {"containerd.io/gc.ref.snapshot.native": chains[2]}
    assert ns.leases.list() == [] and db.unreachable() == []

    sn = ns.snapshotter("native")
    rootfs = sn.view("look", chains[2])[0].source
    assert files(rootfs) == EXPECTED_FILES
    assert not os.path.exists(os.path.join(rootfs, "usr/share/doc")) and os.path.isdir(os.path.join(rootfs, "usr/share"))
    assert not os.path.exists(os.path.join(rootfs, "var/cache/old"))
    st = {p: os.lstat(os.path.join(rootfs, p))
          for p in ("bin/tool", "bin/tool2", "etc/new", "etc/new.link", "etc/keep", "etc/keep.link")}
    assert st["bin/tool"].st_ino == st["bin/tool2"].st_ino and st["bin/tool"].st_nlink == 2
    assert st["etc/new"].st_ino == st["etc/new.link"].st_ino
    assert st["etc/keep"].st_ino == st["etc/keep.link"].st_ino
    assert stat.S_IMODE(st["bin/tool"].st_mode) == 0o755
    assert os.readlink(os.path.join(rootfs, "bin/t")) == "tool"
    sn.remove("look")

    # the image keeps its snapshots; without it they are garbage
    assert {n.key for n in db.mark() if n.type == ResourceType.SNAPSHOT} >= {f"native/{c}" for c in chains}
    ns.images.delete("example.com/app:1")
    removed = {n.key for n in db.garbage_collect().removed if n.type == ResourceType.SNAPSHOT}
    assert removed == {f"native/{c}" for c in chains}
    assert list(db.snapshotters["native"].walk()) == []


def test_unpack_skips_layers_already_unpacked(tmp_path, ns):
    layout = Layout(tmp_path / "layout")
    base = Layer().file("base", b"b").bytes()
    first = layout.image([base])
    second = layout.image([base, Layer().file("more", b"m").bytes()])
    layout.write_index([(first.manifest, {NAME: "example.com/a:1"}), (second.manifest, {NAME: "example.com/b:1"})])
    transfer.import_archive(ns, layout.root, unpack=True)
    before = {i.name: i.created_at for i in ns.snapshotter("native").walk()}
    assert len(before) == 2
    top = transfer.unpack_image(ns, "example.com/b:1")
    assert {i.name: i.created_at for i in ns.snapshotter("native").walk()} == before
    assert top in before and ns.leases.list() == []


@pytest.mark.skipif(not IS_ROOT, reason="overlay whiteouts need root (mknod, trusted xattrs)")
def test_overlay_unpack_writes_whiteouts_into_upper_directories(tmp_path, db, ns):
    layout = Layout(tmp_path / "layout")
    tars = layers_with_everything()
    tars[1] = (Layer().whiteout("usr/share/doc").file("etc/motd", b"two\n").dir("var/cache").opaque("var/cache")
               .file("var/cache/new", b"fresh\n").bytes())  # no hard link to a lower layer's file
    image = layout.image(tars)
    layout.write_index([(image.manifest, {NAME: "example.com/app:1"})])
    transfer.import_archive(ns, layout.root, unpack=True, snapshotter="overlay")
    assert snapshot_names(ns, "native") == {}
    _, layers = transfer.image_layers(ns, image.manifest)
    assert set(snapshot_names(ns, "overlay")) == {layer.chain_id for layer in layers}
    assert ns.content.info(image.config.digest).labels == {
        "containerd.io/gc.ref.snapshot.overlayfs": layers[-1].chain_id}  # containerd's name, given the alias
    sn = ns.snapshotter("overlay")
    sn.prepare("probe", layers[1].chain_id)
    mount = sn.mounts("probe")[0]
    lowers = next(o for o in mount.options if o.startswith("lowerdir="))[len("lowerdir="):].split(":")
    upper_of_layer_2, bottom = lowers
    assert files(bottom)["usr/share/doc/README"] == b"docs\n"
    gone = os.lstat(os.path.join(upper_of_layer_2, "usr/share/doc"))
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0
    assert os.getxattr(os.path.join(upper_of_layer_2, "var/cache"), "trusted.overlay.opaque") == b"y"
    assert files(upper_of_layer_2) == {"etc/motd": b"two\n", "var/cache/new": b"fresh\n"}


@pytest.mark.skipif(not IS_ROOT, reason="overlay whiteouts need root (mknod, trusted xattrs)")
def test_overlay_unpack_refuses_a_hard_link_to_a_lower_layers_file(tmp_path, db, ns):
    """The documented limit of applying into an upper directory (native links across layers: see above)."""
    layout = Layout(tmp_path / "layout")
    image = layout.image([Layer().file("a", b"1").bytes(), Layer().hardlink("b", "a").bytes()])
    layout.write_index([(image.manifest, {NAME: "example.com/app:1"})])
    with pytest.raises(InvalidArgument, match="hard link 'b'"):
        transfer.import_archive(ns, layout.root, unpack=True, snapshotter="overlay")
    assert_leaves_no_trace(db, ns)


def test_a_collection_during_import_removes_nothing_it_made(tmp_path, db, ns):
    layout = Layout(tmp_path / "layout")
    one_image(layout)
    collected = []

    def collect_midway(phase, descriptor, done):
        if phase == "unpack" and done == 0:  # blobs stored, some snapshots committed, one being prepared
            collected.append(db.garbage_collect())

    transfer.import_archive(ns, layout.root, unpack=True, progress=collect_midway)
    assert len(collected) == 3 and all(stats.removed == [] for stats in collected)
    assert db.unreachable() == []
    _, layers = transfer.image_layers(ns, ns.images.get("example.com/app:1").target)
    view = ns.snapshotter("native").view("look", layers[-1].chain_id)
    assert files(view[0].source) == EXPECTED_FILES


def test_unpack_of_an_image_without_the_platform_fails_and_changes_nothing(tmp_path, ns):
    layout = Layout(tmp_path / "layout")
    image = layout.image(layers_with_everything())
    layout.write_index([(layout.index([image]), {NAME: "example.com/app:1"})])
    transfer.import_archive(ns, layout.root)
    before = contents(ns)
    with pytest.raises(NotFound, match="s390x"):
        transfer.unpack_image(ns, "example.com/app:1", platform="linux/s390x")
    with pytest.raises(NotFound, match="snapshotter"):
        transfer.unpack_image(ns, "example.com/app:1", snapshotter="nope")
    with pytest.raises(NotFound, match="missing"):
        transfer.unpack_image(ns, "missing")
    assert contents(ns) == before and snapshot_names(ns) == {} and ns.leases.list() == []


# -- bad archives --------------------------------------------------------------------------------------


def _image_by_hand(layout: Layout, layers: list, diff_ids: list, layer_type: str = "") -> Descriptor:
    blobs = [layout.blob(compress(t, "gzip"), layer_type or "application/vnd.oci.image.layer.v1.tar+gzip")
             for t in layers]
    config = layout.document({"architecture": "amd64", "os": "linux",
                              "rootfs": {"type": "layers", "diff_ids": diff_ids}}, OCI_CONFIG)
    return layout.document({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descriptor_json(config),
                            "layers": [descriptor_json(b) for b in blobs]}, OCI_MANIFEST)


def _corrupt(path: str) -> None:
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))


def _bad(case: str, layout: Layout) -> None:
    """Make `layout` an archive that is bad in the way `case` says."""
    if case in ("missing layer", "corrupt last layer", "truncated config", "bad manifest JSON"):
        image = one_image(layout)
        if case == "missing layer":
            os.unlink(layout.blob_file(image.layers[1].digest))
        elif case == "corrupt last layer":
            _corrupt(layout.blob_file(image.layers[-1].digest))
        elif case == "truncated config":
            with open(layout.blob_file(image.config.digest), "r+b") as f:
                f.truncate(image.config.size - 1)
        else:
            bad = layout.blob(b'{"schemaVersion": 2, "config": ', OCI_MANIFEST)
            layout.write_index([(image.manifest, {NAME: "example.com/good:1"}), (bad, {NAME: "example.com/bad:1"})])
    elif case == "unsupported layer type":
        manifest = _image_by_hand(layout, [Layer().file("a", b"1").bytes()], ["sha256:" + "0" * 64],
                                  "application/vnd.oci.image.layer.v1.tar+encrypted")
        layout.write_index([(manifest, {NAME: "example.com/app:1"})])
    elif case == "diff ID mismatch":
        good, bad = Layer().file("a", b"1").bytes(), Layer().file("b", b"2").bytes()
        manifest = _image_by_hand(layout, [good, bad], [sha256(good), sha256(b"something else")])
        layout.write_index([(manifest, {NAME: "example.com/app:1"})])
    elif case in ESCAPES:
        evil = ESCAPES[case]()
        manifest = _image_by_hand(layout, [evil], [sha256(evil)])
        layout.write_index([(manifest, {NAME: "example.com/app:1"})])
    elif case == "no oci-layout":
        one_image(layout)
        os.unlink(os.path.join(layout.root, "oci-layout"))
    elif case == "no matching platform":
        image = layout.image([Layer().file("a", b"1").bytes()], arch="s390x")
        layout.write_index([(layout.index([image]), {NAME: "example.com/app:1"})])
    else:
        raise AssertionError(case)


ESCAPES = {
    "escaping layer entry": lambda: Layer().file("ok", b"1").file("../escape", b"x").bytes(),
    "absolute layer entry": lambda: Layer().file("/etc/escape", b"x").bytes(),
    "symlink leading out": lambda: Layer().dir("d").symlink("d/out", "../../outside").bytes(),
    "hard link leading out": lambda: Layer().file("ok", b"1").hardlink("h", "../ok").bytes(),
}

BAD_CASES = {
    "missing layer": (InvalidArgument, "missing"),
    "corrupt last layer": (InvalidArgument, "digest mismatch"),
    "truncated config": (InvalidArgument, "size mismatch"),
    "bad manifest JSON": (InvalidArgument, "not valid JSON"),
    "unsupported layer type": (Unsupported, "encrypted"),
    "diff ID mismatch": (InvalidArgument, "diff ID mismatch"),
    "escaping layer entry": (InvalidArgument, "'..'"),
    "absolute layer entry": (InvalidArgument, "absolute path"),
    "symlink leading out": (InvalidArgument, "points outside"),
    "hard link leading out": (InvalidArgument, "'..'"),
    "no oci-layout": (InvalidArgument, "oci-layout is missing"),
    "no matching platform": (NotFound, "platform"),
}


@pytest.mark.parametrize("form", ["dir", "tar"])
@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_a_bad_archive_fails_clearly_and_leaves_no_image(tmp_path, db, ns, case, form):
    layout = Layout(tmp_path / "layout")
    _bad(case, layout)
    source = layout.root if form == "dir" else tar_layout(layout.root, tmp_path / "bad.tar")
    error, needle = BAD_CASES[case]
    with pytest.raises(error, match=needle):
        transfer.import_archive(ns, source, unpack=True)
    assert_leaves_no_trace(db, ns)
    assert not list(tmp_path.rglob("escape")) and not list(tmp_path.rglob("outside"))


def test_the_blobs_a_failed_import_stored_are_garbage(tmp_path, db, ns):
    layout = Layout(tmp_path / "layout")
    _bad("diff ID mismatch", layout)
    with pytest.raises(InvalidArgument, match="diff ID"):
        transfer.import_archive(ns, layout.root, unpack=True)
    stored = {i.digest for i in ns.content.walk()}
    assert len(stored) == 4 and len(snapshot_names(ns)) == 1  # manifest, config, both layers; layer 1 unpacked
    doomed = set(db.unreachable())
    assert {Node(ResourceType.CONTENT, "default", d) for d in stored} <= doomed
    assert Node(ResourceType.SNAPSHOT, "default", f"native/{next(iter(snapshot_names(ns)))}") in doomed
    assert_leaves_no_trace(db, ns)


def test_a_tar_member_escaping_the_archive_is_refused(tmp_path, db, ns):
    layout = Layout(tmp_path / "layout")
    one_image(layout)
    evil = tarfile.TarInfo("../evil")
    path = tar_layout(layout.root, tmp_path / "evil.tar", extra=[(evil, b"x")])
    with pytest.raises(InvalidArgument, match="escapes the archive"):
        transfer.import_archive(ns, path)
    assert_leaves_no_trace(db, ns)


def test_a_missing_archive_is_not_found(tmp_path, ns):
    with pytest.raises(NotFound, match="does-not-exist"):
        transfer.import_archive(ns, tmp_path / "does-not-exist.tar")


# -- export --------------------------------------------------------------------------------------------


def all_of(ns) -> tuple:
    return contents(ns), sorted((i.name, i.target.digest, i.target.size) for i in ns.images.list())


def test_import_export_import_gives_identical_digests(tmp_path, ns):
    layout = Layout(tmp_path / "layout")
    amd = layout.image(layers_with_everything(), compression="zstd")
    arm = layout.image([Layer().file("c", b"3").bytes()], arch="arm64")
    single = layout.image([Layer().file("d", b"4").bytes()], compression="")
    layout.write_index([(layout.index([amd, arm]), {NAME: "example.com/multi:1"}),
                        (single.manifest, {NAME: "example.com/single:2"})])
    transfer.import_archive(ns, layout.root, all_platforms=True)
    out = tmp_path / "out.tar"
    index = transfer.export_image(ns, ["example.com/multi:1", "example.com/single:2"], out, all_platforms=True)
    with tarfile.open(out) as tar:
        assert json.load(tar.extractfile("index.json"))["manifests"][1]["annotations"] == {
            NAME: "example.com/single:2", REF: "2"}
        assert sha256(tar.extractfile("index.json").read()) == index.digest

    with cargohold.open(tmp_path / "second") as second:
        again = second.namespace("default")
        transfer.import_archive(again, out, all_platforms=True)
        assert all_of(again) == all_of(ns)
        transfer.export_image(again, ["example.com/multi:1", "example.com/single:2"], tmp_path / "again.tar",
                              all_platforms=True)
    assert (tmp_path / "again.tar").read_bytes() == out.read_bytes()


def test_export_of_the_host_platform_imports_back(tmp_path, ns):
    layout = Layout(tmp_path / "layout")
    one_image(layout)
    transfer.import_archive(ns, layout.root, unpack=True)
    out = tmp_path / "out.tar"
    transfer.export_image(ns, ["example.com/app:1"], out)
    with cargohold.open(tmp_path / "second") as second:
        again = second.namespace("default")
        transfer.import_archive(again, out, unpack=True)
        assert all_of(again) == all_of(ns)  # the config's snapshot label included
        assert snapshot_names(again) == snapshot_names(ns)


def test_export_refusals_leave_no_file(tmp_path, db, ns):
    layout = Layout(tmp_path / "layout")
    image = one_image(layout)
    transfer.import_archive(ns, layout.root)
    out = tmp_path / "out.tar"
    with pytest.raises(NotFound, match="nope"):
        transfer.export_image(ns, ["example.com/app:1", "nope"], out)
    with pytest.raises(InvalidArgument, match="at least one image"):
        transfer.export_image(ns, [], out)
    ns.content.delete(image.layers[1].digest)
    with pytest.raises(NotFound, match=image.layers[1].digest):
        transfer.export_image(ns, ["example.com/app:1"], out)
    assert sorted(os.listdir(tmp_path)) == ["layout", "root"]


# -- real archives from skopeo and umoci ---------------------------------------------------------------


@needs_umoci
@needs_skopeo
def test_skopeo_archive_of_a_umoci_image_unpacks_like_umoci_and_exports_for_skopeo(tmp_path, db, ns):
    layout, tag = umoci_image(tmp_path / "build")
    archive = skopeo_archive(layout, tag, tmp_path / "skopeo.tar", zstd=True, ref_name="example.com/umoci:3")
    (image,) = transfer.import_archive(ns, archive, unpack=True)
    assert image.name == "example.com/umoci:3"
    _, layers = transfer.image_layers(ns, image.target)
    assert len(layers) == 3 and set(snapshot_names(ns)) == {layer.chain_id for layer in layers}
    ours = ns.snapshotter("native").view("look", layers[-1].chain_id)[0].source
    reference = umoci_rootfs(layout, tag, tmp_path)
    assert tree(ours, owners=IS_ROOT, mtimes=True) == tree(reference, owners=IS_ROOT, mtimes=True)

    out = tmp_path / "export.tar"
    transfer.export_image(ns, [image.name], out)
    inspected = json.loads(run(SKOPEO, "inspect", f"oci-archive:{out}"))
    assert inspected["Digest"] == image.target.digest and len(inspected["Layers"]) == 3
