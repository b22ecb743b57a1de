"""Backend cleanups beside creations: a slow or stuck snapshot removal, or a stuck listing of
the snapshotter, delays no prepare, commit or content commit; a content commit waits for one
blob removal at most, never for the whole cleanup."""

from __future__ import annotations

import os
import threading

import pytest

import cargohold
from cargohold import DB
from cargohold.content import LocalStore
from cargohold.snapshots.native import NativeSnapshotter
from gcutil import blob, chain

WAIT = 30.0


class Gate:
    """Blocks the calls of one backend method until the test opens it; counts them."""

    def __init__(self) -> None:
        self.entered = threading.Semaphore(0)
        self.calls = 0
        self._open = threading.Event()

    def stop(self) -> None:
        self.calls += 1
        self.entered.release()
        assert self._open.wait(WAIT * 4), "the test never let the backend go on"

    def release(self) -> None:
        self._open.set()


def _open(root, snapshotter_class=NativeSnapshotter, content_class=LocalStore) -> DB:
    root = str(root)
    db = DB(os.path.join(root, "meta"), content_class(os.path.join(root, "content")),
            {"native": snapshotter_class(os.path.join(root, "snapshots", "native"))})
    db.init()
    return db


def _creations(db, tag: str) -> list:
    """A prepare, a commit and a content commit, each in its own transaction."""
    ns = db.namespace("busy")
    sn = ns.snapshotter("native")
    sn.prepare(f"{tag}-active")
    sn.commit(tag, f"{tag}-active", labels={"containerd.io/gc.root": "yes"})
    blob(ns, f"{tag} content".encode(), labels={"containerd.io/gc.root": "yes"})
    return [tag]


def _run_beside(fn, *args):
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", fn(*args)))
    thread.start()
    thread.join(WAIT / 3)
    return not thread.is_alive(), thread, result


def _crashed_commit(db) -> str:
    """What a process killed between the backend's commit and the metadata's leaves: an active
    snapshot whose backend key was renamed to a committed key no record names, with a child built
    on it. Returns the active snapshot's key."""
    ns = db.namespace("crash")
    sn = ns.snapshotter("native")
    sn.prepare("layer-active", labels={"containerd.io/gc.root": "yes"})
    active = sn._backend_key("layer-active", None)
    backend = db.snapshotters["native"]
    backend.commit("crash/99001/layer", active)
    backend.prepare("crash/99002/child", "crash/99001/layer")
    return "layer-active"


@pytest.mark.parametrize("stuck", ["purge", "walk"])
def test_a_stuck_snapshot_cleanup_delays_no_creation(root, stuck):
    """The backend's removal (or its listing) hangs, as on a stuck filesystem; creations of other
    snapshots and blobs go on meanwhile. The cleanup still repairs an interrupted commit."""
    gate = Gate()

    class Stuck(NativeSnapshotter):
        def purge(self, keys, freed=None):
            keys = list(keys)
            if stuck == "purge" and keys:
                gate.stop()
            return super().purge(keys, freed)

        def walk(self, *filters):
            if stuck == "walk" and threading.current_thread().name == "cargohold-gc-cleanup":
                gate.stop()
            return super().walk(*filters)

    db = _open(root, Stuck)
    try:
        ns = db.namespace("gc")
        chain(ns, ["g1", "g2", "g3"])
        for key in ("g3", "g2", "g1"):
            ns.snapshotter("native").remove(key)
        active = _crashed_commit(db)
        collection = threading.Thread(target=db.garbage_collect)
        collection.start()
        assert gate.entered.acquire(timeout=WAIT), "the cleanup never reached the backend"
        finished, _, result = _run_beside(_creations, db, "beside")
        gate.release()
        collection.join(WAIT)
        assert finished, f"creations waited for the stuck {stuck}"
        assert result["value"] == ["beside"]
        sn = db.namespace("crash").snapshotter("native")
        assert [(i.name, i.kind.name) for i in sn.walk()] == [(active, "ACTIVE")]
        assert sn.mounts(active)
        assert sorted(i.name for i in db.snapshotters["native"].walk()) == sorted(
            [sn._backend_key(active, None)]
            + [db.namespace("busy").snapshotter("native")._backend_key("beside", None)])
        assert [i.name for i in db.namespace("busy").snapshotter("native").walk()] == ["beside"]
    finally:
        gate.release()
        db.close()


def test_a_content_commit_waits_for_one_blob_removal_at_most(root):
    """Each blob removal is gated; a content commit started during the first one gets in before
    the next removal (which may start while it finishes), not after all eight."""
    gates: list[Gate] = []
    entered = threading.Semaphore(0)

    class Slow(LocalStore):
        def delete(self, digest):
            gate = Gate()
            gates.append(gate)
            entered.release()
            gate.stop()
            return super().delete(digest)

    db = _open(root, content_class=Slow)
    try:
        ns = db.namespace("gc")
        for i in range(8):
            ns.content.delete(blob(ns, b"garbage %d" % i))
        data = b"committed beside"
        digest = "sha256:" + __import__("hashlib").sha256(data).hexdigest()
        writer = db.namespace("busy").content.writer("beside", total=len(data), expected=digest)
        writer.write(data)
        collection = threading.Thread(target=db.garbage_collect)
        collection.start()
        assert entered.acquire(timeout=WAIT)
        done = threading.Event()
        committer = threading.Thread(target=lambda: (writer.commit(len(data), digest), done.set()))
        committer.start()
        started_before_commit = 1
        gates[0].release()
        while not done.wait(0.05):
            if entered.acquire(timeout=0):
                started_before_commit += 1
                gates[-1].release()
            assert started_before_commit <= 8
        assert started_before_commit <= 2, f"the commit waited for {started_before_commit} removals"
        for gate in gates:
            gate.release()
        while collection.is_alive():
            if entered.acquire(timeout=0.05):
                gates[-1].release()
        assert [i.digest for i in db.namespace("gc").content.walk()] == []
        assert len(list(db.content_store.walk())) == 1
    finally:
        for gate in gates:
            gate.release()
        db.close()


def test_the_ingest_cleanup_rechecks_the_records(root):
    """An ingest registered after the cleanup's first read of the records is not removed."""
    calls = []

    class Watch(LocalStore):
        def clean_ingests(self, keep, **kwargs):
            def late():
                with ns.content.writer("late-ingest", total=3) as w:
                    w.write(b"abc")
            # a writer registers a new ingest after the cleanup read the records
            finished, _, _ = _run_beside(late)
            calls.append(finished)
            return super().clean_ingests(keep, **kwargs)

    db = _open(root, content_class=Watch)
    try:
        ns = db.namespace("gc")
        ns.content.delete(blob(ns, b"garbage"))
        db.garbage_collect()
        assert calls == [True]  # the registration did not wait for the cleanup
        assert ns.content.status("late-ingest").offset == 3
    finally:
        db.close()
