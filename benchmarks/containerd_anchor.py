"""containerd's own Go code as the measured anchor of the benchmarks, run in the same run.

Nothing of containerd is in this repository. Two Go programs are used:

* containerd v1.7.10's ``metadata`` test binary, built out of tree by the recipe in
  ``benchmarks/README.md`` and found through ``$CARGOHOLD_CONTAINERD_METADATA_TEST`` or
  ``DEFAULT_METADATA_TEST``; its ``BenchmarkGarbageCollect`` gives the Go figures;
* ``benchmarks/gogen``, our own generator of a containerd root holding that benchmark's
  workload, built here with Debian's Go and bbolt (GOPATH mode, offline).
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

ENV_VAR = "CARGOHOLD_CONTAINERD_METADATA_TEST"
DEFAULT_METADATA_TEST = (Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                         / "cargohold" / "containerd-v1.7.10" / "metadata.test")
GO_SETS = (10, 100, 1000, 10000)  # the sub-benchmarks of containerd's BenchmarkGarbageCollect
GOGEN_SOURCE = Path(__file__).resolve().parent / "gogen"
DEBIAN_GOPATH = "/usr/share/gocode"  # golang-github-coreos-bbolt-dev installs go.etcd.io/bbolt here
BUILD_HINT = (f"build containerd v1.7.10's metadata test binary as benchmarks/README.md says "
              f"('containerd anchor'), then set {ENV_VAR}=/path/to/metadata.test or put it at "
              f"{DEFAULT_METADATA_TEST}")

_LINE = re.compile(r"^BenchmarkGarbageCollect/(\d+)-Sets(?:-\d+)?\s+(\d+)\s+([0-9.]+) ns/op", re.M)
_GC_CACHE: dict[tuple[int, int], float] = {}


def find_metadata_test() -> str | None:
    """The containerd metadata test binary: ``$CARGOHOLD_CONTAINERD_METADATA_TEST``, else the default path.

    None when the chosen file is not an executable (the variable, when set, is never
    silently replaced by the default).
    """
    path = os.environ.get(ENV_VAR) or str(DEFAULT_METADATA_TEST)
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def missing_message() -> str:
    """The line printed instead of the Go figures when the anchor binary is absent."""
    looked = os.environ.get(ENV_VAR) or str(DEFAULT_METADATA_TEST)
    return f"containerd anchor not found: {BUILD_HINT} (looked for {looked})"


def default_rounds(sets: int) -> int:
    """Collections per Go measurement: the rounds `test_gc_bench` gives cargohold at that size."""
    return 7 if sets >= 10000 else 20


def go_gc_benchmark(sets: list[int], rounds: dict[int, int] | None = None) -> dict[int, float] | None:
    """Seconds per collection of containerd's BenchmarkGarbageCollect at each size in `sets`.

    Runs the test binary now (``-test.benchtime <rounds>x``, one process per distinct
    round count), so the figures come from the caller's benchmark run; each
    (size, rounds) pair is measured once per session. The figure is Go's ns/op: the
    mean over the rounds of one whole ``GarbageCollect`` call. None when the binary is
    absent; RuntimeError when it is present but fails.
    """
    unknown = [n for n in sets if n not in GO_SETS]
    if unknown:
        raise ValueError(f"containerd's BenchmarkGarbageCollect has no size {unknown}: only {GO_SETS}")
    binary = find_metadata_test()
    if binary is None:
        return None
    rounds = {n: (rounds or {}).get(n) or default_rounds(n) for n in sets}
    todo: dict[int, list[int]] = {}
    for n in sets:
        if (n, rounds[n]) not in _GC_CACHE:
            todo.setdefault(rounds[n], []).append(n)
    for count, sizes in sorted(todo.items()):
        for n, seconds in _run_gc_benchmark(binary, sizes, count).items():
            _GC_CACHE[(n, count)] = seconds
    return {n: _GC_CACHE[(n, rounds[n])] for n in sets}


def _run_gc_benchmark(binary: str, sizes: list[int], count: int) -> dict[int, float]:
    pattern = "^BenchmarkGarbageCollect$/^(" + "|".join(str(n) for n in sizes) + ")-Sets$"
    # the benchmark's stores live in t.TempDir(): keep them in a directory of ours
    with tempfile.TemporaryDirectory(prefix="containerd-anchor-") as tmp:
        proc = subprocess.run([binary, "-test.run", "^$", "-test.bench", pattern,
                               "-test.benchtime", f"{count}x"],
                              cwd=tmp, env={**os.environ, "TMPDIR": tmp}, capture_output=True, text=True,
                              timeout=3600)
    found = {int(n): float(ns) / 1e9 for n, iterations, ns in _LINE.findall(proc.stdout)
             if int(iterations) == count}
    if proc.returncode != 0 or set(found) != set(sizes):
        raise RuntimeError(f"{binary} {pattern!r} failed (exit {proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return found


def _gopath() -> str:
    own = os.environ.get("GOPATH", "")
    return own if own and os.path.isdir(os.path.join(own, "src", "go.etcd.io", "bbolt")) else DEBIAN_GOPATH


def gogen_unavailable() -> str | None:
    """Why the generator cannot be built here (None when it can): no Go, or no bbolt source."""
    if shutil.which("go") is None:
        return "no `go` on PATH (Debian: apt-get install golang-go)"
    if not os.path.isdir(os.path.join(_gopath(), "src", "go.etcd.io", "bbolt")):
        return (f"no bbolt source in {_gopath()}/src/go.etcd.io/bbolt "
                "(Debian: apt-get install golang-github-coreos-bbolt-dev)")
    return None


@functools.cache
def build_gogen() -> str:
    """Build `benchmarks/gogen` once per session (offline, GOPATH mode); the path of the binary."""
    reason = gogen_unavailable()
    if reason:
        raise RuntimeError(f"cannot build benchmarks/gogen: {reason}")
    out = tempfile.mkdtemp(prefix="cargohold-gogen-")
    atexit.register(shutil.rmtree, out, True)
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": _gopath(), "GOFLAGS": ""}
    if not (env.get("GOCACHE") or env.get("XDG_CACHE_HOME") or env.get("HOME")):
        env["GOCACHE"] = os.path.join(out, "cache")
    binary = os.path.join(out, "gogen")
    proc = subprocess.run(["go", "build", "-o", binary, "."], cwd=GOGEN_SOURCE, env=env,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"go build of benchmarks/gogen failed:\n{proc.stderr}")
    return binary


def make_containerd_db(path: str | os.PathLike, sets: int, namespace: str = "test") -> Path:
    """Write a containerd 1.x root at `path` holding BenchmarkGarbageCollect's workload at `sets` sets.

    `path` must not exist or be empty. The root is complete (meta.db at db version 3,
    the content blobs, the native snapshotter's metadata.db and directories), so a
    containerd daemon can run on it. Returns the path of its ``meta.db``.
    """
    if not isinstance(sets, int) or isinstance(sets, bool) or sets < 0:
        raise ValueError(f"sets must be a non-negative integer, not {sets!r}")
    proc = subprocess.run([build_gogen(), "-root", os.fspath(path), "-sets", str(sets),
                           "-namespace", namespace], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"gogen failed on {os.fspath(path)!r}: {proc.stderr.strip()}")
    return Path(path) / "io.containerd.metadata.v1.bolt" / "meta.db"


# -- the write anchor: benchmarks/gowrite, built inside containerd v1.7.10's tree ---------------

GOWRITE_ENV_VAR = "CARGOHOLD_GOWRITE"
DEFAULT_GOWRITE = DEFAULT_METADATA_TEST.parent / "gowrite"
GOWRITE_SOURCE = Path(__file__).resolve().parent / "gowrite" / "main.go"
GOWRITE_HINT = (f"build benchmarks/gowrite inside containerd v1.7.10's source tree as benchmarks/README.md "
                f"says ('The Go write anchor'), then set {GOWRITE_ENV_VAR}=/path/to/gowrite or put it at "
                f"{DEFAULT_GOWRITE}")


def find_gowrite() -> str | None:
    """The Go write anchor: ``$CARGOHOLD_GOWRITE``, else `DEFAULT_GOWRITE`; None when absent."""
    path = os.environ.get(GOWRITE_ENV_VAR) or str(DEFAULT_GOWRITE)
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def gowrite_missing_message() -> str:
    looked = os.environ.get(GOWRITE_ENV_VAR) or str(DEFAULT_GOWRITE)
    return f"containerd write anchor not found: {GOWRITE_HINT} (looked for {looked})"


def go_write_benchmark(workload: str, *, sets: int = 200, batch: int = 200, images: int = 1000,
                       runs: int = 3, directory: str | None = None) -> list[float] | None:
    """Seconds per operation of containerd's metadata package on one `benchmarks/gowrite` workload
    (``unbatched``, ``batched``: per set; ``images``: per image creation), one figure per run, each
    on a fresh root under `directory` (the file system cargohold's roots use). None when absent."""
    binary = find_gowrite()
    if binary is None:
        return None
    with tempfile.TemporaryDirectory(prefix="gowrite-", dir=directory) as tmp:
        proc = subprocess.run([binary, "-dir", tmp, "-workloads", workload, "-sets", str(sets),
                               "-batch", str(batch), "-images", str(images), "-runs", str(runs)],
                              capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{binary} {workload} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    result = json.loads(proc.stdout)["runs"][workload]
    return [seconds / result["ops"] for seconds in result["seconds"]]
