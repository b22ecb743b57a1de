"""The overlay snapshot backend used directly: layout, mount specs exactly as
containerd builds them, real overlay mounts where this machine allows them,
and creation without mount privilege."""

from __future__ import annotations

import json
import os
import tempfile
import traceback

import pytest
from snapshot_mounts import can_mount, mounted, read_layers, read_tree, report_skipped  # noqa: F401

from cargohold.errors import FailedPrecondition, InvalidArgument, NotFound
from cargohold.model import Mount
from cargohold.snapshots import OverlaySnapshotter
from cargohold.snapshots.overlay import needs_userxattr, supports_index


@pytest.fixture
def overlay(tmp_path):
    backend = OverlaySnapshotter(tmp_path / "overlay")
    yield backend
    backend.close()


def _extra_options():
    return (["index=off"] if supports_index() else []) + (["userxattr"] if needs_userxattr() else [])


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _commit_layer(backend, name, parent, files):
    """A committed layer holding `files`, written into its upper directory."""
    active = f"{name}-active"
    backend.prepare(active, parent)
    snapshot_id = int(os.path.basename(os.path.dirname(_upper_of(backend, active))))
    for rel, data in files.items():
        _write(os.path.join(backend.upper_path(snapshot_id), rel), data)
    backend.commit(name, active)
    return snapshot_id


def _upper_of(backend, key):
    (mount,) = backend.mounts(key)
    if mount.type == "bind":
        return mount.source
    return next(o.partition("=")[2] for o in mount.options if o.startswith("upperdir="))


def test_layout_fs_and_work_directories(overlay):
    overlay.prepare("active")
    overlay.view("view")
    assert sorted(os.listdir(overlay.snapshot_dir(1))) == ["fs", "work"]
    assert sorted(os.listdir(overlay.snapshot_dir(2))) == ["fs"]
    assert oct(os.stat(overlay.work_path(1)).st_mode & 0o777) == oct(0o711)
    assert oct(os.stat(overlay.upper_path(1)).st_mode & 0o777) == oct(0o755)


def test_mount_specs_match_containerd(overlay):
    extra = _extra_options()
    up = overlay.upper_path
    assert overlay.prepare("a") == [Mount("bind", up(1), ("rw", "rbind"))]
    assert overlay.view("lonely-view") == [Mount("bind", up(2), ("ro", "rbind"))]
    overlay.commit("l1", "a")
    assert overlay.view("v1", "l1") == [Mount("bind", up(1), ("ro", "rbind"))]
    assert overlay.prepare("b", "l1") == [Mount("overlay", "overlay", (
        *extra, f"workdir={overlay.work_path(4)}", f"upperdir={up(4)}", f"lowerdir={up(1)}"))]
    overlay.commit("l2", "b")
    overlay.prepare("c", "l2")
    overlay.commit("l3", "c")
    assert overlay.view("v3", "l3") == [Mount("overlay", "overlay", (
        *extra, f"lowerdir={up(5)}:{up(4)}:{up(1)}"))]
    assert overlay.prepare("d", "l3") == [Mount("overlay", "overlay", (
        *extra, f"workdir={overlay.work_path(7)}", f"upperdir={up(7)}", f"lowerdir={up(5)}:{up(4)}:{up(1)}"))]
    assert overlay.mounts("d") == overlay.mounts("d")
    with pytest.raises(FailedPrecondition, match="l3"):
        overlay.mounts("l3")


def test_lowerdir_chain_is_newest_first(overlay):
    parent, ids = "", []
    for i in range(6):
        ids.append(_commit_layer(overlay, f"layer-{i}", parent, {f"file-{i}": b"x"}))
        parent = f"layer-{i}"
    (mount,) = overlay.view("top", parent)
    lowers = next(o for o in mount.options if o.startswith("lowerdir="))[len("lowerdir="):].split(":")
    assert lowers == [overlay.upper_path(i) for i in reversed(ids)]
    assert [os.listdir(lower) for lower in lowers] == [[f"file-{i}"] for i in reversed(range(6))]


