"""Hostile trees: a directory swapped for a symlink while a snapshot tree is deleted, copied or measured.

Whoever writes in a snapshot (the container using it) can replace a directory
the walk has listed but not yet entered by a symlink to anywhere on the host.
The swap is made deterministic here: `swap_when_walked` makes it exactly when
the walk enters the sibling it visits first, so the walk has seen the victim
as a directory and has not reached it yet. The walks must never follow the
symlink: nothing outside the tree is deleted, chmod'ed, read or measured.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from contextlib import contextmanager

import pytest

import cargohold
from cargohold.errors import Unavailable
from cargohold.snapshots import NativeSnapshotter, fsutil
from cargohold.snapshots.fsutil import copy_tree, disk_usage, remove_tree

SECRET = b"root:$6$host-secret\n"
BIG = 4 << 20


def _outside(base) -> str:
    """Host data a symlink will point to: files, a large one, and a read-only subdirectory."""
    outside = os.path.join(base, "outside")
    os.makedirs(os.path.join(outside, "sub"))
    for i in range(5):
        with open(os.path.join(outside, f"precious-{i}"), "wb") as f:
            f.write(SECRET)
    with open(os.path.join(outside, "big"), "wb") as f:
        f.write(b"x" * BIG)
    with open(os.path.join(outside, "sub", "deep"), "wb") as f:
        f.write(SECRET)
    os.chmod(os.path.join(outside, "sub"), 0o555)
    return outside


def _snapshot_tree(root) -> str:
    """root/a/{d0..d3}/f0..f4: the directory whose subdirectories get swapped."""
    parent = os.path.join(root, "a")
    for d in range(4):
        os.makedirs(os.path.join(parent, f"d{d}"))
        for f in range(5):
            with open(os.path.join(parent, f"d{d}", f"f{f}"), "wb") as out:
                out.write(b"layer data")
    return parent


def _host_state(outside) -> dict:
    state = {}
    for top, dirs, files in os.walk(outside):
        for name in dirs + files:
            path = os.path.join(top, name)
            st = os.lstat(path)
            state[os.path.relpath(path, outside)] = (stat.S_IMODE(st.st_mode), st.st_size)
    return state


@contextmanager
def swap_when_walked(parent, outside, visit: int = 1):
    """Replace the subdirectory of `parent` that a walk enters last by a symlink to `outside`,
    when the walk lists (for the `visit`-th time) the subdirectory it enters first.

    Every walk here takes the subdirectories of a listing last-listed first, so
    the victim is the first one `os.listdir` returns. A walk lists through
    `os.scandir` (remove_tree) or `fsutil.list_dir` (copy_tree, disk_usage):
    both are watched. Yields the list of swaps made (to check that the swap happened).
    """
    names = [name for name in os.listdir(parent) if os.path.isdir(os.path.join(parent, name))]
    victim, trigger_inode = names[0], os.stat(os.path.join(parent, names[-1])).st_ino
    parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)  # the tree may be renamed (rm-<id>) meanwhile
    real_scandir, real_list_dir = os.scandir, fsutil.list_dir
    seen, swapped = [], []

    def listed(where) -> None:
        st = os.fstat(where) if isinstance(where, int) else os.stat(where)
        if st.st_ino == trigger_inode:
            seen.append(where)
            if len(seen) == visit:
                os.rename(victim, victim + ".moved", src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
                os.symlink(outside, victim, dir_fd=parent_fd)
                swapped.append(victim)

    def scandir(where="."):
        listed(where)
        return real_scandir(where)

    def list_dir(fd):
        listed(fd)
        return real_list_dir(fd)

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(os, "scandir", scandir)
            patch.setattr(fsutil, "list_dir", list_dir)
            yield swapped
    finally:
        os.close(parent_fd)


@pytest.fixture
def native(tmp_path):
    backend = NativeSnapshotter(tmp_path / "native")
    yield backend
    backend.close()


def test_remove_tree_unlinks_a_symlink_swapped_in_and_deletes_nothing_outside(tmp_path):
    outside = _outside(tmp_path)
    before = _host_state(outside)
    tree = tmp_path / "tree"
    parent = _snapshot_tree(tree)
    with swap_when_walked(parent, outside) as swapped:
        remove_tree(str(tree))
    assert swapped
    assert not os.path.lexists(tree)  # the symlink and the moved directory went too
    assert _host_state(outside) == before


def test_removing_a_snapshot_deletes_nothing_outside_it(native, tmp_path):
    outside = _outside(tmp_path)
    before = _host_state(outside)
    (mount,) = native.prepare("container-rootfs")
    parent = _snapshot_tree(mount.source)
    with swap_when_walked(parent, outside) as swapped:
        native.remove("container-rootfs")
    assert swapped
    assert os.listdir(os.path.join(native.root, "snapshots")) == []
    assert _host_state(outside) == before


def test_garbage_collection_deletes_and_measures_nothing_outside_a_snapshot(tmp_path):
    outside = _outside(tmp_path)
    before = _host_state(outside)
    with cargohold.open(tmp_path / "root") as db:
        sn = db.namespace("default").snapshotter("native")
        parent = _snapshot_tree(sn.prepare("container-rootfs")[0].source)
        sn.remove("container-rootfs")  # gone from the namespace: garbage for the backend's purge
        # purge measures the directory (the first walk) and then deletes it (the second)
        for visit in (1, 2):
            if visit == 2:
                parent = _snapshot_tree(sn.prepare(f"again-{visit}")[0].source)
                sn.remove(f"again-{visit}")
            with swap_when_walked(parent, outside, visit) as swapped:
                stats = db.garbage_collect()
            assert swapped
            assert stats.errors == []
            assert _host_state(outside) == before
            assert 0 < stats.freed_bytes < BIG, stats
            assert os.listdir(tmp_path / "root" / "snapshots" / "native" / "snapshots") == []


def test_disk_usage_does_not_measure_through_a_symlink_swapped_in(tmp_path):
    outside = _outside(tmp_path)
    tree = tmp_path / "tree"
    parent = _snapshot_tree(tree)
    with swap_when_walked(parent, outside) as swapped:
        usage = disk_usage(str(tree))
    assert swapped
    assert usage.size < BIG
    assert usage.inodes <= 1 + 1 + 4 + 4 * 5


def test_active_snapshot_usage_does_not_measure_outside_it(native, tmp_path):
    outside = _outside(tmp_path)
    (mount,) = native.prepare("container-rootfs")
    parent = _snapshot_tree(mount.source)
    with swap_when_walked(parent, outside) as swapped:
        usage = native.usage("container-rootfs")
    assert swapped
    assert usage.size < BIG


def _files_named(tree, content) -> list[str]:
    found = []
    for top, _, files in os.walk(tree):
        for name in files:
            with open(os.path.join(top, name), "rb") as f:
                if f.read(len(content)) == content:
                    found.append(os.path.join(top, name))
    return found


def test_copy_tree_fails_on_a_symlink_swapped_in_and_copies_nothing_from_outside(tmp_path):
    outside = _outside(tmp_path)
    src = tmp_path / "src"
    parent = _snapshot_tree(src)
    dst = tmp_path / "dst"
    dst.mkdir()
    with swap_when_walked(parent, outside) as swapped:
        with pytest.raises(OSError, match="d[0-3]"):
            copy_tree(str(src), str(dst))
    assert swapped
    assert _files_named(dst, SECRET) == []


def test_preparing_on_a_parent_whose_tree_changes_copies_nothing_from_outside(native, tmp_path):
    outside = _outside(tmp_path)
    (mount,) = native.prepare("base-active")
    parent = _snapshot_tree(mount.source)
    native.commit("base", "base-active")
    with swap_when_walked(parent, outside) as swapped:
        with pytest.raises(Unavailable, match="create snapshot 'child'"):
            native.prepare("child", "base")
    assert swapped
    assert [info.name for info in native.walk()] == ["base"]
    assert _files_named(os.path.join(native.root, "snapshots"), SECRET) == []
    assert sorted(os.listdir(os.path.join(native.root, "snapshots"))) == ["1"]


def test_the_walks_still_copy_measure_and_remove_an_unchanged_tree_with_symlinks(tmp_path):
    outside = _outside(tmp_path)
    src = tmp_path / "src"
    parent = _snapshot_tree(src)
    os.symlink(outside, os.path.join(parent, "to-host"))  # a symlink in the tree is copied as one
    dst = tmp_path / "dst"
    dst.mkdir()
    copy_tree(str(src), str(dst))
    assert os.readlink(dst / "a" / "to-host") == outside
    assert sorted(os.listdir(dst / "a")) == sorted(os.listdir(parent))
    assert disk_usage(str(dst)).inodes == disk_usage(str(src)).inodes == 1 + 1 + 4 + 20 + 1
    remove_tree(str(dst))
    assert not os.path.lexists(dst)
    assert os.path.exists(os.path.join(outside, "big"))


def test_an_unprivileged_owner_removes_its_unreadable_directories_without_touching_the_host(tmp_path):
    """As a plain user, a directory it may not read or search is made traversable on its own inode
    (through a handle, since it cannot be opened for reading) and removed; the host is not chmod'ed."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the removal as another user")
    base = tempfile.mkdtemp(prefix="cargohold-unreadable-")
    try:
        os.chmod(base, 0o755)
        os.chown(base, 65534, 65534)  # the user removes the tree from its own directory
        outside = _outside(base)
        before = _host_state(outside)
        tree = os.path.join(base, "tree")
        path = tree
        for mode in (0o000, 0o100, 0o300, 0o500, 0o600):
            path = os.path.join(path, f"m{mode:o}")
            os.makedirs(path)
            with open(os.path.join(path, "file"), "wb") as f:
                f.write(b"data")
            os.symlink(outside, os.path.join(path, "to-host"))
        for top, dirs, files in os.walk(tree):
            for name in [top] + [os.path.join(top, n) for n in dirs + files]:
                os.lchown(name, 65534, 65534)
        path = tree
        for mode in (0o000, 0o100, 0o300, 0o500, 0o600):
            path = os.path.join(path, f"m{mode:o}")
        while path != tree:
            os.chmod(path, int(os.path.basename(path)[1:], 8))
            path = os.path.dirname(path)
        proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                               "import sys; from cargohold.snapshots.fsutil import remove_tree; "
                               "remove_tree(sys.argv[1])", tree], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert not os.path.lexists(tree)
        assert _host_state(outside) == before
    finally:
        shutil.rmtree(base)


