"""Reading OCI layouts: what an import stores, with which labels and names, and every bad archive."""

from __future__ import annotations

import json
import os
import tarfile

import pytest
import zstandard
from oci_fixtures import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    Layer,
    Layout,
    needs_skopeo,
    needs_umoci,
    platform_json,
    sha256,
    skopeo_archive,
    tar_layout,
    umoci_image,
)

from cargohold import oci
from cargohold.errors import InvalidArgument, NotFound, Unsupported
from cargohold.model import Descriptor
from cargohold.oci.platforms import Platform, only, only_strict

NAME = "io.containerd.image.name"
REF = "org.opencontainers.image.ref.name"
M = "containerd.io/gc.ref.content.m."
L = "containerd.io/gc.ref.content.l."
CONFIG = "containerd.io/gc.ref.content.config"


def two_layers():
    return [Layer().file("a", b"1").bytes(), Layer().file("b", b"2").whiteout("a").bytes()]


@pytest.fixture
def layout(tmp_path):
    return Layout(tmp_path / "layout")


def as_source(layout: Layout, form: str, tmp_path) -> str:
    return layout.root if form == "dir" else tar_layout(layout.root, tmp_path / "image.tar")


@pytest.mark.parametrize("form", ["dir", "tar"])
@pytest.mark.parametrize("docker", [False, True], ids=["oci", "docker"])
def test_plan_of_one_image(tmp_path, form, docker):
    layout = Layout(tmp_path / "layout", docker=docker)
    image = layout.image(two_layers())
    index = layout.write_index([(image.manifest, {NAME: "example.com/app:1"})])
    with oci.open_archive(as_source(layout, form, tmp_path)) as archive:
        assert archive.index == Descriptor(OCI_INDEX, sha256(index), len(index))
        plan = archive.plan()
        assert plan.index.descriptor == archive.index
        assert plan.index.labels == {M + "0": image.manifest.digest}
        assert [b.descriptor.digest for b in plan.blobs] == [
            image.manifest.digest, image.config.digest, *(d.digest for d in image.layers)]
        manifest = plan.blobs[0]
        assert manifest.labels == {CONFIG: image.config.digest, L + "0": image.layers[0].digest,
                                   L + "1": image.layers[1].digest}
        assert manifest.children == (image.config, *image.layers)
        assert all(b.labels == {} and b.children == () for b in plan.blobs[1:])
        assert plan.images == (oci.ImageRef("example.com/app:1", Descriptor(
            image.manifest.media_type, image.manifest.digest, image.manifest.size,
            {NAME: "example.com/app:1"})),)
        for blob in plan.blobs:
            with archive.open_blob(blob.descriptor) as f, open(layout.blob_file(blob.descriptor.digest), "rb") as g:
                assert f.read() == g.read()
        assert archive.read_blob(image.config) == open(layout.blob_file(image.config.digest), "rb").read()


def multi_platform(layout: Layout) -> tuple[dict, Descriptor]:
    images = {
        "amd64": layout.image([Layer().file("amd64", b"x").bytes()]),
        "arm64": layout.image([Layer().file("arm64", b"x").bytes()], arch="arm64", variant="v8"),
        "arm/v7": layout.image([Layer().file("armv7", b"x").bytes()], arch="arm", variant="v7"),
        "386": layout.image([Layer().file("i386", b"x").bytes()], arch="386"),
        "ppc64le": layout.image([Layer().file("ppc", b"x").bytes()], arch="ppc64le"),
    }
    nested = layout.index(list(images.values()))
    layout.write_index([(nested, {NAME: "example.com/multi:1"})])
    return images, nested


def reached(plan) -> set:
    return {b.descriptor.digest for b in plan.blobs}


def image_blobs(image) -> set:
    return {image.manifest.digest, image.config.digest, *(d.digest for d in image.layers)}


