"""`cargohold snapshots ...`: prepare, view, commit, ls, tree, usage, mounts, label, rm."""

from __future__ import annotations

import os

import pytest
from cliutil import fails, invoke, parsed, rows


@pytest.mark.parametrize("snapshotter", ["native", "overlay"])
def test_snapshot_lifecycle(tmp_path, snapshotter):
    root = tmp_path / "r"

    def sn(*args, **kw):
        return invoke(root, "snapshots", "--snapshotter", snapshotter, *args, **kw)

    mounts = parsed(sn("prepare", "work", "--label", "a=1", "--json"))
    assert len(mounts) == 1 and mounts[0]["type"] == "bind" and mounts[0]["options"] == ["rw", "rbind"]
    with open(os.path.join(mounts[0]["source"], "hello"), "w") as f:
        f.write("hello")
    assert sn("commit", "base", "work", "--label", "layer=1").stdout == "base\n"
    table = rows(sn("prepare", "child", "base"))
    assert table[0] == ["TYPE", "SOURCE", "OPTIONS"] and len(table) == 2
    view = parsed(sn("view", "look", "base", "--json"))
    assert "ro" in view[0]["options"] or view[0]["type"] == "overlay"
    assert sorted(os.listdir(view[0]["source"])) == ["hello"]

    listing = {s["name"]: s for s in parsed(sn("ls", "--json"))}
    assert {k: (s["parent"], s["kind"], s["labels"]) for k, s in listing.items()} == {
        "base": ("", "committed", {"layer": "1"}), "child": ("base", "active", {}), "look": ("base", "view", {})}
    assert rows(sn("ls", "kind==active")) == [["KEY", "PARENT", "KIND", "LABELS"], ["child", "base", "active", "-"]]
    assert sn("tree").stdout == "base (committed)\n\\_ child (active)\n\\_ look (view)\n"

    usage = {u["key"]: u for u in parsed(sn("usage", "--json"))}
    assert set(usage) == {"base", "child", "look"} and usage["base"]["size"] >= 5 and usage["base"]["inodes"] >= 1
    assert rows(sn("usage", "base"))[1][:1] == ["base"]

    assert rows(sn("mounts", "child")) == table  # the mounts prepare returned
    (mount,) = parsed(sn("mounts", "child", "--json"))
    assert sn("mounts", "child", "/mnt/target").stdout == (
        f"mount -t {mount['type']} {mount['source']} /mnt/target -o {','.join(mount['options'])}\n")

    assert sn("label", "base", "x=2", "layer=").stdout == "x=2\n"
    assert parsed(sn("label", "base", "y=3", "--json")) == {"x": "2", "y": "3"}

    assert "FailedPrecondition" in fails(root, "snapshots", "--snapshotter", snapshotter, "rm", "base")
    assert "NotFound" in fails(root, "snapshots", "--snapshotter", snapshotter, "rm", "child", "missing")
    assert len(parsed(sn("ls", "--json"))) == 3  # all or none
    assert sn("rm", "child", "look", "base").stdout.split() == ["child", "look", "base"]
    assert parsed(sn("ls", "--json")) == []


def test_snapshot_errors(tmp_path):
    root = tmp_path / "r"
    assert "NotFound" in fails(root, "snapshots", "--snapshotter", "zfs", "ls")
    assert "NotFound" in fails(root, "snapshots", "prepare", "x", "no-such-parent")
    invoke(root, "snapshots", "prepare", "x")
    assert "AlreadyExists" in fails(root, "snapshots", "prepare", "x")
    invoke(root, "snapshots", "commit", "y", "x")
    assert "FailedPrecondition" in fails(root, "snapshots", "commit", "z", "y")
    assert "NotFound" in fails(root, "snapshots", "commit", "z", "missing")
    assert "InvalidArgument" in fails(root, "snapshots", "prepare", "k" * 300)
    assert "KEY=VALUE" in fails(root, "snapshots", "prepare", "w", "--label", "novalue")
    assert "Missing argument" in fails(root, "snapshots", "view", "only-key")
    assert [s["name"] for s in parsed(invoke(root, "snapshots", "ls", "--json"))] == ["y"]
