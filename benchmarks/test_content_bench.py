"""Content store throughput and memory, against standard tools on the same file in the same run.

    .venv/bin/python -m pytest benchmarks/test_content_bench.py

* ingest of a 256 MiB blob (read the file, hash, write, fsync, rename) against
  ``sha256sum`` + ``cp`` (+ ``sync`` of the copy, the same work with the same durability);
* streaming read of the blob against ``cp blob /dev/null``, and read-and-verify
  against ``sha256sum blob``;
* peak RSS of a process ingesting a 1 GiB blob, above its RSS just before (Linux: the
  peak, VmHWM, is reset through /proc/self/clear_refs right before the ingest).

Targets: ingest and read within 1.5x of the tools; RSS growth under 64 MiB.
The ratios are printed at the end of the run ("benchmark ratios").
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import cargohold
from cargohold.content.local import CHUNK

SIZE = 256 << 20
ROUNDS = 5
MEDIANS: dict[str, float] = {}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("content-bench")


@pytest.fixture(scope="module")
def source(workdir):
    """A 256 MiB file of random bytes, and its digest."""
    path = workdir / "source.bin"
    hasher = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(SIZE // CHUNK):
            chunk = os.urandom(CHUNK)
            hasher.update(chunk)
            f.write(chunk)
    return str(path), "sha256:" + hasher.hexdigest()


@pytest.fixture(scope="module")
def stored(workdir, source):
    """A database holding the source blob: (namespace handle, digest, blob path)."""
    path, digest = source
    db = cargohold.open(workdir / "stored")
    ns = db.namespace("bench")
    _ingest(ns, path, digest)
    yield ns, digest, db.content_store.blob_path(digest)
    db.close()


def _ingest(ns, path: str, digest: str) -> None:
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f, ns.content.writer("bench", total=SIZE, expected=digest) as w:
        while n := f.readinto(buf):
            w.write(view[:n])
        w.commit(SIZE, digest)


def _read(ns, digest: str, hasher=None) -> int:
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    total = 0
    with ns.content.open(digest) as f:
        while n := f.readinto(buf):
            if hasher is not None:
                hasher.update(view[:n])
            total += n
    return total


def _shell(script: str, *args: str) -> None:
    subprocess.run(["sh", "-c", script, "sh", *args], check=True, stdout=subprocess.DEVNULL)


def _record(benchmark, name: str) -> None:
    MEDIANS[name] = benchmark.stats.stats.median


@pytest.mark.benchmark(group="ingest 256 MiB")
def test_ingest_cargohold(benchmark, workdir, source):
    path, digest = source
    state = {"round": 0, "db": None}

    def fresh_database():
        if state["db"] is not None:
            state["db"].close()
            shutil.rmtree(workdir / f"ingest-{state['round']}")
        state["round"] += 1
        state["db"] = cargohold.open(workdir / f"ingest-{state['round']}")
        return (state["db"].namespace("bench"), path, digest), {}

    benchmark.pedantic(_ingest, setup=fresh_database, rounds=ROUNDS, warmup_rounds=1)
    assert state["db"].namespace("bench").content.info(digest).size == SIZE
    state["db"].close()
    _record(benchmark, "ingest")


INGEST_TOOLS = {
    "sha256sum+cp": 'sha256sum "$1" && cp "$1" "$2"',
    "sha256sum+cp+sync": 'sha256sum "$1" && cp "$1" "$2" && sync "$2"',  # the same work, as durable
    "cp+sync": 'cp "$1" "$2" && sync "$2"',  # the durable copy alone, without hashing
}


@pytest.mark.benchmark(group="ingest 256 MiB")
@pytest.mark.parametrize("tool", list(INGEST_TOOLS))
def test_ingest_tools(benchmark, workdir, source, tool):
    path, _ = source
    target = str(workdir / "copy.bin")

    def clean():
        if os.path.exists(target):
            os.unlink(target)
        return (), {}

    benchmark.pedantic(lambda: _shell(INGEST_TOOLS[tool], path, target), setup=clean, rounds=ROUNDS,
                       warmup_rounds=1)
    _record(benchmark, tool)


@pytest.mark.benchmark(group="read 256 MiB")
def test_read_cargohold(benchmark, stored):
    ns, digest, _ = stored
    assert benchmark.pedantic(_read, args=(ns, digest), rounds=ROUNDS, warmup_rounds=1) == SIZE
    _record(benchmark, "read")


@pytest.mark.benchmark(group="read 256 MiB")
def test_read_cp_devnull(benchmark, stored):
    _, _, blob_path = stored
    benchmark.pedantic(lambda: _shell('cp "$1" /dev/null', blob_path), rounds=ROUNDS, warmup_rounds=1)
    _record(benchmark, "cp>/dev/null")


@pytest.mark.benchmark(group="read and verify 256 MiB")
def test_read_verify_cargohold(benchmark, stored):
    ns, digest, _ = stored

    def read_and_verify():
        hasher = hashlib.sha256()
        _read(ns, digest, hasher)
        assert "sha256:" + hasher.hexdigest() == digest

    benchmark.pedantic(read_and_verify, rounds=ROUNDS, warmup_rounds=1)
    _record(benchmark, "read+verify")


@pytest.mark.benchmark(group="read and verify 256 MiB")
def test_read_verify_sha256sum(benchmark, stored):
    _, _, blob_path = stored
    benchmark.pedantic(lambda: _shell('sha256sum "$1"', blob_path), rounds=ROUNDS, warmup_rounds=1)
    _record(benchmark, "sha256sum")


RSS_SCRIPT = """
    import os, sys
    import cargohold

    def status_kib(field):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

    db = cargohold.open(sys.argv[1])
    ns = db.namespace("rss")
    chunk = os.urandom(1 << 20)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current RSS: the baseline
    base = status_kib("VmRSS")
    with ns.content.writer("big", total=1 << 30) as w:
        for i in range(1024):
            w.write(chunk[i:] + chunk[:i])
        w.commit(1 << 30)
    print(base, status_kib("VmHWM"))
