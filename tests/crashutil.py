"""Killing the real `cargohold` command at a chosen system call (strace fault injection) and
checking, afterwards, what a crash must never leave behind.

A kill point is the n-th call of one of the calls that make a change durable or take one
back: fsync, fdatasync, rename, unlink, rmdir (whatever names the C library uses for them).
`kill_points` lists them for a command by tracing one clean run; `run_killed` runs the
command again on a fresh root and lets strace deliver SIGKILL as it enters that call
(``-e inject=CALL:signal=KILL:when=N``). strace counts the calls of each thread apart, so in a
command that runs threads (a collection's cleanups) the n-th call of whichever thread gets
there first is the one killed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from typing import NamedTuple, Optional

import pytest
from cliutil import invoke, parsed

import cargohold
from cargohold.model import Kind

TRACED = ("fsync", "fdatasync", "link", "linkat", "rename", "renameat", "renameat2", "unlink", "unlinkat", "rmdir")
_CALL = re.compile(r"^\d+\s+(\w+)\(")


class KillPoint(NamedTuple):
    index: int
    """Position among the kill points of the clean run (0-based)."""
    syscall: str
    occurrence: int
    """Which call of that name of one thread it is (1-based), as strace's ``when=`` counts them."""
    line: str
    """The call in the clean run's trace."""


def traced_calls(trace: str):
    """(call name, its occurrence in its thread, the line) of each call of an ``strace -f`` log, in
    order (the occurrence as ``-e inject=...:when=`` counts it)."""
    seen: dict = {}
    for line in trace.splitlines():
        parts = line.split(None, 1)
        if len(parts) < 2 or "(" not in parts[1]:
            continue
        name = parts[1].split("(", 1)[0]
        occurrence = seen[(parts[0], name)] = seen.get((parts[0], name), 0) + 1
        yield name, occurrence, line


