"""A blob's directory entry is on disk before the commit that records the blob.

A content commit links the blob into ``content/blobs/<alg>`` and leaves the
flush of that directory to just before the metadata transaction commits
(once for all the blobs of the transaction). Each scenario runs in a child
process under strace (``-y``: flushes name their file); after the last link
into the directory there must be an fsync of it before the next fdatasync of
``meta/data.mdb``, in a ``db.update()`` block, in a caller's ``tx=``, in a
shared commit of concurrent single calls, and with ``durable=False`` too.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

from crashutil import strace

_LINE = re.compile(r"^\d+\s+(\w+)\((.*)")

PREAMBLE = """
import hashlib, sys, threading, cargohold
root, durable = sys.argv[1:]
db = cargohold.open(root, durable=durable == "1")
ns = db.namespace("default")

def put(i, tx=None):
    data = bytes([i]) * 256
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with ns.content.writer(f"ref-{i}", total=len(data), expected=digest, tx=tx) as w:
        w.write(data)
        w.commit(len(data), digest, tx=tx)
"""

SCENARIOS = {
    "update": """
        with db.update():
            for i in range(3):
                put(i)
    """,
    "tx": """
        with db.update() as tx:
            for i in range(3):
                put(i, tx=tx)
    """,
    "threads": """
        workers = [threading.Thread(target=put, args=(i,)) for i in range(6)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    """,
}


def _traced(tmp_path, scenario: str, durable: bool) -> list[tuple[str, str]]:
    root = tmp_path / "root"
    log = tmp_path / "trace"
    code = textwrap.dedent(PREAMBLE) + textwrap.dedent(SCENARIOS[scenario]) + "db.close()\n"
    proc = subprocess.run([strace(), "-f", "-qq", "-y", "-o", str(log), "-e",
                           "trace=link,linkat,fsync,fdatasync,pwrite64,pwritev,writev",
                           sys.executable, "-c", code, str(root), "1" if durable else "0"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    calls = []
    for line in log.read_text().splitlines():
        match = _LINE.match(line)
        if match:
            calls.append((match.group(1), match.group(2)))
    return calls


@pytest.mark.parametrize("durable", [True, False], ids=["durable", "not-durable"])
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_the_blob_directory_is_flushed_after_the_links_and_before_the_commit(tmp_path, scenario, durable):
    calls = _traced(tmp_path, scenario, durable)
    blobs = f"{tmp_path}/root/content/blobs/sha256"
    links = [i for i, (call, args) in enumerate(calls) if call.startswith("link") and f'"{blobs}/' in args]
    assert len(links) >= 3, calls
    for position in links:
        # The link's transaction holds the writer lock until it commits, so the first write to
        # data.mdb after the link is that commit's (a flush another thread makes after its own
        # commit, as durable=False's deletions do, writes nothing).
        written = next(i for i in range(position, len(calls))
                       if calls[i][0].startswith(("pwrite", "writev")) and "/meta/data.mdb>" in calls[i][1])
        commit = next(i for i in range(written, len(calls))
                      if calls[i][0] == "fdatasync" and "/meta/data.mdb>" in calls[i][1])
        assert any(call == "fsync" and f"<{blobs}>" in args
                   for call, args in calls[position:commit]), (scenario, calls[position:commit + 1])


KILLED = """
import hashlib, os, signal, sys, cargohold
db = cargohold.open(sys.argv[1])
data = b"the blob" * 100
digest = "sha256:" + hashlib.sha256(data).hexdigest()
with db.update():
    with db.namespace("a").content.writer("ref-a", total=len(data), expected=digest) as w:
        w.write(data)
        w.commit(len(data), digest)
    assert os.path.exists(db.content_store.blob_path(digest))
    os.kill(os.getpid(), signal.SIGKILL)  # before the transaction (and its directory flush) commits
"""

RECORD = """
import hashlib, os, sys, cargohold
root, mode = sys.argv[1:]
data = b"the blob" * 100
digest = "sha256:" + hashlib.sha256(data).hexdigest()
with cargohold.open(root, shared=mode == "shared") as db:
    with db.namespace("b").content.writer("ref-b", total=len(data), expected=digest) as w:
        if w.status().offset == 0 and mode != "shared":
            w.write(data)
        os.getppid()  # marks the commit in the trace
        w.commit(len(data), digest)
    assert [info.digest for info in db.namespace("b").content.walk()] == [digest]
"""


@pytest.mark.parametrize("mode", ["shared", "copy"])
def test_a_blob_found_in_place_is_flushed_before_it_is_recorded(tmp_path, mode):
    """A blob another process linked but never committed (it was killed first, so its deferred
    directory flush never ran) may not be on disk yet: the process that records it finds it in
    place, and must flush its directory before its own commit, whether it shares the stored
    blob or writes the bytes again."""
    root = tmp_path / "root"
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLED), str(root)], capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    log = tmp_path / "trace"
    proc = subprocess.run([strace(), "-f", "-qq", "-y", "-o", str(log), "-e", "trace=fsync,fdatasync,getppid",
                           sys.executable, "-c", textwrap.dedent(RECORD), str(root), mode],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    calls = [(m.group(1), m.group(2)) for m in map(_LINE.match, log.read_text().splitlines()) if m]
    mark = next(i for i, (call, _) in enumerate(calls) if call == "getppid")
    commit = next(i for i in range(mark, len(calls))
                  if calls[i][0] == "fdatasync" and "/meta/data.mdb>" in calls[i][1])
    blobs = f"{root}/content/blobs/sha256"
    assert any(call == "fsync" and f"<{blobs}>" in args for call, args in calls[mark:commit]), calls[mark:commit + 1]


DELETIONS = """
import hashlib, sys, cargohold
root, case = sys.argv[1:]
db = cargohold.open(root, durable=False)
content = db.namespace("default").content

def put(ref, commit=True):
    data = ref.encode() * 64
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    w = content.writer(ref, total=len(data), expected=digest)
    w.write(data)
    if commit:
        w.commit(len(data), digest)
    w.close()

if case == "collect":
    put("unreferenced")  # no image, lease or gc.root: the collection removes the record, then the blob
    db.garbage_collect()
elif case == "commit":
    put("committed")  # the commit records the blob, then the ingest goes
elif case == "abort":
    put("aborted", commit=False)
    content.abort("aborted")
db.close()
"""


@pytest.mark.parametrize("case", ["collect", "commit", "abort"])
def test_a_database_that_is_not_durable_flushes_a_commit_before_deleting_what_it_stopped_naming(tmp_path, case):
    """With ``durable=False`` a commit's meta page is not flushed, so a power cut may undo it: the
    blob or ingest it stopped naming may go only after a flush of ``data.mdb`` that follows the
    commit's last write to it, or the record would come back naming nothing."""
    root = tmp_path / "root"
    log = tmp_path / "trace"
    proc = subprocess.run([strace(), "-f", "-qq", "-y", "-o", str(log), "-e",
                           "trace=pwrite64,pwritev,writev,fsync,fdatasync,unlink,unlinkat",
                           sys.executable, "-c", textwrap.dedent(DELETIONS), str(root), case],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    calls = [(m.group(1), m.group(2)) for m in map(_LINE.match, log.read_text().splitlines()) if m]
    doomed = f"{root}/content/blobs/" if case == "collect" else f"{root}/content/ingest/"
    deletions = [i for i, (call, args) in enumerate(calls)
                 if call.startswith("unlink") and doomed in args and args.rstrip().endswith("= 0")]
    assert deletions, calls
    for position in deletions:
        written = max(i for i in range(position) if calls[i][0].startswith(("pwrite", "writev"))
                      and "/meta/data.mdb>" in calls[i][1])
        assert any(call in ("fdatasync", "fsync") and "/meta/data.mdb>" in args
                   for call, args in calls[written:position]), calls[written:position + 1]