def test_platform_selection_in_a_nested_index(layout):
    images, nested = multi_platform(layout)
    with oci.open_archive(layout.root) as archive:
        everything = archive.plan(all_platforms=True)
        assert reached(everything) == {nested.digest}.union(*(image_blobs(i) for i in images.values()))
        assert everything.blobs[0].labels == {M + str(i): image.manifest.digest
                                             for i, image in enumerate(images.values())}

        arm64 = archive.plan(platform="linux/arm64")
        assert reached(arm64) == {nested.digest} | image_blobs(images["arm64"])
        # the index names every manifest, the skipped ones too: re-importing one platform of an index a wider
        # import stored must not drop the others' references (containerd labels only the kept ones)
        assert arm64.blobs[0].labels == everything.blobs[0].labels
        assert arm64.images == (oci.ImageRef("example.com/multi:1", Descriptor(
            OCI_INDEX, nested.digest, nested.size, {NAME: "example.com/multi:1"})),)

        armv7 = archive.plan(platform=Platform("linux", "arm", "v7"))
        assert reached(armv7) == {nested.digest} | image_blobs(images["arm/v7"])

        if oci.platforms.host().architecture == "amd64":
            # containerd's default: the host platform and what it runs (amd64 also runs 386)
            default = archive.plan()
            assert reached(default) == {nested.digest} | image_blobs(images["amd64"]) | image_blobs(images["386"])
            assert default.blobs[0].labels == everything.blobs[0].labels


def test_platform_that_matches_nothing_in_a_nested_index_keeps_only_the_index(layout):
    images, nested = multi_platform(layout)
    with oci.open_archive(layout.root) as archive:
        plan = archive.plan(platform="linux/s390x")
    assert [b.descriptor.digest for b in plan.blobs] == [nested.digest]
    assert plan.blobs[0].labels == {M + str(i): image.manifest.digest for i, image in enumerate(images.values())}


def test_top_level_entries_are_filtered_by_platform_too(layout):
    amd = layout.image([Layer().file("a", b"1").bytes()])
    arm = layout.image([Layer().file("b", b"1").bytes()], arch="arm64")
    layout.write_index([(amd.manifest, {NAME: "x/amd:1"}, platform_json("linux", "amd64")),
                        (arm.manifest, {NAME: "x/arm:1"}, platform_json("linux", "arm64"))])
    with oci.open_archive(layout.root) as archive:
        plan = archive.plan(platform="linux/arm64")
        assert [r.name for r in plan.images] == ["x/arm:1"]
        assert reached(plan) == image_blobs(arm)
        with pytest.raises(NotFound, match="no manifest in index.json matches"):
            archive.plan(platform="windows/amd64")


def test_image_naming_rules(layout):
    image = layout.image([Layer().file("a", b"1").bytes()])
    layout.write_index([
        (image.manifest, {NAME: "docker.io/library/app:1", REF: "ignored"}),
        (image.manifest, {REF: "registry.local:5000/team/app:2"}),
        (image.manifest, {REF: "3"}),
        (image.manifest, {}),
    ])
    with oci.open_archive(layout.root) as archive:
        plan = archive.plan(base_name="example.com/base")
        assert [r.name for r in plan.images] == [
            "docker.io/library/app:1", "registry.local:5000/team/app:2", "example.com/base:3", None]
        assert [r.name for r in archive.plan().images] == [
            "docker.io/library/app:1", "registry.local:5000/team/app:2", None, None]
        assert len(plan.blobs) == 3  # one manifest, config and layer, reached four times


def test_shared_blobs_are_listed_once_and_labelled_from_every_parent(layout):
    base = Layer().file("base", b"b").bytes()
    one = layout.image([base, Layer().file("one", b"1").bytes()])
    two = layout.image([base, Layer().file("two", b"2").bytes()])
    layout.write_index([(one.manifest, {NAME: "x/one:1"}), (two.manifest, {NAME: "x/two:1"})])
    with oci.open_archive(layout.root) as archive:
        plan = archive.plan()
    digests = [b.descriptor.digest for b in plan.blobs]
    assert len(digests) == len(set(digests)) == 7
    labels = {b.descriptor.digest: b.labels for b in plan.blobs}
    assert labels[one.manifest.digest][L + "0"] == labels[two.manifest.digest][L + "0"] == one.layers[0].digest


