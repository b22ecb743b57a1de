"""Snapshots stay local to each host of a fleet (`cargohold.snapshots.scope`): two hosts with
their own snapshot roots, one etcd prefix and one content directory use the same snapshot keys;
each one's collection deletes only its own garbage, keeps what the other's objects reference,
and fsck is clean on both. On LMDB the keys stay those of one host."""

from __future__ import annotations

import json
import os

import pytest

from cargohold import schema
from cargohold.db import DB
from cargohold.errors import Corrupted, FailedPrecondition, NotFound
from cargohold.model import Container, Kind, Node, ResourceType, RuntimeInfo

from fleetutil import NS, backend_state, build, open_host
from gcutil import blob

KEYS = ("base", "work", "orphan", "scratch")


def read_mark(db: DB, key: str) -> str:
    """What the host wrote into snapshot `key`'s tree (through its backend)."""
    ns = db.namespace(NS)
    with db.view() as tx:
        record = ns.snapshotter("native")._require(tx, key)
    backend = db.snapshotter_backend("native")
    with open(os.path.join(backend.snapshot_dir(backend.snapshot_id(record["b"])), "host")) as f:
        return f.read()


@pytest.fixture
def fleet(tmp_path, etcd_url):
    content = str(tmp_path / "content")
    hosts = [open_host(str(tmp_path / name), content, etcd_url) for name in ("host-a", "host-b")]
    yield hosts
    for db in hosts:
        db.close()


def test_two_hosts_keep_their_own_snapshots_under_the_same_keys(fleet):
    a, b = fleet
    build(a, "a")
    build(b, "b")
    for db, name in ((a, "a"), (b, "b")):
        sn = db.namespace(NS).snapshotter("native")
        assert sorted(info.name for info in sn.walk()) == ["base", "orphan", "work"]
        assert sn.stat("work").parent == "base" and sn.stat("base").kind == Kind.COMMITTED
        assert read_mark(db, "base") == name
    a_before, b_before = backend_state(a), backend_state(b)
    assert a.stored_snapshotter("native") != b.stored_snapshotter("native")
    with a.view() as tx:  # the same backend keys, in two key ranges: one per host
        for db, (records, _) in ((a, a_before), (b, b_before)):
            table = b"%s\x00s" % db.stored_snapshotter("native").encode()
            assert sorted(key[len(table):].decode() for key in tx.kv.keys("snapshotters", table)) == sorted(records)
    assert sorted(a_before[0]) == sorted(b_before[0]) and len(a_before[0]) == 4

    stats = a.garbage_collect()
    assert not stats.errors
    # the sweep is the fleet's (one collector): every host's unreferenced records go ...
    for db in fleet:
        assert sorted(info.name for info in db.namespace(NS).snapshotter("native").walk()) == ["base", "work"]
    # ... but only this host's backend is cleaned: the other's records and directories stay
    assert backend_state(b) == b_before
    a_records, a_dirs = backend_state(a)
    assert sorted(a_records) == sorted(k for k in a_before[0] if k.rsplit("/", 1)[1] in ("base", "work"))
    assert a_dirs == sorted(str(sid) for sid, _ in a_records.values())
    a_after = backend_state(a)

    stats = b.garbage_collect()
    assert not stats.errors
    assert backend_state(a) == a_after
    b_records, b_dirs = backend_state(b)
    assert sorted(b_records) == sorted(k for k in b_before[0] if k.rsplit("/", 1)[1] in ("base", "work"))
    assert b_dirs == sorted(str(sid) for sid, _ in b_records.values())
    for db, name in ((a, "a"), (b, "b")):
        assert read_mark(db, "base") == name
        report = db.fsck()
        assert report.clean, [finding for finding in report.findings if not finding.note]


def test_what_one_hosts_objects_reference_survives_the_other_hosts_collection(fleet):
    a, b = fleet
    ns_b = b.namespace(NS)
    flat = ns_b.leases.create("flat", labels={"containerd.io/gc.flat": "yes"})
    ns_b.with_lease(flat.id).snapshotter("native").prepare("leased-flat")
    ns_b.snapshotter("native").prepare("b-layer")
    ns_b.snapshotter("native").commit("b-committed", "b-layer")
    blob(ns_b, b"config", labels={"containerd.io/gc.ref.snapshot.native": "b-committed",
                                  "containerd.io/gc.root": "yes"})
    ns_b.snapshotter("native").prepare("b-work", "b-committed")
    ns_b.containers.create(Container("b-ctr", RuntimeInfo("io.containerd.runc.v2"), snapshotter="native",
                                     snapshot_key="b-work"))
    ns_b.snapshotter("native").prepare("b-garbage")
    before = backend_state(b)

    assert not a.garbage_collect().errors
    kept = sorted(info.name for info in ns_b.snapshotter("native").walk())
    assert kept == ["b-committed", "b-work", "leased-flat"]
    assert backend_state(b) == before  # only b's collection cleans b's backend
    assert not b.garbage_collect().errors
    records, dirs = backend_state(b)
    assert sorted(key.rsplit("/", 1)[1] for key in records) == kept
    assert dirs == sorted(str(sid) for sid, _ in records.values())


