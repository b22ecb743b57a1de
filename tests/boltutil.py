"""Real bbolt files for tests: the Go tool in tests/gobolt, built against Debian's bbolt source.

`build_gobolt(dir)` compiles it offline (GOPATH mode, no module download) and
returns a `GoBolt` or raises `Missing` with the reason (no `go`, no bbolt
source: CI installs golang-go and golang-github-coreos-bbolt-dev).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

GOPATH = "/usr/share/gocode"
BBOLT_SOURCE = Path(GOPATH, "src/go.etcd.io/bbolt")
SOURCE = Path(__file__).parent / "gobolt"


class Missing(Exception):
    """What the Go tool needs is not installed."""


class GoBolt:
    """Run the built gobolt: write files from specs, dump files as JSON."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary

    def _run(self, *args, timeout: float = 300) -> str:
        proc = subprocess.run([str(self.binary), *map(str, args)], capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"gobolt {args[0]} failed: {proc.stderr}")
        return proc.stdout

    def write(self, spec: dict, path: Path) -> Path:
        """Write the bbolt file `path` from `spec` (see tests/gobolt/main.go)."""
        spec_path = Path(f"{path}.spec.json")
        spec_path.write_text(json.dumps(spec))
        self._run("write", spec_path, path)
        spec_path.unlink()
        return path

    def dump(self, path: Path) -> dict:
        """bbolt's own view of the file: txid, page_size, buckets (hex keys and values), stats."""
        return json.loads(self._run("dump", path))

    def pages(self, path: Path) -> list[dict]:
        """ID, Type, Count, OverflowCount of every page that has a header."""
        return json.loads(self._run("pages", path))

    def churn(self, path: Path, seconds: float) -> subprocess.Popen:
        """A writer committing to `path` for `seconds` (holding bbolt's exclusive flock)."""
        return subprocess.Popen([str(self.binary), "churn", str(path), str(seconds)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def build_gobolt(out_dir: Path) -> GoBolt:
    go = shutil.which("go")
    if go is None:
        raise Missing("no `go` on PATH (install golang-go)")
    if not (BBOLT_SOURCE / "db.go").is_file():
        raise Missing(f"no bbolt source at {BBOLT_SOURCE} (install golang-github-coreos-bbolt-dev)")
    out_dir.mkdir(parents=True, exist_ok=True)
    binary = out_dir / "gobolt"
    env = dict(os.environ, GO111MODULE="off", GOPATH=GOPATH, GOCACHE=str(out_dir / "gocache"),
               GOFLAGS="", CGO_ENABLED="0")
    proc = subprocess.run([go, "build", "-o", str(binary), "."], cwd=SOURCE, env=env,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"building tests/gobolt failed:\n{proc.stderr}")
    return GoBolt(binary)


def as_dump(f) -> dict:
    """Our reader's view of an open bolt.File, in the shape of `GoBolt.dump` (without stats)."""
    def bucket(b) -> dict:
        items = []
        for key, value in b.items():
            if value is None:
                items.append([key.hex(), bucket(b.bucket(key))])
            else:
                items.append([key.hex(), value.hex()])
        return {"sequence": b.sequence, "items": items}

    return {"txid": f.txid, "page_size": f.page_size,
            "buckets": [[name.hex(), bucket(b)] for name, b in f.buckets()]}


def containerd_sets_spec(sets: int, page_size: int = 4096) -> dict:
    """A meta.db shaped like containerd's BenchmarkGarbageCollect workload, in one transaction.

    Per set: a blob, an image on it, a chain of 7 snapshots and a container on the last one,
    each a bucket of a few keys under v1/test/ as containerd lays them out (metadata/buckets.go).
    """
    stamp = {"random": 15}
    ns = ["v1", "test"]
    blob = [*ns, "content", "blob", "sha256:{i}" + "0" * 58]
    image = [*ns, "image", "image-{i}"]
    ops = [
        {"op": "put", "path": blob, "key": "createdat", "value": stamp},
        {"op": "put", "path": blob, "key": "updatedat", "value": stamp},
        {"op": "put", "path": blob, "key": "size", "value": "hex:8004"},
        {"op": "put", "path": image, "key": "createdat", "value": stamp},
        {"op": "put", "path": image, "key": "updatedat", "value": stamp},
        {"op": "put", "path": [*image, "target"], "key": "digest", "value": "sha256:{i}" + "0" * 58},
        {"op": "put", "path": [*image, "target"], "key": "mediatype", "value": "irrelevant"},
        {"op": "put", "path": [*image, "target"], "key": "size", "value": "hex:8004"},
    ]
    for j in range(7):
        snap = [*ns, "snapshots", "native", f"snapshot-{{i}}-{j}"]
        ops += [
            {"op": "put", "path": snap, "key": "name", "value": f"default/{{i}}{j}/snapshot-{{i}}-{j}"},
            {"op": "put", "path": snap, "key": "createdat", "value": stamp},
            {"op": "put", "path": snap, "key": "updatedat", "value": stamp},
        ]
        if j:
            ops.append({"op": "put", "path": snap, "key": "parent", "value": f"snapshot-{{i}}-{j - 1}"})
        if j < 6:
            ops.append({"op": "put", "path": [*snap, "children"], "key": f"snapshot-{{i}}-{j + 1}", "value": ""})
    container = [*ns, "containers", "container-{i}"]
    ops += [
        {"op": "put", "path": container, "key": "createdat", "value": stamp},
        {"op": "put", "path": container, "key": "updatedat", "value": stamp},
        {"op": "put", "path": container, "key": "snapshotter", "value": "native"},
        {"op": "put", "path": container, "key": "snapshotKey", "value": "snapshot-{i}-6"},
        {"op": "put", "path": container, "key": "image", "value": "image-{i}"},
        {"op": "put", "path": [*container, "runtime"], "key": "name", "value": "testruntime"},
        {"op": "put", "path": [*container, "labels"], "key": "app", "value": "bench-{i}"},
    ]
    return {"page_size": page_size, "txns": [
        {"ops": [{"op": "put", "path": ["v1"], "key": "version", "value": "hex:06"},
                 {"op": "repeat", "count": sets, "ops": ops}]}]}
