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
from cliutil import fails, invoke
from conftest import run_python
from containerd_daemon import needs_containerd, parse_labels, start_daemon
from docker_fixtures import SavedArchive, sha256
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
    saved.image([base_layer()], ["good:1", "bad/Upper:1"])
    bad = saved.write(tmp_path / "bad.tar")
    with pytest.raises(AssertionError, match="repository name must be lowercase"):
        ctr_import(daemon, "names", bad, "--no-unpack")
    with pytest.raises(InvalidArgument, match=r"manifest.json\[0\]: RepoTags\[1\]: .*'bad/Upper:1'.* lower case"):
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


# -- bad archives: one line naming the archive and the entry, and no image -----------------------------------


def two_images(style: str = "legacy") -> SavedArchive:
    """A good first image and a second one the cases below break (so nothing half-imported is named)."""
    saved = SavedArchive(style)
    saved.image([base_layer()], ["example.com/good:1"])
    saved.image([base_layer(), app_layer(), Layer().file("gz", b"g").bytes()], ["example.com/bad:1"],
                compression=["", "", "gzip"])
    return saved


def _entry(saved: SavedArchive) -> dict:
    return saved.manifest[1]


def _set_config(saved: SavedArchive, change) -> None:
    config = json.loads(saved.files[_entry(saved)["Config"]])
    change(config)
    data = json.dumps(config).encode()
    del saved.files[_entry(saved)["Config"]]
    _entry(saved)["Config"] = f"{sha256(data)[7:]}.json"
    saved.files[_entry(saved)["Config"]] = data


def _bomb(saved: SavedArchive) -> None:
    bomb = gzip.compress(Layer().file("zeros", b"\0" * (4 << 20)).bytes())
    saved.files[_entry(saved)["Layers"][2]] = bomb
    _set_config(saved, lambda c: c["rootfs"]["diff_ids"].__setitem__(2, sha256(gzip.decompress(bomb))))


ZERO = "sha256:" + "0" * 64

BAD_CASES = {
    "missing layer": (lambda s: s.files.pop(_entry(s)["Layers"][1]),
                      r"manifest.json\[1\]: layer '[0-9a-f]{64}/layer.tar' is missing from the archive"),
    "missing config": (lambda s: s.files.pop(_entry(s)["Config"]),
                       r"manifest.json\[1\]: config '[0-9a-f]{64}.json' is missing from the archive"),
    "layer path escaping": (lambda s: _entry(s)["Layers"].__setitem__(1, "../../etc/passwd"),
                            r"manifest.json\[1\]: layer path '../../etc/passwd' escapes the archive"),
    "absolute layer path": (lambda s: _entry(s)["Layers"].__setitem__(1, "/etc/passwd"),
                            r"manifest.json\[1\]: layer path '/etc/passwd' escapes the archive"),
    "config path escaping": (lambda s: _entry(s).__setitem__("Config", "x/../../config.json"),
                             r"manifest.json\[1\]: config path 'x/../../config.json' escapes the archive"),
    "symlink to a symlink": (lambda s: s.links.update({"a": "b", "b": _entry(s)["Layers"][0]}) or
                             _entry(s)["Layers"].__setitem__(0, "a"),
                             r"manifest.json\[1\]: layer 'a' is a symlink to 'b', itself a symlink"),
    "not a list": (lambda s: setattr(s, "manifest", {"Config": "x"}), r"manifest.json is not a JSON list"),
    "empty list": (lambda s: s.manifest.clear(), r"manifest.json lists no image"),
    "not objects": (lambda s: s.manifest.__setitem__(1, ["Config"]), r"manifest.json\[1\] is not a JSON object"),
    "layers not a list": (lambda s: _entry(s).__setitem__("Layers", "a/layer.tar"),
                          r"manifest.json\[1\]: Layers must be a list of strings"),
    "no config": (lambda s: _entry(s).pop("Config"), r"manifest.json\[1\]: Config must be a non-empty string"),
    "bad RepoTag": (lambda s: _entry(s)["RepoTags"].append("UPPER:1"),
                    r"manifest.json\[1\]: RepoTags\[1\]: invalid image reference 'UPPER:1'"),
    "diff ID mismatch": (lambda s: _set_config(s, lambda c: c["rootfs"]["diff_ids"].__setitem__(1, ZERO)),
                         r"manifest.json\[1\]: layer '[0-9a-f]{64}/layer.tar' has diff ID sha256:[0-9a-f]{64}, but its "
                         r"config '[0-9a-f]{64}.json' lists sha256:0{64} for layer 1"),
    "diff ID count": (lambda s: _set_config(s, lambda c: c["rootfs"]["diff_ids"].pop()),
                      r"manifest.json\[1\] lists 3 layers but its config '[0-9a-f]{64}.json' has 2 diff IDs"),
    "config not JSON": (lambda s: s.files.__setitem__(_entry(s)["Config"], b"{not json"),
                        r"manifest.json\[1\]: config '[0-9a-f]{64}.json' is not valid JSON"),
    "config without rootfs": (lambda s: _set_config(s, lambda c: c.pop("rootfs")),
                              r"manifest.json\[1\]: config '[0-9a-f]{64}.json': the config has no rootfs"),
    "corrupt gzip layer": (lambda s: s.files.__setitem__(_entry(s)["Layers"][2], b"\x1f\x8b\x08" + b"junk" * 9),
                           r"manifest.json\[1\]: layer '[0-9a-f]{64}/layer.tar': corrupt gzip data"),
    "layer expanding past the limit": (_bomb, r"manifest.json\[1\]: layer '[0-9a-f]{64}/layer.tar': its uncompressed "
                                              r"content takes it past the uncompressed size limit of 1048576 bytes"),
    "foreign platform": (lambda s: _set_config(s, lambda c: c.update(architecture="s390x")) or
                         s.manifest.pop(0), r"no manifest in manifest.json matches platform"),
}


