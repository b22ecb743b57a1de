"""The native snapshot backend used directly: copies, mounts, usage, cleanup, metastore."""

from __future__ import annotations

import errno
import os
import stat
import sys
import warnings

import pytest

from cargohold.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from cargohold.model import Kind, Mount, Usage
from cargohold.snapshots import NativeSnapshotter
from cargohold.snapshots.fsutil import disk_usage


@pytest.fixture
def native(tmp_path):
    backend = NativeSnapshotter(tmp_path / "native")
    yield backend
    backend.close()


def _dir(mounts):
    (mount,) = mounts
    return mount.source


def _committed(backend, name, build, parent=""):
    """Commit a snapshot whose tree `build(directory)` fills."""
    build(_dir(backend.prepare(f"{name}-active", parent)))
    backend.commit(name, f"{name}-active")


# Owners the test process may give away: anyone as root, else only itself.
OWNER = (1234, 5678) if os.geteuid() == 0 else (os.getuid(), os.getgid())
LINK_OWNER = (4321, 8765) if os.geteuid() == 0 else OWNER


def _fancy_tree(root):
    os.makedirs(os.path.join(root, "dir/sub"))
    with open(os.path.join(root, "dir/sub/file"), "wb") as f:
        f.write(b"payload" * 1000)
    os.chmod(os.path.join(root, "dir/sub/file"), 0o640)
    os.chmod(os.path.join(root, "dir/sub"), 0o750)
    with open(os.path.join(root, "setuid"), "wb") as f:
        f.write(b"#!/bin/true\n")
    os.chown(os.path.join(root, "setuid"), *OWNER)
    os.chmod(os.path.join(root, "setuid"), 0o4755)
    os.symlink("dir/sub/file", os.path.join(root, "link"))
    os.symlink("/does/not/exist", os.path.join(root, "dangling"))
    os.link(os.path.join(root, "dir/sub/file"), os.path.join(root, "hard"))
    os.mkfifo(os.path.join(root, "fifo"), 0o600)
    try:
        os.setxattr(os.path.join(root, "dir/sub/file"), "user.origin", b"layer-1")
    except OSError as exc:
        if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        warnings.warn(UserWarning(f"xattr copy not checked: {root!r} has no user xattrs ({exc})"))
    os.lchown(os.path.join(root, "link"), *LINK_OWNER)
    os.utime(os.path.join(root, "dir/sub/file"), ns=(1_000_000_000, 2_000_000_000))
    os.chmod(root, 0o711)


def test_prepare_copies_the_parent_tree_faithfully(native):
    _committed(native, "base", _fancy_tree)
    child = _dir(native.prepare("child", "base"))
    parent = native.snapshot_dir(1)

    def lst(root, rel):
        return os.lstat(os.path.join(root, rel))

    for rel in ("dir", "dir/sub", "dir/sub/file", "setuid", "link", "dangling", "hard", "fifo"):
        a, b = lst(parent, rel), lst(child, rel)
        assert (a.st_mode, a.st_uid, a.st_gid, a.st_size) == (b.st_mode, b.st_uid, b.st_gid, b.st_size), rel
    assert stat.S_IMODE(lst(child, "setuid").st_mode) == 0o4755
    assert (lst(child, "setuid").st_uid, lst(child, "setuid").st_gid) == OWNER
    assert (lst(child, "link").st_uid, lst(child, "link").st_gid) == LINK_OWNER
    assert stat.S_IMODE(os.stat(child).st_mode) == 0o711
    assert os.readlink(os.path.join(child, "link")) == "dir/sub/file"
    assert os.readlink(os.path.join(child, "dangling")) == "/does/not/exist"
    assert stat.S_ISFIFO(lst(child, "fifo").st_mode)
    assert lst(child, "hard").st_ino == lst(child, "dir/sub/file").st_ino != lst(parent, "hard").st_ino
    assert lst(child, "hard").st_nlink == 2
    source_xattrs = {name: os.getxattr(os.path.join(parent, "dir/sub/file"), name)
                     for name in os.listxattr(os.path.join(parent, "dir/sub/file"))}
    assert {name: os.getxattr(os.path.join(child, "dir/sub/file"), name)
            for name in os.listxattr(os.path.join(child, "dir/sub/file"))} == source_xattrs
    assert lst(child, "dir/sub/file").st_mtime_ns == 2_000_000_000
    with open(os.path.join(child, "dir/sub/file"), "rb") as f:
        assert f.read() == b"payload" * 1000
    # The copy is independent of the parent.
    with open(os.path.join(child, "dir/sub/file"), "wb") as f:
        f.write(b"changed")
    with open(os.path.join(parent, "dir/sub/file"), "rb") as f:
        assert f.read() == b"payload" * 1000


