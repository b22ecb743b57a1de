"""The concurrent collection: writers go on during the mark, are held off only for the last
round and the sweep; what they change meanwhile is journaled and kept; a killed collector
leaves a database the next collection handles; one collection at a time across processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import cargohold
from cargohold import Resource, schema
from cargohold.db import COLLECTION_PHASES
from gcutil import blob, chain, content_node, image, snap_node

TESTS = os.path.dirname(os.path.abspath(__file__))


def journal_rows(db) -> list[bytes]:
    with db._env.read() as txn:
        return [key for key, _ in txn.scan(schema.T_META, schema.META_GC_JOURNAL)]


def marker(db):
    with db._env.read() as txn:
        return txn.get(schema.T_META, schema.META_GC_ACTIVE)


def in_thread(fn, *args):
    """Run fn in another thread and wait for it (a writer that is not the collector)."""
    result = {}

    def run():
        try:
            result["value"] = fn(*args)
        except BaseException as exc:  # reported to the caller
            result["error"] = exc
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the writer did not finish"
    if "error" in result:
        raise result["error"]
    return result.get("value")


def at(db, phase, fn):
    """Call fn() the first time the collection reaches `phase`."""
    done = []

    def hook(name):
        if name == phase and not done:
            done.append(name)
            fn()
    db._gc_hook = hook
    return done


@pytest.mark.parametrize("phase", ["marker", "snapshot", "marked", "remarked"])
def test_changes_made_while_marking_are_kept(db, phase):
    """A blob created, a garbage blob given a root and a garbage snapshot given a lease while the
    collection marks all survive it; untouched garbage goes; the next collection is exact."""
    ns = db.namespace("w")
    garbage, revived = blob(ns, b"garbage"), blob(ns, b"revived")
    chain(ns, ["base", "top"])
    lease = ns.leases.create("keep").id
    created = {}

    def writers():
        created["blob"] = blob(ns, b"created while marking")
        image(ns, "late", revived)
        ns.leases.add_resource(lease, Resource("top", "snapshots/native"))
        created["rows"] = len(journal_rows(db))
    done = at(db, phase, lambda: in_thread(writers))
    stats = db.garbage_collect()
    assert done == [phase]
    assert created["rows"] > 0  # the writers journaled while the collection ran
    assert set(stats.removed) == {content_node("w", garbage)}
    db._gc_hook = None
    assert journal_rows(db) == [] and marker(db) is None
    assert {info.digest for info in ns.content.walk()} == {revived, created["blob"]}
    assert [s.name for s in ns.snapshotter("native").walk()] == ["base", "top"]
    assert set(db.garbage_collect().removed) == {content_node("w", created["blob"])}


def test_a_writer_in_flight_during_the_exclusive_wait_is_marked(db):
    """A transaction already past the turnstile when the collector takes it commits before the
    sweep; its changes (journaled in the last round) are kept."""
    ns = db.namespace("w")
    garbage, revived = blob(ns, b"garbage"), blob(ns, b"revived")
    inside, go = threading.Event(), threading.Event()

    def writer():
        with db.update():
            inside.set()
            assert go.wait(30)
            image(ns, "in-flight", revived)
    thread = threading.Thread(target=writer)

    def hook(name):
        if name == "pre-exclusive":
            thread.start()
            assert inside.wait(30)
        elif name == "exclusive-wait":
            go.set()
        elif name == "exclusive":
            with db._env.read() as txn:  # the collector waited for its commit
                assert txn.get(schema.T_GC, schema.pack_node(cargohold.ResourceType.IMAGE, "w", "in-flight"))
    db._gc_hook = hook
    stats = db.garbage_collect()
    thread.join(30)
    assert set(stats.removed) == {content_node("w", garbage)}
    assert ns.images.get("in-flight").target.digest == revived


def test_writers_wait_only_for_the_last_round(db):
    """During the mark a writer commits at once; from the turnstile to the commit it waits."""
    ns = db.namespace("w")
    blob(ns, b"garbage")
    order = []

    def hook(name):
        if name == "marked":
            in_thread(lambda: (ns.leases.create("during-mark"), order.append("mark-write")))
        elif name == "exclusive":
            writer = threading.Thread(target=lambda: (ns.leases.create("during-sweep"), order.append("late-write")))
            writer.start()
            writer.join(0.3)
            assert writer.is_alive()  # held off
            hook.writer = writer
            order.append("sweep")
    db._gc_hook = hook
    db.garbage_collect()
    hook.writer.join(30)
    assert order == ["mark-write", "sweep", "late-write"]


def test_stats_separate_the_pause_from_the_collection(db):
    ns = db.namespace("w")
    for i in range(20):
        blob(ns, b"garbage %d" % i)
    chain(ns, [f"s{i}" for i in range(5)])
    stats = db.garbage_collect()
    assert len(stats.removed) == 25
    assert stats.writers_blocked_s == stats.meta_d == stats.elapsed()
    assert 0 < stats.sweep_d <= stats.meta_d
    assert stats.mark_d > 0 and stats.mark_d + stats.meta_d <= stats.total_d
    assert stats.snapshot_d["native"] <= stats.total_d


def test_stop_the_world_collection_removes_the_same(db):
    """The old collection (kept to compare against) removes what the concurrent one does."""
    ns = db.namespace("w")
    kept = blob(ns, b"kept")
    image(ns, "img", kept)
    doomed = {content_node("w", blob(ns, b"garbage %d" % i)) for i in range(5)}
    assert set(db.unreachable()) == doomed
    stats = db._collect(None, concurrent=False)
    assert set(stats.removed) == doomed
    assert stats.mark_d <= stats.meta_d <= stats.total_d
    assert db.garbage_collect().removed == []


def test_namespace_scoped_collection_with_writers(db):
    a, b = db.namespace("a"), db.namespace("b")
    ga, gb = blob(a, b"garbage a"), blob(b, b"garbage b")
    created = {}
    at(db, "marked", lambda: in_thread(lambda: created.setdefault("blob", blob(a, b"new in a"))))
    stats = db.garbage_collect(namespace="a")
    assert set(stats.removed) == {content_node("a", ga)}
    assert {i.digest for i in a.content.walk()} == {created["blob"]}
    assert {i.digest for i in b.content.walk()} == {gb}


WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    import cargohold
    from gcutil import blob, image
    with cargohold.open(sys.argv[1]) as db:
        ns = db.namespace("w")
        image(ns, "from-another-process", sys.argv[3])
        print(blob(ns, b"created by another process"))
""")


