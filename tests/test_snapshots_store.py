"""The namespaced snapshotter (``ns.snapshotter(name)``) and the garbage collector's hooks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import cargohold
from cargohold import schema
from cargohold.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from cargohold.events import (TOPIC_SNAPSHOT_COMMIT, TOPIC_SNAPSHOT_PREPARE, TOPIC_SNAPSHOT_REMOVE,
                              SnapshotCommit, SnapshotPrepare, SnapshotRemove)
from cargohold.gc import index
from cargohold.model import Kind, Resource, ResourceType, SnapshotInfo
from cargohold.snapshots.store import collect_backend, remove_for_gc

BACKENDS = ["native", "overlayfs"]
DIGEST = "sha256:" + "a" * 64


@pytest.fixture
def published():
    return []


@pytest.fixture
def host(root, published):
    with cargohold.open(root, publisher=lambda ns, topic, event: published.append((ns, topic, event))) as db:
        yield db


@pytest.fixture(params=BACKENDS)
def backend_name(request):
    return request.param


@pytest.fixture
def sn(host, backend_name):
    return host.namespace("default").snapshotter(backend_name)


def names(sn, *filters):
    return sorted(info.name for info in sn.walk(*filters))


def backend_keys(db, name):
    return sorted(info.name for info in db.snapshotter_backend(name).walk())


def snapshot_dirs(db, name):
    return sorted(os.listdir(os.path.join(db.snapshotter_backend(name).root, "snapshots")))


def node(db, ns, snapshotter, key):
    with db.view() as t:
        raw = t.kv.get(schema.T_GC, schema.pack_node(ResourceType.SNAPSHOT, ns,
                                                      f"{db.stored_snapshotter(snapshotter)}/{key}"))
    return None if raw is None else index.decode(raw)


def is_dirty(db, name):
    with db.view() as t:
        return t.kv.get(schema.T_META, schema.dirty_snapshotter_key(db.stored_snapshotter(name))) is not None


def lease_resources(db, ns, lease_id):
    return sorted(db.namespace(ns).leases.list_resources(lease_id), key=lambda r: r.id)


def test_unknown_snapshotter_is_not_found(host):
    with pytest.raises(NotFound, match="'zfs'"):
        host.namespace("default").snapshotter("zfs")
    assert sorted(host.snapshotters) == ["native", "overlayfs"]


def test_namespaces_see_only_their_own_snapshots(host, backend_name):
    a = host.namespace("ns-a").snapshotter(backend_name)
    b = host.namespace("ns-b").snapshotter(backend_name)
    a.prepare("k")
    a.commit("base", "k")
    b.prepare("k")
    with pytest.raises(NotFound, match="parent snapshot 'base'"):
        b.prepare("child", "base")
    b.prepare("base")
    assert names(a) == ["base"]
    assert names(b) == ["base", "k"]
    assert (a.stat("base").kind, b.stat("base").kind) == (Kind.COMMITTED, Kind.ACTIVE)
    a.remove("base")
    assert b.stat("base").kind == Kind.ACTIVE
    assert backend_keys(host, backend_name) == ["ns-a/2/base", "ns-b/3/k", "ns-b/4/base"]
    assert host.namespaces.list() == ["ns-a", "ns-b"]


def test_state_survives_a_reopen(root, backend_name):
    with cargohold.open(root) as db:
        sn = db.namespace("default").snapshotter(backend_name)
        with open(os.path.join(sn.prepare("a")[0].source, "file"), "w") as f:
            f.write("layer")
        sn.commit("base", "a", labels={"l": "1"})
        sn.prepare("work", "base")
        sn.view("view", "base")
        infos = list(sn.walk())
        mounts = {key: sn.mounts(key) for key in ("work", "view")}
        usage = sn.usage("base")
    with cargohold.open(root) as db:
        sn = db.namespace("default").snapshotter(backend_name)
        assert list(sn.walk()) == infos
        assert {key: sn.mounts(key) for key in ("work", "view")} == mounts
        assert sn.usage("base") == usage
        with pytest.raises(FailedPrecondition):
            sn.remove("base")
        sn.prepare("again", "base")
        assert backend_keys(db, backend_name)[-1] == "default/5/again"
        sn.remove("work")
        sn.commit("top", "again")
        assert sn.stat("top").parent == "base"


def test_bad_input_is_refused_and_changes_nothing(host, sn, backend_name, published):
    calls = [
        (lambda: sn.prepare(""), "empty"),
        (lambda: sn.prepare("a\x00b"), "NUL"),
        (lambda: sn.prepare("k" * 256), "255-byte"),
        (lambda: sn.prepare("ok", parent=5), "parent"),
        (lambda: sn.prepare("ok", labels={"big": "v" * 4094}), "'big'.*4096"),
        (lambda: sn.prepare("ok", labels={"k": 1}), "'k'"),
        (lambda: sn.view("ok", "\x00"), "NUL"),
        (lambda: sn.commit("", "k"), "empty"),
        (lambda: sn.commit("n", "k", labels={"": "x"}), "empty"),
        (lambda: sn.update("ok"), "SnapshotInfo"),
        (lambda: sn.remove(None), "string"),
        (lambda: sn.walk("name=="), "name=="),
    ]
    for call, match in calls:
        with pytest.raises(InvalidArgument, match=match):
            call()
    assert host.namespaces.list() == []
    assert backend_keys(host, backend_name) == []
    assert snapshot_dirs(host, backend_name) == []
    assert published == []


def test_keys_of_the_longest_allowed_sizes_fit(host, backend_name):
    ns_name = "n" * 76
    lease = "l" * 76
    host.namespace(ns_name).leases.create(lease)
    sn = host.namespace(ns_name).with_lease(lease).snapshotter(backend_name)
    parent, child, name = "é" * 127 + "p", "é" * 127 + "c", "é" * 127 + "n"
    assert len(parent.encode()) == 255
    sn.prepare(parent)
    sn.commit(name, parent)
    sn.prepare(child, name)
    sn.view("v" * 255, name)
    assert names(sn) == sorted([name, child, "v" * 255])
    assert {r.id for r in lease_resources(host, ns_name, lease)} == {name, child, "v" * 255}
    with pytest.raises(FailedPrecondition):
        sn.remove(name)
    with host.update() as tx:
        remove_for_gc(tx, ns_name, f"{host.stored_snapshotter(backend_name)}/{child}")
    sn.remove("v" * 255)
    sn.remove(name)
    assert names(sn) == []


def test_leased_handles_put_snapshots_in_the_lease(host, backend_name):
    ns = host.namespace("default")
    ns.leases.create("l1")
    leased = ns.with_lease("l1").snapshotter(backend_name)
    plain = ns.snapshotter(backend_name)
    kind = f"snapshots/{backend_name}"
    leased.prepare("k")
    assert lease_resources(host, "default", "l1") == [Resource("k", kind)]
    leased.commit("base", "k")
    assert lease_resources(host, "default", "l1") == [Resource("base", kind)]
    leased.view("v", "base")
    plain.prepare("unleased", "base")
    assert lease_resources(host, "default", "l1") == [Resource("base", kind), Resource("v", kind)]
    leased.remove("v")
    assert lease_resources(host, "default", "l1") == [Resource("base", kind)]


def test_a_missing_lease_fails_the_call_and_changes_nothing(host, backend_name):
    ns = host.namespace("default")
    plain = ns.snapshotter(backend_name)
    plain.prepare("work")
    before = (backend_keys(host, backend_name), snapshot_dirs(host, backend_name))
    missing = ns.with_lease("nope").snapshotter(backend_name)
    with pytest.raises(NotFound, match="'nope'"):
        missing.prepare("x")
    with pytest.raises(NotFound, match="'nope'"):
        missing.commit("done", "work")
    assert names(plain) == ["work"]
    assert plain.stat("work").kind == Kind.ACTIVE
    assert (backend_keys(host, backend_name), snapshot_dirs(host, backend_name)) == before
    assert host.snapshotter_backend(backend_name).stat(before[0][0]).kind == Kind.ACTIVE
    plain.commit("done", "work")


def test_events_are_published_after_commit(host, sn, backend_name, published):
    sn.prepare("a")
    sn.commit("base", "a")
    sn.view("v", "base")
    sn.prepare("b", "base")
    sn.remove("b")
    sn.prepare("a-again", "base")
    with pytest.raises(AlreadyExists):
        sn.prepare("a-again")
    with pytest.raises(FailedPrecondition):
        sn.commit("from-view", "v")
    with pytest.raises(RuntimeError):
        with host.update() as tx:
            sn.prepare("c", tx=tx)
            raise RuntimeError("abort")
    assert published == [
        ("default", TOPIC_SNAPSHOT_PREPARE, SnapshotPrepare("a", "", backend_name)),
        ("default", TOPIC_SNAPSHOT_COMMIT, SnapshotCommit("a", "base", backend_name)),
        ("default", TOPIC_SNAPSHOT_PREPARE, SnapshotPrepare("b", "base", backend_name)),
        ("default", TOPIC_SNAPSHOT_REMOVE, SnapshotRemove("b", backend_name)),
        ("default", TOPIC_SNAPSHOT_PREPARE, SnapshotPrepare("a-again", "base", backend_name)),
    ]


def test_node_table_follows_every_change(host, sn, backend_name):
    def strong(entry):
        return [target for kind, target, _ in entry.edges if kind == index.E_STRONG]

    sn.prepare("a", labels={"containerd.io/gc.ref.content": DIGEST})
    entry = node(host, "default", backend_name, "a")
    assert not entry.flags & index.F_ROOT and strong(entry) == []
    assert (index.E_REF, schema.pack_node(ResourceType.CONTENT, "default", DIGEST), None) in entry.edges
    sn.commit("base", "a", labels={"containerd.io/gc.root": "yes"})
    assert node(host, "default", backend_name, "a") is None
    assert node(host, "default", backend_name, "base").flags & index.F_ROOT
    sn.prepare("child", "base")
    parent_node = schema.pack_node(ResourceType.SNAPSHOT, "default", f"{host.stored_snapshotter(backend_name)}/base")
    assert strong(node(host, "default", backend_name, "child")) == [parent_node]
    sn.update(SnapshotInfo("child", labels={"containerd.io/gc.root": "1"}))
    assert node(host, "default", backend_name, "child").flags & index.F_ROOT
    sn.update(SnapshotInfo("child", labels={}), "labels")
    assert not node(host, "default", backend_name, "child").flags & index.F_ROOT
    assert strong(node(host, "default", backend_name, "child")) == [parent_node]
    sn.remove("child")
    assert node(host, "default", backend_name, "child") is None


def test_update_rules(sn):
    sn.prepare("a", labels={"keep": "1", "drop": "2"})
    with pytest.raises(NotFound, match="'missing'"):
        sn.update(SnapshotInfo("missing", labels={}))
    with pytest.raises(InvalidArgument, match="'big'"):
        sn.update(SnapshotInfo("a", labels={"big": "x" * 5000}), "labels.big")
    with pytest.raises(InvalidArgument, match="'parent'"):
        sn.update(SnapshotInfo("a", labels={"keep": "changed"}), "labels.keep", "parent")
    assert sn.stat("a").labels == {"keep": "1", "drop": "2"}
    assert sn.update(SnapshotInfo("a", labels={"new": "3"}), "labels.new", "labels.drop").labels == {
        "keep": "1", "new": "3"}
    assert sn.update(SnapshotInfo("a", labels={"only": "4", "empty": ""})).labels == {"only": "4"}


def test_store_methods_join_a_given_transaction(host, sn):
    with host.update() as tx:
        sn.prepare("a", tx=tx)
        sn.commit("base", "a", tx=tx)
        sn.view("v", "base", tx=tx)
        assert sn.stat("base", tx=tx).kind == Kind.COMMITTED
        assert names(sn) == ["base", "v"]  # joins the open transaction of this thread
        assert sn.mounts("v", tx=tx) == sn.mounts("v")
    with host.view() as tx:
        with pytest.raises(InvalidArgument, match="read-only"):
            sn.prepare("b", tx=tx)
        assert [info.name for info in sn.walk(tx=tx)] == ["base", "v"]


def test_a_failed_transaction_undoes_backend_work_newest_first(host, sn, backend_name):
    sn.prepare("a")
    sn.commit("base", "a")
    kept = (backend_keys(host, backend_name), snapshot_dirs(host, backend_name))
    with pytest.raises(RuntimeError):
        with host.update() as tx:
            sn.prepare("work", "base", tx=tx)
            sn.commit("top", "work", tx=tx)
            sn.prepare("child", "top", tx=tx)
            sn.view("v", "top", tx=tx)
            raise RuntimeError("abort")
    assert names(sn) == ["base"]
    assert (backend_keys(host, backend_name), snapshot_dirs(host, backend_name)) == kept

    sn.prepare("w", "base")
    active_key = backend_keys(host, backend_name)[-1]
    with pytest.raises(RuntimeError):
        with host.update() as tx:
            sn.commit("c", "w", tx=tx)
            raise RuntimeError("abort")
    assert sn.stat("w").kind == Kind.ACTIVE
    assert host.snapshotter_backend(backend_name).stat(active_key).kind == Kind.ACTIVE
    assert backend_keys(host, backend_name)[-1] == active_key
    sn.commit("c", "w")
    assert sn.stat("c").kind == Kind.COMMITTED


def test_remove_marks_dirty_and_collection_deletes_the_backend_snapshot(host, sn, backend_name):
    sn.prepare("a")
    assert not is_dirty(host, backend_name)
    sn.remove("a")
    assert is_dirty(host, backend_name)
    assert backend_keys(host, backend_name) == ["default/1/a"]
    assert collect_backend(host, backend_name) >= 0
    assert backend_keys(host, backend_name) == []
    assert snapshot_dirs(host, backend_name) == []


def test_remove_for_gc_drops_record_node_and_link_without_events(host, sn, backend_name, published):
    sn.prepare("a")
    sn.commit("base", "a")
    sn.prepare("child", "base")
    sn.prepare("orphan-a", "base")
    published.clear()
    with host.update() as tx:
        remove_for_gc(tx, "default", f"{host.stored_snapshotter(backend_name)}/child")
    assert is_dirty(host, backend_name)
    assert node(host, "default", backend_name, "child") is None
    with pytest.raises(NotFound):
        sn.stat("child")
    with host.update() as tx:  # a sweep may take a parent before its child
        remove_for_gc(tx, "default", f"{host.stored_snapshotter(backend_name)}/base")
        remove_for_gc(tx, "default", f"{host.stored_snapshotter(backend_name)}/orphan-a")
        remove_for_gc(tx, "default", f"{host.stored_snapshotter(backend_name)}/never-existed")
    assert names(sn) == []
    assert published == []
    with host.view() as tx:
        assert tx.kv.keys(schema.T_OBJECTS, schema.ns_prefix("default")) == []
        assert tx.kv.keys(schema.T_GC, schema.node_prefix(ResourceType.SNAPSHOT, "default")) == []


def test_collect_backend_removes_only_what_no_namespace_references(host, backend_name):
    a = host.namespace("ns-a").snapshotter(backend_name)
    b = host.namespace("ns-b").snapshotter(backend_name)
    a.prepare("x")
    a.commit("base", "x")
    a.prepare("y", "base")
    a.commit("mid", "y")
    a.prepare("leaf", "mid")
    a.view("view", "base")
    b.prepare("z")
    b.commit("other", "z")
    a.prepare("p")
    a.commit("parent-gone", "p")
    a.prepare("kept-child", "parent-gone")
    with host.update() as tx:  # the parent's record is gone, but its child is still referenced
        remove_for_gc(tx, "ns-a", f"{host.stored_snapshotter(backend_name)}/parent-gone")
    a.remove("leaf")
    a.remove("mid")
    stray = os.path.join(host.snapshotter_backend(backend_name).root, "snapshots", "new-stray")
    os.makedirs(os.path.join(stray, "deep"))

    seconds = collect_backend(host, backend_name)

    assert isinstance(seconds, float) and seconds >= 0
    assert backend_keys(host, backend_name) == [
        "ns-a/10/parent-gone", "ns-a/11/kept-child", "ns-a/2/base", "ns-a/6/view", "ns-b/8/other"]
    assert not os.path.exists(stray)
    assert len(snapshot_dirs(host, backend_name)) == 5
    assert a.mounts("kept-child") and a.mounts("view") and b.stat("other")


def test_collect_backend_refuses_to_run_inside_a_transaction(host, sn, backend_name):
    with host.update():
        with pytest.raises(FailedPrecondition, match="transaction"):
            collect_backend(host, backend_name)
    with pytest.raises(NotFound, match="'zfs'"):
        collect_backend(host, "zfs")


def test_collect_backend_waits_for_a_creation_in_flight_in_another_process(host, root, tmp_path):
    sn = host.namespace("default").snapshotter("native")
    ready, go = tmp_path / "ready", tmp_path / "go"
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, time, cargohold
        with cargohold.open({str(root)!r}) as db:
            sn = db.namespace("default").snapshotter("native")
            with db.update() as tx:
                sn.prepare("in-flight", tx=tx)
                open({str(ready)!r}, "w").close()
                while not os.path.exists({str(go)!r}):
                    time.sleep(0.01)
    """)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert child.poll() is None, child.stderr.read()
            assert time.monotonic() < deadline, "the other process never prepared its snapshot"
            time.sleep(0.01)
        # Its directory exists; its records (the backend's and the metadata's, one transaction)
        # are not committed yet.
        assert snapshot_dirs(host, "native") == ["1"] and backend_keys(host, "native") == []
        with pytest.raises(NotFound):
            sn.stat("in-flight")
        collector = threading.Thread(target=collect_backend, args=(host, "native"))
        collector.start()
        collector.join(1.0)
        assert collector.is_alive(), "collect_backend did not wait for the creation in flight"
    finally:
        go.touch()
        assert child.wait(60) == 0, child.stderr.read()
    collector.join(60)
    assert not collector.is_alive()
    assert backend_keys(host, "native") == ["default/1/in-flight"]
    assert sn.stat("in-flight").kind == Kind.ACTIVE
    assert os.path.isdir(sn.mounts("in-flight")[0].source)
