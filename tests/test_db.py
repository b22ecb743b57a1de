"""DB: init and migrations, transactions, locking, callbacks, durability, damage."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

import cargohold
from cargohold import errors, migrations, schema
from cargohold.db import DB
from cargohold.migrations import Migration
from conftest import run_python


def test_open_creates_layout_and_version(root):
    with cargohold.open(root) as db:
        assert db.version == migrations.latest_version()
        assert db.namespaces.list() == []  # opening creates no namespace
    assert (root / "meta" / "data.mdb").is_file()


def test_persistence_across_reopen(root):
    with cargohold.open(root) as db:
        db.namespaces.create("one", {"a": "1"})
        db.namespaces.set_label("one", "b", "2")
    with cargohold.open(root) as db:
        assert db.namespaces.list() == ["one"]
        assert db.namespaces.labels("one") == {"a": "1", "b": "2"}


def test_failed_update_rolls_back_everything(db):
    db.namespaces.create("keep")
    with pytest.raises(RuntimeError):
        with db.update() as tx:
            db.namespaces.create("gone", tx=tx)
            db.namespaces.set_label("keep", "x", "y", tx=tx)
            raise RuntimeError("fail after two writes")
    assert db.namespaces.list() == ["keep"]
    assert db.namespaces.labels("keep") == {}


def test_failed_store_call_changes_nothing(db):
    db.namespaces.create("a")
    with pytest.raises(errors.AlreadyExists):
        with db.update() as tx:
            db.namespaces.create("b", tx=tx)
            db.namespaces.create("a", tx=tx)
    assert db.namespaces.list() == ["a"]


def test_calls_inside_update_join_it(db):
    with pytest.raises(RuntimeError):
        with db.update():
            db.namespaces.create("joined")  # no tx=: joins the open transaction
            with db.update():
                db.namespaces.set_label("joined", "k", "v")
            raise RuntimeError
    assert db.namespaces.list() == []
    with db.update():
        db.namespaces.create("joined")
        assert db.namespaces.list() == ["joined"]  # reads see the transaction's own writes
    assert db.namespaces.list() == ["joined"]


def test_writing_in_a_view_is_refused(db):
    with db.view() as tx:
        with pytest.raises(errors.InvalidArgument):
            db.namespaces.create("x", tx=tx)
        with pytest.raises(errors.FailedPrecondition):
            db.namespaces.create("x")
    assert db.namespaces.list() == []


def test_tx_of_another_db_is_refused(db, tmp_path):
    with cargohold.open(tmp_path / "other") as other:
        with other.update() as tx:
            with pytest.raises(errors.InvalidArgument):
                db.namespaces.create("x", tx=tx)


def test_view_is_a_consistent_snapshot(db):
    db.namespaces.create("before")
    with db.view() as tx:
        t = threading.Thread(target=lambda: db.namespaces.create("after"))
        t.start()
        t.join(10)
        assert db.namespaces.list(tx=tx) == ["before"]
    assert db.namespaces.list() == ["after", "before"]


def test_readers_in_threads_beside_a_writer(db):
    """Readers run and finish while a write transaction is open; each sees a committed state."""
    db.namespaces.create("ns", {"n": "0"})
    stop = threading.Event()
    observed = []
    failures = []

    def reader():
        while not stop.is_set():
            try:
                observed.append(int(db.namespaces.labels("ns")["n"]))
            except Exception as exc:  # pragma: no cover - reported below
                failures.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for r in readers:
        r.start()
    for i in range(1, 51):
        with db.update() as tx:
            db.namespaces.set_label("ns", "n", str(i), tx=tx)
            count = len(observed)
            deadline = time.monotonic() + 5
            while len(observed) == count and time.monotonic() < deadline:
                time.sleep(0.0005)  # readers progress while the writer holds its transaction
            assert len(observed) > count
    deadline = time.monotonic() + 5
    while 50 not in observed and time.monotonic() < deadline:
        time.sleep(0.001)  # the last commit becomes visible to readers
    stop.set()
    for r in readers:
        r.join(10)
    assert not failures
    assert set(observed) <= set(range(51))
    assert max(observed) == 50


def test_two_processes_write_one_root(root):
    cargohold.open(root).close()
    script = """
        import sys, cargohold
        tag = sys.argv[1] if len(sys.argv) > 1 else "{tag}"
        with cargohold.open({root!r}) as db:
            for i in range(100):
                with db.update() as tx:
                    db.namespaces.create(f"{tag}-{{i}}", tx=tx)
                    db.namespaces.set_label("shared", f"{tag}-{{i}}", "x", tx=tx)
    """
    import subprocess
    import sys
    import textwrap

    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(script.format(tag=tag, root=str(root)))],
                              stderr=subprocess.PIPE, text=True) for tag in ("p1", "p2")]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    with cargohold.open(root) as db:
        names = db.namespaces.list()
        assert len(names) == 201
        assert len(db.namespaces.labels("shared")) == 200


def test_wlock_holds_off_writers_of_other_processes(db, root):
    """While the collector's lock is held exclusively, another process cannot commit."""
    marker = root / "written"
    with db.wlock.exclusive():
        import subprocess
        import sys
        import textwrap

        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import cargohold, pathlib
            with cargohold.open({str(root)!r}) as db:
                pathlib.Path({str(marker)!r}).write_text("started")
                db.namespaces.create("late")
                pathlib.Path({str(marker)!r}).write_text("committed")
        """)])
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)
        assert marker.read_text() == "started"
        assert db.namespaces.list() == []  # readers are not blocked by the lock
    assert proc.wait(timeout=30) == 0
    assert marker.read_text() == "committed"
    assert db.namespaces.list() == ["late"]


def test_mutation_callbacks(db):
    calls = []
    db.register_mutation_callback(calls.append)
    db.namespaces.create("a")
    assert calls == [False]
    with pytest.raises(RuntimeError):
        with db.update():
            db.namespaces.create("b")
            raise RuntimeError
    assert calls == [False]  # no callback for a rolled-back update
    db.namespaces.delete("a")  # a deletion marks the database dirty
    assert calls == [False, True]
    assert db.dirty == 1
    with pytest.raises(errors.InvalidArgument):
        db.register_mutation_callback("not callable")


def test_after_commit_and_on_abort_hooks(db):
    done = []
    with db.update() as tx:
        tx.after_commit(lambda: done.append("after"))
        tx.on_abort(lambda: done.append("undo"))
        db.namespaces.create("x", tx=tx)
        assert done == []
    assert done == ["after"]
    done.clear()
    with pytest.raises(RuntimeError):
        with db.update() as tx:
            tx.after_commit(lambda: done.append("after"))
            tx.on_abort(lambda: done.append("undo"))
            raise RuntimeError
    assert done == ["undo"]


def test_publisher_receives_events_after_commit(root):
    events = []
    with cargohold.open(root, publisher=lambda ns, topic, ev: events.append((ns, topic, ev))) as db:
        with db.update() as tx:
            tx.publish("default", "/test", {"k": 1})
            assert events == []
        assert events == [("default", "/test", {"k": 1})]


def test_sequences_are_transactional(db):
    with db.update() as tx:
        assert [tx.next_sequence("s") for _ in range(3)] == [1, 2, 3]
    with pytest.raises(RuntimeError):
        with db.update() as tx:
            tx.next_sequence("s")
            raise RuntimeError
    with db.update() as tx:
        assert tx.next_sequence("s") == 4


def test_database_must_be_initialised(root):
    db = DB(root / "meta")
    try:
        with pytest.raises(errors.FailedPrecondition, match="init"):
            db.namespaces.list()
        db.init()
        assert db.namespaces.list() == []
    finally:
        db.close()


def test_closed_database_is_unavailable(root):
    db = cargohold.open(root)
    db.close()
    with pytest.raises(errors.Unavailable):
        db.namespaces.list()
    db.close()  # closing twice is harmless


def test_newer_database_is_refused(root):
    with cargohold.open(root) as db:
        with db._env.write() as txn:
            txn.put(schema.T_META, schema.META_VERSION, cargohold._native.encode_varint(999))
    with pytest.raises(errors.FailedPrecondition, match="version 999.*upgrade cargohold"):
        cargohold.open(root)


def test_foreign_schema_is_refused(root):
    with cargohold.open(root) as db:
        with db._env.write() as txn:
            txn.put(schema.T_META, schema.META_SCHEMA, b"v9")
    with pytest.raises(errors.FailedPrecondition, match="schema"):
        cargohold.open(root)


def test_damaged_version_is_corrupted(root):
    with cargohold.open(root) as db:
        with db._env.write() as txn:
            txn.put(schema.T_META, schema.META_VERSION, b"\x80")
    with pytest.raises(errors.Corrupted):
        cargohold.open(root)


# -- migrations ------------------------------------------------------------------------------


def _older_database(root, version: int) -> None:
    """A database as an older cargohold left it: data present, version below ours."""
    with cargohold.open(root) as db:
        db.namespaces.create("old", {"kept": "yes"})
        with db._env.write() as txn:
            if version == 0:
                txn.delete(schema.T_META, schema.META_VERSION)
                txn.delete(schema.T_META, schema.META_SCHEMA)
            else:
                txn.put(schema.T_META, schema.META_VERSION, cargohold._native.encode_varint(version))


def test_migration_1_initial_layout(root):
    _older_database(root, 0)
    with cargohold.open(root) as db:
        assert db.version == migrations.latest_version()
        with db._env.read() as txn:
            assert txn.get(schema.T_META, schema.META_SCHEMA) == schema.SCHEMA
        assert db.namespaces.labels("old") == {"kept": "yes"}


def test_migration_2_identity(root):
    """A database from before identities gets one, written once, and adopts the backends it was used with."""
    with cargohold.open(root) as db:
        ns = db.namespace("default")
        with ns.content.writer("r") as w:
            w.write(b"old blob")
            digest = w.commit(8).digest
        with db._env.write() as txn:
            txn.delete(schema.T_META, schema.META_IDENTITY)
            txn.put(schema.T_META, schema.META_VERSION, cargohold._native.encode_varint(1))
    owners = [root / "content" / "owner.json", root / "snapshots" / "native" / "owner.json",
              root / "snapshots" / "overlayfs" / "owner.json"]
    for owner in owners:
        owner.unlink()
    with cargohold.open(root) as db:
        assert db.version == migrations.latest_version()
        identity = db.identity
        assert len(identity) == 32 and int(identity, 16) >= 0
        assert all(json.loads(owner.read_text()) == {"database": identity} for owner in owners)
        db.namespace("default").content.delete(digest)
        assert db.garbage_collect().errors == []
        assert not db.content_store.exists(digest)  # an adopted backend is cleaned as before
    with cargohold.open(root) as db:
        assert db.identity == identity  # written once


def _version_2_root_with_an_overlay_snapshotter(root, monkeypatch) -> dict:
    """A root as cargohold wrote it before the overlay backend took containerd's name."""
    from cargohold import Container, Resource, RuntimeInfo, model
    from cargohold.content.local import LocalStore
    from cargohold.snapshots import OverlaySnapshotter

    from gcutil import blob, chain

    with monkeypatch.context() as m:
        m.setattr(model, "SNAPSHOTTER_ALIASES", {})
        m.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:2])
        m.setattr(DB, "_bind_backends", lambda db: None)  # before version 4: the backend's own metastore
        backend = OverlaySnapshotter(root / "snapshots" / "overlay")
        with DB(str(root / "meta"), LocalStore(root / "content"), {"overlay": backend}) as db:
            db.init()
            ns = db.namespace("default")
            chain(ns, ["l1", "l2"], snapshotter="overlay")
            chain(ns, ["gone"], snapshotter="overlay")
            ns.snapshotter("overlay").remove("gone")  # a pending deletion: its dirty marker
            config = blob(ns, b"config", labels={"containerd.io/gc.ref.snapshot.overlay": "l2"})
            chain(ns, ["leased"], snapshotter="overlay")
            lease = ns.leases.create("hold")
            ns.leases.add_resource(lease.id, Resource("leased", "snapshots/overlay"))
            ns.snapshotter("overlay").prepare("web", "l2")
            ns.containers.create(Container("web", RuntimeInfo("io.containerd.runc.v2"), snapshotter="overlay",
                                           snapshot_key="web"))
            nodes = {(n.type, n.key) for n in db.nodes()}
            assert db.version == 2
    return {"config": config, "nodes": nodes}