"""


@pytest.mark.benchmark(group="peak RSS, ingest 1 GiB")
def test_peak_rss_ingest_1gib(benchmark, workdir, report):
    """Memory, not time: the ingest runs once in a fresh process that reports its own peak RSS."""
    root = workdir / "rss"
    result = {}

    def run():
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(RSS_SCRIPT), str(root)],
                              capture_output=True, text=True, check=True)
        result["base"], result["peak"] = (int(v) for v in proc.stdout.split())

    benchmark.pedantic(run, rounds=1, iterations=1)
    shutil.rmtree(root)
    growth_mib = (result["peak"] - result["base"]) / 1024
    benchmark.extra_info.update(base_rss_mib=result["base"] / 1024, peak_rss_mib=result["peak"] / 1024,
                                growth_mib=growth_mib)
    report(f"peak RSS ingesting 1 GiB: {result['base'] / 1024:.1f} MiB before, "
           f"{result['peak'] / 1024:.1f} MiB at peak, +{growth_mib:.1f} MiB (target < 64 MiB)")
    assert growth_mib < 64, f"ingesting 1 GiB grew the peak RSS by {growth_mib:.1f} MiB"


def test_report_ratios(report):
    """Ratios of medians measured above, in this run (lower is better; the target is <= 1.5)."""
    pairs = [("ingest", ("sha256sum+cp",)), ("ingest", ("sha256sum+cp+sync",)), ("ingest", ("cp+sync",)),
             ("read", ("cp>/dev/null",)), ("read+verify", ("sha256sum",))]
    for ours, theirs in pairs:
        if ours not in MEDIANS or any(t not in MEDIANS for t in theirs):
            report(f"{ours} vs {' + '.join(theirs)}: not measured in this run")
            continue
        baseline = sum(MEDIANS[t] for t in theirs)
        ratio = MEDIANS[ours] / baseline
        report(f"{ours} vs {' + '.join(theirs)}: {MEDIANS[ours]:.3f}s / {baseline:.3f}s = {ratio:.2f}x"
               f" ({SIZE / MEDIANS[ours] / 2**20:.0f} MiB/s vs {SIZE / baseline / 2**20:.0f} MiB/s)")
