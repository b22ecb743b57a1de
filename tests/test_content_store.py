"""ns.content: the namespaced content store over a real LocalStore and a real LMDB."""

from __future__ import annotations

import os
import signal
import threading
from datetime import datetime, timedelta, timezone

import pytest

import cargohold
from cargohold import Info, Resource, ResourceType, errors, schema
from cargohold.content import LocalStore
from cargohold.content.store import (
    INGEST_EXPIRY_NS,
    collect_backend,
    remove_blob_for_gc,
    remove_ingest_for_gc,
)
from cargohold.events import TOPIC_CONTENT_CREATE, TOPIC_CONTENT_DELETE, ContentCreate, ContentDelete
from cargohold.gc import index
from cargohold.timeutil import to_ns
from content_util import EMPTY_SHA256, blob, digest_of, expect_line, files_under, periodic, spawn
from storeutil import entry, record_count

SHAREABLE = "containerd.io/namespace.shareable"


def put(ns, ref, data, labels=None):
    """Write and commit one blob through the namespace; returns its digest."""
    with ns.content.writer(ref, total=len(data), expected=digest_of(data)) as w:
        w.write(data)
        w.commit(len(data), digest_of(data), labels)
    return digest_of(data)


def backend_digests(db):
    return sorted(i.digest for i in db.content_store.walk())


def lease_resources(db, ns, lease_id):
    return sorted(db.namespace(ns).leases.list_resources(lease_id), key=lambda r: (r.type, r.id))


def test_open_wires_the_local_store(root):
    with cargohold.open(root) as db:
        assert isinstance(db.content_store, LocalStore)
        assert db.content_store.root == str(root / "content")
        assert os.path.isdir(root / "content" / "blobs")


def test_commit_info_read_open(db):
    ns = db.namespace("default")
    data = blob(70_000, 1)
    d = digest_of(data)
    before = datetime.now(timezone.utc)
    with ns.content.writer("ref-1", total=len(data), expected=d) as w:
        w.write(data[:1000])
        assert (w.status().offset, w.status().total, w.status().expected) == (1000, len(data), d)
        w.write(data[1000:])
        info = w.commit(len(data), d, {"k": "v"})
    assert w.closed and w.digest() == d  # the digest stays known after commit
    assert (info.digest, info.size, info.labels) == (d, len(data), {"k": "v"})
    assert before - timedelta(seconds=1) <= info.created_at == info.updated_at
    assert ns.content.info(d) == info
    assert ns.content.read(d) == data
    with ns.content.open(d) as f:
        f.seek(60_000)
        assert f.read(5) == data[60_000:60_005]
    assert [i.digest for i in ns.content.walk()] == [d]
    assert ns.content.statuses() == []
    node = entry(db, ResourceType.CONTENT, "default", d)
    assert node is not None and not node.flags & index.F_ROOT
    assert entry(db, ResourceType.INGEST, "default", "ref-1") is None
    assert db.namespaces.list() == ["default"]


def test_blobs_are_visible_only_where_committed(root):
    with cargohold.open(root, shared=False) as db:
        a, b = db.namespace("a"), db.namespace("b")
        d = put(a, "r", b"only in a")
        for call in (b.content.info, b.content.read, b.content.open, b.content.delete):
            with pytest.raises(errors.NotFound, match="namespace 'b'"):
                call(d)
        assert list(b.content.walk()) == []
        assert backend_digests(db) == [d]


def test_shared_policy_commits_without_bytes(db):
    a, b = db.namespace("a"), db.namespace("b")
    data = blob(1000, 2)
    d = put(a, "ref-1000", data)
    with b.content.writer("ref-1000", total=1000, expected=d) as w:
        status = w.status()
        assert (status.ref, status.offset, status.total, status.expected) == ("ref-1000", 1000, 1000, d)
        assert w.digest() == d
        assert [(s.ref, s.offset) for s in b.content.statuses()] == [("ref-1000", 1000)]
        info = w.commit(1000, d)
    assert info.size == 1000
    assert b.content.read(d) == a.content.read(d) == data
    assert backend_digests(db) == [d]  # one copy of the bytes


