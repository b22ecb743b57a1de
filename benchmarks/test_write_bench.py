"""Write-path speed against containerd v1.7.10's metadata package, in the same run.

    .venv/bin/python -m pytest -p no:cacheprovider benchmarks/test_write_bench.py

Workloads (`benchmarks/gowrite` makes the same calls through containerd's packages):

* `test_sets_unbatched`: per set (containerd's BenchmarkGarbageCollect set: a 256-byte blob
  through a writer, an image on it, 7 snapshots prepared and committed, a container on the
  last one) every call its own transaction; seconds per set.
* `test_sets_batched`: the same, `BATCH` sets per ``db.update()``; seconds per set.
* `test_images_in_one_transaction`: `IMAGES` ``images.create`` in one ``db.update()``;
  seconds per creation.
* `test_group_commit`: `THREADS` threads creating images, each call its own transaction,
  against the same creations made by one thread (cargohold only).

Each runs `RUNS` times on a fresh root (median), each run right after one of the Go anchor's, on
roots in the same directory, so that both sides see the same load; without the anchor the suite
says so and reports cargohold's figures alone. Targets: at most 0.5x Go's time for each of the
three workloads.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import tempfile
import threading
import time

import containerd_anchor
import gcworkload
import pytest

import cargohold
from cargohold import Container, Descriptor, Image, RuntimeInfo

SETS = int(os.environ.get("CARGOHOLD_WRITE_SETS", "100"))
BATCH = SETS
IMAGES = 1000
RUNS = 3
THREADS = 8
PER_THREAD = 50
DIRECTORY = tempfile.gettempdir()


def _add_set(ns, sn, i: int) -> None:
    data = gcworkload.bytes_for(i)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with ns.content.writer(f"ref-{i}", total=len(data), expected=digest) as w:
        w.write(data)
        w.commit(len(data), digest)
    ns.images.create(Image(f"image-{i}", Descriptor("irrelevant", digest, len(data))))
    parent = ""
    for j in range(gcworkload.SNAPSHOTS_PER_SET):
        key = f"snapshot-{i}-{j}"
        sn.prepare(f"{key}-active", parent)
        sn.commit(key, f"{key}-active")
        parent = key
    ns.containers.create(Container(f"container-{i}", runtime=RuntimeInfo("testruntime"),
                                   snapshotter="native", snapshot_key=parent))


def _unbatched(db) -> None:
    ns = db.namespace(gcworkload.NAMESPACE)
    sn = ns.snapshotter("native")
    for i in range(SETS):
        _add_set(ns, sn, i)


def _batched(db) -> None:
    ns = db.namespace(gcworkload.NAMESPACE)
    sn = ns.snapshotter("native")
    for first in range(0, SETS, BATCH):
        with db.update():
            for i in range(first, min(first + BATCH, SETS)):
                _add_set(ns, sn, i)


def _images(db) -> None:
    ns = db.namespace(gcworkload.NAMESPACE)
    target = Descriptor("application/vnd.oci.image.manifest.v1+json",
                        "sha256:" + hashlib.sha256(gcworkload.bytes_for(0)).hexdigest(), 256)
    with db.update():
        for i in range(IMAGES):
            ns.images.create(Image(f"image-{i}", target))


def _timed(fn, *, durable: bool = True) -> float:
    """Seconds of one `fn(db)` on a fresh root (opening it untimed)."""
    root = tempfile.mkdtemp(prefix="cargohold-write-", dir=DIRECTORY)
    try:
        with cargohold.open(root, durable=durable) as db:
            started = time.perf_counter()
            fn(db)
            return time.perf_counter() - started
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _compare(report, label: str, workload: str, fn, ops: int, unit: str) -> None:
    """`RUNS` rounds, each one Go run, one cargohold run and one with ``durable=False``, interleaved
    so that a change in the machine's load falls on both sides; medians per operation."""
    go, ours, relaxed = [], [], []
    for _ in range(RUNS):
        anchor = containerd_anchor.go_write_benchmark(workload, sets=SETS, batch=BATCH, images=IMAGES,
                                                      runs=1, directory=DIRECTORY)
        if anchor is not None:
            go.extend(anchor)
        ours.append(_timed(fn) / ops)
        relaxed.append(_timed(fn, durable=False) / ops)
    ours_median, relaxed_median = statistics.median(ours), statistics.median(relaxed)
    line = (f"{label:<34} cargohold {ours_median * 1e6:9.1f} us/{unit} "
            f"(durable=False {relaxed_median * 1e6:9.1f})")
    if not go:
        report(f"{line}; {containerd_anchor.gowrite_missing_message()}")
        return
    go_median = statistics.median(go)
    report(f"{line}, containerd {go_median * 1e6:9.1f} us/{unit}: {ours_median / go_median:.2f}x Go "
           f"(target <= 0.5x; durable=False {relaxed_median / go_median:.2f}x)")


def test_sets_unbatched(report):
    _compare(report, f"{SETS} sets, a transaction per call", "unbatched", _unbatched, SETS, "set")


def test_sets_batched(report):
    _compare(report, f"{SETS} sets, {BATCH} per transaction", "batched", _batched, SETS, "set")


def test_images_in_one_transaction(report):
    _compare(report, f"{IMAGES} images.create, one transaction", "images", _images, IMAGES, "image")


@pytest.mark.parametrize("threads", [1, THREADS])
def test_group_commit(report, threads):
    """THREADS * PER_THREAD image creations, each its own call, from `threads` threads."""
    total = THREADS * PER_THREAD
    target = Descriptor("m", "sha256:" + "ab" * 32, 1)

    def run(db) -> None:
        ns = db.namespace(gcworkload.NAMESPACE)
        names = iter(range(total))
        guard = threading.Lock()

        def work() -> None:
            while True:
                with guard:
                    i = next(names, None)
                if i is None:
                    return
                ns.images.create(Image(f"image-{i}", target))

        workers = [threading.Thread(target=work) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        if threads > 1:
            report(f"group commit, {threads} threads: {db._group.calls} calls in {db._group.batches} commits")

    seconds = statistics.median(_timed(run) for _ in range(RUNS)) / total
    report(f"{total} images.create from {threads} thread(s), a transaction each: {seconds * 1e6:9.1f} us/call")
