"""containerd's snapshotter testsuite behaviours, run on both backends through
the namespaced snapshotter (``ns.snapshotter(name)``).

Files are written and read through the snapshots' mounts: real mounts where
this machine allows them, otherwise the directories the mount spec names (a
bind mount's source, an overlay's upper and lower directories stacked in
spec order), with a notice in the test output that the real mount was skipped.
"""

from __future__ import annotations

import errno
import os
from datetime import datetime, timedelta, timezone

import pytest
from snapshot_mounts import Mounter, can_mount, layer_dirs, mounted, read_tree, report_skipped  # noqa: F401

import cargohold
from cargohold.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from cargohold.model import Kind, SnapshotInfo

BACKENDS = ["native", "overlay"]
ROOT_LABEL = {"containerd.io/gc.root": "2024-01-01T00:00:00Z"}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2024, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: int = 1) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def host(tmp_path, clock):
    with cargohold.open(tmp_path / "root", clock=clock) as db:
        yield db


@pytest.fixture(params=BACKENDS)
def sn(request, host):
    return host.namespace("testsuite").snapshotter(request.param)


@pytest.fixture
def fs(can_mount, tmp_path):  # noqa: F811
    return Mounter(can_mount, str(tmp_path / "work"))


def names(sn, *filters):
    return sorted(info.name for info in sn.walk(*filters))


def test_basic_prepare_commit_view_remove(sn, fs):
    initial = {"foo": b"foo\n", "a/b/c/keep": b"c\n"}
    fs.write(sn.prepare("preparing", labels=ROOT_LABEL), initial)
    sn.commit("committed", "preparing", labels=ROOT_LABEL)

    si = sn.stat("committed")
    assert (si.name, si.parent, si.kind, si.labels) == ("committed", "", Kind.COMMITTED, ROOT_LABEL)
    with pytest.raises(NotFound, match="preparing"):
        sn.stat("preparing")

    mounts = sn.prepare("next", "committed", labels=ROOT_LABEL)
    assert fs.read(mounts, "child of a committed layer") == initial
    diff = {"bar": b"bar\n", "foo": b"bar\n"}
    fs.write(mounts, diff)
    ni = sn.stat("next")
    assert (ni.parent, ni.kind) == ("committed", Kind.ACTIVE)

    sn.commit("committed-next", "next", labels=ROOT_LABEL)
    si2 = sn.stat("committed-next")
    assert (si2.parent, si2.kind) == ("committed", Kind.COMMITTED)
    with pytest.raises(NotFound):
        sn.stat("next")
    assert {info.name: info for info in sn.walk()} == {"committed": si, "committed-next": si2}

    view = sn.view("view", "committed-next", labels=ROOT_LABEL)
    assert fs.read(view, "view of a two-layer chain") == {**initial, **diff}
    sn.remove("view")
    with pytest.raises(FailedPrecondition, match="committed"):
        sn.remove("committed")
    sn.remove("committed-next")
    sn.remove("committed")
    assert list(sn.walk()) == []


def test_parent_chain_is_transitive(sn, fs):
    fs.write(sn.prepare("preparing"), {"foo": b"foo\n"})
    sn.commit("snap-a", "preparing")
    mounts = sn.prepare("next", "snap-a")
    fs.write(mounts, {"foo": b"foo bar\n"})
    sn.commit("snap-b", "next")
    b = sn.stat("snap-b")
    assert b.parent == "snap-a"
    assert sn.stat(b.parent).parent == ""
    assert fs.read(sn.view("v", "snap-b"), "view of snap-b") == {"foo": b"foo bar\n"}


def test_same_key_twice_is_refused(sn):
    sn.prepare("base-a")
    sn.commit("base", "base-a")
    sn.prepare("layer", "base")
    with pytest.raises(AlreadyExists, match="layer"):
        sn.view("layer", "base")
    with pytest.raises(AlreadyExists, match="layer"):
        sn.prepare("layer", "base")
    sn.view("view", "base")
    with pytest.raises(AlreadyExists, match="view"):
        sn.view("view", "base")
    with pytest.raises(AlreadyExists, match="base"):
        sn.prepare("base")
    assert names(sn) == ["base", "layer", "view"]


