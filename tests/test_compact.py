"""`db.compact()` / `cargohold compact`: the LMDB files rewritten compacted and swapped in while
nothing else has them open; a kill at any point leaves the old file or the new one.

The sweep over every kill point of the command is slow (`pytest -m slow tests/test_compact.py`);
kills at the rename that swaps the file in and just after it run by default.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time

import pytest
from cliutil import invoke, parsed
from content_util import expect_line, spawn
from crashutil import kill_points, run_killed

import cargohold
from cargohold import Descriptor, Image, kvguard
from cargohold.errors import FailedPrecondition, InvalidArgument, Unavailable
from cargohold.snapshots import NativeSnapshotter

TARGET = Descriptor("application/vnd.oci.image.manifest.v1+json", "sha256:" + "ab" * 32, 10)


def grow_and_shrink(root, keep: int = 10, total: int = 3000) -> list:
    """Images with fat labels, most of them deleted again: a file mostly made of free pages."""
    with cargohold.open(root) as db:
        images = db.namespace("default").images
        with db.update() as tx:
            for i in range(total):
                images.create(Image(f"img{i:05d}", TARGET, {"pad": "x" * 500}), tx=tx)
        with db.update() as tx:
            for i in range(keep, total):
                images.delete(f"img{i:05d}", tx=tx)
        return sorted(i.name for i in images.list())


def names(root) -> list:
    with cargohold.open(root) as db:
        return sorted(i.name for i in db.namespace("default").images.list())


def data_file(root) -> str:
    return os.path.join(root, "meta", "data.mdb")


def sha(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_compact_gives_back_free_pages_and_keeps_every_record(root):
    kept = grow_and_shrink(root)
    with cargohold.open(root) as db:
        file_bytes, live = db.storage()
        assert file_bytes > 20 * live
        done = db.compact()
        assert done[0] == (data_file(root), file_bytes, live)
        assert done[1:] == []  # the snapshotters keep their records in the metadata file (bound metastores)
        assert db.storage() == (live, live)
        assert sorted(i.name for i in db.namespace("default").images.list()) == kept
        db.namespace("default").images.create(Image("after", TARGET))  # writes go on in the new file
        assert kvguard.read_marker(os.path.join(root, "meta")) is None  # the write dropped the new file's marker
    assert names(root) == sorted(kept + ["after"])
    marker = kvguard.read_marker(os.path.join(root, "meta"))
    assert marker["fingerprint"] == kvguard.fingerprint(data_file(root))
    with cargohold.open(root) as db:
        assert cargohold.fsck(db).problems == []


def test_a_snapshotter_used_alone_compacts_its_own_metastore(tmp_path):
    sn = NativeSnapshotter(tmp_path / "native")
    for i in range(300):
        sn.prepare(f"s{i:03d}", labels={"pad": "x" * 2000})
    for i in range(1, 300):
        sn.remove(f"s{i:03d}")
    path, before, after = sn.compact()
    assert path == os.path.join(tmp_path, "native", "metadata", "data.mdb") and after < before / 4
    assert os.path.getsize(path) == after and [i.name for i in sn.walk()] == ["s000"]
    sn.close()


def test_the_new_file_is_trusted_at_the_next_open(root):
    grow_and_shrink(root)
    with cargohold.open(root) as db:
        db.compact()
    marker = kvguard.read_marker(os.path.join(root, "meta"))
    assert marker["fingerprint"] == kvguard.fingerprint(data_file(root))
    assert marker["sha256"] == sha(data_file(root))


def test_another_process_with_the_root_open_makes_it_wait_then_refuse(root):
    grow_and_shrink(root)
    child = spawn(f"""
        import sys, cargohold
        db = cargohold.open({str(root)!r})
        db.namespace("default").images.list()
        print("open", flush=True)
        sys.stdin.readline()
        db.close()
    """)
    try:
        expect_line(child, "open")
        before = sha(data_file(root))
        with cargohold.open(root) as db:
            started = time.monotonic()
            with pytest.raises(Unavailable, match=f"another process has it open \\(pid {child.pid}\\)"):
                db.compact(timeout=0.5)
            assert time.monotonic() - started >= 0.5
            assert sha(data_file(root)) == before  # nothing changed
            db.namespace("default").images.create(Image("still-works", TARGET))
            child.stdin.write("\n")
            child.stdin.flush()
            assert child.wait(timeout=30) == 0
            file_bytes, live = db.storage()
            assert db.compact(timeout=5)[0][2] == live < file_bytes
    finally:
        child.kill()


def test_an_open_transaction_of_another_thread_is_waited_for(root):
    grow_and_shrink(root)
    with cargohold.open(root) as db:
        opened, release = threading.Event(), threading.Event()

        def reader():
            with db.view():
                opened.set()
                release.wait(30)

        thread = threading.Thread(target=reader)
        thread.start()
        opened.wait(10)
        with pytest.raises(Unavailable, match="transactions of this process stayed open"):
            db.compact(timeout=0.3)
        threading.Timer(0.3, release.set).start()
        assert db.compact(timeout=10)[0][1] > db.storage()[0]  # it waited for the reader, then compacted
        thread.join()
        assert len(db.namespace("default").images.list()) == 10


def test_a_writer_during_compaction_waits_and_commits(root):
    grow_and_shrink(root)
    with cargohold.open(root) as db:
        errors = []

        def writer():
            try:
                for i in range(20):
                    db.namespace("default").images.create(Image(f"during-{i}", TARGET))
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        thread = threading.Thread(target=writer)
        thread.start()
        db.compact(timeout=10)
        thread.join()
        assert errors == []
        assert len(db.namespace("default").images.list()) == 30


def test_bad_calls_are_refused(root):
    grow_and_shrink(root)
    with cargohold.open(root) as db:
        for timeout in (-1, "1", True, float("nan")):
            with pytest.raises(InvalidArgument):
                db.compact(timeout)
        with db.view():
            with pytest.raises(FailedPrecondition):
                db.compact()


def test_cli_compact_and_info(root):
    grow_and_shrink(root)
    info = parsed(invoke(root, "info", "--json"))
    assert info["meta_file_bytes"] > info["meta_live_bytes"]
    assert "`cargohold compact` gives back" in invoke(root, "info").stdout.splitlines()[0]
    done = parsed(invoke(root, "compact", "--json"))
    assert done[0] == {"path": data_file(root), "before": info["meta_file_bytes"], "after": info["meta_live_bytes"]}
    out = invoke(root, "compact").stdout.splitlines()
    assert out[0].split() == ["PATH", "BEFORE", "AFTER"] and out[-1].startswith("compacted 1 file(s): ")
    info = parsed(invoke(root, "info", "--json"))
    assert info["meta_file_bytes"] == info["meta_live_bytes"]


# -- kills -----------------------------------------------------------------------------------------------


def _killed_runs(tmp_path, points):
    template = tmp_path / "template"
    kept = grow_and_shrink(template)
    broken = []
    for point in points:
        root = tmp_path / "root"
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(template, root)
        before = sha(data_file(root))
        run_killed(root, point, "compact")
        try:
            assert names(root) == kept
            with cargohold.open(root) as db:
                assert cargohold.fsck(db).problems == []
                db.compact()  # and a compaction after the kill completes
            assert names(root) == kept
        except Exception as exc:  # noqa: BLE001 - collect every failure
            broken.append(f"after a kill at {point.line} (file {'unchanged' if sha(data_file(root)) == before else 'replaced'}): {exc!r}")
    return broken


def _points(tmp_path):
    clean = tmp_path / "clean"
    grow_and_shrink(clean)
    return kill_points(clean, "compact")


def test_a_kill_around_the_swap_leaves_a_working_file(tmp_path):
    """Killed as it renames the copy over the file (the old one stays) and at the next call (the new one)."""
    points = _points(tmp_path)
    swap = next(i for i, p in enumerate(points) if p.syscall.startswith("rename") and "data.mdb.compact" in p.line)
    assert _killed_runs(tmp_path, points[swap:swap + 2]) == []


@pytest.mark.slow
def test_a_kill_at_every_point_leaves_the_old_file_or_the_new_one(tmp_path):
    points = _points(tmp_path)
    assert len(points) > 5
    assert _killed_runs(tmp_path, points) == []