def test_shared_writer_checks_size_and_digest_at_commit(db):
    a, b = db.namespace("a"), db.namespace("b")
    d = put(a, "r", b"twelve bytes")
    w = b.content.writer("r", expected=d)
    with pytest.raises(errors.FailedPrecondition, match="expected size 11"):
        w.commit(11, d)
    with pytest.raises(errors.NotFound):
        b.content.info(d)
    with b.content.writer("r", expected=d) as w:
        with pytest.raises(errors.FailedPrecondition, match=digest_of(b"x")):
            w.commit(12, digest_of(b"x"))
    with pytest.raises(errors.NotFound):
        b.content.info(d)
    assert b.content.status("r").offset == 12


def test_shared_writer_whose_blob_vanished(db):
    a, b = db.namespace("a"), db.namespace("b")
    d = put(a, "r", b"vanishing")
    w = b.content.writer("r", expected=d)
    os.unlink(db.content_store.blob_path(d))  # behind the store's back
    with pytest.raises(errors.FailedPrecondition, match="no longer in the content store"):
        w.commit(9, d)
    with pytest.raises(errors.NotFound):
        b.content.info(d)
    with b.content.writer("r", expected=d) as w:
        assert w.status().offset == 0  # nothing left to share: the bytes must come
        w.write(b"vanishing")
        w.commit(9, d)
    assert b.content.read(d) == a.content.read(d) == b"vanishing"


def test_shared_writer_appends_after_copying(db):
    a, b = db.namespace("a"), db.namespace("b")
    data = blob(1000, 3)
    d = put(a, "ref", data)
    extra = b"appended bytes"
    with b.content.writer("ref", total=1000, expected=d) as w:
        assert w.status().offset == 1000
        w.write(extra)
        assert w.status().offset == 1014
        w.commit(1014, digest_of(data + extra))
    assert b.content.read(digest_of(data + extra)) == data + extra
    with pytest.raises(errors.NotFound):
        b.content.info(d)
    assert a.content.read(d) == data


def test_shared_writer_truncates_by_copying_a_prefix(db):
    a, b = db.namespace("a"), db.namespace("b")
    data = blob(3000, 4)
    d = put(a, "r", data)
    with b.content.writer("r", expected=d) as w:
        w.truncate(1200)
        assert (w.status().offset, w.digest()) == (1200, digest_of(data[:1200]))
        w.close()
    assert b.content.status("r").offset == 1200  # no longer shared: the ingest holds its own bytes
    with b.content.writer("r") as w:
        w.write(data[1200:])
        w.commit(3000, d)
    assert b.content.read(d) == data


def test_shared_policy_needs_a_matching_size(db):
    a, b = db.namespace("a"), db.namespace("b")
    d = put(a, "r", b"12345")
    with b.content.writer("r", total=6, expected=d) as w:
        assert w.status().offset == 0  # size differs: not shared, the bytes must come


def test_isolated_policy_requires_the_bytes(root):
    with cargohold.open(root, shared=False) as db:
        a, b = db.namespace("a"), db.namespace("b")
        data = blob(1000, 5)
        d = put(a, "ref", data)
        with b.content.writer("ref", total=1000, expected=d) as w:
            assert (w.status().offset, w.digest()) == (0, EMPTY_SHA256)
            w.write(data)
            w.commit(1000, d)
        assert b.content.read(d) == data
        assert backend_digests(db) == [d]


def test_shareable_namespace_under_isolated_policy(root):
    with cargohold.open(root, shared=False) as db:
        db.namespaces.set_label("a", SHAREABLE, "true")
        a, b = db.namespace("a"), db.namespace("b")
        d = put(a, "ref", b"shareable bytes")
        with b.content.writer("ref", expected=d) as w:
            assert w.status().offset == 15
            w.commit(15, d)
        assert b.content.read(d) == b"shareable bytes"
        # content only in a namespace without the label is not shared
        c = db.namespace("c")
        d2 = put(c, "ref2", b"private")
        with b.content.writer("ref2", expected=d2) as w:
            assert w.status().offset == 0


def test_writer_for_content_the_namespace_has(db):
    ns = db.namespace("default")
    d = put(ns, "r", b"have it")
    with pytest.raises(errors.AlreadyExists, match=d):
        ns.content.writer("other", expected=d)
    assert ns.content.statuses() == []
    db.namespace("default").leases.create("l1")
    leased = ns.with_lease("l1")
    with pytest.raises(errors.AlreadyExists):
        leased.content.writer("other", expected=d)
    assert lease_resources(db, "default", "l1") == [Resource(d, "content")]
    with pytest.raises(errors.NotFound, match="missing"):
        ns.with_lease("missing").content.writer("other", expected=d)