TAR_ONLY = {"symlink to a symlink"}  # a directory's symlinks are the filesystem's to follow


@pytest.mark.parametrize("case,form", [(case, form) for case in sorted(BAD_CASES) for form in ("tar", "dir")
                                       if form == "tar" or case not in TAR_ONLY])
def test_a_bad_saved_archive_fails_clearly_and_leaves_no_image(tmp_path, db, ns, case, form):
    from test_import_export import assert_leaves_no_trace

    saved = two_images()
    mutate, message = BAD_CASES[case]
    mutate(saved)
    path = saved.write_dir(tmp_path / "saved") if form == "dir" else saved.write(tmp_path / "saved.tar")
    error = NotFound if case == "foreign platform" else InvalidArgument
    with pytest.raises(error, match=rf"^image archive {path}: {message}") as caught:
        transfer.import_archive(ns, path, unpack=True, max_layer_size=1 << 20)
    assert "\n" not in str(caught.value)
    assert_leaves_no_trace(db, ns)


def test_a_symlink_leading_out_of_the_archive_is_refused(tmp_path, db, ns):
    saved = two_images()
    saved.links["escape/layer.tar"] = "../../../etc/passwd"
    _entry(saved)["Layers"][0] = "escape/layer.tar"
    path = saved.write(tmp_path / "saved.tar")
    with pytest.raises(InvalidArgument, match=rf"image archive {path}: member 'escape/layer.tar' links to "
                                              r"'../../../etc/passwd', which escapes the archive"):
        transfer.import_archive(ns, path)
    directory = tmp_path / "dir"
    saved.write_dir(directory)
    with pytest.raises(InvalidArgument, match=rf"image archive {directory}: manifest.json\[1\]: layer "
                                              r"'escape/layer.tar': escape/layer.tar points outside"):
        transfer.import_archive(ns, directory)
    assert ns.images.list() == []


@pytest.mark.parametrize("what", ["manifest.json", "layer", "config"])
def test_a_fifo_in_a_saved_directory_is_refused_without_waiting_on_it(tmp_path, what):
    saved = two_images()
    directory = tmp_path / "saved"
    saved.write_dir(directory)
    name = {"manifest.json": "manifest.json", "layer": _entry(saved)["Layers"][1],
            "config": _entry(saved)["Config"]}[what]
    os.unlink(directory / name)
    os.mkfifo(directory / name)
    out = run_python(f"""
        import cargohold
        from cargohold import transfer
        with cargohold.open({str(tmp_path / 'root')!r}) as db:
            try:
                transfer.import_archive(db.namespace("default"), {str(directory)!r})
            except Exception as exc:
                print(type(exc).__name__, exc)
    """, timeout=60).stdout
    assert out.startswith(f"InvalidArgument image archive {directory}") and "is not a regular file" in out, out


