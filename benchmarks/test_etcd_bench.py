"""The etcd metadata engine against LMDB, in the same run, on a 3-member loopback cluster.

    .venv/bin/python -m pytest -p no:cacheprovider benchmarks/test_etcd_bench.py

* `test_build_rate[engine]`: containerd's BenchmarkGarbageCollect workload (`gcworkload`,
  10 nodes per set) built through the API, in transactions of 200 sets: sets per second.
* `test_small_writes[engine]`: one-object write transactions (an image created) per second,
  the fleet's common case.
* `test_collect_100k[engine]`: the workload's `BUILD_SETS` sets cloned into namespaces up to
  100,000 nodes (nothing garbage), then collections: the whole call (`total_d`) and the
  writers' pause (`meta_d`), medians of `ROUNDS`.

Ratios etcd / LMDB are printed at the end (`benchmark ratios (this run)`).
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import pytest

import cargohold
import gcworkload

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from etcd_cluster import Cluster  # noqa: E402

BUILD_SETS = int(os.environ.get("CARGOHOLD_BENCH_SETS", "1000"))
NODES = int(os.environ.get("CARGOHOLD_BENCH_NODES", "100000"))
SMALL_WRITES = 200
ROUNDS = 5
FIGURES: dict = {}


@pytest.fixture(scope="module")
def cluster():
    running = Cluster(3).start()
    yield running
    running.stop()


@pytest.fixture(scope="module", params=["lmdb", "etcd"])
def engine_db(request, cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"bench-{request.param}")
    metadata = cluster.url(f"bench-{os.getpid()}") if request.param == "etcd" else None
    db = cargohold.open(root, metadata=metadata)
    yield request.param, db
    db.close()


def _ratio(report, what: str, unit: str, higher_is_better: bool) -> None:
    figures = FIGURES.get(what, {})
    if {"lmdb", "etcd"} <= figures.keys():
        ratio = figures["etcd"] / figures["lmdb"]
        report(f"{what}: etcd {figures['etcd']:.3f} {unit}, LMDB {figures['lmdb']:.3f} {unit} = "
               f"{ratio:.3f}x LMDB's" + (" (higher is better)" if higher_is_better else ""))


def test_build_rate(engine_db, report):
    engine, db = engine_db
    started = time.perf_counter()
    gcworkload.add_sets(db, 0, BUILD_SETS)
    FIGURES.setdefault("workload build, sets/s", {})[engine] = BUILD_SETS / (time.perf_counter() - started)
    _ratio(report, "workload build, sets/s", "sets/s", True)


def test_small_writes(engine_db, report):
    engine, db = engine_db
    ns = db.namespace("small")
    started = time.perf_counter()
    for i in range(SMALL_WRITES):
        ns.images.create(cargohold.Image(f"small-{i}", cargohold.Descriptor("irrelevant", "sha256:" + "0" * 64, 1)))
    FIGURES.setdefault("one-image write transactions/s", {})[engine] = SMALL_WRITES / (time.perf_counter() - started)
    _ratio(report, "one-image write transactions/s", "txn/s", True)


def test_collect_100k(engine_db, report):
    engine, db = engine_db
    per_ns = BUILD_SETS * gcworkload.NODES_PER_SET
    for i in range(1, max(1, NODES // per_ns)):
        gcworkload.clone_namespace(db, gcworkload.NAMESPACE, f"c{i:03d}")
    totals, pauses = [], []
    for _ in range(ROUNDS):
        stats = db.garbage_collect()
        assert stats.removed == []
        totals.append(stats.total_d)
        pauses.append(stats.meta_d)
    FIGURES.setdefault(f"GC of {NODES} nodes, total s", {})[engine] = statistics.median(totals)
    FIGURES.setdefault(f"GC of {NODES} nodes, writer pause s", {})[engine] = statistics.median(pauses)
    _ratio(report, f"GC of {NODES} nodes, total s", "s", False)
    _ratio(report, f"GC of {NODES} nodes, writer pause s", "s", False)
