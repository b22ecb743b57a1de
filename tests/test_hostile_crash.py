"""A process killed in the middle of a change, and a full disk: what the next open and the next
collection must repair and free (one fast test per failure class; tests/test_crash_injection.py
kills the command at every point).

Kills are real: a child process sends itself SIGKILL at the chosen point, or strace delivers it
as the command enters a chosen system call. Full disks are real small filesystems the test mounts.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import textwrap

import pytest
from cliutil import image_archive, invoke, parsed
from conftest import run_python
from content_util import expect_line, spawn
from crashutil import EMPTY, TRACED, backend_files, check_records, kill_points, later_clock, run_killed
from oci_fixtures import Layer, Layout, tar_layout

import cargohold
from cargohold import migrations, schema
from cargohold.db import DB
from cargohold.model import Kind

IMPORT = ("images", "import", "--unpack")


def killed(root, code: str) -> None:
    """Run `code` in a child that has `db` (the root opened) and `ns` (namespace "default");
    the code ends by killing its process (`die()`)."""
    prologue = textwrap.dedent(f"""
        import os, signal
        import cargohold
        def die():
            os.kill(os.getpid(), signal.SIGKILL)
        db = cargohold.open({str(root)!r})
        ns = db.namespace("default")
    """)
    proc = run_python(prologue + textwrap.dedent(code), check=False)
    assert proc.returncode == -9, proc.stderr


def dirty_markers(db) -> list[bytes]:
    with db.view() as tx:
        return [key for key, _ in tx.kv.scan(schema.T_META, b"dirty\x00")]


# -- a kill between the backend's commit and the metadata's ---------------------------------------


def test_a_commit_killed_before_its_metadata_committed_is_reverted_at_open(root):
    with cargohold.open(root) as db:
        sn = db.namespace("default").snapshotter("native")
        sn.prepare("base-active")
        with open(os.path.join(sn.mounts("base-active")[0].source, "file"), "w") as f:
            f.write("data")
    killed(root, """
        sn = ns.snapshotter("native")
        with db.update() as tx:
            sn.commit("base", "base-active", tx=tx)  # the backend has renamed its key
            die()                                    # the metadata never records it
    """)
    with cargohold.open(root) as db:
        sn = db.namespace("default").snapshotter("native")
        assert [(i.name, i.kind) for i in sn.walk()] == [("base-active", Kind.ACTIVE)]
        with open(os.path.join(sn.mounts("base-active")[0].source, "file")) as f:
            assert f.read() == "data"
        assert sn.usage("base-active").size > 0
        assert db.snapshotter_backend("native").commit_sources() == {}
        sn.commit("base", "base-active")  # and the commit can be done again
        assert [(i.name, i.kind) for i in sn.walk()] == [("base", Kind.COMMITTED)]
    check_records(root)


def test_an_interrupted_commit_is_repaired_by_a_collection_when_open_could_not(root):
    """A DB opened before the crash never reopens: its next collection repairs the record."""
    with cargohold.open(root) as db:
        sn = db.namespace("default").snapshotter("overlay")
        sn.prepare("layer-active", labels={"containerd.io/gc.root": "yes"})
        killed(root, """
            sn = ns.snapshotter("overlay")
            with db.update() as tx:
                sn.prepare("child", "", tx=tx)
                sn.commit("layer", "layer-active", tx=tx)
                die()
        """)
        stats = db.garbage_collect()
        assert stats.errors == []
        assert [(i.name, i.kind) for i in sn.walk()] == [("layer-active", Kind.ACTIVE)]
        assert sn.mounts("layer-active")
        assert [i.name for i in db.snapshotter_backend("overlayfs").walk()] == [sn._backend_key("layer-active", None)]
        assert stats.snapshot_dirs["overlayfs"].count == 1  # the dead transaction's "child"


def test_a_commit_recorded_by_the_metadata_is_settled_not_reverted(root, monkeypatch):
    """A backend with a metastore of its own (a root of an older cargohold) remembers where a
    commit came from until the metadata has recorded it; the open that moves its records into the
    metadata database settles the entry. (A bound backend's commit needs no entry: it commits
    with the metadata.)"""
    with monkeypatch.context() as m:
        m.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:3])
        m.setattr(DB, "_bind_backends", lambda db: None)  # before version 4: the backend's own metastore
        with cargohold.open(root) as db:
            sn = db.namespace("default").snapshotter("native")
            sn.prepare("a-active")
            sn.commit("a", "a-active")
            assert len(db.snapshotter_backend("native").commit_sources()) == 1
    with cargohold.open(root) as db:
        assert db.snapshotter_backend("native").commit_sources() == {}
        sn = db.namespace("default").snapshotter("native")
        sn.prepare("b-active")
        sn.commit("b", "b-active")
        assert db.snapshotter_backend("native").commit_sources() == {}
    with cargohold.open(root) as db:
        backend = db.snapshotter_backend("native")
        assert backend.commit_sources() == {}
        assert [i.kind for i in db.namespace("default").snapshotter("native").walk()] == [Kind.COMMITTED] * 2


# -- debris a killed process leaves without a dirty marker ------------------------------------------


def test_debris_of_a_killed_process_is_collected_by_the_next_open_and_collection(root):
    with cargohold.open(root) as db:
        pass
    killed(root, """
        from cargohold.content import LocalStore
        with db.update() as tx:
            ns.snapshotter("native").prepare("orphan", tx=tx)      # backend snapshot, no record
            ns.snapshotter("overlay").prepare("orphan", tx=tx)
            w = ns.content.writer("blob", tx=tx)
            w.write(b"a blob no record owns")
            w.commit(tx=tx)                                          # blob renamed into place, no record
            die()
    """)
    sessions = os.path.join(root, "meta", "sessions")
    assert len(os.listdir(sessions)) == 1  # the dead process's
    assert backend_files(root) != EMPTY
    with cargohold.open(root) as db:
        assert len(os.listdir(sessions)) == 1  # only ours: the dead one was taken care of
        assert sorted(dirty_markers(db)) == sorted([schema.META_DIRTY_CONTENT, schema.dirty_snapshotter_key("native"),
                                                    schema.dirty_snapshotter_key("overlayfs")])
        stats = db.garbage_collect()
        assert stats.errors == [] and stats.removed == []
        assert (stats.blobs.count, stats.blobs.bytes) == (1, len(b"a blob no record owns"))
        assert stats.snapshot_dirs["native"].count == 1 and stats.snapshot_dirs["overlayfs"].count == 1
        assert dirty_markers(db) == []
    assert backend_files(root) == EMPTY
    assert os.listdir(sessions) == []


def test_a_collection_notices_a_process_that_died_while_it_was_open(root):
    with cargohold.open(root) as db:
        killed(root, """
            with db.update() as tx:
                ns.snapshotter("native").prepare("orphan", tx=tx)
                die()
        """)
        assert backend_files(root)["native"] == ["1"]
        stats = db.garbage_collect()
        assert stats.snapshot_dirs["native"].count == 1
        assert backend_files(root) == EMPTY


def test_a_live_session_is_not_taken_for_a_dead_one(root):
    with cargohold.open(root):
        pass
    holder = spawn(f"""
        import cargohold
        db = cargohold.open({str(root)!r})
        print("open", flush=True)
        input()
    """)
    try:
        expect_line(holder, "open")
        with cargohold.open(root) as db:
            assert len(os.listdir(os.path.join(root, "meta", "sessions"))) == 2
            db.garbage_collect()
            assert dirty_markers(db) == [] and len(os.listdir(os.path.join(root, "meta", "sessions"))) == 2
    finally:
        holder.kill()
        holder.wait()
    with cargohold.open(root) as db:  # now it is dead
        assert len(dirty_markers(db)) == 3


def _killed_import(tmp_path, root, choose, calls: tuple = TRACED) -> None:
    archive, _ = image_archive(tmp_path)
    points = [p for p in kill_points(tmp_path / "clean-run", *IMPORT, archive, calls=calls) if choose(p)]
    assert points, "no such kill point"
    run_killed(root, points[0], *IMPORT, archive)


def test_an_import_killed_while_building_a_snapshot_directory_leaves_nothing_behind(tmp_path, root):
    _killed_import(tmp_path, root, lambda p: p.syscall.startswith("rename") and "/new-" in p.line)
    assert any(name.startswith("new-") for name in backend_files(root)["native"])
    check_records(root)
    invoke(root, "leases", "rm", *[lease["id"] for lease in parsed(invoke(root, "leases", "ls", "--json"))])
    report = parsed(invoke(root, "gc", "--json"))
    assert report["errors"] == [] and report["freed"]["snapshot_dirs"]["native"]["count"] >= 1
    assert backend_files(root) == EMPTY


def test_an_ingest_killed_before_its_meta_is_freed_once_abandoned(tmp_path, root):
    # A new ingest creates its meta in place right after its data file: killed as it opens it, the
    # directory holds the data and no meta.
    _killed_import(tmp_path, root, lambda p: p.syscall == "openat" and '/meta"' in p.line and "O_EXCL" in p.line,
                   calls=TRACED + ("openat",))
    (debris,) = backend_files(root)["ingests"]
    assert not os.path.exists(os.path.join(root, "content", "ingest", debris, "meta"))
    with cargohold.open(root) as db:
        assert db.garbage_collect().errors == []
        assert backend_files(root)["ingests"] == [debris]  # young: a writer may be about to lock it
    with cargohold.open(root, clock=later_clock()) as db:
        stats = db.garbage_collect()  # the import's lease has expired, the debris is past its age
        assert stats.errors == [] and stats.ingests.count == 1
    assert backend_files(root) == EMPTY


# -- a full disk --------------------------------------------------------------------------------------


@contextlib.contextmanager
def small_filesystem(tmp_path, mib: int):
    """A real ext4 filesystem of `mib` MiB mounted at tmp_path/fs (skips when mounting is not permitted)."""
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("mkfs.ext4 is not installed (apt-get install e2fsprogs)")
    image, mountpoint = tmp_path / "fs.img", tmp_path / "fs"
    with open(image, "wb") as f:
        f.truncate(mib << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    mountpoint.mkdir()
    proc = subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a loop filesystem here (needs root and loop devices): {proc.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def unmount_below(directory) -> None:
    """Unmount whatever the test mounted below `directory`, wherever it has been moved to."""
    prefix = os.path.realpath(directory) + os.sep
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f if line.split()[1].startswith(prefix)]
    for point in sorted(points, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


def fill(directory) -> None:
    """Write a file until the filesystem has no byte left."""
    with open(os.path.join(directory, "filler"), "wb", buffering=0) as f:
        block = b"\0" * 65536
        with contextlib.suppress(OSError):
            while True:
                f.write(block)
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0")
    os.sync()


def big_archive(tmp_path) -> str:
    r = random.Random(7)
    layout = Layout(tmp_path / "big.layout")
    image = layout.image([Layer().file("a/one", r.randbytes(5 << 20)).bytes(),
                          Layer().file("b/two", r.randbytes(5 << 20)).bytes()])
    layout.write_index([(image.manifest, {"io.containerd.image.name": "example.com/big:1"})])
    return str(tar_layout(layout.root, tmp_path / "big.tar"))


def test_gc_on_a_full_disk_frees_the_failed_unpack_at_once(tmp_path):
    archive = big_archive(tmp_path)
    with small_filesystem(tmp_path, 22) as fs:
        root = fs / "root"
        invoke(root, "images", "import", archive)
        failed = invoke(root, *IMPORT, archive, ok=False)
        assert failed.exit_code == 1 and "No space left on device" in failed.stderr
        fill(fs)
        assert shutil.disk_usage(fs).free == 0
        result = invoke(root, "gc", ok=False)
        assert backend_files(root)["native"] == []  # by the first collection, with no byte free
        assert (result.exit_code, result.stderr) == (0, ""), result.stderr
        assert "freed " in result.stdout and "native snapshot director" in result.stdout
        with cargohold.open(root) as db:
            assert list(db.snapshotter_backend("native").walk()) == []
            assert dirty_markers(db) == []
        assert parsed(invoke(root, "gc", "--dry-run", "--json")) == []


def test_a_cleanup_that_fails_is_one_line_and_the_rest_is_freed(tmp_path, root):
    with cargohold.open(root) as db:
        ns = db.namespace("default")
        for snapshotter in ("native", "overlayfs"):
            sn = ns.snapshotter(snapshotter)
            for key in ("stuck", "free"):
                sn.prepare(key)
        stuck = ns.snapshotter("native").mounts("stuck")[0].source
    busy = os.path.join(stuck, "busy")
    os.mkdir(busy)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", busy], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
    try:
        invoke(root, "snapshots", "rm", "stuck", "free")
        invoke(root, "snapshots", "--snapshotter", "overlay", "rm", "stuck", "free")
        result = invoke(root, "gc", ok=False)
        lines = result.stderr.splitlines()
        assert result.exit_code == 1 and len(lines) == 2, result.stderr
        assert lines[0].startswith("cargohold: snapshotter 'native': cannot remove snapshot directory ")
        assert "Device or resource busy" in lines[0]
        assert lines[1].startswith("cargohold: the metadata collection itself committed; ")
        assert "1 native snapshot directory, 2 overlayfs snapshot directories" in result.stdout
        assert backend_files(root)["overlayfs"] == [] and backend_files(root)["native"] == ["1"]
        with cargohold.open(root) as db:
            assert dirty_markers(db) == [schema.dirty_snapshotter_key("native")]  # retried next time
    finally:
        unmount_below(root)
    report = parsed(invoke(root, "gc", "--json"))
    assert report["errors"] == [] and report["freed"]["snapshot_dirs"]["native"]["count"] == 1
    assert backend_files(root) == EMPTY
