"""containerd's rules, one by one: GC labels, image names, platforms, chain IDs, media types."""

from __future__ import annotations

import hashlib

import pytest
from oci_fixtures import Layer, Layout, needs_umoci, sha256, umoci_image

from cargohold import oci
from cargohold.errors import InvalidArgument, Unsupported
from cargohold.model import Descriptor
from cargohold.oci import mediatypes
from cargohold.oci.gclabels import child_label_keys
from cargohold.oci.platforms import ALL, Platform, compatible, normalize, only, only_strict, ordered, parse

D = ["sha256:" + c * 64 for c in "0123456789abcdef"]


def desc(media_type: str, i: int, annotations=None) -> Descriptor:
    return Descriptor(media_type, D[i], 10 + i, annotations)


# --- GC labels ----------------------------------------------------------------------------------


def test_index_labels_number_manifests():
    children = [desc(mediatypes.OCI_MANIFEST, 0), desc(mediatypes.DOCKER_MANIFEST, 1), desc(mediatypes.OCI_MANIFEST, 2)]
    assert oci.children_labels(children) == {
        "containerd.io/gc.ref.content.m.0": D[0], "containerd.io/gc.ref.content.m.1": D[1],
        "containerd.io/gc.ref.content.m.2": D[2]}


def test_manifest_labels_name_the_config_and_number_layers():
    children = [desc(mediatypes.OCI_CONFIG, 0), desc(mediatypes.OCI_LAYER_GZIP, 1),
                desc(mediatypes.DOCKER_LAYER_GZIP, 2), desc(mediatypes.OCI_LAYER_ZSTD, 3)]
    assert oci.children_labels(children) == {
        "containerd.io/gc.ref.content.config": D[0], "containerd.io/gc.ref.content.l.0": D[1],
        "containerd.io/gc.ref.content.l.1": D[2], "containerd.io/gc.ref.content.l.2": D[3]}


def test_label_numbering_is_per_key_and_unnumbered_keys_count_from_one():
    children = [desc(mediatypes.OCI_CONFIG, 0), desc("application/x-other", 1), desc(mediatypes.OCI_LAYER, 2),
                desc(mediatypes.DOCKER_CONFIG, 3), desc("application/x-other", 4),
                desc(mediatypes.OCI_INDEX, 5), desc(mediatypes.OCI_MANIFEST, 6),
                desc(mediatypes.OCI_MANIFEST, 7, {"io.containerd.manifest.subject": D[0]})]
    assert oci.children_labels(children) == {
        "containerd.io/gc.ref.content.config": D[0],
        "containerd.io/gc.ref.content.0": D[1],
        "containerd.io/gc.ref.content.l.0": D[2],
        "containerd.io/gc.ref.content.config1": D[3],
        "containerd.io/gc.ref.content.1": D[4],
        "containerd.io/gc.ref.content.2": D[5],  # a nested index is not a manifest to ChildGCLabels
        "containerd.io/gc.ref.content.m.0": D[6],
        "containerd.io/gc.ref.content.referrer.sha256." + "7" * 12: D[7],
    }
    assert oci.children_labels([]) == {}


def test_layer_and_config_classification_follows_containerd():
    for layer in (mediatypes.OCI_LAYER, mediatypes.OCI_LAYER + "+gzip+encrypted", mediatypes.DOCKER_LAYER_FOREIGN_GZIP,
                  "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", "application/vnd.erofs"):
        assert child_label_keys(Descriptor(layer, D[0], 1)) == ["containerd.io/gc.ref.content.l."]
    assert child_label_keys(Descriptor(mediatypes.CONTAINERD_CHECKPOINT_CONFIG, D[0], 1)) == [
        "containerd.io/gc.ref.content.config"]


def test_snapshot_label():
    assert oci.snapshot_label("native") == "containerd.io/gc.ref.snapshot.native"
    with pytest.raises(InvalidArgument, match="snapshotter"):
        oci.snapshot_label("../x")