def test_migration_3_overlayfs(root, monkeypatch):
    """The overlay snapshotter's records, edges, lease resources, marker and sequence take the name overlayfs."""
    from cargohold import Node, Resource, ResourceType

    before = _version_2_root_with_an_overlay_snapshotter(root, monkeypatch)
    assert not (root / "snapshots" / "overlayfs").exists()
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:3])  # migration 3 alone
    with cargohold.open(root) as db:
        assert db.version == 3
        assert not (root / "snapshots" / "overlay").exists() and (root / "snapshots" / "overlayfs").is_dir()
        assert {(t, k.replace("overlay/", "overlayfs/", 1)) for t, k in before["nodes"]} == \
            {(n.type, n.key) for n in db.nodes()}
        assert not any(n.key.startswith("overlay/") for n in db.nodes())
        ns = db.namespace("default")
        for name in ("overlayfs", "overlay"):
            assert [i.name for i in ns.snapshotter(name).walk()] == ["l1", "l2", "leased", "web"]
        (mount,) = ns.snapshotter("overlay").mounts("web")  # the backend's directories moved too
        upper = next(o for o in mount.options if o.startswith("upperdir="))
        assert upper.startswith(f"upperdir={root / 'snapshots' / 'overlayfs' / 'snapshots'}/")
        assert os.path.isdir(upper.partition("=")[2])
        assert ns.containers.get("web").snapshotter == "overlayfs"
        assert ns.leases.list_resources("hold") == [Resource("leased", "snapshots/overlayfs")]
        kept = db.mark()
        assert Node(ResourceType.SNAPSHOT, "default", "overlayfs/l1") in kept  # through the label and the container
        assert Node(ResourceType.SNAPSHOT, "default", "overlayfs/leased") in kept  # through the lease
        assert db.explain(Node(ResourceType.SNAPSHOT, "default", "overlayfs/l1"))[0].type in (
            ResourceType.CONTAINER, ResourceType.CONTENT)
        with db._env.read() as txn:
            assert txn.get(schema.T_META, schema.dirty_snapshotter_key("overlayfs")) is not None
            assert txn.get(schema.T_META, schema.dirty_snapshotter_key("overlay")) is None
        stats = db.garbage_collect()  # the renamed marker sends the cleanup to the renamed backend
        assert stats.errors == [] and stats.snapshot_dirs["overlayfs"].count == 1
        ns.snapshotter("overlay").prepare("after", "l2")  # the sequence went on: a fresh backend key
        assert [i.name for i in ns.snapshotter("overlayfs").walk()][0] == "after"


