"""fsck speed, measured in the same run as what it is compared with.

    .venv/bin/python -m pytest -p no:cacheprovider benchmarks/test_fsck_bench.py

* `test_fsck_1m_nodes`: `cargohold.fsck(db)` (no content verification) of the GC benchmark's
  graph at 1,000,000 nodes (`gcworkload`: 10000 sets cloned into 10 namespaces), against one
  `db.garbage_collect()` of the same database, alternately, medians of 3. Target: at most 3x.
* `test_verify_content_throughput`: the bytes per second of ``fsck(verify_content=True)`` over
  a root holding 64 blobs of 4 MiB (256 MiB of random bytes) against ``sha256sum`` over the
  same blob files, both from the page cache. Target: at least 0.8x sha256sum's throughput.
* the same fsck with the pure-Python fallback, for comparison.

The ratios are printed at the end of the run ("benchmark ratios").
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import textwrap
import time

import pytest

import cargohold
import gcworkload

BLOBS = 64
BLOB_SIZE = 4 << 20


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    """The GC benchmark's workload at 1,000,000 nodes."""
    root = tmp_path_factory.mktemp("fsck-bench") / "root"
    with cargohold.open(root) as db:
        gcworkload.add_sets(db, 0, 10000)
        for i in range(1, 10):
            gcworkload.clone_namespace(db, gcworkload.NAMESPACE, f"c{i:03d}")
    return root


def test_fsck_1m_nodes(graph, report):
    with cargohold.open(graph) as db:
        assert cargohold.fsck(db).problems == []  # warm up; and the graph is sound
        collect, check = [], []
        for _ in range(3):
            started = time.perf_counter()
            stats = db.garbage_collect()
            collect.append(time.perf_counter() - started)
            assert stats.removed == []
            started = time.perf_counter()
            found = cargohold.fsck(db)
            check.append(time.perf_counter() - started)
            assert found.checked["nodes"] == 1_000_000 and found.problems == []
    gc_s, fsck_s = statistics.median(collect), statistics.median(check)
    report(f"fsck of 1,000,000 nodes: {fsck_s:.2f} s = {fsck_s / gc_s:.2f}x one collection of them "
           f"({gc_s:.2f} s, medians of 3, same run; target <= 3x)")


def test_fsck_1m_nodes_fallback(graph, report):
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import json, time, cargohold
        with cargohold.open({str(graph)!r}) as db:
            started = time.perf_counter()
            found = cargohold.fsck(db)
            print(json.dumps([cargohold._native.COMPILED, time.perf_counter() - started, len(found.problems)]))
    """)], capture_output=True, text=True, check=True, env={**os.environ, "CARGOHOLD_PUREPYTHON": "1"}).stdout
    compiled, seconds, problems = json.loads(out)
    assert compiled is False and problems == 0
    report(f"fsck of 1,000,000 nodes, pure-Python fallback: {seconds:.2f} s")


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    """A root holding 64 blobs of 4 MiB of random bytes; (root, blob paths)."""
    root = tmp_path_factory.mktemp("verify-bench") / "root"
    paths = []
    with cargohold.open(root) as db:
        ns = db.namespace("bench")
        for i in range(BLOBS):
            data = os.urandom(BLOB_SIZE)
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            with ns.content.writer(f"blob-{i}", total=len(data), expected=digest) as w:
                w.write(data)
                w.commit(len(data), digest)
            paths.append(db.content_store.blob_path(digest))
    return root, paths


def test_verify_content_throughput(blobs, report):
    root, paths = blobs
    if shutil.which("sha256sum") is None:
        pytest.skip("sha256sum is not installed")
    total = BLOBS * BLOB_SIZE
    tool, ours, single = [], [], []
    with cargohold.open(root) as db:
        for _ in range(4):  # the first round of each warms the page cache
            started = time.perf_counter()
            subprocess.run(["sha256sum", *paths], check=True, capture_output=True)
            tool.append(time.perf_counter() - started)
            for workers, times in ((None, ours), (1, single)):
                started = time.perf_counter()
                found = cargohold.fsck(db, verify_content=True, workers=workers)
                times.append(time.perf_counter() - started)
                assert found.problems == []
    tool_s, ours_s, single_s = (statistics.median(t[1:]) for t in (tool, ours, single))
    mib = total / (1 << 20)
    report(f"fsck --verify-content: {mib / ours_s:.0f} MiB/s = {tool_s / ours_s:.2f}x sha256sum's "
           f"{mib / tool_s:.0f} MiB/s over the same {BLOBS} blobs of {BLOB_SIZE >> 20} MiB; one hashing thread: "
           f"{mib / single_s:.0f} MiB/s = {tool_s / single_s:.2f}x (medians of 3 after a warm-up, same run; "
           f"target >= 0.8x)")