def test_a_huge_or_deeply_nested_manifest_json_is_refused_unread(tmp_path, ns):
    directory = tmp_path / "huge"
    two_images().write_dir(directory)
    with open(directory / "manifest.json", "r+b") as f:
        f.truncate(17 << 20)  # a hole: nothing read, nothing held
    with pytest.raises(InvalidArgument, match=rf"image archive {directory}: manifest.json is {17 << 20} bytes, "
                                              rf"larger than {16 << 20}"):
        transfer.import_archive(ns, directory)
    deep = tmp_path / "deep"
    two_images().write_dir(deep)
    (deep / "manifest.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(InvalidArgument, match=rf"image archive {deep}: manifest.json nests arrays and objects "
                                              "deeper than 100 levels"):
        transfer.import_archive(ns, deep)
    assert ns.images.list() == []


def test_a_compressed_archive_is_bounded_and_checked(tmp_path, ns):
    data = two_images().tar_bytes()
    bounded = tmp_path / "bounded.tar.gz"
    bounded.write_bytes(gzip.compress(data))
    with pytest.raises(InvalidArgument, match=rf"image archive {bounded}: its uncompressed content takes it past "
                                              r"the uncompressed size limit of 1024 bytes"):
        transfer.import_archive(ns, bounded, max_layer_size=1024)
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(gzip.compress(data)[:-100])
    with pytest.raises(InvalidArgument, match=rf"image archive {truncated}: corrupt gzip data"):
        transfer.import_archive(ns, truncated)
    assert ns.images.list() == []
    assert [i.name for i in transfer.import_archive(ns, bounded)] == ["example.com/good:1", "example.com/bad:1"]


def test_the_command_line_prints_one_line_naming_the_archive(tmp_path):
    saved = two_images()
    saved.files.pop(_entry(saved)["Layers"][1])
    path = saved.write(tmp_path / "saved.tar")
    line = fails(tmp_path / "cli", "images", "import", path)
    assert line.startswith(f"cargohold: InvalidArgument: image archive {path}: manifest.json[1]: layer ")
    assert invoke(tmp_path / "cli", "images", "ls", "-q").stdout == ""


# -- the pieces: Go's JSON bytes, Docker references, format detection -----------------------------------------

GO_MARSHAL = r'''
package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
)

func main() {
	var values []interface{}
	if err := json.NewDecoder(os.Stdin).Decode(&values); err != nil {
		panic(err)
	}
	for _, value := range values {
		out, err := json.Marshal(value)
		if err != nil {
			panic(err)
		}
		fmt.Println(hex.EncodeToString(out))
	}
}
'''

TRICKY_JSON = (r'["plain", "<script>&amp;</script>", "\u2028 and \u2029", "\u0000\u0001\u001f\u007f", '
               r'"\t\n\r\b\f", "quote \" backslash \\ slash /", "é 😀 ünïcødé", "lone \ud800 surrogate", '
               r'"", [], {}, null, true, false, 0, 12, -7, ["nested", ["deeper", {"b": 1, "a": "<"}]], '
               r'{"z": null, "A": [1, "two"], "é": "x", "a": {"k": "&"}}]')


def _go_order(value):
    if isinstance(value, dict):
        return gojson.go_map({key: _go_order(item) for key, item in value.items()})
    if isinstance(value, list):
        return [_go_order(item) for item in value]
    return value