def test_migrations_run_in_order_in_one_transaction(root, monkeypatch):
    _older_database(root, 1)
    ran = []

    def second(tx):
        ran.append(2)
        tx.kv.put(schema.T_META, b"m2", b"done")

    def third(tx):
        ran.append(3)
        assert tx.kv.get(schema.T_META, b"m2") == b"done"

    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS + [
        Migration(2, "second", second), Migration(3, "third", third)])
    with cargohold.open(root) as db:
        assert ran == [2, 3]
        assert db.version == 3
    ran.clear()
    with cargohold.open(root):
        assert ran == []  # already applied


def test_failed_migration_changes_nothing(root, monkeypatch):
    _older_database(root, 1)

    def writes_then_fails(tx):
        tx.kv.put(schema.T_META, b"half", b"done")
        raise RuntimeError("migration bug")

    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS + [
        Migration(2, "ok", lambda tx: tx.kv.put(schema.T_META, b"m2", b"x")),
        Migration(3, "broken", writes_then_fails)])
    with pytest.raises(RuntimeError, match="migration bug"):
        cargohold.open(root)
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:1])
    with cargohold.open(root) as db:
        assert db.version == 1
        with db._env.read() as txn:
            assert txn.get(schema.T_META, b"m2") is None
            assert txn.get(schema.T_META, b"half") is None