def test_commit_of_content_the_namespace_has(db):
    ns = db.namespace("default")
    d = put(ns, "r1", b"dup")
    w = ns.content.writer("r2")
    w.write(b"dup")
    with pytest.raises(errors.AlreadyExists, match=d):
        w.commit(3)
    with pytest.raises(errors.NotFound):
        ns.content.status("r2")  # the duplicate ingest is consumed
    assert ns.content.read(d) == b"dup"


def test_commit_mismatch_stores_nothing(db):
    ns = db.namespace("default")
    data = blob(4096, 6)
    w = ns.content.writer("r")
    w.write(data)
    with pytest.raises(errors.FailedPrecondition, match="4096 bytes written, expected size 4095"):
        w.commit(4095)
    wrong = digest_of(b"wrong")
    with ns.content.writer("r") as w:
        with pytest.raises(errors.FailedPrecondition, match=wrong):
            w.commit(4096, wrong)
    assert list(ns.content.walk()) == []
    assert backend_digests(db) == []
    with db.view() as t:
        assert not t.kv.has_prefix(schema.T_OBJECTS, schema.object_prefix("default", schema.K_BLOB))
    assert ns.content.status("r").offset == 4096  # still resumable
    with ns.content.writer("r") as w:
        w.commit(4096, digest_of(data))
    assert ns.content.read(digest_of(data)) == data


def test_leaving_the_block_keeps_the_ingest(db):
    ns = db.namespace("default")
    with ns.content.writer("r") as w:
        w.write(b"part one ")
    assert w.closed
    with pytest.raises(errors.FailedPrecondition, match="closed"):
        w.write(b"more")
    with pytest.raises(errors.FailedPrecondition, match="closed"):
        w.commit()
    assert ns.content.status("r").offset == 9
    with ns.content.writer("r") as w:
        w.write(b"part two")
        w.commit(17, digest_of(b"part one part two"))


def test_resume_across_database_reopen(root):
    data = blob(200_000, 7)
    d = digest_of(data)
    with cargohold.open(root) as db:
        with db.namespace("default").content.writer("r", total=len(data), expected=d) as w:
            w.write(data[:123_456])
    with cargohold.open(root) as db:
        ns = db.namespace("default")
        assert ns.content.status("r").offset == 123_456
        with ns.content.writer("r", total=len(data), expected=d) as w:
            offset = w.status().offset
            assert offset == 123_456 and w.digest() == digest_of(data[:offset])
            w.write(data[offset:])
            w.commit(len(data), d)
        assert ns.content.read(d) == data


def test_labels_update_and_node_table(db):
    ns = db.namespace("default")
    root_time = "2030-01-01T00:00:00Z"
    labels = {"k1": "v1", "k2": "v2", "containerd.io/gc.root": root_time}
    d = put(ns, "r", b"labelled", labels)
    assert ns.content.info(d).labels == labels
    assert entry(db, ResourceType.CONTENT, "default", d).flags & index.F_ROOT

    info = ns.content.update(Info(d, labels={"k1": "new", "k3": "v3"}))  # no paths: replace all
    assert info.labels == {"k1": "new", "k3": "v3"}
    assert info.updated_at >= info.created_at
    assert ns.content.info(d) == info
    assert not entry(db, ResourceType.CONTENT, "default", d).flags & index.F_ROOT

    info = ns.content.update(Info(d, labels={"k1": "v1", "containerd.io/gc.ref.content.x": d}),
                             "labels.k3", "labels.k1", "labels.containerd.io/gc.ref.content.x")
    assert info.labels == {"k1": "v1", "containerd.io/gc.ref.content.x": d}
    edges = entry(db, ResourceType.CONTENT, "default", d).edges
    assert [(k, t) for k, t, _ in edges] == [(index.E_REF, schema.pack_node(ResourceType.CONTENT, "default", d))]

    assert ns.content.update(Info(d, labels={"a": "1"}), "labels").labels == {"a": "1"}
    with pytest.raises(errors.InvalidArgument, match="'size'"):
        ns.content.update(Info(d, size=3, labels={"b": "2"}), "labels", "size")
    with pytest.raises(errors.InvalidArgument, match="4096"):
        ns.content.update(Info(d, labels={"big": "x" * 5000}))
    with pytest.raises(errors.NotFound):
        ns.content.update(Info(digest_of(b"absent"), labels={}))
    assert ns.content.info(d).labels == {"a": "1"}  # the failed updates changed nothing


