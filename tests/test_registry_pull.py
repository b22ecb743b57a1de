"""Pulling from a real registry (Debian's docker-registry, seeded with skopeo): images, labels, platforms,
unpack, the command line, and that a second pull downloads no layer again."""

from __future__ import annotations

import json
import os
import threading

import pytest
from cliutil import fails, invoke, parsed, rows
from registry_server import inspect_raw, multi_platform, needs_registry, seed

import cargohold
from cargohold import transfer
from cargohold.errors import NotFound, Unavailable
from cargohold.oci.build import LayerBuilder
from cargohold.oci.platforms import compatible, host

pytest_plugins = ("registry_server",)
pytestmark = needs_registry

SOURCE = "containerd.io/distribution.source.127.0.0.1"


def layers(n: int = 2, size: int = 20_000) -> list:
    return [LayerBuilder().file(f"layer{i}/data", os.urandom(size)).file(f"etc/l{i}", b"%d\n" % i).tar()
            for i in range(n)]


@pytest.fixture
def db(tmp_path):
    with cargohold.open(tmp_path / "root") as database:
        yield database


def test_pull_stores_the_image_with_containerd_labels(anonymous_registry, repo, tmp_path, db):
    manifest = seed(anonymous_registry, tmp_path, f"{repo}:1", layers())
    ns = db.namespace("default")
    image = transfer.pull(ns, f"{anonymous_registry.host}/{repo}:1", plain_http=True)
    assert image.name == f"{anonymous_registry.host}/{repo}:1"
    assert image.target.digest == manifest.digest
    assert inspect_raw(anonymous_registry, f"{repo}:1") == ns.content.read(manifest.digest)
    doc = json.loads(ns.content.read(manifest.digest))
    config, blob_layers = doc["config"], doc["layers"]
    stored = {info.digest: info.labels for info in ns.content.walk()}
    assert set(stored) == {manifest.digest, config["digest"], *(layer["digest"] for layer in blob_layers)}
    assert stored[manifest.digest] == {
        "containerd.io/gc.ref.content.config": config["digest"],
        "containerd.io/gc.ref.content.l.0": blob_layers[0]["digest"],
        "containerd.io/gc.ref.content.l.1": blob_layers[1]["digest"],
        SOURCE: repo}
    assert all(labels[SOURCE] == repo for labels in stored.values())
    assert ns.leases.list() == [] and ns.content.statuses() == []
    db.garbage_collect()  # the image alone keeps everything
    assert {info.digest for info in ns.content.walk()} == set(stored)


def test_source_label_lists_every_repository_a_blob_came_from(anonymous_registry, repo, tmp_path, db):
    same = layers(1)
    seed(anonymous_registry, tmp_path, f"{repo}/b:1", same)
    seed(anonymous_registry, tmp_path, f"{repo}/a:1", same)
    ns = db.namespace("default")
    first = transfer.pull(ns, f"{anonymous_registry.host}/{repo}/b:1", plain_http=True)
    transfer.pull(ns, f"{anonymous_registry.host}/{repo}/a:1", plain_http=True)
    assert ns.content.info(first.target.digest).labels[SOURCE] == f"{repo}/a,{repo}/b"


def test_a_second_pull_downloads_no_layer(anonymous_registry, repo, tmp_path, db):
    seed(anonymous_registry, tmp_path, f"{repo}:1", layers(3, 200_000))
    ns = db.namespace("default")
    ref = f"{anonymous_registry.host}/{repo}:1"
    before = len(anonymous_registry.access())
    transfer.pull(ns, ref, plain_http=True, unpack=True)
    first = anonymous_registry.blob_bytes(before, repo)
    assert first > 600_000
    before = len(anonymous_registry.access())
    image = transfer.pull(ns, ref, plain_http=True, unpack=True)
    assert anonymous_registry.blob_bytes(before, repo) == 0
    again = anonymous_registry.access()[before:]
    assert [(a.method, a.path.rpartition("/")[0]) for a in again] == [("HEAD", f"/v2/{repo}/manifests")]
    assert image.target.digest == ns.images.get(ref).target.digest


def test_pull_by_digest_names_the_image_by_it(anonymous_registry, repo, tmp_path, db):
    manifest = seed(anonymous_registry, tmp_path, f"{repo}:1", layers(1))
    ns = db.namespace("default")
    ref = f"{anonymous_registry.host}/{repo}:ignored@{manifest.digest}"
    image = transfer.pull(ns, ref, plain_http=True)
    assert image.name == f"{anonymous_registry.host}/{repo}@{manifest.digest}"
    assert image.target.digest == manifest.digest