# -- damage ------------------------------------------------------------------------------------


def _data_file(root):
    return root / "meta" / "data.mdb"


def _populate(root):
    with cargohold.open(root) as db:
        for i in range(200):
            db.namespaces.create(f"ns{i}", {"pad": "x" * 200})


@pytest.mark.parametrize("damage", ["truncate", "zero-header", "garbage", "empty"])
def test_damaged_file_raises_cargohold_error(root, damage):
    _populate(root)
    path = _data_file(root)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 3])
    elif damage == "zero-header":
        path.write_bytes(b"\x00" * 8192 + data[8192:])
    elif damage == "garbage":
        path.write_bytes(os.urandom(len(data)))
    else:
        path.write_bytes(b"")
    # in a child process, so that a crash would fail the test instead of killing pytest
    proc = run_python(f"""
        import cargohold
        try:
            with cargohold.open({str(root)!r}) as db:
                db.namespaces.list()
                print("opened")
        except cargohold.errors.Error as exc:
            print("error", type(exc).__name__)
    """, check=False)
    assert proc.returncode == 0, proc.stderr
    if damage == "empty":
        # an emptied data file is a lost database, never silently a fresh one
        assert proc.stdout.split() == ["error", "Corrupted"]
    else:
        assert proc.stdout.split()[0] == "error", proc.stdout


def test_damaged_record_raises_corrupted(db):
    db.namespaces.create("x")
    with db._env.write() as txn:
        txn.put(schema.T_NAMESPACES, b"x", b"\xc1\xc1")  # 0xc1 is never valid msgpack
    with pytest.raises(errors.Corrupted):
        db.namespaces.labels("x")