def _stack_depth() -> int:
    frame, depth = sys._getframe(), 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1
    return depth


def test_trees_deeper_than_the_recursion_limit_are_copied_measured_and_removed(native):
    levels = 300

    def deep(root):
        path = root
        for _ in range(levels):
            path = os.path.join(path, "d")
            os.mkdir(path)
        with open(os.path.join(path, "leaf"), "w") as f:
            f.write("bottom")
        for _ in range(levels):
            os.chmod(path, 0o500)  # read-only directories must not stop removal either
            path = os.path.dirname(path)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(_stack_depth() + 100)  # far below the tree's depth
    try:
        _committed(native, "deep", deep)
        child = _dir(native.prepare("child", "deep"))
        usage = native.usage("child")
        native.remove("child")
        native.remove("deep")
    finally:
        sys.setrecursionlimit(limit)
    assert usage.inodes == 1 + levels + 1
    assert os.listdir(os.path.join(native.root, "snapshots")) == []
    assert not os.path.exists(child)


def test_mounts_are_single_bind_mounts(native):
    active = native.prepare("a")
    assert active == [Mount("bind", native.snapshot_dir(1), ("rw", "rbind"))]
    native.commit("base", "a")
    assert native.prepare("child", "base") == [Mount("bind", native.snapshot_dir(2), ("rw", "rbind"))]
    assert native.view("view", "base") == [Mount("bind", native.snapshot_dir(1), ("ro", "rbind"))]
    assert native.view("empty-view") == [Mount("bind", native.snapshot_dir(4), ("ro", "rbind"))]
    assert native.mounts("child") == [Mount("bind", native.snapshot_dir(2), ("rw", "rbind"))]
    assert native.mounts("view") == [Mount("bind", native.snapshot_dir(1), ("ro", "rbind"))]
    with pytest.raises(FailedPrecondition, match="base"):
        native.mounts("base")


def test_usage_counts_the_whole_copy(native):
    _committed(native, "base", lambda root: open(os.path.join(root, "f"), "wb").write(os.urandom(10000)))
    assert native.usage("base").inodes == 2
    native.prepare("child", "base")
    used = native.usage("child")
    assert used == disk_usage(native.snapshot_dir(2))
    assert used.inodes == 2 and used.size >= 10000
    assert native.usage("base") == Usage(used.size, 2)


def test_commit_and_remove_rules(native):
    native.prepare("a")
    native.commit("base", "a")
    native.prepare("b", "base")
    native.view("v", "base")
    with pytest.raises(FailedPrecondition, match="not active"):
        native.commit("from-view", "v")
    with pytest.raises(AlreadyExists, match="base"):
        native.commit("base", "b")
    with pytest.raises(NotFound, match="nope"):
        native.commit("x", "nope")
    with pytest.raises(NotFound, match="nope"):
        native.prepare("c", "nope")
    with pytest.raises(InvalidArgument, match="not a committed"):
        native.prepare("c", "b")
    with pytest.raises(FailedPrecondition, match="children"):
        native.remove("base")
    native.remove("b")
    native.remove("v")
    native.remove("base")
    assert list(native.walk()) == []
    assert os.listdir(os.path.join(native.root, "snapshots")) == []


def test_uncommit_restores_the_active_snapshot(native):
    _committed(native, "base", lambda root: None)
    build = _dir(native.prepare("work", "base", labels={"k": "v"}))
    open(os.path.join(build, "file"), "w").close()
    before = native.stat("work")
    native.commit("done", "work")
    native.uncommit("done", before)
    assert native.stat("work") == before
    with pytest.raises(NotFound):
        native.stat("done")
    assert native.mounts("work") == [Mount("bind", build, ("rw", "rbind"))]
    with pytest.raises(FailedPrecondition, match="children"):
        native.remove("base")
    native.commit("done", "work")
    assert native.stat("done").kind == Kind.COMMITTED


