"""A new ingest: the backend ref `ns.content` makes up for a writer, in a directory that writer has
just created, holds nothing to resume or clear, so opening it looks for nothing and its meta is
written in place (a partial one reads as none). A real child process runs under strace: the calls
it makes in the ingest directory, and a kill (SIGKILL, by strace) at each call of the opening,
after which the upload is resumable or, never registered, cleaned up, and fsck finds nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from content_util import digest_of
from crashutil import later_clock, strace, traced_calls

import cargohold
from cargohold import schema
from cargohold.content.store import collect_backend

DATA = b"the bytes of a new upload, " * 4
DIGEST = digest_of(DATA)
HALF = len(DATA) // 2

CHILD = """
import os, sys
import cargohold

db = cargohold.open(sys.argv[1])
ns = db.namespace("default")
os.getppid()  # the opening starts
w = ns.content.writer("up", total={size}, expected={digest!r})
w.write({first!r})
os.getppid()  # the opening is over
if sys.argv[2] == "commit":
    w.write({rest!r})
    w.commit({size}, {digest!r})
    os.getppid()
w.close()
db.close()
"""

OPENING = ("mkdir", "openat", "flock", "newfstatat", "write", "rename", "unlink", "fsync", "fdatasync",
           "pwrite64", "writev", "close")


def child(tmp_path, root, mode: str, *strace_args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD.format(size=len(DATA), digest=DIGEST, first=DATA[:HALF],
                                                   rest=DATA[HALF:])))
    env = {k: v for k, v in os.environ.items() if k not in ("CARGOHOLD_ROOT", "CARGOHOLD_METADATA")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # the clean run and the killed one make the same opens
    return subprocess.run([strace(), "-f", "-qq", *strace_args, sys.executable, str(script), str(root), mode],
                          capture_output=True, text=True, env=env, timeout=120)


def traced(tmp_path, mode: str, calls) -> list[tuple[str, int, str, int]]:
    """(call, its occurrence in its thread, the trace line, section) of every traced call of a clean
    run on a root of its own; section 1 is the opening, 2 the commit, 0 outside both."""
    root = tmp_path / "clean"
    log = tmp_path / "clean.trace"
    proc = child(tmp_path, root, mode, "-o", str(log), "-e", "trace=getppid," + ",".join(calls))
    assert proc.returncode == 0, proc.stderr
    found, section = [], 0
    for name, occurrence, line in traced_calls(log.read_text()):
        if name == "getppid":
            section += 1
        else:
            found.append((name, occurrence, line, section))
    return found


def test_a_new_ingest_looks_for_nothing_and_renames_nothing(tmp_path):
    """Opening and committing a new upload: every call on the ingest directory succeeds (no meta
    read, no stat of data, no unlink of a file that is not there), the meta is created in place,
    nothing is renamed there, and the discard removes exactly data, meta and lock."""
    calls = traced(tmp_path, "commit", ("mkdir", "openat", "newfstatat", "stat", "lstat", "access", "unlink",
                                        "rename", "renameat", "renameat2", "rmdir"))
    ingest = [(name, line) for name, _, line, section in calls if section and "/ingest/" in line]
    assert ingest, calls
    assert [line for _, line in ingest if "= -1" in line] == []
    assert [line for name, line in ingest if name.startswith("rename")] == []
    metas = [line for name, line in ingest if name == "openat" and line.split('"')[1].endswith("/meta")]
    assert len(metas) == 1 and "O_EXCL" in metas[0], metas
    removed = [os.path.basename(line.split('"')[1]) for name, line in ingest if name == "unlink"]
    assert removed == ["data", "meta", "lock"]


def test_a_new_ingest_meta_reads_as_json_dumps_wrote_it(tmp_path):
    """The meta written in place holds the bytes ``json.dumps`` gives for its fields, as before."""
    with cargohold.open(tmp_path / "root") as db:
        ns = db.namespace("default")
        w = ns.content.writer("up", total=len(DATA), expected=DIGEST)
        with db.view() as tx:
            bref = schema.unpack(tx.kv.get(schema.T_OBJECTS, schema.object_key("default", schema.K_INGEST, "up")))["b"]
        with open(os.path.join(db.content_store.ingest_dir(bref), "meta"), "rb") as fh:
            raw = fh.read()
        meta = json.loads(raw)
        assert list(meta) == ["ref", "total", "alg", "started", "updated"]
        assert raw == json.dumps(meta).encode()
        assert (meta["ref"], meta["total"], meta["alg"]) == (bref, len(DATA), "sha256")
        w.write(DATA)
        assert w.commit(len(DATA), DIGEST).size == len(DATA)


def check_after_kill(root, where: str) -> list[str]:
    """The upload resumes from what it wrote if its ingest record was committed, else the collection
    leaves no ingest directory; either way fsck finds nothing afterwards. Returns what broke."""
    broken = []
    with cargohold.open(root, clock=later_clock(hours=1)) as db:  # debris is past the abandon age
        ns = db.namespace("default")
        with db.view() as tx:
            registered = tx.kv.get(schema.T_OBJECTS, schema.object_key("default", schema.K_INGEST, "up")) is not None
        if registered:
            offset = ns.content.status("up").offset
            if offset not in (0, HALF):
                broken.append(f"{where}: the ingest resumes at {offset}")
            with ns.content.writer("up", total=len(DATA), expected=DIGEST) as w:
                if w.status().offset != offset:
                    broken.append(f"{where}: the writer resumes at {w.status().offset}, the status says {offset}")
                w.write(DATA[w.status().offset:])
                w.commit(len(DATA), DIGEST)
            if ns.content.read(DIGEST) != DATA:
                broken.append(f"{where}: the resumed upload committed other bytes")
        else:
            scratch = db.namespace("scratch")
            with scratch.content.writer("tmp") as w:
                w.write(b"deleted at once")
                digest = w.commit().digest
            scratch.content.delete(digest)
            assert db.garbage_collect().errors == []
            collect_backend(db)
            left = os.listdir(os.path.join(db.content_store.root, "ingest"))
            if left:
                broken.append(f"{where}: never registered, yet the cleanup left {left}")
        broken += [f"{where}: fsck: {x.kind} {x.key}" for x in cargohold.fsck(db).problems]
    return broken


def killed_openings(tmp_path, choose) -> list[str]:
    broken = []
    points = [(name, occurrence, line) for name, occurrence, line, section in traced(tmp_path, "open", OPENING)
              if section == 1]
    for n, (call, occurrence, line) in enumerate(choose(points)):
        root = tmp_path / f"root-{n}"
        proc = child(tmp_path, root, "open", "-o", "/dev/null", "-e", f"inject={call}:signal=KILL:when={occurrence}")
        assert proc.returncode != 0, f"not killed at {line}"
        broken += check_after_kill(root, f"killed at {line}")
    return broken


def _meta_written(points):
    """The write of the meta created in place: killed there, the ingest has an empty meta."""
    opened = next(i for i, p in enumerate(points) if p[0] == "openat" and '/meta"' in p[2] and "O_EXCL" in p[2])
    return [next(p for p in points[opened:] if p[0] == "write")]


def test_a_new_ingest_killed_while_writing_its_meta_is_cleaned_up(tmp_path):
    assert killed_openings(tmp_path, _meta_written) == []


@pytest.mark.slow
def test_a_new_ingest_killed_at_every_point_of_its_opening_loses_nothing(tmp_path):
    assert killed_openings(tmp_path, lambda points: points) == []
