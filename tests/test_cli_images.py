"""`cargohold images ...`: import (with unpack), export, ls, label, rm, through the command line."""

from __future__ import annotations

import os
import tarfile
from datetime import datetime, timezone

import pytest
from cliutil import IMAGE, fails, image_archive, invoke, parsed, rows
from oci_fixtures import SKOPEO, Layer, Layout, needs_skopeo, run, tar_layout

import cargohold
from cargohold.cli.output import human_size
from cargohold.oci import naming


def test_import_prints_the_images_and_stores_them(tmp_path):
    archive, image = image_archive(tmp_path)
    out = invoke(tmp_path / "r", "images", "import", archive)
    assert rows(out) == [["NAME", "DIGEST"], [IMAGE, image.manifest.digest]]
    listing = parsed(invoke(tmp_path / "r", "images", "ls", "--json"))
    assert [(i["name"], i["target"]["digest"], i["target"]["media_type"]) for i in listing] == [
        (IMAGE, image.manifest.digest, image.manifest.media_type)]
    assert listing[0]["size"] == image.manifest.size + image.config.size + sum(d.size for d in image.layers)
    assert parsed(invoke(tmp_path / "r", "leases", "ls", "--json")) == []
    table = rows(invoke(tmp_path / "r", "images", "ls"))
    assert table == [["NAME", "TYPE", "DIGEST", "SIZE", "PLATFORMS", "LABELS"],
                     [IMAGE, image.manifest.media_type, image.manifest.digest, *human_size(listing[0]["size"]).split(),
                      "linux/amd64", "-"]]
    assert listing[0]["platforms"] == ["linux/amd64"]
    assert invoke(tmp_path / "r", "images", "ls", "-q").stdout == f"{IMAGE}\n"


def test_import_json_and_base_name(tmp_path):
    layout = Layout(tmp_path / "layout")
    image = layout.image([Layer().file("a", b"1").bytes()])
    layout.write_index([(image.manifest, {"org.opencontainers.image.ref.name": "2.0"})])
    days = {naming.default_base_name(datetime.now(timezone.utc))}
    dated = parsed(invoke(tmp_path / "r", "images", "import", layout.root, "--json"))
    days.add(naming.default_base_name(datetime.now(timezone.utc)))  # in case midnight passed meanwhile
    assert [i["name"] for i in dated] in [[f"{day}:2.0"] for day in days]
    created = parsed(invoke(tmp_path / "r", "images", "import", layout.root, "--base-name", "example.com/x", "--json"))
    assert [(i["name"], i["target"]["digest"]) for i in created] == [("example.com/x:2.0", image.manifest.digest)]
    assert created[0]["created_at"].endswith("+00:00")
    layout.write_index([(image.manifest, None)])
    assert "--index-name NAME" in fails(tmp_path / "r", "images", "import", layout.root)


@pytest.mark.parametrize("snapshotter", ["native", "overlayfs", "overlay"])
def test_import_unpack_into_a_snapshotter(tmp_path, snapshotter):
    archive, image = image_archive(tmp_path)
    invoke(tmp_path / "r", "images", "import", "--unpack", "--snapshotter", snapshotter, archive)
    snaps = parsed(invoke(tmp_path / "r", "snapshots", "--snapshotter", snapshotter, "ls", "--json"))
    assert len(snaps) == 2 and all(s["kind"] == "committed" for s in snaps)
    top = next(s for s in snaps if s["parent"])
    config = parsed(invoke(tmp_path / "r", "content", "ls", "--json", f"digest=={image.config.digest}"))
    canonical = "overlayfs" if snapshotter == "overlay" else snapshotter  # the alias labels containerd's name
    assert config[0]["labels"] == {f"containerd.io/gc.ref.snapshot.{canonical}": top["name"]}


def test_a_bad_archive_is_one_line_and_leaves_no_image(tmp_path):
    archive, image = image_archive(tmp_path)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    layout = tmp_path / "image.tar.layout"
    blob = layout / "blobs" / "sha256" / image.layers[1].digest.partition(":")[2]
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))
    bad = tar_layout(layout, tmp_path / "bad.tar")
    message = fails(tmp_path / "r", "images", "import", "--unpack", bad)
    assert "InvalidArgument" in message and image.layers[1].digest in message and "digest mismatch" in message
    assert parsed(invoke(tmp_path / "r", "images", "ls", "--json")) == []
    assert parsed(invoke(tmp_path / "r", "leases", "ls", "--json")) == []
    removed = parsed(invoke(tmp_path / "r", "gc", "--json"))["removed"]
    assert {n["key"] for n in removed} == {image.manifest.digest, image.config.digest, image.layers[0].digest}
    assert parsed(invoke(tmp_path / "r", "content", "ls", "--json")) == [] and len(names) > 3
    assert "NotFound" in fails(tmp_path / "r", "images", "import", tmp_path / "nothing-here")
    assert "snapshotter" in fails(tmp_path / "r", "images", "import", "--unpack", "--snapshotter", "zfs", archive)
    assert "platform" in fails(tmp_path / "r", "images", "import", "--platform", "linux/s390x/x/y", archive)