def _base_snapshots(sn):
    sn.prepare("c1-a", labels=ROOT_LABEL)
    sn.commit("c1", "c1-a", labels=ROOT_LABEL)
    sn.prepare("c2-a", "c1", labels=ROOT_LABEL)
    sn.commit("c2", "c2-a", labels=ROOT_LABEL)
    sn.prepare("a1", "c2", labels=ROOT_LABEL)
    sn.prepare("a2", labels=ROOT_LABEL)
    sn.view("v1", "c2", labels=ROOT_LABEL)
    sn.view("v2", labels=ROOT_LABEL)


@pytest.mark.parametrize("name, kind, parent", [
    ("c1", Kind.COMMITTED, ""), ("c2", Kind.COMMITTED, "c1"), ("a1", Kind.ACTIVE, "c2"),
    ("a2", Kind.ACTIVE, ""), ("v1", Kind.VIEW, "c2"), ("v2", Kind.VIEW, ""),
])
def test_update_labels(sn, clock, name, kind, parent):
    created = clock.now
    _base_snapshots(sn)
    st = sn.stat(name)
    assert (st.name, st.kind, st.parent) == (name, kind, parent)
    assert st.created_at == st.updated_at == created

    clock.advance()
    expected = {"l1": "v1", "l2": "v2", "l3": "v3", **ROOT_LABEL}
    st = sn.update(SnapshotInfo(name, "doesnotexist", kind, expected))
    assert (st.kind, st.parent, st.labels) == (kind, parent, expected)
    assert (st.created_at, st.updated_at) == (created, clock.now)
    assert sn.stat(name) == st

    st = sn.update(SnapshotInfo(name, labels={"l1": "updated", "l4": "v4"}), "labels.l1", "labels.l2")
    assert st.labels == {"l1": "updated", "l3": "v3", **ROOT_LABEL}

    st = sn.update(SnapshotInfo(name, labels={"l4": "v4", **ROOT_LABEL}), "labels")
    assert st.labels == {"l4": "v4", **ROOT_LABEL}

    for field in ("parent", "kind", "name", "created_at"):
        with pytest.raises(InvalidArgument, match=field):
            sn.update(SnapshotInfo(name, "doesnotexist", labels={}), field)
    assert sn.stat(name).labels == {"l4": "v4", **ROOT_LABEL}


def test_remove_then_reuse_keys(sn):
    sn.prepare("committed-a")
    sn.commit("committed-1", "committed-a")
    sn.prepare("reuse-1", "committed-1")
    sn.remove("reuse-1")
    sn.view("reuse-1", "committed-1")
    sn.remove("reuse-1")
    sn.prepare("reuse-1")
    sn.remove("committed-1")
    sn.commit("committed-1", "reuse-1")
    assert (sn.stat("committed-1").kind, names(sn)) == (Kind.COMMITTED, ["committed-1"])


def test_remove_intermediate_snapshot_is_refused(sn):
    sn.prepare("base")
    sn.commit("committed-base", "base")
    sn.prepare("intermediate", "committed-base")
    sn.commit("committed-inter", "intermediate")
    sn.prepare("top", "committed-inter")
    with pytest.raises(FailedPrecondition, match="committed-inter"):
        sn.remove("committed-inter")
    sn.remove("top")
    sn.remove("committed-inter")
    sn.remove("committed-base")
    assert names(sn) == []


def test_commit_of_view_is_refused(sn):
    sn.prepare("a")
    sn.commit("base", "a")
    sn.view("v", "base")
    with pytest.raises(FailedPrecondition, match="'v'.*not active"):
        sn.commit("from-view", "v")
    with pytest.raises(FailedPrecondition, match="'base'.*not active"):
        sn.commit("from-committed", "base")
    with pytest.raises(NotFound, match="missing"):
        sn.commit("from-missing", "missing")
    with pytest.raises(AlreadyExists, match="base"):  # a taken name is reported first, as containerd does
        sn.commit("base", "missing")
    assert names(sn) == ["base", "v"]
    assert sn.stat("v").kind == Kind.VIEW