def test_walk_filters(db):
    ns = db.namespace("default")
    d1 = put(ns, "r1", b"one", {"a.b": "x", "team": "red"})
    d2 = put(ns, "r2", b"two", {"team": "blue"})
    d3 = put(ns, "r3", b"three")

    def digests(*f):
        return sorted(i.digest for i in ns.content.walk(*f))

    assert digests() == sorted([d1, d2, d3])
    assert digests('labels."a.b"==x') == [d1]
    assert digests("labels.team") == sorted([d1, d2])
    assert digests("labels.team==red", "labels.team==blue") == sorted([d1, d2])
    assert digests("labels.team!=red") == sorted([d2, d3])
    assert digests(f"digest=={d3}") == [d3]
    assert digests("labels.team~=^b", f"digest=={d3}") == sorted([d2, d3])
    assert digests("labels.team==red,labels.team==blue") == []
    with pytest.raises(errors.InvalidArgument, match="filter"):
        list(ns.content.walk("labels.team=="))


def test_delete_marks_content_dirty_and_keeps_bytes_until_collected(tmp_path):
    events = []
    with cargohold.open(tmp_path / "r", publisher=lambda *e: events.append(e)) as db:
        ns = db.namespace("default")
        d = put(ns, "r", b"to delete")
        assert events == [("default", TOPIC_CONTENT_CREATE, ContentCreate(d, 9))]
        assert db.dirty == 0
        ns.content.delete(d)
        assert events[-1] == ("default", TOPIC_CONTENT_DELETE, ContentDelete(d))
        assert db.dirty == 1
        with db.view() as t:
            assert t.kv.get(schema.T_META, schema.META_DIRTY_CONTENT) is not None
        assert entry(db, ResourceType.CONTENT, "default", d) is None
        with pytest.raises(errors.NotFound):
            ns.content.info(d)
        with pytest.raises(errors.NotFound):
            ns.content.delete(d)
        assert backend_digests(db) == [d]  # the bytes wait for the collector
        collect_backend(db)
        assert backend_digests(db) == []


def test_ingest_records_expire_after_a_day(tmp_path):
    now = datetime(2030, 5, 1, 12, 0, tzinfo=timezone.utc)
    with cargohold.open(tmp_path / "r", clock=lambda: now) as db:
        ns = db.namespace("default")
        ns.content.writer("r").close()
        node = entry(db, ResourceType.INGEST, "default", "r")
        assert node.flags & index.F_ROOT and node.expire == to_ns(now) + INGEST_EXPIRY_NS
        assert node.expire == to_ns(now + timedelta(hours=24))
        now += timedelta(hours=5)
        ns.content.writer("r").close()  # reopening pushes the expiry back
        assert entry(db, ResourceType.INGEST, "default", "r").expire == to_ns(now + timedelta(hours=24))


def test_leased_ingests_and_content(db):
    db.namespace("default").leases.create("l1")
    ns = db.namespace("default").with_lease("l1")
    w = ns.content.writer("r")
    node = entry(db, ResourceType.INGEST, "default", "r")
    assert not node.flags & (index.F_ROOT | index.F_EXPIRES)  # lives by its lease
    assert lease_resources(db, "default", "l1") == [Resource("r", "ingests")]
    w.write(b"leased")
    w.commit()
    d = digest_of(b"leased")
    assert lease_resources(db, "default", "l1") == [Resource(d, "content")]
    assert entry(db, ResourceType.INGEST, "default", "r") is None
    ns.content.delete(d)
    assert lease_resources(db, "default", "l1") == []
    with pytest.raises(errors.NotFound, match="nolease"):
        db.namespace("default").with_lease("nolease").content.writer("x")
    assert db.namespace("default").content.statuses() == []


def test_shared_ingest_references_its_content(db):
    d = put(db.namespace("a"), "r", b"shared")
    db.namespace("b").content.writer("r", expected=d).close()
    node = entry(db, ResourceType.INGEST, "b", "r")
    assert [(k, t) for k, t, _ in node.edges] == [(index.E_STRONG, schema.pack_node(ResourceType.CONTENT, "b", d))]


