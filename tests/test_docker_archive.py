"""Legacy ``docker save`` archives: imported as ``ctr images import`` imports them, and what exports write for Docker.

Archives are written file by file (tests/docker_fixtures.py) in both layouts
(``<id>/layer.tar`` with symlinks for repeated layers, and ``blobs/sha256``),
as plain, gzip and zstd tars and as directories, and by skopeo
(``docker-archive:``). The reference is a private containerd 1.6 daemon
(tests/containerd_daemon.py): ``ctr images import`` of the same file must give
the same image names, target digests, and content (digests and labels) after
a collection, unpacked or not. Bad archives fail with one line naming the
archive and the manifest.json entry, and leave no image.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import tarfile
from datetime import datetime, timezone

import pytest
from cliutil import fails, invoke, parsed
from containerd_daemon import needs_containerd, parse_labels, start_daemon
from docker_fixtures import SavedArchive, image_config, sha256
from oci_fixtures import SKOPEO, Layer, Layout, needs_skopeo, run, tar_layout

import cargohold
from cargohold import Kind, transfer
from cargohold.errors import InvalidArgument, NotFound
from cargohold.oci import gojson, naming, reference
from cargohold.oci.build import write_image

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
TAR = "application/vnd.docker.image.rootfs.diff.tar"
TAR_GZIP = TAR + ".gzip"
NAME = "io.containerd.image.name"
REF = "org.opencontainers.image.ref.name"
UNCOMPRESSED = "containerd.io/uncompressed"


@pytest.fixture
def ns(db):
    return db.namespace("default")


def base_layer() -> bytes:
    return (Layer().dir("etc").file("etc/os-release", b"ID=test\n").file("bin/sh", b"#!", mode=0o755)
            .symlink("bin/ash", "sh").bytes())


def app_layer(n: int = 1) -> bytes:
    return Layer().dir("app").file("app/main", f"main {n}\n".encode(), mode=0o755).whiteout("etc/os-release").bytes()


EMPTY_LAYER = b"\0" * 1024  # what docker save writes for a layer that changes nothing


def rich_archive(style: str) -> tuple:
    """Three images: two tags on the first (a gzip layer among plain ones), one sharing its base layer with
    tags containerd normalises in different ways and an empty layer, one without tags. Returns
    (archive, [SavedImage])."""
    saved = SavedArchive(style)
    images = [
        saved.image([base_layer(), app_layer(1), Layer().file("gz", b"zipped").bytes()],
                    ["busybox:latest", "example.com/team/app:1.0"], compression=["", "", "gzip"]),
        saved.image([base_layer(), EMPTY_LAYER, app_layer(2)],
                    ["user/tool:2", "localhost:5000/x/y", "index.docker.io/library/z:3", "busybox:latest"]),
        saved.image([app_layer(3)], [], history=False),
    ]
    return saved, images


# -- what the import makes, without containerd --------------------------------------------------------------


def go_descriptor(media_type: str, data: bytes) -> dict:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data)}


def expected_manifest(image) -> bytes:
    """The Docker manifest containerd writes for a saved image (Go's compact JSON, struct field order)."""
    layers = [go_descriptor(TAR_GZIP if data[:3] == b"\x1f\x8b\x08" else TAR, data) for data in image.layer_files]
    return json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                       "config": go_descriptor(DOCKER_CONFIG, image.config), "layers": layers},
                      separators=(",", ":")).encode()