def test_usage_counts_only_the_upper_directory(overlay):
    _commit_layer(overlay, "base", "", {"big": os.urandom(50_000), "d/f": b"1"})
    assert overlay.usage("base").inodes == 4
    overlay.prepare("child", "base")
    assert overlay.usage("child").inodes == 1
    _write(os.path.join(_upper_of(overlay, "child"), "new"), b"2")
    assert overlay.usage("child").inodes == 2
    assert overlay.usage("child").size < overlay.usage("base").size


def test_files_through_a_real_overlay_mount(overlay, can_mount, tmp_path):  # noqa: F811
    _commit_layer(overlay, "base", "", {"keep": b"base", "shadowed": b"old", "gone": b"bye"})
    mounts = overlay.prepare("work", "base")
    if can_mount is not None:
        report_skipped("overlay read/write/delete through a mount", can_mount)
        layers = [_upper_of(overlay, "work"), overlay.upper_path(1)]
        assert mounts[0].options[-1] == f"lowerdir={layers[1]}"
        assert read_layers(layers) == {"keep": b"base", "shadowed": b"old", "gone": b"bye"}
        return
    with mounted(mounts, str(tmp_path / "mnt")) as target:
        assert read_tree(target) == {"keep": b"base", "shadowed": b"old", "gone": b"bye"}
        _write(os.path.join(target, "shadowed"), b"new")
        _write(os.path.join(target, "added/file"), b"added")
        os.unlink(os.path.join(target, "gone"))
    overlay.commit("top", "work")
    with mounted(overlay.view("view", "top"), str(tmp_path / "view")) as target:
        assert read_tree(target) == {"keep": b"base", "shadowed": b"new", "added/file": b"added"}
    # The parent layer itself is untouched.
    assert read_tree(overlay.upper_path(1)) == {"keep": b"base", "shadowed": b"old", "gone": b"bye"}


@pytest.fixture
def unprivileged_dir():
    """A directory an unprivileged user can write (pytest's tmp_path is private to root)."""
    with tempfile.TemporaryDirectory(prefix="cargohold-unprivileged-") as path:
        if os.geteuid() == 0:
            os.chown(path, 65534, 65534)
        yield path


def test_creating_snapshots_needs_no_mount_privilege(unprivileged_dir):
    """Run the backend in a forked child without root (dropping it first if we have it)."""
    root = os.path.join(unprivileged_dir, "overlay")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_end)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            backend = OverlaySnapshotter(root)
            backend.prepare("a")
            _write(os.path.join(backend.upper_path(1), "f"), b"x")
            backend.commit("base", "a")
            kinds = [backend.prepare("b", "base")[0].type, backend.view("v", "base")[0].type]
            backend.commit("top", "b")
            backend.remove("v")
            report = {"uid": os.geteuid(), "kinds": kinds, "names": [i.name for i in backend.walk()]}
            backend.close()
            status = 0
        except BaseException:
            report = {"error": traceback.format_exc()}
        finally:
            os.write(write_end, json.dumps(report).encode())
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        report = pipe.read()
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0, json.loads(report)["error"]
    assert json.loads(report) == {"uid": json.loads(report)["uid"], "kinds": ["overlay", "bind"],
                                  "names": ["base", "top"]}
    assert json.loads(report)["uid"] != 0


@pytest.mark.parametrize("name", ["a:b", "a,b"])
def test_a_root_the_mount_options_cannot_name_is_refused_before_a_snapshot_on_a_parent(tmp_path, name):
    """``lowerdir=`` is split at ':' and the options at ',': a root holding either would name other
    directories (the unpacker would apply a layer onto them)."""
    backend = OverlaySnapshotter(tmp_path / name / "overlay")
    try:
        _commit_layer(backend, "base", "", {"f": b"x"})  # a bind mount: no options
        with pytest.raises(InvalidArgument, match="cannot name directories"):
            backend.prepare("child", "base")
        with pytest.raises(NotFound):
            backend.stat("child")  # nothing was created
        assert sorted(os.listdir(os.path.join(backend.root, "snapshots"))) == ["1"]
    finally:
        backend.close()