def test_status_statuses_abort(db):
    ns = db.namespace("default")
    for ref, n in [("pull-1", 3), ("pull-2", 5), ("push-1", 7)]:
        with ns.content.writer(ref, total=10) as w:
            w.write(b"x" * n)
    assert [(s.ref, s.offset, s.total) for s in ns.content.statuses()] == [
        ("pull-1", 3, 10), ("pull-2", 5, 10), ("push-1", 7, 10)]
    assert [s.ref for s in ns.content.statuses("ref~=^pull")] == ["pull-1", "pull-2"]
    assert [s.ref for s in ns.content.statuses("ref==push-1", "ref==pull-2")] == ["pull-2", "push-1"]
    assert ns.content.status("pull-2").offset == 5
    assert db.namespace("other").content.statuses() == []
    with pytest.raises(errors.NotFound, match="'other'"):
        db.namespace("other").content.status("pull-1")

    w = ns.content.writer("pull-1")
    with pytest.raises(errors.Unavailable, match="'pull-1' of namespace 'default': it is open"):
        ns.content.abort("pull-1")  # open: the failed abort changes nothing
    assert ns.content.status("pull-1").offset == 3
    w.close()
    ns.content.abort("pull-1")
    with pytest.raises(errors.NotFound):
        ns.content.status("pull-1")
    with pytest.raises(errors.NotFound):
        ns.content.abort("pull-1")
    assert entry(db, ResourceType.INGEST, "default", "pull-1") is None
    assert sorted(s.offset for s in db.content_store.statuses()) == [5, 7]
    with ns.content.writer("pull-1") as w:
        assert w.status().offset == 0


def test_concurrent_writers_in_threads(db):
    ns = db.namespace("default")
    datas = [blob(50_000, 100 + i) for i in range(8)]
    errors_seen = []

    def work(i):
        try:
            with ns.content.writer(f"ref-{i}", total=len(datas[i])) as w:
                for j in range(0, len(datas[i]), 5000):
                    w.write(datas[i][j:j + 5000])
                w.commit(len(datas[i]), digest_of(datas[i]))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors_seen.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors_seen == []
    assert sorted(i.digest for i in ns.content.walk()) == sorted(digest_of(d) for d in datas)

    w = ns.content.writer("same")
    outcome = []
    t = threading.Thread(target=lambda: outcome.append(_try_writer(ns, "same")))
    t.start()
    t.join()
    assert outcome == ["Unavailable"]
    w.close()


def _try_writer(ns, ref):
    try:
        ns.content.writer(ref).close()
        return "opened"
    except errors.Unavailable:
        return "Unavailable"


def test_second_writer_in_another_process(root):
    with cargohold.open(root) as db:
        ns = db.namespace("default")
        child = spawn(f"""
            import cargohold
            db = cargohold.open({str(root)!r})
            w = db.namespace("default").content.writer("held")
            w.write(b"123")
            print("holding", flush=True)
            input()
            w.close()
            print("released", flush=True)
        """)
        try:
            expect_line(child, "holding")
            with pytest.raises(errors.Unavailable, match="'held' of namespace 'default' is open in another"):
                ns.content.writer("held")
            child.stdin.write("\n")
            child.stdin.flush()
            expect_line(child, "released")
        finally:
            child.kill()
            child.wait()
        with ns.content.writer("held") as w:
            assert w.status().offset == 3


def test_kill_during_write_leaves_a_resumable_ingest(root):
    child = spawn(f"""
        import cargohold, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from content_util import periodic
        db = cargohold.open({str(root)!r})
        w = db.namespace("default").content.writer("big")
        offset = 0
        while offset < 1 << 30:
            w.write(periodic(offset, offset + 65536))
            offset += 65536
            if offset == 4 << 20:
                print("writing", flush=True)
    """)
    try:
        expect_line(child, "writing")
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL
    finally:
        child.kill()
    with cargohold.open(root) as db:
        ns = db.namespace("default")
        offset = ns.content.status("big").offset
        assert 4 << 20 <= offset < 1 << 30
        assert backend_digests(db) == []  # no partial blob
        with ns.content.writer("big") as w:  # the lock died with the process
            assert w.status().offset == offset
            assert w.digest() == digest_of(periodic(0, offset))
            end = offset + 100_000
            w.write(periodic(offset, end))
            info = w.commit(end, digest_of(periodic(0, end)))
        assert info.size == end
        with ns.content.open(info.digest) as f:
            f.seek(offset - 10)
            assert f.read(20) == periodic(offset - 10, offset + 10)