@pytest.mark.parametrize("form", ["tar", "gzip", "zstd", "dir"])
@pytest.mark.parametrize("style", ["legacy", "blobs"])
def test_names_digests_and_blobs_of_a_saved_archive(tmp_path, db, ns, style, form):
    saved, (first, second, third) = rich_archive(style)
    path = saved.write_dir(tmp_path / "saved") if form == "dir" else saved.write(
        tmp_path / "saved.tar", compression={"tar": "", "gzip": "gzip", "zstd": "zstd"}[form])
    created = transfer.import_archive(ns, path, index_name="saved-index")
    by_name = {image.name: image.target for image in created}
    one, two = sha256(expected_manifest(first)), sha256(expected_manifest(second))
    assert {name: target.digest for name, target in by_name.items()} == {
        "docker.io/library/busybox:latest": two,  # the later entry wins a name
        "example.com/team/app:1.0": one,
        "docker.io/user/tool:2": two,
        "localhost:5000/x/y:latest": two,
        "docker.io/library/z:3": two,
        "saved-index": by_name["saved-index"].digest}
    assert by_name["example.com/team/app:1.0"].media_type == DOCKER_MANIFEST
    assert by_name["example.com/team/app:1.0"].annotations == {NAME: "example.com/team/app:1.0", REF: "1.0"}

    index = json.loads(ns.content.read(by_name["saved-index"].digest))
    assert [(m["digest"], (m.get("annotations") or {}).get(NAME)) for m in index["manifests"]] == [
        (one, "docker.io/library/busybox:latest"), (one, "example.com/team/app:1.0"),
        (two, "docker.io/user/tool:2"), (two, "localhost:5000/x/y:latest"), (two, "docker.io/library/z:3"),
        (two, "docker.io/library/busybox:latest"), (sha256(expected_manifest(third)), None)]
    assert {json.dumps(m["platform"]) for m in index["manifests"]} == {'{"architecture": "amd64", "os": "linux"}'}

    db.garbage_collect()
    stored = {info.digest: info.labels for info in ns.content.walk()}
    blobs = {image.config_digest for image in (first, second, third)}
    blobs |= {sha256(data) for image in (first, second, third) for data in image.layer_files}
    blobs |= {one, two, sha256(expected_manifest(third)), by_name["saved-index"].digest}
    assert set(stored) == blobs
    assert stored[one] == {"containerd.io/gc.ref.content.config": first.config_digest,
                           **{f"containerd.io/gc.ref.content.l.{i}": sha256(data)
                              for i, data in enumerate(first.layer_files)}}
    assert ns.leases.list() == [] and ns.content.statuses() == []


# -- the same as ctr images import, by running it ------------------------------------------------------------


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = start_daemon(str(tmp_path_factory.mktemp("docker-archive-ctrd") / "d"))
    yield d
    d.stop()


def ctr_import(daemon, namespace: str, path: str, *options: str, stdin: bytes = None) -> None:
    """``ctr images import`` of a file, or of `stdin` (``-``) when given."""
    unpack = ["--snapshotter", "native"] if "--no-unpack" not in options else []
    daemon.ctr("images", "import", *unpack, *options, "-" if stdin is not None else path, namespace=namespace,
               input=stdin)


def ctr_state(daemon, namespace: str) -> tuple:
    """Images (name -> target digest), content (digest -> labels) and committed native snapshots
    (name, parent) of a namespace, after a collection."""
    daemon.gc(namespace)
    images = {line.split()[0]: line.split()[2] for line in daemon.ctr_lines("images", "ls", namespace=namespace)[1:]}
    content = {}
    for line in daemon.ctr_lines("content", "ls", namespace=namespace)[1:]:
        fields = [field for field in line.split("\t") if field.strip()]
        content[fields[0].strip()] = parse_labels(fields[-1].strip())
    snapshots = set()
    for line in daemon.ctr_lines("snapshots", "--snapshotter", "native", "ls", namespace=namespace)[1:]:
        fields = line.split()
        if fields[-1] == "Committed":
            snapshots.add((fields[0], fields[1] if len(fields) == 3 else ""))
    return images, content, snapshots


def our_state(db, ns) -> tuple:
    db.garbage_collect()
    return ({image.name: image.target.digest for image in ns.images.list()},
            {info.digest: dict(info.labels) for info in ns.content.walk()},
            {(info.name, info.parent) for info in ns.snapshotter("native").walk() if info.kind == Kind.COMMITTED})


@needs_containerd
@pytest.mark.parametrize("unpack", [False, True], ids=["stored", "unpacked"])
@pytest.mark.parametrize("compression", ["", "gzip"], ids=["plain", "gzip"])
@pytest.mark.parametrize("style", ["legacy", "blobs"])
def test_import_equals_ctr_images_import(tmp_path, daemon, db, ns, style, compression, unpack):
    saved, _ = rich_archive(style)
    path = saved.write(tmp_path / "saved.tar", compression=compression)
    namespace = f"cmp-{style}-{compression or 'plain'}-{unpack}"
    options = ["--index-name", "saved-index"] + ([] if unpack else ["--no-unpack"])
    # ctr 1.6 reads only a plain tar: a compressed one is given to it decompressed, as `gunzip | ctr import -`
    ctr_import(daemon, namespace, path, *options, stdin=saved.tar_bytes() if compression else None)
    transfer.import_archive(ns, path, index_name="saved-index", unpack=unpack)
    theirs, ours = ctr_state(daemon, namespace), our_state(db, ns)
    assert ours == theirs
    # 6 names; 6 layers, 3 configs, 3 manifests and the index; the named images' 5 distinct layers unpacked
    assert len(ours[0]) == 6 and len(ours[1]) == 13 and len(ours[2]) == (5 if unpack else 0)


