"""How long a collection holds writers off while they write, at 1,000,000 nodes.

    .venv/bin/python -m pytest benchmarks/test_gc_pause_bench.py

The database is containerd's BenchmarkGarbageCollect workload (`gcworkload`): 10000 sets built
through the API, cloned into 9 more namespaces (1M nodes, nothing garbage).

* `test_pause_with_writers`: during each collection's mark, other threads (2 x 250) and
  another process (500) create, delete and relabel 1,000 objects (images created and deleted,
  workload blobs relabelled, new blobs), and one more thread keeps writing small transactions
  until the collection returns. The pause (`GCStats.meta_d`, target at most 10 ms) is reported
  as a ratio to the stop-the-world collection's (`DB._collect(concurrent=False)`, the collection
  before this change, which holds writers off for all of it) under the same load on the same
  database in the same run; totals (`total_d`) likewise (target: at most 20% more), and also
  without writers.
* `test_creation_latency_during_cleanup`: 500 garbage snapshots and 500 garbage blobs are
  cleaned while another process prepares and commits snapshots and commits blobs; the worst creation
  latency is reported beside the time the backend cleanups took and the time the old locking
  held the creation lock (reading every snapshot reference and listing the backend).
"""

from __future__ import annotations

import hashlib
import os
import statistics
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import cargohold
import gcworkload
from cargohold import Descriptor, Image, Info

NAMESPACES = 10
SETS = int(os.environ.get("CARGOHOLD_BENCH_SETS", "10000"))  # fewer for a quick try of the benchmark itself
CHURN = 1000
HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def million(tmp_path_factory):
    root = tmp_path_factory.mktemp("gc-pause")
    db = cargohold.open(root)
    gcworkload.add_sets(db, 0, SETS)
    for i in range(1, NAMESPACES):
        gcworkload.clone_namespace(db, gcworkload.NAMESPACE, f"c{i:03d}")
    state = {"db": db, "root": root, "round": 0}
    yield state
    db.close()


def _digest(i: int) -> str:
    return "sha256:" + hashlib.sha256(gcworkload.bytes_for(i)).hexdigest()


def churn(db, tag: str, first: int, count: int) -> None:
    """`count` changes, one transaction each: an image created, that image deleted, a workload blob
    relabelled, a new (unreferenced) blob."""
    ns, big = db.namespace("churn"), db.namespace(gcworkload.NAMESPACE)
    for i in range(first, first + count):
        step = i % 4
        if step == 0:
            ns.images.create(Image(f"{tag}-{i}", Descriptor("irrelevant", _digest(i % SETS), 256)))
        elif step == 1:
            ns.images.delete(f"{tag}-{i - 1}")
        elif step == 2:
            big.content.update(Info(_digest(i % SETS), labels={"churn": f"{tag}-{i}"}), "labels")
        else:
            data = f"{tag} new blob {i}".encode()
            d = "sha256:" + hashlib.sha256(data).hexdigest()
            with ns.content.writer(f"{tag}-{i}", total=len(data), expected=d) as w:
                w.write(data)
                w.commit(len(data), d)


PROCESS = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, sys.argv[1])
    import cargohold
    from test_gc_pause_bench import churn
    root, tag, first, count, go, done = sys.argv[2:8]
    with cargohold.open(root) as db:
        print("ready", flush=True)
        while not os.path.exists(go):
            time.sleep(0.001)
        churn(db, tag, int(first), int(count))
    open(done, "w").close()
