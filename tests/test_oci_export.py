"""Writing OCI layout tars: round trips, readability by skopeo and umoci, and refusals."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pytest
from oci_fixtures import (
    SKOPEO,
    UMOCI,
    Layer,
    Layout,
    needs_skopeo,
    needs_umoci,
    run,
    sha256,
    umoci_image,
)

from cargohold import oci
from cargohold.errors import InvalidArgument
from cargohold.model import Descriptor

NAME = "io.containerd.image.name"
REF = "org.opencontainers.image.ref.name"


class BlobStore:
    """A stand-in for a content store: blobs kept in a directory, keyed by digest."""

    def __init__(self, root) -> None:
        self.root = root
        os.makedirs(root, exist_ok=True)

    def path(self, digest: str) -> str:
        return os.path.join(self.root, digest.replace(":", "-"))

    def ingest(self, archive: oci.ImageArchive, plan: oci.ImportPlan) -> None:
        for blob in plan.blobs:
            with archive.open_blob(blob.descriptor) as src, open(self.path(blob.descriptor.digest), "wb") as dst:
                while chunk := src.read(1 << 16):
                    dst.write(chunk)

    def read(self, descriptor: Descriptor) -> bytes:
        with open(self.path(descriptor.digest), "rb") as f:
            return f.read()

    def stream(self, descriptors):
        """(descriptor, open stream) pairs, each stream closed once the exporter moves on."""
        for descriptor in descriptors:
            with open(self.path(descriptor.digest), "rb") as f:
                yield descriptor, f


def import_into(store: BlobStore, source, **plan_options) -> oci.ImportPlan:
    with oci.open_archive(source) as archive:
        plan = archive.plan(**plan_options)
        store.ingest(archive, plan)
    return plan


def export_from(store: BlobStore, images, dest, matcher=oci.platforms.ALL) -> Descriptor:
    """Export as phase B will: walk each image in the store, stream what the walk reaches."""
    reached = [b.descriptor for b in oci.walk([target for _, target in images], store.read, matcher)]
    return oci.write_archive(dest, images, store.stream(reached))


def digests(plan: oci.ImportPlan) -> list:
    return [(b.descriptor.media_type, b.descriptor.digest, b.descriptor.size, b.labels) for b in plan.blobs]


@pytest.fixture
def multi(tmp_path):
    layout = Layout(tmp_path / "layout")
    amd = layout.image([Layer().file("a", b"1").bytes(), Layer().file("b", b"2").whiteout("a").bytes()],
                       compression="zstd")
    arm = layout.image([Layer().file("c", b"3").bytes()], arch="arm64")
    nested = layout.index([amd, arm])
    single = layout.image([Layer().file("d", b"4").bytes()], compression="")
    layout.write_index([(nested, {NAME: "example.com/multi:1"}), (single.manifest, {NAME: "example.com/single:2"})])
    return layout


def test_round_trip_gives_identical_digests_and_labels(tmp_path, multi):
    store = BlobStore(tmp_path / "store")
    first = import_into(store, multi.root, all_platforms=True)
    images = [(ref.name, ref.target) for ref in first.images]
    index = export_from(store, images, tmp_path / "out.tar")
    second_store = BlobStore(tmp_path / "store2")
    second = import_into(second_store, tmp_path / "out.tar", all_platforms=True)
    assert digests(second) == digests(first)
    assert [(r.name, r.target.digest, r.target.size) for r in second.images] == [
        (r.name, r.target.digest, r.target.size) for r in first.images]
    with oci.open_archive(tmp_path / "out.tar") as archive:
        assert archive.index == index
    # and again: the same input writes the same bytes
    export_from(second_store, images, tmp_path / "again.tar")
    assert open(tmp_path / "out.tar", "rb").read() == open(tmp_path / "again.tar", "rb").read()


def test_index_json_names_every_image(tmp_path, multi):
    store = BlobStore(tmp_path / "store")
    plan = import_into(store, multi.root, all_platforms=True)
    target = plan.images[1].target
    images = [("example.com/single:2", target), ("docker.io/library/other:latest", target)]
    export_from(store, images, tmp_path / "out.tar")
    with tarfile.open(tmp_path / "out.tar") as tar:
        names = tar.getnames()
        index = json.load(tar.extractfile("index.json"))
        layout = json.load(tar.extractfile("oci-layout"))
        saved = json.load(tar.extractfile("manifest.json"))
    assert layout == {"imageLayoutVersion": "1.0.0"}
    assert names[:3] == ["oci-layout", "blobs", "blobs/sha256"] and names[-2:] == ["index.json", "manifest.json"]
    reached = [b.descriptor.digest for b in oci.walk([target], store.read)]
    assert sorted(names[3:-2]) == sorted(f"blobs/sha256/{d[7:]}" for d in reached)
    manifest = oci.parse_manifest(store.read(target), target.media_type, "manifest")
    assert saved == [{"Config": f"blobs/sha256/{manifest.config.digest[7:]}",
                      "RepoTags": ["example.com/single:2", "other:latest"],
                      "Layers": [f"blobs/sha256/{layer.digest[7:]}" for layer in manifest.layers]}]
    assert [(m["digest"], m["annotations"]) for m in index["manifests"]] == [
        (target.digest, {NAME: "example.com/single:2", REF: "2"}),
        (target.digest, {NAME: "docker.io/library/other:latest", REF: "latest"})]
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json" and index["schemaVersion"] == 2


def test_export_of_one_platform_of_an_index_imports_back(tmp_path, multi):
    store = BlobStore(tmp_path / "store")
    plan = import_into(store, multi.root, platform="linux/arm64")
    nested = plan.images[0]
    only_arm = oci.platforms.only_strict(oci.platforms.parse("linux/arm64"))
    export_from(store, [(nested.name, nested.target)], tmp_path / "arm.tar", only_arm)
    again = import_into(BlobStore(tmp_path / "store2"), tmp_path / "arm.tar", platform="linux/arm64")
    expected = [b.descriptor.digest for b in oci.walk([nested.target], store.read, only_arm)]
    assert [b.descriptor.digest for b in again.blobs] == expected
    assert len(expected) == 4  # the index, and the arm64 manifest, config and layer; no amd64 blob


def test_blob_streams_are_verified(tmp_path, multi):
    store = BlobStore(tmp_path / "store")
    plan = import_into(store, multi.root, all_platforms=True)
    name, target = plan.images[1].name, plan.images[1].target
    blobs = [b.descriptor for b in oci.walk([target], store.read)]
    layer = blobs[-1]
    dest = tmp_path / "out.tar"

    def stream(replace: bytes):
        for d in blobs:
            yield d, io.BytesIO(replace if d == layer else store.read(d))

    good = store.read(layer)
    for bad, message in [(good[:-1] + bytes([good[-1] ^ 1]), "digest mismatch"), (good[:-1], "truncated"),
                         (good + b"x", "larger than")]:
        with pytest.raises(InvalidArgument, match=f"exported layer {layer.digest}: .*{message}"):
            oci.write_archive(dest, [(name, target)], stream(bad))
        assert sorted(os.listdir(tmp_path)) == ["layout", "store"]  # no partial archive left behind


def test_export_refusals(tmp_path, multi):
    store = BlobStore(tmp_path / "store")
    plan = import_into(store, multi.root, all_platforms=True)
    ref = plan.images[1]
    blobs = [b.descriptor for b in oci.walk([ref.target], store.read)]
    dest = tmp_path / "out.tar"
    with pytest.raises(InvalidArgument, match="do not include the image target"):
        oci.write_archive(dest, [(ref.name, ref.target)], store.stream(blobs[1:]))
    with pytest.raises(InvalidArgument, match="nothing to export"):
        oci.write_archive(dest, [], store.stream(blobs))
    with pytest.raises(InvalidArgument, match="image name"):
        oci.write_archive(dest, [("", ref.target)], store.stream(blobs))
    config = plan.blobs[-1].descriptor
    with pytest.raises(InvalidArgument, match="only manifests and indexes can be exported"):
        oci.write_archive(dest, [("x/y:1", config)], store.stream(blobs))
    with pytest.raises(InvalidArgument, match="is not a directory"):
        oci.write_archive(tmp_path / "missing" / "out.tar", [(ref.name, ref.target)], store.stream(blobs))
    assert not dest.exists()


def test_export_to_a_file_object(tmp_path, multi):
    store = BlobStore(tmp_path / "store")
    plan = import_into(store, multi.root, all_platforms=True)
    ref = plan.images[1]
    out = io.BytesIO()
    index = export_from(store, [(ref.name, ref.target)], out)
    (tmp_path / "mem.tar").write_bytes(out.getvalue())
    with oci.open_archive(tmp_path / "mem.tar") as archive:
        assert archive.index == index
        assert [r.name for r in archive.plan().images] == ["example.com/single:2"]


def test_duplicate_blobs_are_written_once(tmp_path, multi):
    store = BlobStore(tmp_path / "store")
    plan = import_into(store, multi.root, all_platforms=True)
    ref = plan.images[1]
    blobs = [b.descriptor for b in oci.walk([ref.target], store.read)]
    oci.write_archive(tmp_path / "out.tar", [(ref.name, ref.target)], store.stream(blobs + blobs))
    with tarfile.open(tmp_path / "out.tar") as tar:
        names = tar.getnames()
    assert len(names) == len(set(names)) == 3 + len(blobs) + 2  # and index.json, manifest.json


@needs_umoci
@needs_skopeo
def test_skopeo_and_umoci_read_what_we_write(tmp_path):
    layout, tag = umoci_image(tmp_path / "build")
    store = BlobStore(tmp_path / "store")
    plan = import_into(store, layout, base_name="example.com/app")
    ref = next(r for r in plan.images if r.name == f"example.com/app:{tag}")
    out = tmp_path / "out.tar"
    export_from(store, [(ref.name, ref.target)], out)

    inspected = json.loads(run(SKOPEO, "inspect", f"oci-archive:{out}:{tag}"))
    assert inspected["Digest"] == ref.target.digest
    config = oci.parse_config(store.read(oci.parse_manifest(store.read(ref.target), ref.target.media_type,
                                                            "manifest").config), "config")
    assert len(inspected["Layers"]) == len(config.diff_ids) == 3

    copied = tmp_path / "copied"
    run(SKOPEO, "copy", "-q", f"oci-archive:{out}:{tag}", f"oci:{copied}:{tag}")
    listed = run(UMOCI, "ls", "--layout", str(copied)).split()
    assert tag in listed
    extracted = tmp_path / "extracted"
    with tarfile.open(out) as tar:
        tar.extractall(extracted)
    assert tag in run(UMOCI, "ls", "--layout", str(extracted)).split()
    rootless = [] if os.geteuid() == 0 else ["--rootless"]
    run(UMOCI, "unpack", *rootless, "--image", f"{extracted}:{tag}", str(tmp_path / "bundle"))
    assert (tmp_path / "bundle/rootfs/tmp/later-a-dir/inside").read_bytes() == b"now a directory\n"
    assert sha256(store.read(ref.target)) == ref.target.digest


def test_an_exported_archive_is_on_disk_before_it_replaces_the_path(tmp_path, multi):
    """A user may delete the images once their export returned: the archive's bytes are flushed
    before it is renamed to the path, and the rename is flushed before the export returns."""
    import re
    import subprocess
    import sys
    import textwrap

    from crashutil import strace

    store = BlobStore(tmp_path / "store")
    plan = import_into(store, multi.root, all_platforms=True)
    code = textwrap.dedent(f"""
        import sys
        sys.path[:0] = {[p for p in sys.path if p.endswith("tests")]!r}
        from cargohold.model import Descriptor
        from test_oci_export import BlobStore, export_from
        images = [(name, Descriptor(*target)) for name, target in {[(r.name, (r.target.media_type, r.target.digest, r.target.size)) for r in plan.images]!r}]
        export_from(BlobStore(sys.argv[1]), images, sys.argv[2])
    """)
    log = tmp_path / "trace"
    dest = tmp_path / "out.tar"
    proc = subprocess.run([strace(), "-f", "-qq", "-y", "-o", str(log), "-e", "trace=rename,renameat,renameat2,fsync",
                           sys.executable, "-c", code, str(tmp_path / "store"), str(dest)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = log.read_text().splitlines()
    rename = next(i for i, line in enumerate(lines) if re.search(r"\brename\w*\(", line) and f'"{dest}"' in line)
    assert any("fsync(" in line and f"{tmp_path}/.out.tar." in line for line in lines[:rename]), lines
    assert any("fsync(" in line and f"<{tmp_path}>" in line for line in lines[rename:]), lines
    with oci.open_archive(dest) as archive:
        assert archive.index