def test_pull_unpacks_into_snapshots(anonymous_registry, repo, tmp_path, db):
    tars = [LayerBuilder().file("etc/motd", b"one\n").file("bin/tool", b"t", mode=0o755).tar(),
            LayerBuilder().whiteout("bin/tool").file("etc/motd", b"two\n").tar()]
    seed(anonymous_registry, tmp_path, f"{repo}:1", tars)
    ns = db.namespace("default")
    image = transfer.pull(ns, f"{anonymous_registry.host}/{repo}:1", plain_http=True, unpack=True)
    config, chain = transfer.image_layers(ns, image.target)
    top = chain[-1].chain_id
    assert ns.content.info(config.digest).labels["containerd.io/gc.ref.snapshot.native"] == top
    mounts = ns.snapshotter("native").view("check", top)
    root = mounts[0].source
    with open(os.path.join(root, "etc/motd"), "rb") as f:
        assert f.read() == b"two\n"
    assert not os.path.exists(os.path.join(root, "bin/tool"))


def test_pull_keeps_the_best_platform_and_labels_every_manifest(anonymous_registry, repo, tmp_path, db):
    runnable = compatible(host())[-1]  # the host runs it too, but prefers its own (386 on amd64)
    layout, index, images = multi_platform(tmp_path, others=(("s390x", ""),
                                                             (runnable.architecture, runnable.variant)))
    seed(anonymous_registry, tmp_path, f"{repo}:1", [], archive=f"{layout}:1", all_images=True)
    ns = db.namespace("default")
    image = transfer.pull(ns, f"{anonymous_registry.host}/{repo}:1", plain_http=True)
    assert image.target.digest == index.digest
    stored = {info.digest for info in ns.content.walk()}
    mine, *others = images
    assert {mine.manifest.digest, mine.config.digest, *(d.digest for d in mine.layers)} <= stored
    assert not any(other.manifest.digest in stored for other in others)
    # containerd's pull labels an index with all its manifests, before filtering
    labels = ns.content.info(index.digest).labels
    assert [labels[f"containerd.io/gc.ref.content.m.{i}"] for i in range(3)] == [i.manifest.digest for i in images]


def test_pull_a_chosen_platform_or_all(anonymous_registry, repo, tmp_path, db):
    layout, index, images = multi_platform(tmp_path)
    seed(anonymous_registry, tmp_path, f"{repo}:1", [], archive=f"{layout}:1", all_images=True)
    ref = f"{anonymous_registry.host}/{repo}:1"
    ns = db.namespace("s390x")
    transfer.pull(ns, ref, plain_http=True, platform="linux/s390x")
    stored = {info.digest for info in ns.content.walk()}
    assert images[1].manifest.digest in stored and images[0].manifest.digest not in stored
    everything = db.namespace("all")
    transfer.pull(everything, ref, plain_http=True, all_platforms=True)
    stored = {info.digest for info in everything.content.walk()}
    assert all(i.manifest.digest in stored and i.config.digest in stored for i in images)
    with pytest.raises(NotFound, match=rf"pull {ref}: no manifest of index .* matches platform"):
        transfer.pull(db.namespace("none"), ref, plain_http=True, platform="windows/arm64")
    assert db.namespace("none").images.list() == []


def test_pull_reports_progress_per_blob(anonymous_registry, repo, tmp_path, db):
    seed(anonymous_registry, tmp_path, f"{repo}:1", layers(3, 100_000))
    seen, threads = {}, set()

    def progress(phase, descriptor, done):
        assert phase == "pull"
        assert 0 <= done <= descriptor.size
        seen.setdefault(descriptor.digest, []).append((done, descriptor.size))
        threads.add(threading.get_ident())

    transfer.pull(db.namespace("default"), f"{anonymous_registry.host}/{repo}:1", plain_http=True,
                  progress=progress)
    assert len(seen) == 5  # manifest, config, three layers
    assert all(reports[-1][0] == reports[-1][1] for reports in seen.values())
    assert all(reports == sorted(reports) for reports in seen.values())


def test_https_is_the_default(anonymous_registry, repo, tmp_path, db):
    seed(anonymous_registry, tmp_path, f"{repo}:1", layers(1))
    ref = f"{anonymous_registry.host}/{repo}:1"
    with pytest.raises(Unavailable, match=rf"pull {ref}: .*TLS.*--plain-http"):
        transfer.pull(db.namespace("default"), ref)
    assert db.namespace("default").images.list() == []