# --- names --------------------------------------------------------------------------------------


@pytest.mark.parametrize("annotations, base, expected", [
    ({"io.containerd.image.name": "docker.io/library/a:1", "org.opencontainers.image.ref.name": "x"}, "b",
     "docker.io/library/a:1"),
    ({"org.opencontainers.image.ref.name": "example.com/a:1"}, "b", "example.com/a:1"),
    ({"org.opencontainers.image.ref.name": "a:1"}, None, "a:1"),
    ({"org.opencontainers.image.ref.name": "a@sha256:" + "0" * 64}, "b", "a@sha256:" + "0" * 64),
    ({"org.opencontainers.image.ref.name": "latest"}, "example.com/app", "example.com/app:latest"),
    ({"org.opencontainers.image.ref.name": "latest"}, None, None),
    ({"org.opencontainers.image.ref.name": ""}, "b", None),
    ({}, "b", None),
    (None, "b", None),
])
def test_image_name(annotations, base, expected):
    assert oci.image_name(annotations, base) == expected


@pytest.mark.parametrize("name, expected", [
    ("docker.io/library/alpine:3.18", "3.18"),
    ("example.com/team/app:v1", "v1"),
    ("localhost:5000/app:dev", "dev"),
    ("example.com/app@sha256:" + "a" * 64, "@sha256:" + "a" * 64),
    ("example.com/app:v1@sha256:" + "a" * 64, "v1@sha256:" + "a" * 64),
    ("example.com/app", ""),
    ("alpine:3.18", "alpine:3.18"),  # "alpine" would be the host, "3.18" no port: not a reference
    ("http://example.com/a:1", "http://example.com/a:1"),
    ("example.com/../a:1", "example.com/../a:1"),
])
def test_oci_reference_name(name, expected):
    assert oci.oci_reference_name(name) == expected


# --- platforms ----------------------------------------------------------------------------------


@pytest.mark.parametrize("given, expected", [
    (Platform("linux", "x86_64"), Platform("linux", "amd64")),
    (Platform("Linux", "AMD64", "v1"), Platform("linux", "amd64")),
    (Platform("linux", "aarch64", "v8"), Platform("linux", "arm64")),
    (Platform("linux", "armhf"), Platform("linux", "arm", "v7")),
    (Platform("linux", "armel"), Platform("linux", "arm", "v6")),
    (Platform("linux", "arm"), Platform("linux", "arm", "v7")),
    (Platform("linux", "arm", "6"), Platform("linux", "arm", "v6")),
    (Platform("linux", "i386"), Platform("linux", "386")),
    (Platform("macos", "arm64"), Platform("darwin", "arm64")),
    (Platform("windows", "amd64", os_features=("b", "a", "b")), Platform("windows", "amd64", os_features=("a", "b"))),
])
def test_normalize(given, expected):
    assert normalize(given) == expected


def test_parse_specifiers():
    assert parse("linux/arm64") == Platform("linux", "arm64")
    assert parse("linux/arm64/v8") == Platform("linux", "arm64", "v8")
    assert parse("linux/arm/v7") == Platform("linux", "arm", "v7")
    assert parse("linux/arm") == Platform("linux", "arm")
    assert parse("linux/x86_64") == Platform("linux", "amd64")
    assert parse("windows(10.0.17763+win32k)/amd64") == Platform("windows", "amd64", "", "10.0.17763", ("win32k",))
    host = oci.platforms.host()
    assert parse("linux").os == "linux" and parse("linux").architecture == host.architecture
    assert parse("s390x") == Platform(host.os, "s390x")
    for bad in ("", "linux/*", "a/b/c/d", "not a platform", "nosuchthing", "linux/x y"):
        with pytest.raises(InvalidArgument):
            parse(bad)