def test_cleanup_removes_directories_no_record_owns(native):
    native.prepare("kept")
    snapshots = os.path.join(native.root, "snapshots")
    for stray in ("new-abc", "rm-7", "99"):
        os.makedirs(os.path.join(snapshots, stray, "inner"))
    open(os.path.join(snapshots, "stray-file"), "w").close()
    native.cleanup()
    assert os.listdir(snapshots) == ["1"]


def test_keys_are_validated(native):
    for bad, match in [("", "empty"), ("a\x00b", "NUL"), ("k" * 512, "511"), (7, "string")]:
        with pytest.raises(InvalidArgument, match=match):
            native.prepare(bad)
    with pytest.raises(InvalidArgument, match="label"):
        native.prepare("ok", labels={"k": "v" * 5000})
    native.prepare("k" * 511)
    assert [info.name for info in native.walk()] == ["k" * 511]


def test_metastore_survives_a_reopen(tmp_path):
    backend = NativeSnapshotter(tmp_path / "native")
    backend.prepare("a")
    backend.commit("base", "a")
    backend.close()
    backend = NativeSnapshotter(tmp_path / "native")
    try:
        assert backend.stat("base").kind == Kind.COMMITTED
        assert backend.prepare("b", "base") == [Mount("bind", backend.snapshot_dir(2), ("rw", "rbind"))]
    finally:
        backend.close()


def test_a_directory_under_a_fresh_id_is_skipped_never_reused_or_deleted(native):
    """It may be what a killed creation left, or data of a lost metastore: a creation never
    deletes it (the collector decides, knowing the references), it takes the next free id."""
    stale = native.snapshot_dir(1)
    os.makedirs(os.path.join(stale, "left-over"))
    assert native.prepare("a") == [Mount("bind", native.snapshot_dir(2), ("rw", "rbind"))]
    assert os.listdir(stale) == ["left-over"] and os.listdir(native.snapshot_dir(2)) == []
    native.cleanup()  # no record owns it: an orphan for the cleanup
    assert not os.path.exists(stale) and os.path.isdir(native.snapshot_dir(2))


def test_a_dangling_symlink_under_a_fresh_id_is_skipped_too(native):
    """Whatever is at the id's path, even a symlink to nothing, makes the id taken (never followed)."""
    stale = native.snapshot_dir(1)
    os.symlink("/does/not/exist", stale)
    assert native.prepare("a") == [Mount("bind", native.snapshot_dir(2), ("rw", "rbind"))]
    assert os.path.islink(stale) and os.readlink(stale) == "/does/not/exist"


def test_filesystem_failures_are_reported_as_cargohold_errors(native):
    native.prepare("a")
    snapshots = os.path.join(native.root, "snapshots")
    os.rename(snapshots, snapshots + ".away")
    with open(snapshots, "w"):
        pass  # a file where the snapshot directories should be
    with pytest.raises(Unavailable, match="cannot create snapshot 'b'.*snapshots"):
        native.prepare("b")
    with pytest.raises(Unavailable, match="cannot measure snapshot 'a'"):
        native.usage("a")
    assert [info.name for info in native.walk()] == ["a"]
    os.unlink(snapshots)
    os.rename(snapshots + ".away", snapshots)
    native.prepare("b")
    assert sorted(os.listdir(snapshots)) == ["1", "2"]  # the failed call used no id


def test_a_commit_remembers_its_source_until_settled(native):
    _dir(native.prepare("a", labels={"k": "v"}))
    native.commit("b", "a")
    (source,) = native.commit_sources().values()
    assert list(native.commit_sources()) == ["b"] and (source.name, source.labels) == ("a", {"k": "v"})
    native.uncommit("b")  # from the recorded source: no stat of "a" needed
    assert [(i.name, i.kind, i.labels) for i in native.walk()] == [("a", Kind.ACTIVE, {"k": "v"})]
    assert native.commit_sources() == {}
    native.commit("b", "a")
    native.settle_commits(["b"])
    assert native.commit_sources() == {}
    with pytest.raises(FailedPrecondition, match="no recorded commit"):
        native.uncommit("b")
    native.prepare("c", "b")
    native.commit("d", "c")
    native.remove("d")  # removing a committed snapshot forgets its source too
    assert native.commit_sources() == {}


