"""Snapshot trees are on disk before the records that name them, when the database is durable.

Each scenario runs in a child process under strace, which records the writes
into files and every flush (fsync, fdatasync, syncfs) with the path of its
descriptor (``-y``), in order. A layer's files (and a tree a user wrote into
an active snapshot) must be flushed by a syncfs of the snapshot's filesystem
after they were written and before the commit's first fdatasync of data.mdb
that follows, whatever the database's durability mode. An empty snapshot
adds no syncfs. Every new snapshot directory's entry is flushed (an fsync of
``snapshots/``, once per transaction) before the commit that records it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from cargohold.oci.build import LayerBuilder, write_image
from crashutil import strace

_LINE = re.compile(r"^\d+\s+(\w+)\((?:\d+<([^>]*)>)?")
FLUSHES = ("fsync", "fdatasync", "syncfs")


def _traced(tmp_path, code: str, *args) -> list[tuple[str, str]]:
    """(call, descriptor path) of each write and flush the snippet made, in order."""
    log = tmp_path / "trace"
    proc = subprocess.run([strace(), "-f", "-qq", "-y", "-o", str(log), "-e", "trace=write,pwrite64," + ",".join(FLUSHES),
                           sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    calls = []
    with open(log) as f:
        for line in f:
            match = _LINE.match(line)
            if match:
                calls.append((match.group(1), match.group(2) or ""))
    return calls


def _flushed_before_commit(calls, tree: str, file_name: str) -> bool:
    """Whether a syncfs on `tree`'s filesystem comes after the last write of `file_name` under `tree`
    and before the next fdatasync of data.mdb (the commit that records the snapshot)."""
    written = [i for i, (call, path) in enumerate(calls)
               if call in ("write", "pwrite64") and path.startswith(tree) and path.endswith("/" + file_name)]
    assert written, f"no write of {file_name} under {tree} was traced"
    commit = next(i for i in range(written[-1], len(calls))
                  if calls[i][0] == "fdatasync" and calls[i][1].endswith("/data.mdb"))
    return any(call == "syncfs" and path.startswith(tree) for call, path in calls[written[-1]:commit])


UNPACK = """
import sys, cargohold
from cargohold import transfer
root, archive, snapshotter, durable = sys.argv[1:]
with cargohold.open(root, durable=durable == "1") as db:
    transfer.import_archive(db.namespace("default"), archive, unpack=True, snapshotter=snapshotter)
"""


@pytest.fixture
def archive(tmp_path):
    path = tmp_path / "image.tar"
    layer = LayerBuilder().dir("etc").file("etc/important.conf", b"A" * 100_000).file("etc/other", b"B").tar()
    write_image(path, "example.com/durable:1", [(layer, "")])
    return path


@pytest.mark.parametrize("snapshotter", ["native", "overlayfs"])
def test_an_unpacked_layer_is_flushed_before_its_commit_is_recorded(tmp_path, archive, snapshotter):
    root = tmp_path / "root"
    calls = _traced(tmp_path, UNPACK, root, archive, snapshotter, 1)
    assert _flushed_before_commit(calls, f"{root}/snapshots/{snapshotter}/snapshots/", "important.conf")


def test_a_database_that_is_not_durable_still_never_records_a_layer_before_it_is_on_disk(tmp_path, archive):
    """durable=False may lose the last commits, but one that reached the disk names a whole tree."""
    root = tmp_path / "root"
    calls = _traced(tmp_path, UNPACK, root, archive, "native", 0)
    assert _flushed_before_commit(calls, f"{root}/snapshots/native/snapshots/", "important.conf")


USER_COMMIT = """
import os, sys, cargohold
root, durable = sys.argv[1:]
with cargohold.open(root, durable=durable == "1") as db:
    sn = db.namespace("default").snapshotter("native")
    sn.prepare("base-active")
    sn.commit("empty", "base-active")
    child = sn.prepare("child-active", "empty")[0].source
    with open(os.path.join(child, "written-by-the-container"), "wb") as f:
        f.write(b"more work" * 1000)
    sn.commit("child", "child-active")