def test_opaque_blob_types_are_imported_without_children(layout):
    attestation = layout.blob(b'{"predicate":{}}', "application/vnd.in-toto+json")
    empty = layout.blob(b"{}", "application/vnd.oci.empty.v1+json")
    manifest = layout.document({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                "config": {"mediaType": empty.media_type, "digest": empty.digest, "size": 2},
                                "layers": [{"mediaType": attestation.media_type, "digest": attestation.digest,
                                            "size": attestation.size}]}, OCI_MANIFEST)
    layout.write_index([(manifest, {NAME: "x/att:1"})])
    with oci.open_archive(layout.root) as archive:
        plan = archive.plan()
    # containerd labels children of unknown kinds content.<i>, per key
    assert plan.blobs[0].labels == {"containerd.io/gc.ref.content.0": empty.digest,
                                    "containerd.io/gc.ref.content.1": attestation.digest}


def test_resolve_manifest_for_unpack(layout):
    images, nested = multi_platform(layout)
    with oci.open_archive(layout.root) as archive:
        fetch = archive.read_blob
        desc, manifest = oci.resolve_manifest(nested, fetch, only(Platform("linux", "arm", "v8")))
        assert desc.digest == images["arm/v7"].manifest.digest  # arm/v8 runs v7, the best present
        assert manifest.layers == tuple(images["arm/v7"].layers)
        desc, _ = oci.resolve_manifest(nested, fetch, only(Platform("linux", "amd64", "v3")))
        assert desc.digest == images["amd64"].manifest.digest  # preferred to 386
        desc, _ = oci.resolve_manifest(images["386"].manifest, fetch, only(Platform("linux", "arm64")))
        assert desc.digest == images["386"].manifest.digest  # a manifest target is taken as is
        with pytest.raises(NotFound, match="no manifest"):
            oci.resolve_manifest(nested, fetch, only(Platform("linux", "s390x")))


