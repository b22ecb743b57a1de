"""benchmarks/gogen writes a containerd root that the real containerd daemon reads and collects as its own.

The root holds containerd's BenchmarkGarbageCollect workload at 10 sets. A private
containerd 1.6 (own root, state and socket under tmp, CRI off) is started on it; `ctr`
must list exactly the generated objects, its garbage collector must keep all of them,
and must remove exactly one set's blob or snapshots once their image or container goes
(which it only does if the generated references and the native snapshotter's own
store are what containerd writes).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "containerd_anchor", Path(__file__).resolve().parent.parent / "benchmarks" / "containerd_anchor.py")
anchor = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(anchor)

SETS = 10
NS = "test"
CONTAINERD = shutil.which("containerd")
CTR = shutil.which("ctr")
CONTENT = "io.containerd.content.v1.content/blobs/sha256"
NATIVE = "io.containerd.snapshotter.v1.native/snapshots"
# digestFor(0) and digestFor(9) of containerd's benchmark, as containerd's own metadata package
# records them for image-0 and image-9 when it builds the workload
KNOWN_TARGETS = {"image-0": "sha256:52f5cdab60abeeba036730ce5d770b74b0218e2959f66d182abcc011798d07de",
                 "image-9": "sha256:27d8f867029a8a5cff1c7710e2ec68606cbff886b0b3b7d815b084c997e434aa"}

needs_gogen = pytest.mark.skipif(anchor.gogen_unavailable() is not None,
                                 reason=f"benchmarks/gogen cannot be built: {anchor.gogen_unavailable()}")
needs_daemon = pytest.mark.skipif(
    not (CONTAINERD and CTR) or os.geteuid() != 0,
    reason="needs the containerd daemon and ctr (Debian: apt-get install containerd) and root to run them")


@pytest.fixture
def daemon(tmp_path):
    """`ctr(*args)` against a private containerd running on a generated 10-set root; stopped by PID after."""
    root = tmp_path / "root"
    anchor.make_containerd_db(root, SETS)
    short = Path(tempfile.mkdtemp(prefix="gogen-"))  # unix socket paths must stay short
    sock = short / "c.sock"
    config = tmp_path / "config.toml"
    config.write_text(f"""version = 2
root = "{root}"
state = "{short / 'state'}"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
""")
    log = open(tmp_path / "containerd.log", "wb")
    proc = subprocess.Popen([CONTAINERD, "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)

    def ctr(*args: str) -> str:
        out = subprocess.run([CTR, "--address", str(sock), "-n", NS, *args], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, f"ctr {' '.join(args)}: {out.stderr}"
        return out.stdout

    try:
        deadline = time.monotonic() + 30
        while subprocess.run([CTR, "--address", str(sock), "version"], capture_output=True).returncode != 0:
            assert proc.poll() is None, (tmp_path / "containerd.log").read_text()
            assert time.monotonic() < deadline, "containerd did not come up in 30 s"
            time.sleep(0.1)
        yield ctr, root
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(short, ignore_errors=True)


def _rows(listing: str) -> list[list[str]]:
    return [line.split() for line in listing.splitlines()[1:] if line.strip()]


def _images(ctr) -> dict[str, str]:
    """image name -> target digest, checking the target's other fields."""
    images = {}
    for name, media_type, digest, *_ in _rows(ctr("images", "ls")):
        assert media_type == "irrelevant", name
        images[name] = digest
    return images


def _snapshots(ctr) -> dict[str, tuple[str, str]]:
    """snapshot key -> (parent, kind) in the native snapshotter."""
    snapshots = {}
    for row in _rows(ctr("snapshots", "--snapshotter", "native", "ls")):
        key, parent, kind = row if len(row) == 3 else (row[0], "", row[1])
        snapshots[key] = (parent, kind)
    return snapshots


def _workload_snapshots(sets: range) -> dict[str, tuple[str, str]]:
    return {f"snapshot-{i}-{j}": (f"snapshot-{i}-{j - 1}" if j else "", "Committed")
            for i in sets for j in range(7)}


def _lines(text: str) -> set[str]:
    return set(text.split())


def _collect(ctr) -> None:
    """One synchronous garbage collection in the daemon (deleting a lease with --sync)."""
    ctr("leases", "create", "--id", "gogen-gc")
    ctr("leases", "delete", "--sync", "gogen-gc")


@needs_gogen
@needs_daemon
def test_containerd_lists_the_generated_objects(daemon):
    ctr, root = daemon
    assert _lines(ctr("namespaces", "ls", "-q")) == {NS}
    images = _images(ctr)
    assert set(images) == {f"image-{i}" for i in range(SETS)}
    assert len(set(images.values())) == SETS
    assert {name: images[name] for name in KNOWN_TARGETS} == KNOWN_TARGETS
    assert _lines(ctr("content", "ls", "-q")) == set(images.values())
    for digest in images.values():  # the blob files are the content the records name
        data = (root / CONTENT / digest.removeprefix("sha256:")).read_bytes()
        assert len(data) == 256 and "sha256:" + hashlib.sha256(data).hexdigest() == digest
    assert _lines(ctr("containers", "ls", "-q")) == {f"container-{i}" for i in range(SETS)}
    info = json.loads(ctr("containers", "info", "container-3"))
    assert (info["Runtime"]["Name"], info["Snapshotter"], info["SnapshotKey"]) == (
        "testruntime", "native", "snapshot-3-6")
    assert _snapshots(ctr) == _workload_snapshots(range(SETS))
    assert len(os.listdir(root / NATIVE)) == 7 * SETS


@needs_gogen
@needs_daemon
def test_containerd_gc_keeps_the_workload_and_removes_what_loses_its_root(daemon):
    ctr, root = daemon
    images = _images(ctr)
    _collect(ctr)  # nothing is garbage: every reference was written as containerd reads it
    assert _images(ctr) == images
    assert _lines(ctr("content", "ls", "-q")) == set(images.values())
    assert _snapshots(ctr) == _workload_snapshots(range(SETS))

    ctr("images", "rm", "--sync", "image-0")  # its blob goes, nothing else
    assert _lines(ctr("content", "ls", "-q")) == set(images.values()) - {images["image-0"]}
    assert not (root / CONTENT / images["image-0"].removeprefix("sha256:")).exists()
    assert _snapshots(ctr) == _workload_snapshots(range(SETS))

    ctr("containers", "rm", "container-0")  # removes snapshot-0-6; GC takes its parents,
    _collect(ctr)  # and the native backend removes their directories (ids 1..7) from its own store
    assert _snapshots(ctr) == _workload_snapshots(range(1, SETS))
    assert sorted(int(d) for d in os.listdir(root / NATIVE)) == list(range(8, 7 * SETS + 1))


@needs_gogen
def test_make_containerd_db_refuses_a_non_empty_root(tmp_path):
    (tmp_path / "keep").write_text("x")
    with pytest.raises(RuntimeError, match="not empty"):
        anchor.make_containerd_db(tmp_path, 1)
    assert os.listdir(tmp_path) == ["keep"]
    with pytest.raises(ValueError, match="-1"):
        anchor.make_containerd_db(tmp_path / "new", -1)
    assert not (tmp_path / "new").exists()