def test_compatible_platform_vectors():
    def names(p):
        return [str(x) for x in compatible(normalize(p))]
    assert names(Platform("linux", "amd64", "v3")) == [
        "linux/amd64/v3", "linux/amd64/v2", "linux/amd64/v1", "linux/386"]
    assert names(Platform("linux", "amd64")) == ["linux/amd64", "linux/386"]
    assert names(Platform("linux", "arm", "v7")) == ["linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]
    assert names(Platform("linux", "arm", "v5")) == ["linux/arm/v5"]
    assert names(Platform("linux", "arm64")) == [
        "linux/arm64", "linux/arm/v8", "linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]
    assert names(Platform("linux", "arm64", "v8.2")) == [
        "linux/arm64/v8.2", "linux/arm64/v8.1", "linux/arm64/v8", "linux/arm/v8", "linux/arm/v7", "linux/arm/v6",
        "linux/arm/v5"]
    assert names(Platform("linux", "arm64", "v9.1")) == [
        "linux/arm64/v9.1", "linux/arm64/v9", "linux/arm64/v8.6", "linux/arm64/v8.5", "linux/arm64/v8.4",
        "linux/arm64/v8.3", "linux/arm64/v8.2", "linux/arm64/v8.1", "linux/arm64/v8", "linux/arm/v8",
        "linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]


def test_matchers():
    m = only(Platform("linux", "amd64", "v2"))
    assert m.match(Platform("linux", "amd64")) and m.match(Platform("linux", "amd64", "v2"))
    assert m.match(Platform("linux", "x86_64", "v1")) and m.match(Platform("linux", "386"))
    assert not m.match(Platform("linux", "amd64", "v3")) and not m.match(Platform("linux", "arm64"))
    assert not m.match(Platform("windows", "amd64"))
    assert m.less(Platform("linux", "amd64", "v2"), Platform("linux", "amd64"))
    assert m.less(Platform("linux", "amd64"), Platform("linux", "386"))
    assert not m.less(Platform("linux", "386"), Platform("linux", "amd64"))
    assert m.less(Platform("linux", "386"), Platform("linux", "arm64"))  # a match beats a non-match
    strict = only_strict(Platform("linux", "amd64", "v2"))
    assert strict.match(Platform("linux", "amd64", "v2")) and not strict.match(Platform("linux", "amd64"))
    arm = only(Platform("linux", "arm"))
    assert arm.match(Platform("linux", "arm", "v7")) and arm.match(Platform("linux", "arm", "v6"))
    assert not arm.match(Platform("linux", "arm", "v8"))
    win32k = Platform("windows", "amd64", os_features=("win32k",))
    assert ordered(win32k).match(Platform("windows", "amd64")) and ordered(win32k).match(win32k)
    assert not ordered(Platform("windows", "amd64")).match(win32k)
    assert ALL.match(Platform("plan9", "mips")) and not ALL.less(Platform("a", "b"), Platform("c", "d"))


def test_host_platform_is_what_the_default_matches():
    host = oci.platforms.host()
    assert host.os and host.architecture
    assert oci.platforms.default().match(host)
    if host.architecture == "amd64":
        assert host.variant in ("v1", "v2", "v3", "v4")
        assert oci.platforms.default().match(Platform("linux", "amd64"))


# --- chain IDs ----------------------------------------------------------------------------------


def test_chain_ids_by_hand():
    a, b, c = sha256(b"layer a"), sha256(b"layer b"), sha256(b"layer c")
    ab = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    abc = "sha256:" + hashlib.sha256(f"{ab} {c}".encode()).hexdigest()
    assert oci.chain_ids([a, b, c]) == [a, ab, abc]
    assert oci.chain_id([a, b, c]) == abc
    assert oci.chain_id([a]) == a
    assert oci.chain_ids([]) == []
    with pytest.raises(InvalidArgument):
        oci.chain_id([])
    with pytest.raises(InvalidArgument, match="diff ID"):
        oci.chain_ids([a, "sha256:short"])


def test_chain_id_known_values():
    # Expected values computed with coreutils, independently of this code:
    #   printf 'sha256:c6f9... sha256:5f70...' | sha256sum, then the same with that result and the third.
    diff_ids = ["sha256:c6f988f4874bb0add23a778f753c65efe992244e148a1d2ec2a8b664fb66bbd1",
                "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef",
                "sha256:13f53e08df5a220ab6d13c58b2bf83a59cbdc2e04d0a3f041ddf4b0ba4112d49"]
    assert oci.chain_ids(diff_ids) == [
        diff_ids[0],
        "sha256:c3191d32a37d7159b2e30830937d2e30268ad6c375a773a8994911a3aba9b93f",
        "sha256:f295fb504ece04334c2571429c89e50e23f359e101ea9c3831a6993bb7d2301f"]


def test_rootfs_layers(tmp_path):
    layout = Layout(tmp_path)
    image = layout.image([Layer().file("a", b"1").bytes(), Layer().file("b", b"2").bytes()])
    manifest = oci.parse_manifest(open(layout.blob_file(image.manifest.digest), "rb").read(),
                                  image.manifest.media_type, "manifest")
    config = oci.parse_config(open(layout.blob_file(image.config.digest), "rb").read(), "config")
    assert config.platform == Platform("linux", "amd64") and list(config.diff_ids) == image.diff_ids
    layers = oci.rootfs_layers(manifest, config)
    chains = oci.chain_ids(image.diff_ids)
    assert [(x.descriptor, x.diff_id, x.chain_id, x.parent) for x in layers] == [
        (image.layers[0], image.diff_ids[0], chains[0], ""), (image.layers[1], image.diff_ids[1], chains[1], chains[0])]
    with pytest.raises(InvalidArgument, match="2 layers but its config lists 1 diff IDs"):
        oci.rootfs_layers(manifest, oci.ImageConfig(config.platform, config.diff_ids[:1]))


@needs_umoci
def test_diff_ids_and_chain_ids_of_a_umoci_image(tmp_path):
    """umoci computed the diff IDs in the config; applying the layers recomputes them."""
    layout, tag = umoci_image(tmp_path / "build")
    with oci.open_archive(layout) as archive:
        (ref,) = [r for r in archive.plan(base_name="x").images if r.name == f"x:{tag}"]
        _, manifest = oci.resolve_manifest(ref.target, archive.read_blob, oci.platforms.ALL)
        config = oci.parse_config(archive.read_blob(manifest.config), "config")
        computed = []
        root = tmp_path / "root"
        root.mkdir()
        for layer in manifest.layers:
            with archive.open_blob(layer) as blob:
                computed.append(oci.apply_layer(root, blob).diff_id)
    assert computed == list(config.diff_ids)
    assert [x.chain_id for x in oci.rootfs_layers(manifest, config)] == oci.chain_ids(computed)


# --- media types --------------------------------------------------------------------------------


def test_layer_compression_by_media_type():
    assert mediatypes.layer_compression(mediatypes.OCI_LAYER) == ""
    assert mediatypes.layer_compression(mediatypes.OCI_LAYER_GZIP) == "gzip"
    assert mediatypes.layer_compression(mediatypes.OCI_LAYER_ZSTD) == "zstd"
    assert mediatypes.layer_compression(mediatypes.DOCKER_LAYER) == ""
    assert mediatypes.layer_compression(mediatypes.DOCKER_LAYER_GZIP) == "gzip"
    assert mediatypes.layer_compression(mediatypes.DOCKER_LAYER_FOREIGN_GZIP) == "gzip"
    assert mediatypes.layer_compression(mediatypes.OCI_LAYER_NONDIST + "+gzip") == "gzip"
    for bad in (mediatypes.OCI_LAYER + "+bzip2", mediatypes.DOCKER_LAYER_GZIP + "+x", "application/vnd.erofs",
                mediatypes.OCI_CONFIG):
        with pytest.raises(Unsupported, match="unsupported media type"):
            mediatypes.layer_compression(bad)