def test_remove_active_snapshot(sn, fs):
    fs.write(sn.prepare("active"), {"data": b"scratch"})
    sn.remove("active")
    with pytest.raises(NotFound):
        sn.stat("active")
    with pytest.raises(NotFound):
        sn.mounts("active")
    assert names(sn) == []
    assert fs.read(sn.prepare("active"), "fresh snapshot under a reused key") == {}


def test_view_is_read_only(sn, fs, can_mount, tmp_path):  # noqa: F811
    fs.write(sn.prepare("preparing"), {"f": b"x"})
    sn.commit("committed", "preparing")
    mounts = sn.view("view", "committed")
    assert layer_dirs(mounts)[1] is None, f"a view must not have a writable layer: {mounts}"
    if can_mount is not None:
        report_skipped("view read-only check", can_mount)
        return
    with mounted(mounts, str(tmp_path / "view")) as target:
        with pytest.raises(OSError) as raised:
            with open(os.path.join(target, "testfile"), "w"):
                pass
        assert raised.value.errno == errno.EROFS
        assert read_tree(target) == {"f": b"x"}


def test_chain_100_deep(sn, fs):
    parent = ""
    for i in range(100):
        mounts = sn.prepare(f"active-{i}", parent)
        fs.write(mounts, {f"layer-{i}": str(i).encode(), "top": str(i).encode()})
        sn.commit(f"layer-{i}", f"active-{i}")
        parent = f"layer-{i}"
    expected = {f"layer-{i}": str(i).encode() for i in range(100)}
    expected["top"] = b"99"
    assert fs.read(sn.view("view", "layer-99"), "view of a 100-layer chain") == expected
    assert fs.read(sn.prepare("work", "layer-99"), "active snapshot on a 100-layer chain") == expected

    key, depth = "layer-99", 0
    while key:
        key, depth = sn.stat(key).parent, depth + 1
    assert depth == 100
    assert len(names(sn, "kind==committed")) == 100

    sn.remove("view")
    sn.remove("work")
    for i in reversed(range(100)):
        sn.remove(f"layer-{i}")
    assert names(sn) == []


def test_walk_filters(sn):
    sn.prepare("c1-a")
    sn.commit("c1", "c1-a", labels={"team": "x"})
    sn.prepare("a1", "c1", labels={"a.b": "c", "team": "y"})
    sn.view("v1", "c1")
    assert names(sn) == ["a1", "c1", "v1"]
    assert names(sn, "kind==committed") == ["c1"]
    assert names(sn, "kind==active") == ["a1"]
    assert names(sn, "kind==view") == ["v1"]
    assert names(sn, "parent==c1") == ["a1", "v1"]
    assert names(sn, 'labels."a.b"==c') == ["a1"]
    assert names(sn, "labels.a.b==c") == ["a1"]
    assert names(sn, "labels.team") == ["a1", "c1"]
    assert names(sn, "labels.team!=x") == ["a1", "v1"]
    assert names(sn, "name~=^a", "name==v1") == ["a1", "v1"]
    assert names(sn, "kind==active,parent==c1") == ["a1"]
    assert names(sn, "kind==active,parent==nope") == []
    with pytest.raises(InvalidArgument, match="kind=="):
        sn.walk("kind==")


def test_usage_after_writing_files(sn, fs):
    mounts = sn.prepare("usage")
    empty = sn.usage("usage")
    assert empty.inodes == 1  # the snapshot's own directory
    payload = os.urandom(64 * 1024)
    fs.write(mounts, {"big": payload, "dir/small": b"y"})
    used = sn.usage("usage")
    assert used.inodes == 4  # directory, big, dir, dir/small
    assert used.size >= empty.size + len(payload)
    fs.write(mounts, {"dir/more": b"z"})
    assert sn.usage("usage").inodes == 5
    sn.commit("committed", "usage")
    assert sn.usage("committed") == sn.usage("committed")
    assert sn.usage("committed").inodes == 5
    assert sn.usage("committed").size >= used.size
