"""cargohold.bolt read speed and memory on bbolt files written by bbolt itself (tests/gobolt).

    .venv/bin/python -m pytest benchmarks/test_bolt_bench.py

* `test_open[sets-impl]`: `bolt.open` of a meta.db shaped like containerd's
  BenchmarkGarbageCollect workload (per set a blob, an image, 7 snapshots and a
  container, each a bucket of a few keys; 1000 and 10000 sets): every live page
  read and checked, every key and value copied into memory (the compiled core
  makes a bucket object only when one is asked for). Reported as keys/s,
  compiled and pure-Python. containerd's layout gives most objects a page of their own
  (a bucket with a sub-bucket is never inlined), so 10000 sets are ~84k pages
  (345 MB) for 670k keys.
* `test_open_large[impl]`: about 100 MB of live data (1M keys, 100-byte values
  in 16 buckets), to see throughput on full pages.
* `test_peak_memory[...]`: extra peak RSS of opening each file in a fresh process.

Each timed round opens the file and drops what it read (closing frees it), so a
figure is the whole cost of a read. Every figure is from this run; ratios are
printed at the end, with the CPU time beside the wall time.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from boltutil import Missing, build_gobolt, containerd_sets_spec  # noqa: E402

from cargohold import _fallback, bolt  # noqa: E402
from cargohold.bolt import reader  # noqa: E402

try:
    from cargohold import _core
except ImportError:
    _core = None

IMPLS = {"fallback": _fallback, **({"compiled": _core} if _core else {})}
SETS = [1000, 10000]
RESULTS: dict = {}


def large_spec() -> dict:
    ops = [{"op": "fill", "path": ["data", f"b{b:02d}"], "count": 62500, "key": f"key-{b:02d}-{{i}}",
            "value": {"random": 100}} for b in range(16)]
    return {"page_size": 4096, "txns": [{"ops": ops}]}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    try:
        gobolt = build_gobolt(tmp_path_factory.mktemp("gobolt"))
    except Missing as exc:
        pytest.skip(f"bbolt files cannot be written here: {exc}")
    out = {}
    root = tmp_path_factory.mktemp("bolt-bench")
    for sets in SETS:
        out[sets] = gobolt.write(containerd_sets_spec(sets), root / f"sets-{sets}.db")
    out["large"] = gobolt.write(large_spec(), root / "large.db")
    return out


def count_keys(f) -> int:
    n = 0
    todo = [f.root]
    while todo:
        b = todo.pop()
        n += len(b)
        todo.extend(sub for _, sub in b.buckets())
    return n


@pytest.fixture(params=sorted(IMPLS))
def impl_name(request, monkeypatch):
    impl = IMPLS[request.param]
    monkeypatch.setattr(reader, "BoltTx", impl.BoltTx)
    return request.param


def _measure(benchmark, report, path, label, impl_name, rounds):
    with bolt.open(path) as f:
        keys = count_keys(f)
        pages, size = f.stats.pages_read, f.stats.bytes_read
    cpu = []

    def once():
        start = time.process_time()
        bolt.open(path).close()
        cpu.append(time.process_time() - start)

    benchmark.pedantic(once, rounds=rounds, warmup_rounds=1)
    median = statistics.median(benchmark.stats.stats.data)
    RESULTS[(label, impl_name)] = median
    # CPU time as well: on a shared machine the wall clock also counts other processes' turns
    report(f"bolt open {label:>11} [{impl_name:8}]: {median * 1000:8.1f} ms median "
           f"({statistics.median(cpu) * 1000:7.1f} ms CPU), {keys:>8} keys ({keys / median / 1e6:5.2f} M keys/s), "
           f"{pages} pages, {size / 2**20:6.1f} MiB read")
    other = RESULTS.get((label, "fallback" if impl_name == "compiled" else "compiled"))
    if other is not None:
        compiled = RESULTS[(label, "compiled")]
        report(f"bolt open {label:>11}: compiled is {RESULTS[(label, 'fallback')] / compiled:4.1f}x the fallback")


@pytest.mark.parametrize("sets", SETS)
def test_open(benchmark, report, files, sets, impl_name):
    _measure(benchmark, report, files[sets], f"{sets} sets", impl_name, rounds=5 if sets >= 10000 else 20)


def test_open_large(benchmark, report, files, impl_name):
    _measure(benchmark, report, files["large"], "100 MB live", impl_name, rounds=3)


@pytest.mark.parametrize("which", [10000, "large"])
def test_peak_memory(report, files, which):
    # VmHWM, not ru_maxrss: the latter keeps the high-water mark of the pytest process it was forked from
    code = textwrap.dedent(f"""
        import json
        from cargohold import bolt
        def hwm():
            return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
        before = hwm()
        f = bolt.open({str(files[which])!r})
        print(json.dumps({{"extra_kib": hwm() - before, "bytes_read": f.stats.bytes_read}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600)
    result = json.loads(proc.stdout)
    size = files[which].stat().st_size
    report(f"bolt open {str(which):>11}: extra peak RSS {result['extra_kib'] / 1024:7.1f} MiB "
           f"(file {size / 2**20:.1f} MiB, {result['bytes_read'] / 2**20:.1f} MiB of live pages)")
