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