"""


def test_a_tree_a_user_wrote_is_flushed_when_its_snapshot_is_committed(tmp_path):
    root = tmp_path / "root"
    calls = _traced(tmp_path, USER_COMMIT, root, 1)
    tree = f"{root}/snapshots/native/snapshots/"
    assert _flushed_before_commit(calls, tree, "written-by-the-container")
    # committing the empty snapshot and preparing on it (nothing to copy) flushed nothing of the trees
    first_write = next(i for i, (call, path) in enumerate(calls)
                       if call == "write" and path.endswith("/written-by-the-container"))
    assert [path for call, path in calls[:first_write] if call == "syncfs"] == []
    assert len([call for call, _ in calls if call == "syncfs"]) == 1


def test_a_native_copy_of_a_parent_is_flushed_before_the_active_snapshot_is_recorded(tmp_path):
    code = """
    import os, sys, cargohold
    root, = sys.argv[1:]
    with cargohold.open(root) as db:
        sn = db.namespace("default").snapshotter("native")
        source = sn.prepare("base-active")[0].source
        with open(os.path.join(source, "from-the-parent"), "wb") as f:
            f.write(b"layer" * 1000)
        sn.commit("base", "base-active")
        sn.prepare("child", "base")
    """
    root = tmp_path / "root"
    calls = _traced(tmp_path, code, root)
    tree = f"{root}/snapshots/native/snapshots/"
    copies = [i for i, (call, path) in enumerate(calls)
              if call in ("write", "pwrite64") and path.startswith(tree + "new-")]
    syncfs = [i for i, (call, path) in enumerate(calls) if call == "syncfs" and path.startswith(tree)]
    commits = [i for i, (call, path) in enumerate(calls) if call == "fdatasync" and path.endswith("/data.mdb")]
    # the commit of base flushes its tree; the prepare of child flushes the copy (made by copy_file_range,
    # which writes nothing strace shows here) before the prepare's commit
    assert len(syncfs) == 2, calls
    assert any(syncfs[0] < i < syncfs[1] for i in commits)  # base's commit came between
    assert any(i > syncfs[1] for i in commits)
    assert not copies or copies[-1] < syncfs[1]


PREPARES = """
import sys, cargohold
from cargohold.snapshots.native import NativeSnapshotter
root, snapshotter, batched = sys.argv[1:]
if batched == "alone":  # a backend used on its own, with its own metastore
    sn = NativeSnapshotter(f"{root}/snapshots/native")
    sn.prepare("base-active")
    sn.commit("base", "base-active")
    for i in range(3):
        sn.prepare(f"active-{i}", "base")
    sn.close()
    sys.exit()
with cargohold.open(root) as db:
    sn = db.namespace("default").snapshotter(snapshotter)
    sn.prepare("base-active")
    sn.commit("base", "base-active")
    if batched == "1":
        with db.update():
            for i in range(3):
                sn.prepare(f"active-{i}", "base")
    else:
        for i in range(3):
            sn.prepare(f"active-{i}", "base")
"""


@pytest.mark.parametrize("snapshotter, batched", [("native", "0"), ("native", "1"), ("overlayfs", "0"),
                                                  ("overlayfs", "1"), ("native", "alone")],
                         ids=["native-a-call-each", "native-one-transaction", "overlayfs-a-call-each",
                              "overlayfs-one-transaction", "native-backend-alone"])
def test_a_new_snapshot_directory_is_on_disk_before_its_record(tmp_path, snapshotter, batched):
    """Every prepare renames its new directory into ``snapshots/``: a flush of that directory must
    follow the rename and come before the commit recording the snapshot (an empty one too), else
    a power cut can leave a record of a directory that is not there."""
    root = tmp_path / "root"
    log = tmp_path / "trace"
    proc = subprocess.run([strace(), "-f", "-qq", "-y", "-o", str(log), "-e", "trace=rename,renameat,renameat2,fsync,fdatasync",
                           sys.executable, "-c", textwrap.dedent(PREPARES), str(root), snapshotter, batched],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = log.read_text().splitlines()
    directory = f"{root}/snapshots/{snapshotter}/snapshots"
    renames = [i for i, line in enumerate(lines) if re.search(r"\brename\w*\(", line) and "/new-" in line
               and f'"{directory}/' in line]
    assert len(renames) == 4, lines
    for position in renames:
        commit = next(i for i in range(position, len(lines))
                      if "fdatasync(" in lines[i] and "/data.mdb>" in lines[i])
        assert any("fsync(" in line and f"<{directory}>" in line for line in lines[position:commit]), \
            lines[position:commit + 1]