def test_purge_deletes_directories_first_and_skips_parents_that_keep_children(native):
    from cargohold.model import Freed

    _committed(native, "base", lambda d: open(os.path.join(d, "f"), "wb").write(b"x" * 10000))
    native.prepare("child", "base")
    native.prepare("other", "base")
    sizes = {n: disk_usage(native.snapshot_dir(n)).size for n in (1, 2, 3)}
    freed = Freed()
    assert native.purge(["child", "base"], freed) == []  # "other" keeps "base"
    assert sorted(i.name for i in native.walk()) == ["base", "other"]
    assert (freed.count, freed.bytes) == (1, sizes[2]) and not os.path.exists(native.snapshot_dir(2))
    assert native.purge(["other", "base", "gone"], freed) == []
    assert list(native.walk()) == [] and os.listdir(os.path.join(native.root, "snapshots")) == []
    assert (freed.count, freed.bytes) == (3, sum(sizes.values()))


def test_cleanup_lists_with_no_lock_held(native, monkeypatch):
    """A slow listing (a large metastore, a slow disk) delays no creation."""
    import threading

    from cargohold.snapshots import storage

    native.prepare("kept")
    listing, release = threading.Event(), threading.Event()
    real_ids = storage.ids

    def slow_ids(txn):
        found = real_ids(txn)
        if not listing.is_set():
            listing.set()
            assert release.wait(30)
        return found

    monkeypatch.setattr(storage, "ids", slow_ids)
    cleaner = threading.Thread(target=native.cleanup)
    cleaner.start()
    try:
        assert listing.wait(30)
        created = threading.Thread(target=native.prepare, args=("during",))
        created.start()
        created.join(10)
        assert not created.is_alive(), "prepare waited for the cleanup's listing"
    finally:
        release.set()
        cleaner.join(30)
    assert sorted(info.name for info in native.walk()) == ["during", "kept"]
    assert sorted(os.listdir(os.path.join(native.root, "snapshots"))) == ["1", "2"]


def test_cleanup_keeps_a_directory_a_creation_made_after_its_listing(native, monkeypatch):
    """A directory with an id above the listed sequence is checked again under the lock."""
    from cargohold.snapshots import base

    native.prepare("kept")
    real_scandir = base.os.scandir

    def scandir_then_create(path):
        entries = list(real_scandir(path))
        if path == os.path.join(native.root, "snapshots"):
            monkeypatch.setattr(base.os, "scandir", real_scandir)
            native.prepare("late")  # commits id 2 after the listing read the sequence (1)
            entries = list(real_scandir(path))
        return iter(entries)

    monkeypatch.setattr(base.os, "scandir", scandir_then_create)
    native.cleanup()
    assert sorted(os.listdir(os.path.join(native.root, "snapshots"))) == ["1", "2"]
    assert sorted(info.name for info in native.walk()) == ["kept", "late"]


def test_a_removal_killed_before_its_commit_keeps_the_snapshots_directory(tmp_path):
    """kill -9 as the removal's commit flushes: the record stays, so its directory must too,
    and a cleanup must not take it (it used to be renamed ``rm-<id>`` before the commit)."""
    import subprocess

    from crashutil import strace

    root = tmp_path / "native"
    backend = NativeSnapshotter(root)
    _committed(backend, "base", lambda d: open(os.path.join(d, "kept"), "w").close())
    work = _dir(backend.prepare("work", "base"))
    with open(os.path.join(work, "written"), "w") as f:
        f.write("a container's data")
    backend.close()
    code = ("import sys; from cargohold.snapshots import NativeSnapshotter\n"
            "NativeSnapshotter(sys.argv[1]).remove('work')\n")
    proc = subprocess.run([strace(), "-f", "-qq", "-o", "/dev/null", "-e", "trace=fdatasync",
                           "-e", "inject=fdatasync:signal=KILL:when=1", sys.executable, "-c", code, str(root)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, proc.stderr  # killed at the commit's flush
    backend = NativeSnapshotter(root)
    try:
        assert backend.stat("work").kind == Kind.ACTIVE
        assert backend.cleanup() == []
        with open(os.path.join(_dir(backend.mounts("work")), "written")) as f:
            assert f.read() == "a container's data"
        backend.remove("work")
        assert not os.path.exists(work)
    finally:
        backend.close()