def test_resolve_manifest_checks_the_config_when_the_entry_has_no_platform(layout):
    arm = layout.image([Layer().file("a", b"1").bytes()], arch="arm64")
    amd = layout.image([Layer().file("b", b"1").bytes()])
    index = layout.document({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": d.digest, "size": d.size} for d in (arm.manifest, amd.manifest)]},
        OCI_INDEX)
    layout.write_index([(index, {})])
    with oci.open_archive(layout.root) as archive:
        with pytest.raises(NotFound):  # the first entry is taken, and its config says arm64
            oci.resolve_manifest(index, archive.read_blob, only(Platform("linux", "amd64")))
        desc, _ = oci.resolve_manifest(index, archive.read_blob, only(Platform("linux", "arm64")))
        assert desc.digest == arm.manifest.digest


@needs_umoci
def test_umoci_layout_directory(tmp_path):
    layout, _ = umoci_image(tmp_path)
    with oci.open_archive(layout) as archive:
        plan = archive.plan(base_name="example.com/app")
    assert [r.name for r in plan.images] == [f"example.com/app:{t}" for t in ("base", "v1", "v2", "v3")]
    v3 = plan.images[-1].target
    (manifest,) = [b for b in plan.blobs if b.descriptor.digest == v3.digest]
    assert sorted(manifest.labels) == [CONFIG, L + "0", L + "1", L + "2"]


@needs_umoci
@needs_skopeo
@pytest.mark.parametrize("zstd", [False, True], ids=["gzip", "zstd"])
def test_skopeo_oci_archive(tmp_path, zstd):
    layout, tag = umoci_image(tmp_path / "build")
    path = skopeo_archive(layout, tag, tmp_path / "image.tar", zstd=zstd, ref_name="v3")
    with oci.open_archive(path) as archive:
        plan = archive.plan(base_name="example.com/app")
        assert [r.name for r in plan.images] == ["example.com/app:v3"]
        layers = [b.descriptor for b in plan.blobs if b.descriptor.media_type.startswith(OCI_LAYER)]
        assert [d.media_type for d in layers] == [OCI_LAYER + ("+zstd" if zstd else "+gzip")] * 3
        for blob in plan.blobs:
            with archive.open_blob(blob.descriptor) as f:
                while f.read(1 << 16):
                    pass


def test_store_agnostic_walk_from_a_dict_of_blobs(layout):
    images, nested = multi_platform(layout)
    blobs = {}
    for name in os.listdir(os.path.join(layout.root, "blobs", "sha256")):
        with open(os.path.join(layout.root, "blobs", "sha256", name), "rb") as f:
            blobs["sha256:" + name] = f.read()
    fetch = blobs.__getitem__

    def walked(matcher) -> list:
        return [b.descriptor.digest for b in oci.walk([nested], lambda d: fetch(d.digest), matcher)]

    def in_order(image) -> list:
        return [d.digest for d in (image.manifest, image.config, *image.layers)]

    assert walked(only_strict(Platform("linux", "arm64"))) == [nested.digest, *in_order(images["arm64"])]
    # containerd's Only: arm64 also runs arm/v8 down to arm/v5
    assert walked(only(Platform("linux", "arm64"))) == [
        nested.digest, *in_order(images["arm64"]), *in_order(images["arm/v7"])]


# --- bad archives --------------------------------------------------------------------------------


def flip(path: str, offset: int = -1) -> None:
    data = bytearray(open(path, "rb").read())
    data[offset] ^= 0x01
    open(path, "wb").write(bytes(data))


@pytest.fixture
def good(layout):
    image = layout.image(two_layers())
    layout.write_index([(image.manifest, {NAME: "example.com/app:1"})])
    return layout, image


def plan_error(source, error=InvalidArgument, match=""):
    with pytest.raises(error, match=match) as info:
        with oci.open_archive(source) as archive:
            archive.plan()
    assert f"image archive {source}" in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("form", ["dir", "tar"])
def test_missing_blobs(tmp_path, good, form):
    layout, image = good
    os.unlink(layout.blob_file(image.layers[1].digest))
    plan_error(as_source(layout, form, tmp_path), match=f"layer {image.layers[1].digest} is missing")


def test_missing_manifest(good):
    layout, image = good
    os.unlink(layout.blob_file(image.manifest.digest))
    plan_error(layout.root, match=f"manifest {image.manifest.digest} is missing")


@pytest.mark.parametrize("form", ["dir", "tar"])
def test_corrupt_layer_is_caught_while_streaming(tmp_path, good, form):
    layout, image = good
    flip(layout.blob_file(image.layers[0].digest), 20)
    with oci.open_archive(as_source(layout, form, tmp_path)) as archive:
        archive.plan()  # sizes are right; layers are verified as they are read
        with pytest.raises(InvalidArgument, match=f"layer {image.layers[0].digest}: digest mismatch"):
            with archive.open_blob(image.layers[0]) as f:
                f.read()


def test_corrupt_documents_fail_the_plan(good):
    layout, image = good
    flip(layout.blob_file(image.config.digest), 5)
    plan_error(layout.root, match=f"config {image.config.digest}: digest mismatch")


@pytest.mark.parametrize("form", ["dir", "tar"])
def test_size_mismatch(tmp_path, good, form):
    layout, image = good
    with open(layout.blob_file(image.layers[0].digest), "ab") as f:
        f.write(b"!")
    plan_error(as_source(layout, form, tmp_path), match=f"layer {image.layers[0].digest}: size mismatch")


def test_bad_json_documents(layout):
    bad = layout.blob(b'{"schemaVersion": 2, "config": ', OCI_MANIFEST)
    layout.write_index([(bad, {NAME: "x/bad:1"})])
    plan_error(layout.root, match=f"manifest {bad.digest} is not valid JSON")
    config = layout.blob(b"[1, 2]", OCI_CONFIG)
    manifest = layout.document({"schemaVersion": 2, "config": {"mediaType": OCI_CONFIG, "digest": config.digest,
                                                               "size": config.size}}, OCI_MANIFEST)
    layout.write_index([(manifest, {NAME: "x/bad:1"})])
    plan_error(layout.root, match=f"config {config.digest} is not a JSON object")


@pytest.mark.parametrize("name, content, error, match", [
    ("index.json", b"{not json", InvalidArgument, "index.json is not valid JSON"),
    ("index.json", None, InvalidArgument, "not an OCI image layout: index.json is missing"),
    ("oci-layout", b"nope", InvalidArgument, "oci-layout is not valid JSON"),
    ("oci-layout", None, InvalidArgument, "not an OCI image layout: oci-layout is missing"),
    ("oci-layout", b'{"imageLayoutVersion": "2.0.0"}', Unsupported, "unsupported oci-layout version '2.0.0'"),
])
def test_bad_layout_files(good, name, content, error, match):
    layout, _ = good
    if content is None:
        os.unlink(os.path.join(layout.root, name))
    else:
        layout.write_file(name, content)
    plan_error(layout.root, error, match)


def test_unsupported_media_types(layout):
    odd = layout.image([Layer().file("a", b"1").bytes()], layer_type="application/x-tarball")
    layout.write_index([(odd.manifest, {NAME: "x/odd:1"})])
    plan_error(layout.root, Unsupported, f"unsupported media type 'application/x-tarball' of blob "
               f"{odd.layers[0].digest} in manifest {odd.manifest.digest}: not an index, manifest, config or tar")
    encrypted = layout.image([Layer().file("a", b"1").bytes()], layer_type=OCI_LAYER + "+gzip+encrypted")
    layout.write_index([(encrypted.manifest, {NAME: "x/enc:1"})])
    plan_error(layout.root, Unsupported, "encrypted layers are not supported")
    schema1 = layout.blob(b'{"schemaVersion": 1, "fsLayers": []}',
                          "application/vnd.docker.distribution.manifest.v1+prettyjws")
    layout.write_index([(schema1, {NAME: "x/old:1"})])
    plan_error(layout.root, Unsupported, "Docker schema 1")
    checkpoint = layout.image([], config_media_type="application/vnd.containerd.container.checkpoint.config.v1+proto")
    layout.write_index([(checkpoint.manifest, {NAME: "x/ckpt:1"})])
    plan_error(layout.root, Unsupported, "checkpoint.config")


def test_schema1_content_under_a_schema2_media_type(layout):
    sneaky = layout.document({"schemaVersion": 1, "fsLayers": [{"blobSum": "sha256:" + "0" * 64}]}, OCI_MANIFEST)
    layout.write_index([(sneaky, {NAME: "x/s1:1"})])
    plan_error(layout.root, Unsupported, "Docker schema 1")


def test_index_posing_as_manifest_and_back(layout):
    image = layout.image([Layer().file("a", b"1").bytes()])
    index = layout.index([image])
    layout.write_index([(Descriptor(OCI_MANIFEST, index.digest, index.size), {NAME: "x/y:1"})])
    plan_error(layout.root, match="expected a manifest .* but found an index")
    layout.write_index([(Descriptor(OCI_INDEX, image.manifest.digest, image.manifest.size), {NAME: "x/y:1"})])
    plan_error(layout.root, match="expected an index .* but found a manifest")


@pytest.mark.parametrize("entry, match", [
    ({"mediaType": OCI_MANIFEST, "digest": "sha256:xyz", "size": 1}, "invalid digest 'sha256:xyz'"),
    ({"mediaType": OCI_MANIFEST, "digest": "md5:" + "0" * 32, "size": 1}, "unsupported algorithm 'md5'"),
    ({"mediaType": OCI_MANIFEST, "digest": "sha256:" + "0" * 64, "size": -1}, "size must be a non-negative"),
    ({"mediaType": OCI_MANIFEST, "digest": "sha256:" + "0" * 64, "size": "1"}, "size must be a non-negative"),
    ({"mediaType": 7, "digest": "sha256:" + "0" * 64, "size": 1}, "'mediaType' must be a string"),
    ({"mediaType": OCI_MANIFEST, "digest": "sha256:" + "0" * 64, "size": 1, "annotations": {"a": 1}},
     "annotations must map strings to strings"),
    ({"mediaType": OCI_MANIFEST, "digest": "sha256:" + "0" * 64, "size": 1, "platform": "linux"},
     "platform must be a JSON object"),
    ("not an object", r"manifests\[0\] is not a JSON object"),
])
def test_malformed_descriptors(layout, entry, match):
    layout.write_file("index.json", json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode())
    plan_error(layout.root, match=match)


def test_empty_index(layout):
    layout.write_file("index.json", b'{"schemaVersion": 2, "manifests": []}')
    plan_error(layout.root, NotFound, "no manifest in index.json")


def test_oversized_document_is_refused(layout):
    layout.write_index([(Descriptor(OCI_MANIFEST, "sha256:" + "1" * 64, 1 << 30), {})])
    plan_error(layout.root, match="larger than")


@pytest.mark.parametrize("member", [
    ("../evil", tarfile.REGTYPE, ""),
    ("/etc/evil", tarfile.REGTYPE, ""),
    ("blobs/../../evil", tarfile.REGTYPE, ""),
    ("blobs/sha256/link", tarfile.SYMTYPE, "../../../etc/passwd"),
    ("blobs/sha256/hard", tarfile.LNKTYPE, "/etc/passwd"),
])
def test_tar_members_escaping_the_archive(tmp_path, good, member):
    layout, _ = good
    name, kind, link = member
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    path = tar_layout(layout.root, tmp_path / "bad.tar", extra=[(info, b"x" if kind == tarfile.REGTYPE else b"")])
    with pytest.raises(InvalidArgument, match="escapes the archive") as exc:
        oci.open_archive(path)
    assert repr(name) in str(exc.value)


def test_directory_blob_symlink_pointing_outside(tmp_path, good):
    layout, image = good
    outside = tmp_path / "elsewhere"
    os.rename(layout.blob_file(image.layers[0].digest), outside)
    os.symlink(outside, layout.blob_file(image.layers[0].digest))
    with oci.open_archive(layout.root) as archive:
        with pytest.raises(InvalidArgument, match="points outside the layout directory"):
            archive.open_blob(image.layers[0])


def test_compressed_or_foreign_files(tmp_path, good):
    layout, _ = good
    import bz2
    import gzip
    path = tar_layout(layout.root, tmp_path / "image.tar")
    with oci.open_archive(path) as archive:
        expected = archive.plan()
    for kind, packed in [("gz", gzip.compress), ("zst", zstandard.ZstdCompressor().compress)]:
        compressed = tmp_path / f"image.tar.{kind}"  # a gzip or zstd archive is read as the tar it holds
        compressed.write_bytes(packed(open(path, "rb").read()))
        with oci.open_archive(compressed) as archive:
            assert archive.plan() == expected
    bz = tmp_path / "image.tar.bz2"
    bz.write_bytes(bz2.compress(open(path, "rb").read()))
    with pytest.raises(InvalidArgument, match="bzip2-compressed: decompress it first"):
        oci.open_archive(bz)
    junk = tmp_path / "junk"
    junk.write_bytes(b"this is not a tar file" * 100)
    with pytest.raises(InvalidArgument, match="not a readable tar"):
        oci.open_archive(junk)
    with pytest.raises(NotFound, match="does not exist"):
        oci.open_archive(tmp_path / "missing.tar")


def test_blob_that_is_not_a_regular_member(tmp_path, good):
    layout, image = good
    os.unlink(layout.blob_file(image.layers[0].digest))
    os.mkdir(layout.blob_file(image.layers[0].digest))
    plan_error(layout.root, match="cannot be read|not a regular file")