def test_writer_and_commit_join_a_transaction(db):
    ns = db.namespace("default")
    with pytest.raises(RuntimeError):
        with db.update() as tx:
            w = ns.content.writer("in-tx", tx=tx)
            w.write(b"rolled back")
            w.commit(tx=tx)
            raise RuntimeError("abort the transaction")
    with pytest.raises(errors.NotFound):
        ns.content.info(digest_of(b"rolled back"))
    with db.update() as tx:
        with ns.content.writer("in-tx", tx=tx) as w:
            w.write(b"kept")
            w.commit(tx=tx)
        assert ns.content.info(digest_of(b"kept"), tx=tx).size == 4
    assert ns.content.read(digest_of(b"kept")) == b"kept"
    with db.view() as tx, pytest.raises(errors.InvalidArgument, match="read-only"):
        ns.content.delete(digest_of(b"kept"), tx=tx)


@pytest.mark.parametrize("call,message", [
    (lambda c: c.writer(""), "must not be empty"),
    (lambda c: c.writer("r" * 300), "255-byte limit"),
    (lambda c: c.writer("r", total=-5), "negative"),
    (lambda c: c.writer("r", expected="md5:abc"), "md5:abc"),
    (lambda c: c.info("sha256:ABC"), "sha256:ABC"),
    (lambda c: c.read("bad"), "bad"),
    (lambda c: c.delete("sha256:"), "sha256:"),
    (lambda c: c.update("not-info"), "Info"),
    (lambda c: c.status("a\x00b"), "NUL"),
    (lambda c: c.abort(""), "must not be empty"),
    (lambda c: c.walk("labels.=="), "filter"),
    (lambda c: c.statuses("ref~=("), "regular expression"),
])
def test_bad_input_is_invalid_argument(db, call, message):
    before = record_count(db)
    with pytest.raises(errors.InvalidArgument, match=message):
        call(db.namespace("default").content)
    assert record_count(db) == before  # nothing was written


def test_bad_commit_arguments_change_nothing(db):
    ns = db.namespace("default")
    with ns.content.writer("r") as w:
        w.write(b"abc")
        for args, message in [((-1,), "negative"), ((0, "sha256:zz"), "sha256:zz"),
                              ((0, None, {"": "v"}), "empty"), ((0, None, {"k": "v" * 5000}), "4096")]:
            with pytest.raises(errors.InvalidArgument, match=message):
                w.commit(*args)
        assert not w.closed  # rejected before anything happened
    assert ns.content.status("r").offset == 3


@pytest.mark.parametrize("ref", ["../../x", "/etc/passwd", "../../../outside"])
def test_refs_stay_inside_the_content_root(root, ref):
    with cargohold.open(root) as db:
        before = files_under(root.parent)
        ns = db.namespace("default")
        with ns.content.writer(ref) as w:
            w.write(b"escape?")
        assert ns.content.status(ref).offset == 7
        added = files_under(root.parent) - before
        inside = (os.path.join("root", "content") + os.sep, os.path.join("root", "meta") + os.sep)
        assert added and all(p.startswith(inside) for p in added), added
        (name,) = os.listdir(root / "content" / "ingest")
        assert len(name) == 64 and set(name) <= set("0123456789abcdef")


@pytest.mark.parametrize("damage", [b"\xc1", schema.pack({"s": 1})])
def test_damaged_records_are_corrupted(db, damage):
    ns = db.namespace("default")
    d = put(ns, "r", b"fine")
    ns.content.writer("i").close()
    with db.update() as t:
        t.kv.put(schema.T_OBJECTS, schema.object_key("default", schema.K_BLOB, d), damage)
        t.kv.put(schema.T_OBJECTS, schema.object_key("default", schema.K_INGEST, "i"), damage)
    for call in (lambda: ns.content.info(d), lambda: list(ns.content.walk()), lambda: ns.content.status("i"),
                 lambda: ns.content.statuses(), lambda: collect_backend(db)):
        with pytest.raises(errors.Corrupted):
            call()
    assert backend_digests(db) == [d]  # a cleanup that cannot read the records deletes nothing