""")


class Load:
    """The writers of one collection: two threads, one process, and a steady small writer."""

    def __init__(self, state, label: str) -> None:
        state["round"] += 1
        self.db = state["db"]
        tag = f"{label}{state['round']}"
        base = state["round"] * CHURN
        scratch = state["root"] / "sync"
        scratch.mkdir(exist_ok=True)
        self.go, self.done = scratch / f"{tag}.go", scratch / f"{tag}.done"
        self.proc = subprocess.Popen([sys.executable, "-c", PROCESS, HERE, str(state["root"]), f"{tag}p",
                                      str(base), str(CHURN // 2), str(self.go), str(self.done)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"
        self.start = threading.Event()
        self.stop = threading.Event()
        quarter = CHURN // 4
        self.threads = [threading.Thread(target=self._run, args=(churn, self.db, f"{tag}t{n}", base + n * quarter,
                                                                  quarter)) for n in range(2)]
        self.steady = threading.Thread(target=self._steady, args=(tag,))
        for thread in [*self.threads, self.steady]:
            thread.start()
        self.waited = 0.0

    def _run(self, fn, *args) -> None:
        self.start.wait()
        fn(*args)

    def _steady(self, tag: str) -> None:
        ns = self.db.namespace("churn")
        self.start.wait()
        i = 0
        while not self.stop.is_set():
            ns.leases.create(f"{tag}-steady-{i}")
            ns.leases.delete(f"{tag}-steady-{i}")
            i += 1
            time.sleep(0.002)

    def release(self) -> None:
        self.go.touch()
        self.start.set()

    def wait_for_churn(self) -> None:
        """Until the 1,000 changes are in (called during the mark: they all land in it)."""
        began = time.perf_counter()
        for thread in self.threads:
            thread.join()
        while not self.done.exists():
            time.sleep(0.001)
        self.waited += time.perf_counter() - began

    def finish(self) -> None:
        self.stop.set()
        for thread in [*self.threads, self.steady]:
            thread.join()
        assert self.proc.wait(120) == 0


def _collect(state, concurrent: bool, load: bool) -> tuple[cargohold.GCStats, float, dict]:
    """One collection (with the writers if `load`): its stats, the time its mark waited for the
    1,000 changes, and when it reached each phase."""
    db = state["db"]
    writers = Load(state, "c" if concurrent else "s") if load else None
    reached: dict = {}

    def hook(phase: str) -> None:
        reached.setdefault(phase, time.perf_counter())
        if writers is None:
            return
        if phase == ("marker" if concurrent else "started"):
            writers.release()
        if concurrent and phase == "marked":
            writers.wait_for_churn()
    db._gc_hook = hook
    try:
        stats = db._collect(None, concurrent=concurrent)
    finally:
        db._gc_hook = None
    waited = 0.0
    if writers is not None:
        writers.finish()
        waited = writers.waited
    return stats, waited, reached


def _ms(values) -> str:
    return f"{statistics.median(values) * 1000:.2f}"


def test_pause_with_writers(benchmark, million, report):
    _collect(million, True, False)  # warm the page cache
    concurrent, stopped = [], []

    def one_concurrent():
        concurrent.append(_collect(million, True, True))
    benchmark.pedantic(one_concurrent, rounds=3, warmup_rounds=0)
    for _ in range(3):
        stopped.append(_collect(million, False, True))
    _collect(million, True, False)  # the writers' garbage goes, so that the quiet runs find none
    quiet: dict = {True: [], False: []}
    for _ in range(3):
        for mode in (False, True):
            quiet[mode].append(_collect(million, mode, False)[0])
    pauses = [s.meta_d for s, _, _ in concurrent]
    held = statistics.median(s.meta_d for s, _, _ in stopped)
    own = [s.total_d - waited for s, waited, _ in concurrent]  # minus the time the hook waited for writers
    stopped_total = statistics.median(s.total_d for s, _, _ in stopped)
    report(f"pause at 1M nodes, {CHURN} changes by 2 threads and 1 process during the mark: "
           f"{_ms(pauses)} ms median, {max(pauses) * 1000:.2f} ms worst "
           f"(target <= 10 ms) = {statistics.median(pauses) / held:.4f}x the stop-the-world hold "
           f"of {held * 1000:.0f} ms in the same run")
    report(f"  the pause: waiting for writers in flight and marking the last round "
           f"{_ms([r['exclusive'] - r['exclusive-wait'] for _, _, r in concurrent])} ms, sweep "
           f"{_ms([s.sweep_d for s, _, _ in concurrent])} ms "
           f"({statistics.median(len(s.removed) for s, _, _ in concurrent):.0f} records), commit "
           f"{_ms([s.meta_d - (r['swept'] - r['exclusive-wait']) for s, _, r in concurrent])} ms; concurrent mark "
           f"{_ms([s.mark_d - w for s, w, _ in concurrent])} ms (+ the wait for the writers)")
    report(f"  total with writers: concurrent {statistics.median(own) * 1000:.0f} ms (its mark waited "
           f"{statistics.median(w for _, w, _ in concurrent) * 1000:.0f} ms more for the writers, not counted) "
           f"vs stop-the-world {stopped_total * 1000:.0f} ms = {statistics.median(own) / stopped_total:.3f}x")
    q_conc = statistics.median(s.total_d for s in quiet[True])
    q_stop = statistics.median(s.total_d for s in quiet[False])
    report(f"  total without writers: concurrent {q_conc * 1000:.0f} ms vs stop-the-world {q_stop * 1000:.0f} ms "
           f"= {q_conc / q_stop:.3f}x (target <= 1.2x); pause {_ms([s.meta_d for s in quiet[True]])} ms "
           f"= {statistics.median(s.meta_d for s in quiet[True]) / q_stop:.4f}x")


def test_creation_latency_during_cleanup(million, report):
    """Creations beside the backend cleanups of 500 snapshots and 500 blobs, at 1M nodes."""
    from cargohold.snapshots.store import _referenced_keys

    db = million["db"]
    junk = db.namespace("junk")
    sn = junk.snapshotter("native")
    parent = ""
    for i in range(500):
        sn.prepare(f"j{i}-active", parent if i % 10 else "")  # chains of 10
        sn.commit(f"j{i}", f"j{i}-active")
        parent = f"j{i}"
    for i in range(500):
        data = b"junk %d" % i
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        with junk.content.writer(f"junk-{i}", total=len(data), expected=d) as w:
            w.write(data)
            w.commit(len(data), d)
    started = time.perf_counter()
    _referenced_keys(db, "native")
    list(db.snapshotters["native"].walk())
    old_hold = time.perf_counter() - started
    started = time.perf_counter()
    db.snapshotters["native"].cleanup()  # lists unlocked, then one short write transaction
    orphan_scan = time.perf_counter() - started

    scratch = million["root"] / "sync"
    scratch.mkdir(exist_ok=True)
    stop, out = scratch / "creations.stop", scratch / "creations.json"
    proc = subprocess.Popen([sys.executable, "-c", CREATIONS, str(million["root"]), str(stop), str(out)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    window = {}

    def hook(phase: str) -> None:
        if phase == "cleared":  # the metadata collection committed: the backend cleanups begin
            window["start"] = time.monotonic()

    time.sleep(0.5)
    db._gc_hook = hook
    try:
        stats = db.garbage_collect()
    finally:
        db._gc_hook = None
    window["end"] = time.monotonic()
    stop.touch()
    assert proc.wait(120) == 0
    import json

    samples = json.loads(out.read_text())  # (start, seconds) of each creation
    during = [d for t, d in samples if t + d >= window["start"] and t <= window["end"]]
    quiet = [d for t, d in samples if t + d < window["start"]]
    assert stats.snapshot_dirs["native"].count == 500 and stats.blobs.count == 500
    cleanup = max(stats.content_d, stats.snapshot_d["native"])
    report(f"creation latency (another process: prepare, commit, content commit) during the backend cleanup "
           f"of 500 snapshots and 500 blobs at 1M nodes: worst {max(during) * 1000:.1f} ms, median "
           f"{statistics.median(during) * 1000:.2f} ms over {len(during)} creations (before: worst "
           f"{max(quiet) * 1000:.1f} ms); cleanups took {stats.snapshot_d['native'] * 1000:.0f} ms (snapshots) "
           f"and {stats.content_d * 1000:.0f} ms (content); the old locking held the creation lock for "
           f"{old_hold * 1000:.0f} ms (references and listing): worst latency = {max(during) / old_hold:.3f}x "
           f"that, {max(during) / cleanup:.3f}x the cleanup; the backend's own cleanup call on an empty set of "
           f"orphans takes {orphan_scan * 1000:.0f} ms")


CREATIONS = textwrap.dedent("""
    import hashlib, json, os, sys, time
    import cargohold
    root, stop, out = sys.argv[1:4]
    samples = []
    with cargohold.open(root) as db:
        ns = db.namespace("busy")
        sn = ns.snapshotter("native")
        print("ready", flush=True)
        i = 0
        while not os.path.exists(stop):
            began = time.monotonic()
            sn.prepare(f"b{i}-active", labels={"containerd.io/gc.root": "1"})
            samples.append((began, time.monotonic() - began))
            began = time.monotonic()
            sn.commit(f"b{i}", f"b{i}-active", labels={"containerd.io/gc.root": "1"})
            samples.append((began, time.monotonic() - began))
            data = b"busy %d" % i
            d = "sha256:" + hashlib.sha256(data).hexdigest()
            began = time.monotonic()
            with ns.content.writer(f"busy-{i}", total=len(data), expected=d) as w:
                w.write(data)
                w.commit(len(data), d, labels={"containerd.io/gc.root": "1"})
            samples.append((began, time.monotonic() - began))
            i += 1
    with open(out, "w") as f:
        json.dump(samples, f)
""")
