"""Planning containerd's GC from a containerd meta.db, against containerd's own collection.

    .venv/bin/python -m pytest benchmarks/test_containerd_plan_bench.py

The database holds containerd's ``BenchmarkGarbageCollect`` workload (per set: a
blob, an image on it, a chain of 7 committed snapshots, a container on the last
one; nothing garbage) at 1000 and 10000 sets. Each round is what
``cargohold containerd gc --dry-run`` does: read the file (`open_root`) and plan
(`unreachable`); the report gives the median of each beside the total's. Target:
at most 0.5x the time containerd v1.7.10 takes to collect the same workload (its
``BenchmarkGarbageCollect``), measured in the same run.

The database and the Go figures come from ``benchmarks/containerd_anchor.py``
(its generator writes containerd's schema with bbolt; its anchor runs containerd's
benchmark binary). Without that module the database is written by bbolt through
``tests/gobolt`` with the same layout, and only cargohold's time is reported; without
the anchor binary, likewise.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import pytest

import cargohold.containerd as ctrd

SETS = [1000, 10000]
ROUNDS = {1000: 15, 10000: 5}

try:
    import containerd_anchor as anchor
except ImportError:  # the anchor helpers are not there: fall back to our own bbolt writer
    anchor = None


def _gobolt_workload(path: str, sets: int) -> str:
    """A meta.db of the workload written by bbolt itself (tests/gobolt), same buckets as containerd's."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "tests"))
    from boltutil import Missing, build_gobolt

    try:
        gobolt = build_gobolt(Path(path) / "gobolt")
    except Missing as exc:
        pytest.skip(str(exc))
    t = "hex:01" + "00000000e0aa2fc7" + "00000000" + "ffff"   # a Go binary time
    ns = ["v1", "test"]
    digest = "sha256:" + "0" * 58 + "{i}"
    ops = [{"op": "put", "path": ["v1"], "key": "version", "value": "hex:06"}]
    body = [
        {"op": "bucket", "path": ns + ["content", "blob", digest]},
        {"op": "put", "path": ns + ["content", "blob", digest], "key": "size", "value": "hex:8004"},
        {"op": "put", "path": ns + ["content", "blob", digest], "key": "createdat", "value": t},
        {"op": "put", "path": ns + ["content", "blob", digest], "key": "updatedat", "value": t},
        {"op": "bucket", "path": ns + ["images", "image-{i}", "target"]},
        {"op": "put", "path": ns + ["images", "image-{i}", "target"], "key": "digest", "value": digest},
        {"op": "put", "path": ns + ["images", "image-{i}", "target"], "key": "mediatype", "value": "irrelevant"},
        {"op": "put", "path": ns + ["images", "image-{i}", "target"], "key": "size", "value": "hex:8004"},
        {"op": "put", "path": ns + ["images", "image-{i}"], "key": "createdat", "value": t},
        {"op": "put", "path": ns + ["images", "image-{i}"], "key": "updatedat", "value": t},
    ]
    for j in range(7):
        snap = ns + ["snapshots", "native", f"snapshot-{{i}}-{j}"]
        body += [{"op": "bucket", "path": snap},
                 {"op": "put", "path": snap, "key": "name", "value": f"test/{{i}}{j}/snapshot-{{i}}-{j}"},
                 {"op": "put", "path": snap, "key": "createdat", "value": t},
                 {"op": "put", "path": snap, "key": "updatedat", "value": t}]
        if j:
            body.append({"op": "put", "path": snap, "key": "parent", "value": f"snapshot-{{i}}-{j - 1}"})
        if j < 6:
            body += [{"op": "bucket", "path": snap + ["children"]},
                     {"op": "put", "path": snap + ["children"], "key": f"snapshot-{{i}}-{j + 1}", "value": ""}]
    container = ns + ["containers", "container-{i}"]
    body += [{"op": "bucket", "path": container + ["runtime"]},
             {"op": "put", "path": container + ["runtime"], "key": "name", "value": "testruntime"},
             {"op": "put", "path": container, "key": "snapshotter", "value": "native"},
             {"op": "put", "path": container, "key": "snapshotKey", "value": "snapshot-{i}-6"},
             {"op": "put", "path": container, "key": "createdat", "value": t},
             {"op": "put", "path": container, "key": "updatedat", "value": t}]
    ops.append({"op": "repeat", "count": sets, "ops": body})
    meta = os.path.join(path, "meta.db")
    gobolt.write({"txns": [{"ops": ops}]}, Path(meta))
    return meta


def _workload(tmp_path_factory, sets: int) -> str:
    base = str(tmp_path_factory.mktemp(f"ctrd-{sets}"))
    if anchor is not None and getattr(anchor, "gogen_unavailable", lambda: "absent")() is None:
        return str(anchor.make_containerd_db(os.path.join(base, "root"), sets))
    return _gobolt_workload(base, sets)


def _go_figures() -> "dict | None":
    if anchor is None:
        return None
    return anchor.go_gc_benchmark(SETS, rounds={n: ROUNDS[n] for n in SETS})


@pytest.mark.parametrize("sets", SETS)
def test_plan(benchmark, tmp_path_factory, report, sets):
    meta = _workload(tmp_path_factory, sets)
    times, reads = [], []

    def plan():
        start = time.perf_counter()
        host = ctrd.open_root(meta)
        read = time.perf_counter()
        removed = host.unreachable()
        times.append(time.perf_counter() - start)
        reads.append(read - start)
        assert removed == []
        return host

    host = benchmark.pedantic(plan, rounds=ROUNDS[sets], warmup_rounds=1)
    assert len(host.graph().all_nodes()) == sets * 10
    median = statistics.median(times)
    read = statistics.median(reads)
    planned = statistics.median(t - r for t, r in zip(times, reads))
    line = (f"containerd plan {sets:>6} sets: read meta.db + plan {median * 1000:8.1f} ms median "
            f"(open_root {read * 1000:.1f} ms, unreachable {planned * 1000:.1f} ms)")
    go = _go_figures()
    if go:
        line += f"  = {median / go[sets]:.3f}x containerd's collection {go[sets] * 1000:.1f} ms (target <= 0.5)"
    elif anchor is not None:
        line += f"  ({anchor.missing_message()})"
    else:
        line += "  (benchmarks/containerd_anchor.py absent: no containerd figure)"
    report(line)