def test_writes_of_another_process_during_the_mark_are_kept(db, root):
    ns = db.namespace("w")
    revived = blob(ns, b"revived")
    garbage = blob(ns, b"garbage")
    created = {}

    def other_process():
        proc = subprocess.run([sys.executable, "-c", WRITER, str(root), TESTS, revived],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        created["blob"] = proc.stdout.strip()
    at(db, "marked", other_process)
    stats = db.garbage_collect()
    assert set(stats.removed) == {content_node("w", garbage)}
    assert {i.digest for i in ns.content.walk()} == {revived, created["blob"]}


# -- one collection at a time -----------------------------------------------------------------

PAUSED = textwrap.dedent("""
    import os, sys, time
    import cargohold
    root, flag, go = sys.argv[1], sys.argv[2], sys.argv[3]
    with cargohold.open(root) as db:
        def hook(name):
            if name == "marked":
                open(flag, "w").close()
                while not os.path.exists(go):
                    time.sleep(0.01)
        db._gc_hook = hook
        stats = db.garbage_collect()
        print(len(stats.removed), time.time(), flush=True)
""")


def test_a_collection_waits_for_one_running_in_another_process(db, root, tmp_path):
    ns = db.namespace("w")
    blob(ns, b"garbage")
    flag, go = tmp_path / "marking", tmp_path / "go"
    proc = subprocess.Popen([sys.executable, "-c", PAUSED, str(root), str(flag), str(go)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not flag.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
        time.sleep(0.01)
    late = blob(ns, b"made while the other collection runs")  # writers are not held off meanwhile
    result = {}
    collector = threading.Thread(target=lambda: result.setdefault("stats", db.garbage_collect()))
    collector.start()
    collector.join(0.5)
    assert collector.is_alive()  # waits for the other process's collection
    go.touch()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    collector.join(60)
    other_removed, other_finished = out.split()
    assert int(other_removed) == 1
    # then runs its own: the blob made during the other collection was kept by it, and goes now
    assert result["stats"].removed == [content_node("w", late)]


def test_garbage_collect_inside_a_transaction_is_refused(db):
    with db.update():
        with pytest.raises(cargohold.errors.FailedPrecondition, match="inside a transaction"):
            db.garbage_collect()


# -- a killed collector ----------------------------------------------------------------------

KILLED = textwrap.dedent("""
    import os, signal, sys, threading
    sys.path.insert(0, sys.argv[3])
    import cargohold
    from gcutil import blob, image
    root, phase = sys.argv[1], sys.argv[2]
    with cargohold.open(root) as db:
        ns = db.namespace("k")
        def write():
            image(ns, "made-while-marking", blob(ns, b"kept by an image made during the mark"))
        def hook(name):
            if name == "marked":
                t = threading.Thread(target=write)
                t.start()
                t.join()
            if name == phase:
                os.kill(os.getpid(), signal.SIGKILL)
        db._gc_hook = hook
        db.garbage_collect()
""")

FAST_PHASES = ["marked", "exclusive", "committed"]


def _kill_at(root, phase):
    with cargohold.open(root) as db:
        ns = db.namespace("k")
        kept = blob(ns, b"kept")
        image(ns, "kept", kept)
        chain(ns, ["base", "top"])
        ns.containers.create(cargohold.Container("ctr", runtime=cargohold.RuntimeInfo("runc"),
                                                 snapshotter="native", snapshot_key="top"))
        garbage = blob(ns, b"garbage")
        chain(ns, ["g1", "g2"])
    proc = subprocess.run([sys.executable, "-c", KILLED, str(root), phase, TESTS],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with cargohold.open(root) as db:
        ns = db.namespace("k")
        rows = len(journal_rows(db))
        ns.leases.create("after-the-crash")  # a dead collector's marker makes nobody journal
        blob(ns, b"after the crash")
        assert len(journal_rows(db)) == rows
        assert {img.name for img in ns.images.list()} >= {"kept"}
        stats = db.garbage_collect()
        assert stats.errors == []
        assert journal_rows(db) == [] and marker(db) is None
        made = COLLECTION_PHASES.index(phase) >= COLLECTION_PHASES.index("marked")
        assert {img.name for img in ns.images.list()} == {"kept"} | ({"made-while-marking"} if made else set())
        digests = {info.digest for info in ns.content.walk()}
        assert kept in digests and garbage not in digests and len(digests) == 1 + made
        assert [s.name for s in ns.snapshotter("native").walk()] == ["base", "top"]
        assert len(list(db.snapshotters["native"].walk())) == 2
        assert {i.digest for i in db.content_store.walk()} == digests
        assert db.garbage_collect().removed == []


@pytest.mark.parametrize("phase", FAST_PHASES)
def test_a_collector_killed_midway_leaves_a_consistent_database(root, phase):
    _kill_at(root, phase)


@pytest.mark.slow
@pytest.mark.parametrize("phase", [p for p in COLLECTION_PHASES if p not in FAST_PHASES])
def test_a_collector_killed_at_any_phase_leaves_a_consistent_database(root, phase):
    _kill_at(root, phase)
