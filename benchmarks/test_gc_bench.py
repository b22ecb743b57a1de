"""Garbage-collection speed and memory on containerd's BenchmarkGarbageCollect workload.

    .venv/bin/python -m pytest benchmarks/test_gc_bench.py

* `test_collect[N]`: one `garbage_collect()` over N sets (10 nodes each, nothing
  garbage), built through the public API, N = 10, 100, 1000, 10000, against
  containerd v1.7.10's own BenchmarkGarbageCollect at N sets, run in this session
  (see `containerd_anchor` and benchmarks/README.md; without its test binary the
  cargohold figures are reported alone). Target: at most half of containerd's time.
* `test_scaling[sets]`: the same per-node cost up to 1,000,000 nodes (the 10000
  sets cloned into more namespaces, see `gcworkload.clone_namespace`).
* `test_peak_memory_1m_nodes`: extra peak RSS of a 1,000,000-node collection, from a cold
  process: the baseline is taken right after `cargohold.open` (target at most 100 MiB).
* the pure-Python fallback on 10000 sets, for comparison.

cargohold's figure is the time writers were held off (`GCStats.meta_d`): the whole
collection here, since nothing is dirty. The ratio to containerd compares like with
like: the mean of cargohold's whole `garbage_collect()` calls over the measured rounds
(pytest-benchmark's mean, warmup excluded) against Go's ns/op, the mean of as many
whole `GarbageCollect()` calls. Ratios are printed at the end.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import textwrap

import pytest

import cargohold
import containerd_anchor
import gcworkload

SIZES = [10, 100, 1000, 10000]
SCALE_NAMESPACES = [1, 3, 10]  # x 10000 sets x 10 nodes: 100k, 300k and 1M nodes
RESULTS: dict = {}


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    """One database grown set by set as the sizes increase."""
    root = tmp_path_factory.mktemp("gc-bench")
    db = cargohold.open(root)
    state = {"db": db, "root": root, "sets": 0, "namespaces": 1}
    yield state
    db.close()


@pytest.fixture(scope="module")
def containerd_gc(report):
    """`go(sets)`: containerd's seconds per collection at `sets`, measured now; None without its binary."""
    if containerd_anchor.find_metadata_test() is None:
        report(containerd_anchor.missing_message())
        return lambda sets: None

    def go(sets):
        return containerd_anchor.go_gc_benchmark([sets])[sets]

    return go


def _grow(state, sets):
    if state["sets"] < sets:
        gcworkload.add_sets(state["db"], state["sets"], sets)
        state["sets"] = sets


def _collect(db):
    stats = db.garbage_collect()
    assert stats.removed == []
    return stats.meta_d


@pytest.mark.parametrize("sets", SIZES)
def test_collect(benchmark, workload, containerd_gc, report, sets):
    go = containerd_gc(sets)
    rounds = containerd_anchor.default_rounds(sets)
    _grow(workload, sets)
    held = []
    benchmark.pedantic(lambda: held.append(_collect(workload["db"])), rounds=rounds, warmup_rounds=1)
    median = statistics.median(held)
    RESULTS[sets] = median
    nodes = sets * gcworkload.NODES_PER_SET
    line = f"collect {sets:>6} sets ({nodes:>7} nodes): writers held off {median * 1000:8.2f} ms median"
    if go is not None:
        call = benchmark.stats.stats.mean
        line += (f"; whole call {call * 1000:8.2f} ms mean = {call / go:.3f}x containerd's {go * 1000:8.2f} ms"
                 f" (Go ns/op, {rounds} collections, this run)")
    report(line)


def test_fallback_10000_sets(workload, report):
    """The pure-Python twin on the same 10000-set database, in another process."""
    _grow(workload, 10000)
    workload["db"].close()
    try:
        times = {}
        for mode, env in (("compiled", ""), ("fallback", "1")):
            out = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
                import json, statistics, cargohold
                with cargohold.open({str(workload["root"])!r}) as db:
                    held = [db.garbage_collect().meta_d for _ in range(5)]
                print(json.dumps([cargohold._native.COMPILED, statistics.median(held)]))
            """)], capture_output=True, text=True, check=True,
                env={**__import__("os").environ, "CARGOHOLD_PUREPYTHON": env}).stdout
            compiled, times[mode] = json.loads(out)
            assert compiled is (mode == "compiled")
        report(f"collect  10000 sets, pure-Python fallback: {times['fallback'] * 1000:8.2f} ms "
               f"= {times['fallback'] / times['compiled']:.2f}x the compiled core "
               f"({times['compiled'] * 1000:.2f} ms in the same run)")
    finally:
        workload["db"] = cargohold.open(workload["root"])


@pytest.mark.parametrize("namespaces", SCALE_NAMESPACES)
def test_scaling(benchmark, workload, report, namespaces):
    _grow(workload, 10000)
    db = workload["db"]
    while workload["namespaces"] < namespaces:
        gcworkload.clone_namespace(db, gcworkload.NAMESPACE, f"c{workload['namespaces']:03d}")
        workload["namespaces"] += 1
    held = []
    benchmark.pedantic(lambda: held.append(_collect(db)), rounds=3, warmup_rounds=1)
    nodes = namespaces * 10000 * gcworkload.NODES_PER_SET
    median = statistics.median(held)
    per_node = median / nodes * 1e9
    report(f"scaling {nodes:>8} nodes: {median * 1000:9.1f} ms, {per_node:6.0f} ns per node")
    RESULTS[("nodes", nodes)] = median


def test_peak_memory_1m_nodes(workload, report):
    """Extra peak RSS of one collection over 1,000,000 nodes, from a cold process.

    The baseline is the RSS right after `cargohold.open`, with nothing else run (the peak is
    reset there too): whatever the collection needs, heap growth included, counts. The nodes
    are counted afterwards, once the peak is read.
    """
    _grow(workload, 10000)
    db = workload["db"]
    while workload["namespaces"] < 10:
        gcworkload.clone_namespace(db, gcworkload.NAMESPACE, f"c{workload['namespaces']:03d}")
        workload["namespaces"] += 1
    db.close()
    try:
        out = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            import json, cargohold

            def status(field):
                with open("/proc/self/status") as f:
                    for line in f:
                        if line.startswith(field):
                            return int(line.split()[1]) * 1024

            with cargohold.open({str(workload["root"])!r}) as db:
                before = status("VmRSS:")
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # reset the peak (VmHWM) to the current RSS
                stats = db.garbage_collect()
                peak = status("VmHWM:")
                nodes = sum(1 for _ in db.nodes())
            print(json.dumps([nodes, before, peak, stats.meta_d]))
        """)], capture_output=True, text=True, check=True).stdout
        nodes, before, peak, held = json.loads(out)
        assert nodes >= 1_000_000 - 10 * 10000  # containers are roots, not collectible nodes
        extra = (peak - before) / (1 << 20)
        report(f"peak memory, collection over {nodes + 10 * 10000} nodes from a cold process: +{extra:.1f} MiB RSS "
               f"(target <= 100 MiB), writers held off {held:.2f} s")
    finally:
        workload["db"] = cargohold.open(workload["root"])