ATTACKER = """
import os, sys, time
parent, outside, names = sys.argv[1], sys.argv[2], sys.argv[3:]
deadline = time.time() + 60
while time.time() < deadline:  # wait until the collector starts deleting
    if any(not os.path.exists(os.path.join(parent, name, "f0")) for name in names[::10]):
        break
for name in names:  # swap every directory it has not reached yet
    path = os.path.join(parent, name)
    try:
        if not os.path.islink(path) and os.path.exists(os.path.join(path, "f0")):
            os.rename(path, path + ".moved")
            os.symlink(outside, path)
    except OSError:
        pass
"""


@pytest.mark.slow
def test_a_container_swapping_directories_while_its_snapshot_is_collected_deletes_nothing_outside(tmp_path):
    """The audit's race with a real second process: many directories, swapped as soon as the
    collection starts deleting the snapshot."""
    outside = _outside(tmp_path)
    before = _host_state(outside)
    with cargohold.open(tmp_path / "root") as db:
        sn = db.namespace("default").snapshotter("native")
        parent = os.path.join(sn.prepare("container-rootfs")[0].source, "a")
        names = [f"d{d:03}" for d in range(300)]
        for name in names:
            os.makedirs(os.path.join(parent, name))
            for f in range(100):
                open(os.path.join(parent, name, f"f{f}"), "wb").close()
        attacker = subprocess.Popen([sys.executable, "-c", ATTACKER, parent, outside, *names])
        try:
            sn.remove("container-rootfs")
            stats = db.garbage_collect()
        finally:
            attacker.wait(timeout=120)
    assert _host_state(outside) == before
    assert stats.errors == [] or all("snapshot directory" in line for line in stats.errors)