def test_cli_pull_and_its_errors(anonymous_registry, repo, tmp_path):
    manifest = seed(anonymous_registry, tmp_path, f"{repo}:1", layers(1))
    ref = f"{anonymous_registry.host}/{repo}:1"
    root = tmp_path / "cli"
    out = invoke(root, "images", "pull", "--plain-http", "--unpack", ref)
    assert rows(out) == [["NAME", "DIGEST"], [ref, manifest.digest]]
    listing = parsed(invoke(root, "images", "ls", "--json"))
    assert [(i["name"], i["target"]["digest"]) for i in listing] == [(ref, manifest.digest)]
    again = parsed(invoke(root, "images", "pull", "--plain-http", "--json", "--max-concurrent-downloads", "1", ref))
    assert again["name"] == ref and again["target"]["digest"] == manifest.digest
    missing = f"{anonymous_registry.host}/{repo}:2"
    line = fails(root, "images", "pull", "--plain-http", missing)
    assert line.startswith(f"cargohold: NotFound: pull {missing}: ") and "404" in line
    assert "must be lower case" in fails(root, "images", "pull", f"{anonymous_registry.host}/Repo:1")
    assert "max-concurrent-downloads" in fails(root, "images", "pull", "--max-concurrent-downloads", "0", ref)
    big = f"{anonymous_registry.host}/{repo}:big"
    seed(anonymous_registry, tmp_path, f"{repo}:big", [LayerBuilder().file("big", bytes(5000)).tar()])
    line = fails(root, "images", "pull", "--plain-http", "--unpack", "--max-layer-size", "1K", big)
    assert line.startswith(f"cargohold: InvalidArgument: pull {big}: ") and "1024" in line
    assert [i["name"] for i in parsed(invoke(root, "images", "ls", "--json"))] == [ref]


def test_docker_media_types_pull_and_unpack(anonymous_registry, repo, tmp_path, db):
    seed(anonymous_registry, tmp_path, f"{repo}:1", layers(1), skopeo_args=("--format", "v2s2"))
    ns = db.namespace("default")
    image = transfer.pull(ns, f"{anonymous_registry.host}/{repo}:1", plain_http=True, unpack=True)
    assert image.target.media_type == "application/vnd.docker.distribution.manifest.v2+json"
    assert inspect_raw(anonymous_registry, f"{repo}:1") == ns.content.read(image.target.digest)
    doc = json.loads(ns.content.read(image.target.digest))
    assert doc["layers"][0]["mediaType"] == "application/vnd.docker.image.rootfs.diff.tar.gzip"
    labels = ns.content.info(image.target.digest).labels
    assert labels["containerd.io/gc.ref.content.l.0"] == doc["layers"][0]["digest"]
    assert "containerd.io/gc.ref.snapshot.native" in ns.content.info(doc["config"]["digest"]).labels


def test_a_second_namespace_downloads_no_layer(anonymous_registry, repo, tmp_path, db):
    """The content store shares blobs between namespaces: only the documents are fetched again."""
    manifest = seed(anonymous_registry, tmp_path, f"{repo}:1", layers(2, 100_000))
    ref = f"{anonymous_registry.host}/{repo}:1"
    transfer.pull(db.namespace("one"), ref, plain_http=True)
    layer_digests = {d["digest"] for d in json.loads(db.namespace("one").content.read(manifest.digest))["layers"]}
    before = len(anonymous_registry.access())
    transfer.pull(db.namespace("two"), ref, plain_http=True)
    assert anonymous_registry.blob_bytes(before, repo, layer_digests) == 0
    digests = [{info.digest for info in db.namespace(name).content.walk()} for name in ("one", "two")]
    assert digests[0] == digests[1]


def test_concurrent_pulls_of_one_image(anonymous_registry, repo, tmp_path, db):
    seed(anonymous_registry, tmp_path, f"{repo}:1", layers(3, 300_000))
    ref = f"{anonymous_registry.host}/{repo}:1"
    ns = db.namespace("default")
    errors, results = [], []

    def run():
        try:
            results.append(transfer.pull(ns, ref, plain_http=True, unpack=True))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and len(results) == 3
    assert [i.name for i in ns.images.list()] == [ref]
    assert ns.content.statuses() == [] and ns.leases.list() == []


def test_a_progress_bar_per_layer_at_a_terminal(anonymous_registry, repo, tmp_path):
    import pty
    import subprocess
    import sys

    manifest = seed(anonymous_registry, tmp_path, f"{repo}:1", layers(2))
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "150", "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "cargohold.cli.main", "--root", str(tmp_path / "tty"), "images",
                             "pull", "--plain-http", "--unpack", f"{anonymous_registry.host}/{repo}:1"],
                            stdin=follower, stdout=follower, stderr=subprocess.PIPE, env=env)
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    with proc.stderr:
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    os.close(leader)
    text = output.decode("utf-8", "replace")
    with cargohold.open(tmp_path / "tty") as database:
        doc = json.loads(database.namespace("default").content.read(manifest.digest))
    for layer in doc["layers"]:
        assert f"pulling layer {layer['digest'][:19]}" in text and f"unpacking layer {layer['digest'][:19]}" in text
    assert manifest.digest in text  # and the table after the bars