def test_gc_removal_helpers(db):
    ns = db.namespace("default")
    d = put(ns, "r", b"swept")
    ns.content.writer("ingest").close()
    with db.update() as t:
        remove_blob_for_gc(t, "default", d)
        remove_ingest_for_gc(t, "default", "ingest")
    assert db.dirty == 1
    with pytest.raises(errors.NotFound):
        ns.content.info(d)
    with pytest.raises(errors.NotFound):
        ns.content.status("ingest")
    assert entry(db, ResourceType.CONTENT, "default", d) is None
    assert entry(db, ResourceType.INGEST, "default", "ingest") is None
    with db.view() as t:
        assert t.kv.get(schema.T_META, schema.META_DIRTY_CONTENT) is not None


def test_collect_backend_removes_only_orphans(db):
    a, b = db.namespace("a"), db.namespace("b")
    kept = put(a, "r1", b"kept")
    orphan = put(a, "r2", b"orphan")
    retained = put(a, "r3", b"retained by a shared ingest")
    b.content.writer("share", expected=retained).close()  # b's ingest will commit it without bytes
    with a.content.writer("live") as w:
        w.write(b"live ingest")
    with a.content.writer("dead") as w:
        w.write(b"dead ingest")
    busy = a.content.writer("busy")
    with db.update() as t:
        remove_blob_for_gc(t, "a", orphan)
        remove_blob_for_gc(t, "a", retained)
        remove_ingest_for_gc(t, "a", "dead")
        remove_ingest_for_gc(t, "a", "busy")
    stray = LocalStore(db.content_store.root)  # a backend ingest no record ever knew
    with stray.writer("stray") as w:
        w.write(b"?")

    seconds = collect_backend(db)
    assert isinstance(seconds, float) and seconds >= 0
    assert backend_digests(db) == sorted([kept, retained])
    assert a.content.status("live").offset == 11
    remaining = sorted(s.offset for s in db.content_store.statuses())
    assert remaining == [0, 0, 11]  # live, b's shared ingest, and the open (busy) one
    busy.close()
    collect_backend(db)
    assert sorted(s.offset for s in db.content_store.statuses()) == [0, 11]
    with b.content.writer("share", expected=retained) as w:
        w.commit(0, retained)
    assert b.content.read(retained) == b"retained by a shared ingest"


def test_collect_backend_refuses_to_run_inside_a_transaction(db):
    with db.update(), pytest.raises(errors.FailedPrecondition, match="outside any transaction"):
        collect_backend(db)


def test_collect_backend_waits_for_a_commit_in_flight_in_another_process(root):
    data = b"committed by another process"
    d = digest_of(data)
    with cargohold.open(root) as db:
        child = spawn(f"""
            import cargohold
            db = cargohold.open({str(root)!r})
            ns = db.namespace("default")
            w = ns.content.writer("flight")
            w.write({data!r})
            with db.update() as tx:
                w.commit({len(data)}, {d!r}, tx=tx)
                print("renamed", flush=True)  # the blob is in place, its record not yet committed
                input()
            print("committed", flush=True)
        """)
        try:
            expect_line(child, "renamed")
            assert os.path.exists(db.content_store.blob_path(d))
            done = []
            cleaner = threading.Thread(target=lambda: done.append(collect_backend(db)))
            cleaner.start()
            cleaner.join(0.5)
            assert cleaner.is_alive() and done == []  # held off by the commit in flight
            child.stdin.write("\n")
            child.stdin.flush()
            expect_line(child, "committed")
            cleaner.join(30)
            assert done and not cleaner.is_alive()
        finally:
            child.kill()
            child.wait()
        assert os.path.exists(db.content_store.blob_path(d))
        assert db.namespace("default").content.read(d) == data


def test_a_commit_waits_for_the_cleanup(db):
    ns = db.namespace("default")
    w = ns.content.writer("r")
    w.write(b"waiting")
    finished = threading.Event()

    def commit():
        w.commit()
        finished.set()

    with db.content_store.cleanup_lock.exclusive():
        committer = threading.Thread(target=commit)
        committer.start()
        assert not finished.wait(0.3)
        assert backend_digests(db) == []  # not even renamed into place while the cleanup runs
    committer.join(30)
    assert finished.is_set()
    assert ns.content.read(digest_of(b"waiting")) == b"waiting"