def strace() -> str:
    path = shutil.which("strace")
    if path is None:
        pytest.skip("strace is not installed (apt-get install strace): it injects the kills")
    probe = subprocess.run([path, "-qq", "-o", "/dev/null", "-e", "trace=getpid", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"strace cannot trace here: {probe.stderr.decode(errors='replace').strip()}")
    return path


def command(root, *args) -> list[str]:
    env_free = [sys.executable, "-m", "cargohold.cli.main", "--root", str(root)]
    return env_free + [str(a) for a in args]


def _env() -> dict:
    # No bytecode written: the clean run and the killed one make the same calls (opens included).
    env = {k: v for k, v in os.environ.items() if k != "CARGOHOLD_ROOT"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def kill_points(root, *args, calls: tuple = TRACED) -> list[KillPoint]:
    """Every traced call (`calls`) a clean run of ``cargohold ARGS`` makes on `root` (as it is: fresh,
    or a copy the caller made), in order. The run changes `root`, which is removed afterwards."""
    log = f"{root}.trace"
    proc = subprocess.run([strace(), "-f", "-qq", "-o", log, "-e", "trace=" + ",".join(calls),
                           *command(root, *args)], capture_output=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    points: list[KillPoint] = []
    seen: dict[tuple[str, str], int] = {}
    chosen: set[tuple[str, int]] = set()
    with open(log) as f:
        for line in f:
            match = _CALL.match(line)
            if match is None:
                continue  # "+++ exited" and the like
            thread, name = line.split(None, 1)[0], match.group(1)
            # strace counts each thread's calls apart: the k-th call of one thread is a kill point
            # (the first thread to get there dies, and with it the process).
            occurrence = seen[(thread, name)] = seen.get((thread, name), 0) + 1
            if (name, occurrence) not in chosen:
                chosen.add((name, occurrence))
                points.append(KillPoint(len(points), name, occurrence, line.strip()))
    shutil.rmtree(root, ignore_errors=True)
    return points


def run_killed(root, point: KillPoint, *args) -> subprocess.CompletedProcess:
    """Run ``cargohold ARGS`` on `root`, killed (SIGKILL) as it enters the call at `point`."""
    proc = subprocess.run([strace(), "-f", "-qq", "-o", "/dev/null",
                           "-e", f"inject={point.syscall}:signal=KILL:when={point.occurrence}",
                           *command(root, *args)], capture_output=True, env=_env(), timeout=300)
    assert proc.returncode != 0, f"the command was not killed at {point}: {proc.stdout!r}"
    return proc


def later_clock(hours: float = 25) -> "callable":
    """A clock `hours` ahead: leases of 24 h have expired, debris is past any abandon age."""
    then = datetime.now(timezone.utc) + timedelta(hours=hours)
    return lambda: then


def check_records(root) -> None:
    """Every snapshot record has its backend snapshot (stat, usage, and mounts unless committed)
    and every content record its blob, of its size: through the API and the CLI."""
    with cargohold.open(root) as db:
        for name in db.namespaces.list():
            ns = db.namespace(name)
            for info in ns.content.walk():
                path = db.content_store.blob_path(info.digest)
                assert os.path.isfile(path), f"content record {info.digest} has no blob"
                assert os.path.getsize(path) == info.size, f"blob {info.digest} has the wrong size"
            for sn_name in db.snapshotters:
                sn = ns.snapshotter(sn_name)
                for info in sn.walk():
                    sn.usage(info.name)
                    if info.kind != Kind.COMMITTED:
                        assert sn.mounts(info.name)
            ns.content.statuses()
    for sn_name in ("native", "overlayfs"):
        for info in parsed(invoke(root, "snapshots", "--snapshotter", sn_name, "ls", "--json")):
            invoke(root, "snapshots", "--snapshotter", sn_name, "usage", info["name"])
            if info["kind"] != "committed":
                invoke(root, "snapshots", "--snapshotter", sn_name, "mounts", info["name"])
    parsed(invoke(root, "info", "--json"))
    parsed(invoke(root, "content", "ls", "--json"))


def drop_roots(root) -> None:
    """Remove every lease and image of the default namespace, through the CLI."""
    leases = [lease["id"] for lease in parsed(invoke(root, "leases", "ls", "--json"))]
    if leases:
        invoke(root, "leases", "rm", *leases)
    images = [image["name"] for image in parsed(invoke(root, "images", "ls", "--json"))]
    if images:
        invoke(root, "images", "rm", *images)


def backend_files(root) -> dict:
    """What the backends hold on disk: blob files, ingest directories, snapshot directories."""
    found = {}
    blobs = os.path.join(root, "content", "blobs")
    found["blobs"] = sorted(os.path.relpath(os.path.join(top, f), blobs)
                            for top, _, files in os.walk(blobs) for f in files)
    ingests = os.path.join(root, "content", "ingest")
    found["ingests"] = sorted(os.listdir(ingests)) if os.path.isdir(ingests) else []
    for name in ("native", "overlayfs"):
        snapshots = os.path.join(root, "snapshots", name, "snapshots")
        found[name] = sorted(os.listdir(snapshots)) if os.path.isdir(snapshots) else []
    return found


def backend_snapshot_keys(root) -> dict:
    with cargohold.open(root) as db:
        return {name: [info.name for info in backend.walk()] for name, backend in db.snapshotters.items()}


EMPTY = {"blobs": [], "ingests": [], "native": [], "overlayfs": []}


def collect_everything(root, clock: Optional[callable] = None) -> dict:
    """Drop the roots, collect through the CLI (which must succeed), then with `clock` if given.

    Returns the CLI's report."""
    drop_roots(root)
    report = parsed(invoke(root, "gc", "--json"))
    assert report["errors"] == [], report["errors"]
    if clock is not None:
        with cargohold.open(root, clock=clock) as db:
            stats = db.garbage_collect()
            assert stats.errors == [], stats.errors
    return report


def describe(point: Optional[KillPoint]) -> str:
    return "no kill" if point is None else f"kill #{point.index} at {point.line}"


def dump(data) -> str:
    return json.dumps(data, indent=1, sort_keys=True)
