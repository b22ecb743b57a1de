"""Pushing to a real registry, read back with skopeo: only missing blobs go, mounts across repositories,
manifests children first, platforms, and refusals before anything is sent."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from cliutil import fails, invoke
from oci_fixtures import OCI_INDEX, Layout, tar_layout
from registry_server import inspect_raw, multi_platform, needs_registry, seed, skopeo

import cargohold
from cargohold import transfer
from cargohold.errors import InvalidArgument, NotFound
from cargohold.oci.build import LayerBuilder, write_image

pytest_plugins = ("registry_server",)
pytestmark = needs_registry


@pytest.fixture
def ns(tmp_path):
    with cargohold.open(tmp_path / "root") as db:
        yield db.namespace("default")


def imported(ns, tmp_path, name: str, n: int = 2):
    """Import an image built in Python; returns it."""
    tars = [LayerBuilder().file(f"d{i}/data", os.urandom(30_000)).tar() for i in range(n)]
    archive = tmp_path / f"{abs(hash(name))}.tar"
    write_image(archive, name, tars)
    (image,) = transfer.import_archive(ns, archive)
    return image


def blob_digests(layout_dir) -> set:
    """Digests of the blob files skopeo wrote into an OCI layout, each rehashed."""
    out = set()
    directory = os.path.join(layout_dir, "blobs", "sha256")
    for name in os.listdir(directory):
        with open(os.path.join(directory, name), "rb") as f:
            digest = "sha256:" + hashlib.sha256(f.read()).hexdigest()
        assert digest == f"sha256:{name}"
        out.add(digest)
    return out


def test_push_is_what_skopeo_reads_back(anonymous_registry, repo, tmp_path, ns):
    image = imported(ns, tmp_path, "example.com/app:1")
    ref = f"{anonymous_registry.host}/{repo}:v1"
    pushed = transfer.push(ns, image.name, ref, plain_http=True)
    assert pushed.digest == image.target.digest
    assert inspect_raw(anonymous_registry, f"{repo}:v1") == ns.content.read(image.target.digest)
    copy = tmp_path / "copy"
    skopeo("copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"oci:{copy}:v1")
    stored = {info.digest for info in ns.content.walk()}
    assert blob_digests(copy) == stored
    index = json.loads((copy / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [image.target.digest]


def test_push_sends_only_what_the_registry_lacks(anonymous_registry, repo, tmp_path, ns):
    image = imported(ns, tmp_path, "example.com/app:2")
    ref = f"{anonymous_registry.host}/{repo}:a"
    transfer.push(ns, image.name, ref, plain_http=True)
    before = len(anonymous_registry.access())
    transfer.push(ns, image.name, f"{anonymous_registry.host}/{repo}:b", plain_http=True)
    requests = [(a.method, a.path.split("/")[-2]) for a in anonymous_registry.access()[before:]]
    assert sorted(requests) == [("HEAD", "blobs")] * 3 + [("PUT", "manifests")]
    assert inspect_raw(anonymous_registry, f"{repo}:b") == inspect_raw(anonymous_registry, f"{repo}:a")


def test_push_mounts_blobs_pulled_from_another_repository(anonymous_registry, repo, tmp_path, ns):
    seed(anonymous_registry, tmp_path, f"{repo}/source:1",
         [LayerBuilder().file("x", os.urandom(50_000)).tar()])
    pulled = transfer.pull(ns, f"{anonymous_registry.host}/{repo}/source:1", plain_http=True)
    before = len(anonymous_registry.access())
    transfer.push(ns, pulled.name, f"{anonymous_registry.host}/{repo}/target:1", plain_http=True)
    log = anonymous_registry.access()[before:]
    mounts = [a for a in log if a.method == "POST"]
    source = "from=" + f"{repo}/source".replace("/", "%2F")
    assert len(mounts) == 2 and all(source in a.path and a.status == 201 for a in mounts)
    assert not any(a.method in ("PUT", "PATCH") and "/blobs/" in a.path for a in log)
    assert inspect_raw(anonymous_registry, f"{repo}/target:1") == ns.content.read(pulled.target.digest)


def test_push_a_multi_platform_image(anonymous_registry, repo, tmp_path, ns):
    layout, index, images = multi_platform(tmp_path)
    archive = tar_layout(layout, tmp_path / "multi.tar")
    transfer.import_archive(ns, archive, base_name="example.com/multi", all_platforms=True)
    name = "example.com/multi:1"
    every = transfer.push(ns, name, f"{anonymous_registry.host}/{repo}:all", plain_http=True, all_platforms=True)
    assert every.digest == index.digest
    assert inspect_raw(anonymous_registry, f"{repo}:all") == ns.content.read(index.digest)
    for built in images:  # the children went first, so the registry took the index
        inspect_raw(anonymous_registry, f"{repo}@{built.manifest.digest}")
    mine = transfer.push(ns, name, f"{anonymous_registry.host}/{repo}:host", plain_http=True)
    assert mine.digest == images[0].manifest.digest
    other = transfer.push(ns, name, f"{anonymous_registry.host}/{repo}:s390x", plain_http=True, platform="linux/s390x")
    assert other.digest == images[1].manifest.digest
    assert inspect_raw(anonymous_registry, f"{repo}:s390x") == ns.content.read(images[1].manifest.digest)


def test_push_a_nested_index_children_first(anonymous_registry, repo, tmp_path, ns):
    layout, inner, images = multi_platform(tmp_path)
    outer = Layout(layout).document({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_INDEX, "digest": inner.digest, "size": inner.size}]}, OCI_INDEX)
    Layout(layout).write_index([(outer, {"org.opencontainers.image.ref.name": "1"})])
    transfer.import_archive(ns, tar_layout(layout, tmp_path / "nested.tar"), base_name="example.com/nested",
                            all_platforms=True)
    pushed = transfer.push(ns, "example.com/nested:1", f"{anonymous_registry.host}/{repo}:1", plain_http=True,
                           all_platforms=True)
    assert pushed.digest == outer.digest
    assert inspect_raw(anonymous_registry, f"{repo}@{inner.digest}") == ns.content.read(inner.digest)


def test_push_refuses_before_sending_anything(anonymous_registry, repo, tmp_path, ns):
    image = imported(ns, tmp_path, "example.com/app:3")
    layer = json.loads(ns.content.read(image.target.digest))["layers"][0]["digest"]
    ns.content.delete(layer)
    ref = f"{anonymous_registry.host}/{repo}:x"
    before = len(anonymous_registry.access())
    with pytest.raises(NotFound, match=rf"push {ref}: content {layer} not found"):
        transfer.push(ns, image.name, ref, plain_http=True)
    with pytest.raises(NotFound, match="image 'example.com/none:1'"):
        transfer.push(ns, "example.com/none:1", ref, plain_http=True)
    other = imported(ns, tmp_path, "example.com/app:4")
    with pytest.raises(InvalidArgument, match="digest is not that of manifest"):
        transfer.push(ns, other.name, f"{ref}@sha256:{'0' * 64}", plain_http=True)
    assert anonymous_registry.access()[before:] == []


def test_cli_push(anonymous_registry, repo, tmp_path):
    root = tmp_path / "cli"
    archive = tmp_path / "img.tar"
    name = f"{anonymous_registry.host}/{repo}:1"
    manifest = write_image(archive, name, [LayerBuilder().file("a", b"a").tar()])
    invoke(root, "images", "import", archive)
    out = invoke(root, "images", "push", "--plain-http", name)
    assert out.stdout == f"pushed {name} to {name} ({manifest.digest})\n"
    assert json.loads(inspect_raw(anonymous_registry, f"{repo}:1"))["layers"]
    line = fails(root, "images", "push", "--plain-http", name, f"{anonymous_registry.host}/{repo}/Bad")
    assert "must be lower case" in line
    line = fails(root, "images", "push", name, f"{anonymous_registry.host}/{repo}:2")
    assert line.startswith(f"cargohold: Unavailable: push {anonymous_registry.host}/{repo}:2: ") and "TLS" in line