def test_json_bytes_are_gos(tmp_path):
    go = shutil.which("go")
    if go is None:
        pytest.skip("no `go` on PATH (apt-get install golang-go)")
    (tmp_path / "main.go").write_text(GO_MARSHAL)
    env = dict(os.environ, GO111MODULE="off", GOPATH=str(tmp_path / "gopath"), GOCACHE=str(tmp_path / "cache"),
               GOFLAGS="")
    proc = subprocess.run([go, "run", "main.go"], cwd=tmp_path, env=env, input=TRICKY_JSON, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    theirs = [bytes.fromhex(line) for line in proc.stdout.split()]
    ours = [gojson.marshal(_go_order(value)) for value in json.loads(TRICKY_JSON)]
    assert ours == theirs
    assert b"\\u003cscript\\u003e\\u0026" in ours[1] and ours[7] == '"lone \ufffd surrogate"'.encode()


@pytest.mark.parametrize("written,normalized,familiar", [
    ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
    ("library/busybox:1", "docker.io/library/busybox:1", "busybox:1"),
    ("docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("index.docker.io/user/app:2", "docker.io/user/app:2", "user/app:2"),
    ("docker.io/library/a/b:3", "docker.io/library/a/b:3", "library/a/b:3"),
    ("user/app", "docker.io/user/app:latest", "user/app:latest"),
    ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
    ("localhost:5000/team/app:v1.2_x-y", "localhost:5000/team/app:v1.2_x-y", "localhost:5000/team/app:v1.2_x-y"),
    ("Example.COM/app:1", "Example.COM/app:1", "Example.COM/app:1"),
    ("Registry/app", "Registry/app:latest", "Registry/app:latest"),  # containerd 1.7's rule: upper case is a host
    ("[::1]:5000/app:2", "[::1]:5000/app:2", "[::1]:5000/app:2"),
    ("example.com/a__b/c-d.e:T", "example.com/a__b/c-d.e:T", "example.com/a__b/c-d.e:T"),
    ("app:1@sha256:" + "a" * 64, "docker.io/library/app@sha256:" + "a" * 64, "app@sha256:" + "a" * 64),
    ("example.com/app@sha256:" + "b" * 64, "example.com/app@sha256:" + "b" * 64, "example.com/app@sha256:" + "b" * 64),
])
def test_references_normalise_and_familiarise_as_containerds(written, normalized, familiar):
    assert reference.normalize(written) == normalized
    assert reference.familiar(normalized) == familiar
    assert reference.normalize(familiar) == normalized


@pytest.mark.parametrize("bad,match", [
    ("", "must not be empty"), ("a" * 64, "image ID"), ("host/Upper", "lower case"), ("Upper", "lower case"),
    ("app:", "expected"), ("[::1/app", "expected"),
    ("app:-x", "expected"), ("-app", "expected"), ("a//b", "expected"), ("example.com/" + "a" * 250, "longer than 255"),
    ("app@sha256:abc", "expected"), ("app@md5:" + "0" * 32, "unsupported algorithm"), (7, "must be a string"),
])
def test_bad_references(bad, match):
    with pytest.raises(InvalidArgument, match=match):
        reference.normalize(bad)


def test_an_oci_layout_without_a_version_beside_manifest_json_is_read_as_docker_save(tmp_path, ns):
    """containerd's rule: only an oci-layout naming a version makes an OCI layout."""
    saved = two_images()
    saved.files["oci-layout"] = b"{}"
    path = saved.write(tmp_path / "saved.tar")
    with cargohold.oci.open_archive(path) as archive:
        assert archive.format == "docker" and archive.index is None
        plan = archive.plan()
        assert archive.index == plan.index.descriptor and [ref.name for ref in plan.images] == [
            "example.com/good:1", "example.com/bad:1"]
    saved.files["oci-layout"] = b'{"imageLayoutVersion": "1.0.0"}'
    with pytest.raises(InvalidArgument, match="not an OCI image layout: index.json is missing"):
        cargohold.oci.open_archive(saved.write(tmp_path / "versioned.tar"))


def test_a_layer_the_store_holds_compressed_is_that_blob_and_unpacks_from_it(tmp_path, db, ns):
    layer = base_layer()
    write_image(tmp_path / "gz.tar", "example.com/gz:1", [(layer, "gzip")])
    (gz,) = transfer.import_archive(ns, tmp_path / "gz.tar", unpack=True)
    stored = [info for info in ns.content.walk() if info.labels.get(UNCOMPRESSED) == sha256(layer)]
    assert len(stored) == 1
    saved = SavedArchive("legacy")
    saved.image([layer], ["example.com/plain:1"])
    (plain,) = transfer.import_archive(ns, saved.write(tmp_path / "saved.tar"), unpack=True)
    manifest = json.loads(ns.content.read(plain.target.digest))
    assert manifest["layers"] == [{"mediaType": TAR_GZIP, "digest": stored[0].digest, "size": stored[0].size}]
    db.garbage_collect()
    assert sha256(layer) not in {info.digest for info in ns.content.walk()}  # the archive's copy was not needed
    assert transfer.unpack_image(ns, plain.name) == transfer.unpack_image(ns, gz.name)


# -- export: manifest.json beside index.json -------------------------------------------------------------------


def _members(path) -> dict:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() if m.isfile() else None for m in tar.getmembers()}


def _manifest(ns, digest: str) -> dict:
    return json.loads(ns.content.read(digest))


def multi_platform(tmp_path, ns, platforms=("amd64", "arm64")) -> str:
    """An index image (one manifest per architecture, gzip layers) imported for all platforms; its name."""
    layout = Layout(tmp_path / "multi")
    built = [layout.image([base_layer(), app_layer(i)], arch=arch) for i, arch in enumerate(platforms)]
    layout.write_index([(layout.index(built), {NAME: "example.com/multi:1"})])
    transfer.import_archive(ns, layout.root, all_platforms=True)
    return "example.com/multi:1"


def test_export_writes_manifest_json_for_docker_and_oci_only_leaves_it_out(tmp_path, ns):
    saved, _ = rich_archive("legacy")
    transfer.import_archive(ns, saved.write(tmp_path / "saved.tar"))
    multi = multi_platform(tmp_path, ns)
    names = ["example.com/team/app:1.0", "docker.io/user/tool:2", multi, "docker.io/library/busybox:latest"]
    digests = {name: ns.images.get(name).target.digest for name in names}
    index = _manifest(ns, digests[multi])
    host = next(m["digest"] for m in index["manifests"] if m["platform"]["architecture"] == "amd64")
    transfer.export_image(ns, names, tmp_path / "out.tar", all_platforms=True)
    members = _members(tmp_path / "out.tar")
    expected = []
    for digest, tags in [(digests[names[0]], ["example.com/team/app:1.0"]),
                         (digests[names[1]], ["user/tool:2", "busybox:latest"]), (host, ["example.com/multi:1"])]:
        manifest = _manifest(ns, digest)
        expected.append({"Config": "blobs/sha256/" + manifest["config"]["digest"][7:], "RepoTags": tags,
                         "Layers": ["blobs/sha256/" + layer["digest"][7:] for layer in manifest["layers"]]})
    assert json.loads(members["manifest.json"]) == expected
    assert list(members)[-2:] == ["index.json", "manifest.json"]

    transfer.export_image(ns, names, tmp_path / "oci-only.tar", all_platforms=True, oci_only=True)
    oci_only = _members(tmp_path / "oci-only.tar")
    assert "manifest.json" not in oci_only and oci_only == {k: v for k, v in members.items() if k != "manifest.json"}
    invoke(tmp_path / "cli", "images", "import", tmp_path / "out.tar", "--all-platforms")
    invoke(tmp_path / "cli", "images", "export", *names[:2], tmp_path / "cli.tar", "--oci-only")
    assert "manifest.json" not in _members(tmp_path / "cli.tar")
    invoke(tmp_path / "cli", "images", "export", *names[:2], tmp_path / "cli-docker.tar")
    assert json.loads(_members(tmp_path / "cli-docker.tar")["manifest.json"]) == [
        expected[0], {**expected[1], "RepoTags": ["user/tool:2"]}]


def test_manifest_json_leaves_out_what_docker_cannot_load(tmp_path, ns):
    """An index without a manifest for the platform, and names that are no tagged reference."""
    multi = multi_platform(tmp_path, ns, platforms=("s390x", "ppc64le"))
    target = ns.images.get(multi).target
    ns.images.create(cargohold.Image("example.com/pinned@sha256:" + "c" * 64, target))
    transfer.export_image(ns, [multi, "example.com/pinned@sha256:" + "c" * 64], tmp_path / "none.tar",
                          all_platforms=True)
    assert "manifest.json" not in _members(tmp_path / "none.tar")
    saved = SavedArchive("blobs")
    saved.image([base_layer()], ["example.com/app:1"])
    (image,) = transfer.import_archive(ns, saved.write(tmp_path / "saved.tar"))
    for name in ("Not A Reference", "example.com/app@sha256:" + "d" * 64):
        ns.images.create(cargohold.Image(name, image.target))
    transfer.export_image(ns, ["Not A Reference", image.name, "example.com/app@sha256:" + "d" * 64],
                          tmp_path / "some.tar")
    (entry,) = json.loads(_members(tmp_path / "some.tar")["manifest.json"])
    assert entry["RepoTags"] == ["example.com/app:1"]


def test_an_export_reads_back_as_a_docker_save_archive(tmp_path, db, ns):
    """Without oci-layout and index.json, an export is a docker save archive of blobs/sha256 paths."""
    saved, _ = rich_archive("legacy")
    transfer.import_archive(ns, saved.write(tmp_path / "saved.tar"), unpack=True)
    names = ["example.com/team/app:1.0", "docker.io/library/busybox:latest"]
    transfer.export_image(ns, names, tmp_path / "out.tar")
    with tarfile.open(tmp_path / "out.tar") as src, tarfile.open(tmp_path / "docker.tar", "w") as dst:
        for member in src.getmembers():
            if member.name not in ("oci-layout", "index.json"):
                dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    with cargohold.open(tmp_path / "second") as second:
        again = second.namespace("default")
        back = transfer.import_archive(again, tmp_path / "docker.tar", unpack=True)
        assert {image.name: image.target.digest for image in back} == {
            name: ns.images.get(name).target.digest for name in names}  # docker manifests: made again alike
        assert {i.name for i in again.snapshotter("native").walk()} == {
            i.name for i in ns.snapshotter("native").walk()}


@needs_skopeo
def test_skopeo_reads_an_export_as_a_docker_archive(tmp_path, ns):
    saved, _ = rich_archive("legacy")
    transfer.import_archive(ns, saved.write(tmp_path / "saved.tar"))
    multi = multi_platform(tmp_path, ns)
    names = ["example.com/team/app:1.0", "docker.io/user/tool:2", multi]
    out = tmp_path / "out.tar"
    transfer.export_image(ns, names, out)
    for i, name in enumerate(names):
        manifest = _manifest(ns, ns.images.get(name).target.digest)
        if "manifests" in manifest:  # the index: skopeo reads the host's manifest, which manifest.json lists
            manifest = _manifest(ns, next(m["digest"] for m in manifest["manifests"]
                                          if m["platform"]["architecture"] == "amd64"))
        familiar = reference.familiar(name)
        raw = json.loads(run(SKOPEO, "inspect", "--raw", f"docker-archive:{out}:{familiar}"))
        assert raw["config"]["digest"] == manifest["config"]["digest"]
        diff_ids = json.loads(ns.content.read(manifest["config"]["digest"]))["rootfs"]["diff_ids"]
        assert [layer["digest"] for layer in raw["layers"]] == diff_ids  # skopeo names layers by diff ID
        config = json.loads(run(SKOPEO, "inspect", "--config", f"docker-archive:{out}:@{i}"))
        assert config["rootfs"]["diff_ids"] == diff_ids
        run(SKOPEO, "copy", "-q", f"docker-archive:{out}:{familiar}", f"oci:{tmp_path / 'copied'}:{i}")
    with cargohold.open(tmp_path / "copies") as copies:
        copied = transfer.import_archive(copies.namespace("default"), tmp_path / "copied", base_name="copy",
                                         unpack=True)
        assert [image.name for image in copied] == ["copy:0", "copy:1", "copy:2"]


def test_a_saved_archive_without_tags_needs_an_index_name(tmp_path, ns):
    saved = SavedArchive("legacy")
    saved.image([base_layer()], [])
    path = saved.write(tmp_path / "untagged.tar")
    with pytest.raises(InvalidArgument, match=rf"image archive {path}: no image in manifest.json has RepoTags; "
                                              "name the whole index with --index-name NAME"):
        transfer.import_archive(ns, path)
    assert ns.images.list() == [] and list(ns.content.walk()) == []
    (index,) = transfer.import_archive(ns, path, index_name="example.com/untagged:1")
    assert index.target.media_type == "application/vnd.oci.image.index.v1+json"