def test_export_round_trip_and_stdout(tmp_path):
    archive, image = image_archive(tmp_path)
    first, second = tmp_path / "first", tmp_path / "second"
    invoke(first, "images", "import", archive)
    out = tmp_path / "out.tar"
    assert invoke(first, "images", "export", IMAGE, out).stdout == f"exported {IMAGE} to {out}\n"
    invoke(second, "images", "import", out)
    def everything(root):
        return (parsed(invoke(root, "content", "ls", "--json")), [
            (i["name"], i["target"]["digest"]) for i in parsed(invoke(root, "images", "ls", "--json"))])
    assert [(c["digest"], c["size"], c["labels"]) for c in everything(second)[0]] == [
        (c["digest"], c["size"], c["labels"]) for c in everything(first)[0]]
    assert everything(second)[1] == everything(first)[1] == [(IMAGE, image.manifest.digest)]
    piped = invoke(first, "images", "export", IMAGE, "-")
    assert piped.stdout_bytes == out.read_bytes()
    assert "NotFound" in fails(first, "images", "export", "nope", tmp_path / "nope.tar")
    assert not (tmp_path / "nope.tar").exists()
    assert "Missing argument" in invoke(first, "images", "export", out, ok=False).stderr
    invoke(first, "content", "rm", image.layers[0].digest)
    broken = invoke(first, "images", "export", IMAGE, "-", ok=False)
    assert broken.exit_code == 1 and image.layers[0].digest in broken.stderr and broken.stdout_bytes == b""


@needs_skopeo
def test_skopeo_reads_an_export(tmp_path):
    archive, image = image_archive(tmp_path)
    invoke(tmp_path / "r", "images", "import", archive)
    invoke(tmp_path / "r", "images", "export", IMAGE, tmp_path / "out.tar")
    assert f'"Digest": "{image.manifest.digest}"' in run(SKOPEO, "inspect", f"oci-archive:{tmp_path / 'out.tar'}")


def test_label_and_rm(tmp_path):
    archive, _ = image_archive(tmp_path)
    root = tmp_path / "r"
    invoke(root, "images", "import", archive, "--index-name", "example.com/all:1")
    assert invoke(root, "images", "label", IMAGE, "a=1", "b=2").stdout == "a=1,b=2\n"
    assert parsed(invoke(root, "images", "label", IMAGE, "a=", "--json")) == {"b": "2"}
    assert [i["name"] for i in parsed(invoke(root, "images", "ls", "--json", "labels.b==2"))] == [IMAGE]
    assert "KEY=VALUE" in fails(root, "images", "label", IMAGE, "oops")
    assert "NotFound" in fails(root, "images", "rm", IMAGE, "missing")  # all or none
    assert len(parsed(invoke(root, "images", "ls", "--json"))) == 2
    assert invoke(root, "images", "rm", "--sync", IMAGE, "example.com/all:1").stdout.split() == [
        IMAGE, "example.com/all:1"]
    assert parsed(invoke(root, "images", "ls", "--json")) == []
    assert parsed(invoke(root, "content", "ls", "--json")) == []  # --sync collected it
    with cargohold.open(root) as db:
        assert list(db.content_store.walk()) == []


def test_a_progress_bar_per_blob_at_a_terminal_only(tmp_path):
    """Run in a pseudo-terminal: the bars appear; through a pipe, only the table."""
    import pty
    import subprocess
    import sys

    archive, image = image_archive(tmp_path)
    piped = invoke(tmp_path / "piped", "images", "import", "--unpack", archive)
    assert len(piped.stdout.splitlines()) == 2
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    if env.get("CARGOHOLD_METADATA"):  # a root of its own: a second host on the same prefix would share it
        env["CARGOHOLD_METADATA"] += "-tty"
    proc = subprocess.Popen([sys.executable, "-m", "cargohold.cli.main", "--root", str(tmp_path / "tty"),
                             "images", "import", "--unpack", archive],
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
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    os.close(leader)
    text = output.decode("utf-8", "replace")
    for verb, descriptor in [("storing", image.manifest), ("storing", image.config), ("storing", image.layers[0]),
                             ("unpacking", image.layers[1])]:
        assert f"{verb} " in text and descriptor.digest[:19] in text
    assert image.manifest.digest in text  # and the table after the bars