@needs_containerd
@needs_skopeo
def test_a_skopeo_docker_archive_imports_as_ctr_imports_it(tmp_path, daemon, db, ns):
    source = tmp_path / "oci.tar"
    write_image(source, "example.com/src:1", [base_layer(), (app_layer(), "gzip"), (app_layer(4), "")])
    out = tmp_path / "skopeo.tar"
    run(SKOPEO, "copy", "-q", "--additional-tag", "busybox:1.36", f"oci-archive:{source}",
        f"docker-archive:{out}:example.com/team/app:2")
    with tarfile.open(out) as tar:
        names = tar.getnames()
    assert "manifest.json" in names and "oci-layout" not in names and any(n.endswith("/layer.tar") for n in names)
    ctr_import(daemon, "skopeo", str(out), "--index-name", "whole")
    transfer.import_archive(ns, out, index_name="whole", unpack=True)
    ours = our_state(db, ns)
    assert ours == ctr_state(daemon, "skopeo")
    assert set(ours[0]) == {"example.com/team/app:2", "docker.io/library/busybox:1.36", "whole"}


@needs_containerd
def test_layers_the_store_holds_compressed_are_replaced_as_ctr_replaces_them(tmp_path, daemon, db, ns):
    """A layer whose compressed copy an unpack labelled containerd.io/uncompressed is written into the
    manifest as that copy (containerd's lookup), so the image shares the stored blob."""
    shared = base_layer()
    oci_archive = tmp_path / "oci.tar"
    write_image(oci_archive, "example.com/gz:1", [(shared, "gzip")])
    saved = SavedArchive("legacy")
    saved.image([shared, app_layer(), shared], ["example.com/saved:1"])  # the repeated layer: only the last
    path = saved.write(tmp_path / "saved.tar")
    for archive in (oci_archive, path):
        ctr_import(daemon, "standin", str(archive))
        transfer.import_archive(ns, archive, unpack=True)
    ours = our_state(db, ns)
    assert ours == ctr_state(daemon, "standin")
    manifest = json.loads(ns.content.read(ours[0]["example.com/saved:1"]))
    assert [layer["mediaType"] for layer in manifest["layers"]] == [TAR, TAR, TAR_GZIP]
    assert manifest["layers"][0]["digest"] == sha256(shared) != manifest["layers"][2]["digest"]


@needs_containerd
def test_names_as_ctr_gives_them(tmp_path, daemon, db, ns):
    """A bare OCI ref name without a base name is import-YYYY-MM-DD:<tag>; one RepoTag that does not
    normalise fails the import in both."""
    layout = Layout(tmp_path / "layout")
    image = layout.image([Layer().file("a", b"1").bytes()])
    layout.write_index([(image.manifest, {REF: "1.0"})])
    archive = tar_layout(layout.root, tmp_path / "bare.tar")
    before = naming.default_base_name(datetime.now(timezone.utc))
    ctr_import(daemon, "names", archive, "--no-unpack")
    (ours,) = transfer.import_archive(ns, archive)
    assert naming.default_base_name(datetime.now(timezone.utc)) == before, "midnight passed: run it again"
    assert ours.name == f"{before}:1.0"
    assert our_state(db, ns)[:2] == ctr_state(daemon, "names")[:2]

    saved = SavedArchive("legacy")
    saved.image([base_layer()], ["good:1", "Bad/Upper:1"])
    bad = saved.write(tmp_path / "bad.tar")
    with pytest.raises(AssertionError, match="repository name must be lowercase"):
        ctr_import(daemon, "names", bad, "--no-unpack")
    with pytest.raises(InvalidArgument, match=r"manifest.json\[0\]: RepoTags\[1\]: .*'Bad/Upper:1'.* lower case"):
        transfer.import_archive(ns, bad)


@needs_containerd
def test_export_manifest_json_equals_ctr_images_export(tmp_path, daemon, db, ns):
    saved, _ = rich_archive("legacy")
    path = saved.write(tmp_path / "saved.tar")
    ctr_import(daemon, "export", path, "--no-unpack")
    transfer.import_archive(ns, path)
    names = ["example.com/team/app:1.0", "docker.io/library/busybox:latest", "localhost:5000/x/y:latest"]
    daemon.ctr("images", "export", str(tmp_path / "ctr.tar"), *names, namespace="export")
    transfer.export_image(ns, names, tmp_path / "ours.tar")

    def manifest_json(archive):
        with tarfile.open(archive) as tar:
            return sorted(json.load(tar.extractfile("manifest.json")), key=lambda entry: entry["Config"])

    ours = manifest_json(tmp_path / "ours.tar")
    assert ours == manifest_json(tmp_path / "ctr.tar")
    assert sorted(tag for entry in ours for tag in entry["RepoTags"]) == [
        "busybox:latest", "example.com/team/app:1.0", "localhost:5000/x/y:latest"]
