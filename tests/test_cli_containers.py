"""`cargohold containers ...`: create (unpacking the image if needed), ls, rm."""

from __future__ import annotations

import os

from cliutil import IMAGE, fails, image_archive, invoke, parsed, rows


def test_container_lifecycle(tmp_path):
    root = tmp_path / "r"
    archive, _ = image_archive(tmp_path)
    invoke(root, "images", "import", archive)  # not unpacked: create does it
    assert invoke(root, "containers", "create", IMAGE, "web", "--label", "app=web").stdout == "web\n"
    (container,) = parsed(invoke(root, "containers", "ls", "--json"))
    assert container["id"] == "web" and container["image"] == IMAGE and container["labels"] == {"app": "web"}
    assert (container["snapshotter"], container["snapshot_key"]) == ("native", "web")
    assert container["runtime"]["name"] == "io.containerd.runc.v2"
    assert rows(invoke(root, "containers", "ls")) == [
        ["ID", "IMAGE", "RUNTIME", "SNAPSHOTTER", "SNAPSHOT", "LABELS"],
        ["web", IMAGE, "io.containerd.runc.v2", "native", "web", "app=web"]]

    snaps = {s["name"]: s for s in parsed(invoke(root, "snapshots", "ls", "--json"))}
    assert snaps["web"]["kind"] == "active" and snaps[snaps["web"]["parent"]]["kind"] == "committed"
    (mount,) = parsed(invoke(root, "snapshots", "mounts", "web", "--json"))
    rootfs = mount["source"]
    assert open(os.path.join(rootfs, "etc/motd")).read() == "two\n" and not os.path.exists(os.path.join(rootfs, "usr/doc"))
    assert os.stat(os.path.join(rootfs, "bin/tool")).st_ino == os.stat(os.path.join(rootfs, "bin/tool2")).st_ino

    spec = tmp_path / "spec.json"
    spec.write_bytes(b'{"ociVersion": "1.1.0"}')
    invoke(root, "containers", "create", IMAGE, "keep", "--spec", spec)
    assert "AlreadyExists" in fails(root, "containers", "create", IMAGE, "web")
    assert "NotFound" in fails(root, "containers", "create", "no-such-image", "other")
    assert "InvalidArgument" in fails(root, "containers", "create", IMAGE, "bad id")
    assert "NotFound" in fails(root, "containers", "create", IMAGE, "other", "--snapshotter", "zfs")
    assert sorted(c["id"] for c in parsed(invoke(root, "containers", "ls", "--json"))) == ["keep", "web"]

    assert "NotFound" in fails(root, "containers", "rm", "web", "missing")  # all or none
    assert invoke(root, "containers", "rm", "web").stdout == "web\n"
    assert invoke(root, "containers", "rm", "--keep-snapshot", "keep").stdout == "keep\n"
    assert parsed(invoke(root, "containers", "ls", "--json")) == []
    keys = {s["name"] for s in parsed(invoke(root, "snapshots", "ls", "--json"))}
    assert "web" not in keys and "keep" in keys