def test_each_host_names_its_own_snapshot_nodes_and_the_others_by_scope(fleet):
    a, b = fleet
    for db in fleet:
        db.namespace(NS).snapshotter("native").prepare("same", labels={"containerd.io/gc.root": "yes"})
    other = Node(ResourceType.SNAPSHOT, NS, f"{b.stored_snapshotter('native')}/same")
    mine = Node(ResourceType.SNAPSHOT, NS, "native/same")
    snapshots = {node for node in a.nodes() if node.type == ResourceType.SNAPSHOT}
    assert snapshots == {mine, other}
    assert {node for node in a.mark() if node.type == ResourceType.SNAPSHOT} == {mine, other}
    assert a.explain(mine) == [mine]
    assert a.explain(other) == [other]


def test_the_host_scope_lives_in_the_backend_root(tmp_path, etcd_url):
    db = open_host(str(tmp_path / "host"), str(tmp_path / "content"), etcd_url)
    try:
        db.namespace(NS).snapshotter("native").prepare("k")
        stored = db.stored_snapshotter("native")
        root = db.snapshotter_backend("native").root
    finally:
        db.close()
    with open(os.path.join(root, "host.json")) as f:
        assert stored == f"native@{json.load(f)['host']}"
    again = open_host(str(tmp_path / "host"), str(tmp_path / "content"), etcd_url)
    try:
        assert again.stored_snapshotter("native") == stored
        assert [info.name for info in again.namespace(NS).snapshotter("native").walk()] == ["k"]
        with again.view() as tx:
            assert tx.kv.get(schema.T_OBJECTS, schema.object_key(NS, schema.K_SNAPSHOT, stored, "k")) is not None
    finally:
        again.close()
    # another root (another host) on the same prefix has none of them
    other = open_host(str(tmp_path / "other"), str(tmp_path / "content"), etcd_url)
    try:
        with pytest.raises(NotFound):
            other.namespace(NS).snapshotter("native").stat("k")
    finally:
        other.close()


def test_one_host_keeps_containerds_keys(tmp_path):
    db = open_host(str(tmp_path / "host"), str(tmp_path / "content"))
    try:
        db.namespace(NS).snapshotter("native").prepare("k")
        assert db.stored_snapshotter("native") == "native" and not db.fleet
        with db.view() as tx:
            assert tx.kv.get(schema.T_OBJECTS, schema.object_key(NS, schema.K_SNAPSHOT, "native", "k")) is not None
            assert tx.kv.has_prefix("snapshotters", b"native\x00s")
            assert tx.kv.get(schema.T_GC, schema.pack_node(ResourceType.SNAPSHOT, NS, "native/k")) is not None
        assert not os.path.exists(os.path.join(db.snapshotter_backend("native").root, "host.json"))
    finally:
        db.close()


@pytest.mark.parametrize("lost", ["host.json", "records on LMDB"])
def test_a_backend_with_directories_but_no_scope_is_refused(tmp_path, etcd_url, lost):
    """A snapshot root whose ``host.json`` was lost, or whose records are on LMDB, is refused on a
    shared engine (FailedPrecondition naming the file) instead of getting a new scope, under which
    no record would own its directories and the next collection would delete them all."""
    host, content = str(tmp_path / "host"), str(tmp_path / "content")
    db = open_host(host, content, etcd_url if lost == "host.json" else None)
    try:
        build(db, "a")
        backend = db.snapshotter_backend("native")
        scope_file, snapshots = os.path.join(backend.root, "host.json"), os.path.join(backend.root, "snapshots")
    finally:
        db.close()
    if lost == "host.json":
        os.unlink(scope_file)
    before = sorted(os.listdir(snapshots))
    assert before and not os.path.exists(scope_file)
    with pytest.raises(FailedPrecondition, match="host.json"):
        open_host(host, content, etcd_url)
    assert sorted(os.listdir(snapshots)) == before and not os.path.exists(scope_file)


@pytest.mark.parametrize("text", [b"", b"\xff\xfe", b"[1]", b'{"host": "../../etc"}', b'{"host": "' + b"a" * 5000 + b'"}'])
def test_a_damaged_host_scope_file_is_refused(tmp_path, etcd_url, text):
    """A ``host.json`` that is empty, not JSON text, not an object, or names no 16-hex scope
    (a path, an overlong value) is Corrupted naming the file; it is never replaced by a new scope."""
    host, content = str(tmp_path / "host"), str(tmp_path / "content")
    db = open_host(host, content, etcd_url)
    try:
        db.namespace(NS).snapshotter("native").prepare("k")
        scope_file = os.path.join(db.snapshotter_backend("native").root, "host.json")
    finally:
        db.close()
    with open(scope_file, "wb") as f:
        f.write(text)
    with pytest.raises(Corrupted, match="host.json"):
        open_host(host, content, etcd_url)
    with open(scope_file, "rb") as f:
        assert f.read() == text
