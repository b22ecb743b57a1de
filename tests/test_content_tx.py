"""Content commits whose metadata transaction does not commit: the caller's ``db.update()`` block
raises afterwards, the commit itself fails inside the caller's transaction (which goes on), the
group commit's LMDB commit fails (an EIO injected by strace), or the process is killed (SIGKILL,
by strace) at any fsync, link, rename or unlink of the commit. Each time the upload is either
committed or resumable exactly as before (its ingest record, its offset, its bytes), and neither
a collection nor ``fsck --repair --prune-orphans`` deletes the only copy of its bytes. Nor do they
when a power cut left an ingest's ``meta`` empty (it is replaced without fsync): the ingest resumes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest
from content_util import digest_of
from crashutil import later_clock, strace, traced_calls
from storeutil import db  # noqa: F401  (fixture)

import cargohold
from cargohold import Descriptor, Image, errors, schema
from cargohold.content import LocalStore
from cargohold.content.store import collect_backend
from cargohold.integrity import findings as f

DATA = b"hello world, an upload in progress"
DIGEST = digest_of(DATA)
ROOT = {"containerd.io/gc.root": "kept"}
"""Labels that keep committed content through collections."""
IMAGE = Image("unrelated", Descriptor("application/vnd.oci.image.manifest.v1+json", "sha256:" + "0" * 64, 1))


def ingest_bytes(db, ref: str, ns: str = "default") -> bytes:
    """The bytes of the backend ingest behind the namespace's ingest `ref` (read behind the store's back)."""
    with db.view() as tx:
        record = schema.unpack(tx.kv.get(schema.T_OBJECTS, schema.object_key(ns, schema.K_INGEST, ref)))
    with open(os.path.join(db.content_store.ingest_dir(record["b"]), "data"), "rb") as fh:
        return fh.read()


def clean_content(db) -> None:
    """A collection that cleans the content store (a deletion made it dirty), then the backend cleanup alone."""
    ns = db.namespace("scratch")
    with ns.content.writer("tmp") as w:
        w.write(b"deleted at once")
        digest = w.commit().digest
    ns.content.delete(digest)
    stats = db.garbage_collect()
    assert stats.errors == []
    collect_backend(db)


def assert_resumable(db, ref: str = "up", data: bytes = DATA) -> None:
    """The ingest is as it was before the commit: its record, its offset, its bytes; and it still
    is after a content-cleaning collection."""
    ns = db.namespace("default")
    for _ in range(2):
        assert ns.content.status(ref).offset == len(data)
        assert [s.ref for s in ns.content.statuses()] == [ref]
        assert ingest_bytes(db, ref) == data
        clean_content(db)


def resume_and_commit(db, ref: str = "up", data: bytes = DATA) -> None:
    ns = db.namespace("default")
    with ns.content.writer(ref, total=len(data)) as w:
        assert w.status().offset == len(data)
        assert w.commit(len(data), digest_of(data), ROOT).size == len(data)
    assert ns.content.read(digest_of(data)) == data
    assert ns.content.statuses() == []


def start(db, ref: str = "up", data: bytes = DATA):
    w = db.namespace("default").content.writer(ref, total=len(data))
    w.write(data)
    return w


# -- the caller's transaction aborts after the commit ------------------------------------------------


@pytest.mark.parametrize("given", [True, False], ids=["tx=tx", "joined"])
def test_a_commit_in_a_transaction_that_aborts_leaves_the_ingest_resumable(db, given):
    w = start(db)
    with pytest.raises(RuntimeError):
        with db.update() as tx:
            info = w.commit(len(DATA), DIGEST, ROOT, tx=tx if given else None)
            assert info.digest == DIGEST
            raise RuntimeError("the caller's transaction fails later")
    with pytest.raises(errors.NotFound):
        db.namespace("default").content.info(DIGEST)
    assert_resumable(db)
    resume_and_commit(db)


def test_an_aborted_commit_takes_its_blob_back(db):
    """Nothing of the commit is left: no blob, and the ingest's data is a writable file of its own."""
    w = start(db)
    data_file = os.path.join(w._bw._path, "data")
    before = os.stat(data_file)
    with pytest.raises(RuntimeError), db.update() as tx:
        w.commit(len(DATA), DIGEST, tx=tx)
        assert os.path.exists(db.content_store.blob_path(DIGEST))
        raise RuntimeError("abort")
    assert not os.path.exists(db.content_store.blob_path(DIGEST))
    after = os.stat(data_file)
    assert (after.st_ino, after.st_nlink, after.st_mode) == (before.st_ino, 1, before.st_mode)
    assert list(db.content_store.walk()) == []
    resume_and_commit(db)


def test_an_aborted_commit_of_content_already_stored_changes_nothing(db):
    other = db.namespace("other")
    with other.content.writer("first") as w:
        w.write(DATA)
        w.commit(len(DATA), DIGEST, ROOT)
    blob = db.content_store.blob_path(DIGEST)
    inode = os.stat(blob).st_ino
    w = start(db)
    with pytest.raises(RuntimeError), db.update() as tx:
        w.commit(len(DATA), DIGEST, tx=tx)
        raise RuntimeError("abort")
    assert os.stat(blob).st_ino == inode
    assert other.content.read(DIGEST) == DATA
    assert_resumable(db)
    assert os.stat(blob).st_ino == inode and other.content.read(DIGEST) == DATA
    resume_and_commit(db)


# -- the commit fails inside the caller's transaction, which goes on ---------------------------------


def test_a_commit_failing_inside_a_transaction_that_commits_keeps_the_ingest(db):
    """The backend cannot create blobs/sha512: the caller catches Unavailable and commits the rest
    of its transaction; the ingest record and its bytes stay, through collections too."""
    data = b"precious upload"
    digest = digest_of(data, "sha512")
    ns = db.namespace("default")
    w = ns.content.writer("up", expected=digest)
    w.write(data)
    blocker = os.path.join(db.content_store.root, "blobs", "sha512")
    open(blocker, "w").close()
    with db.update() as tx:
        with pytest.raises(errors.Unavailable, match="sha512"):
            w.commit(len(data), digest, tx=tx)
        ns.images.create(IMAGE, tx=tx)
    assert ns.images.get("unrelated").name == "unrelated"
    with pytest.raises(errors.NotFound):
        ns.content.info(digest)
    assert ns.content.status("up").offset == len(data)
    os.unlink(blocker)  # the collection's cleanup walks blobs/sha512
    clean_content(db)
    assert ns.content.status("up").offset == len(data)
    assert ingest_bytes(db, "up") == data
    with ns.content.writer("up", expected=digest) as w:
        assert w.status().offset == len(data)
        w.commit(len(data), digest, ROOT)
    assert ns.content.read(digest) == data


# -- the metadata commit fails, or the process dies: a real child process under strace ----------------

CHILD = """
import os, sys
import cargohold
from cargohold import Descriptor, Image

db = cargohold.open(sys.argv[1])
ns = db.namespace("default")
w = ns.content.writer("up", total={size})
os.getppid()  # the commit starts
try:
    if sys.argv[2] == "tx":
        with db.update() as tx:
            w.commit({size}, {digest!r}, {{"containerd.io/gc.root": "kept"}}, tx=tx)
            ns.images.create(Image("unrelated", Descriptor("x/y", "sha256:" + "0" * 64, 1)), tx=tx)
    else:
        w.commit({size}, {digest!r}, {{"containerd.io/gc.root": "kept"}})
    print("committed")
except Exception as exc:
    print("failed:", type(exc).__name__, exc)
os.getppid()  # the commit is over
db.close()
"""

TRACED = ("fsync", "fdatasync", "link", "linkat", "rename", "renameat", "renameat2", "unlink", "unlinkat",
          "rmdir", "fchmod")


def prepared(root) -> None:
    """A root whose ingest `up` holds DATA, its writer closed."""
    with cargohold.open(root) as db:
        start(db).close()


def child(tmp_path, root, mode: str, *strace_args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD.format(size=len(DATA), digest=DIGEST)))
    env = {k: v for k, v in os.environ.items() if k not in ("CARGOHOLD_ROOT", "CARGOHOLD_METADATA")}
    return subprocess.run([strace(), "-f", "-qq", *strace_args, sys.executable, str(script), str(root), mode],
                          capture_output=True, text=True, env=env, timeout=120)


def commit_points(tmp_path, mode: str) -> list[tuple[str, int, str]]:
    """(call, its occurrence in its thread, the trace line) of every traced call the commit makes,
    from a clean run on a root of its own."""
    root = tmp_path / "clean"
    prepared(root)
    log = tmp_path / "clean.trace"
    proc = child(tmp_path, root, mode, "-o", str(log), "-e", "trace=getppid," + ",".join(TRACED))
    assert proc.returncode == 0 and proc.stdout.startswith("committed"), proc.stderr
    points, inside = [], False
    for name, occurrence, line in traced_calls(log.read_text()):
        if name == "getppid":
            inside = not inside
        elif inside:
            points.append((name, occurrence, line))
    return points


def after_the_link(points):
    """The first flush of the database after the blob appeared in blobs/: the metadata commit."""
    linked = next(i for i, p in enumerate(points) if p[0].startswith(("link", "rename")) and "/blobs/" in p[2])
    return next(p for p in points[linked:] if p[0] == "fdatasync")


def check_after(root, where: str) -> list[str]:
    """The upload is committed or resumable as before, fsck finds nothing that loses it, and neither
    its repair nor a collection deletes its bytes; returns what broke."""
    broken = []
    with cargohold.open(root) as db:
        ns = db.namespace("default")

        def upload_state() -> str:
            try:
                if ns.content.read(DIGEST) == DATA:
                    return "committed"
                return "committed with the wrong bytes"
            except errors.NotFound:
                pass
            try:
                offset = ns.content.status("up").offset
            except errors.NotFound:
                return "lost"
            return "resumable" if offset == len(DATA) and ingest_bytes(db, "up") == DATA else f"offset {offset}"

        first = upload_state()
        if first not in ("committed", "resumable"):
            broken.append(f"{where}: the upload is {first}")
        report = cargohold.fsck(db)
        broken += [f"{where}: fsck: {x.kind} {x.key}" for x in report.problems
                   if x.kind not in (f.UNOWNED_BLOB, f.UNOWNED_INGEST)]
        cargohold.fsck(db, repair=True, prune_orphans=True)
        if upload_state() != first:
            broken.append(f"{where}: after fsck --repair --prune-orphans the upload is {upload_state()}, was {first}")
        clean_content(db)
        if upload_state() != first:
            broken.append(f"{where}: after a collection the upload is {upload_state()}, was {first}")
        if first == "resumable":
            resume_and_commit(db)
    return broken


@pytest.mark.parametrize("mode", ["tx", "group"])
def test_a_failed_metadata_commit_leaves_the_ingest_resumable(tmp_path, mode):
    """LMDB's flush fails (EIO) after the blob was linked in: the commit fails, the ingest stays."""
    call, occurrence, _ = after_the_link(commit_points(tmp_path, mode))
    root = tmp_path / "root"
    prepared(root)
    proc = child(tmp_path, root, mode, "-o", "/dev/null", "-e", f"inject={call}:error=EIO:when={occurrence}")
    assert proc.returncode == 0 and proc.stdout.startswith("failed:"), (proc.stdout, proc.stderr)
    assert check_after(root, "EIO") == []


def killed_commits(tmp_path, mode: str, choose) -> list[str]:
    broken = []
    for n, (call, occurrence, line) in enumerate(choose(commit_points(tmp_path, mode))):
        root = tmp_path / f"root-{n}"
        prepared(root)
        proc = child(tmp_path, root, mode, "-o", "/dev/null", "-e", f"inject={call}:signal=KILL:when={occurrence}")
        assert proc.returncode != 0, f"not killed at {line}"
        broken += check_after(root, f"killed at {line}")
    return broken


@pytest.mark.parametrize("mode", ["tx", "group"])
def test_a_commit_killed_after_the_link_loses_nothing(tmp_path, mode):
    assert killed_commits(tmp_path, mode, lambda points: [after_the_link(points)]) == []


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["tx", "group"])
def test_a_commit_killed_at_every_point_loses_nothing(tmp_path, mode):
    assert killed_commits(tmp_path, mode, lambda points: points) == []


# -- an ingest whose meta a power cut emptied -----------------------------------------------------


def empty_meta(path) -> None:
    """What a power cut can leave of a meta replaced without fsync: the name, no bytes."""
    with open(os.path.join(path, "meta"), "w"):
        pass


def test_an_ingest_whose_meta_was_lost_is_kept_and_resumes(root):
    with cargohold.open(root) as db:
        start(db).close()
        with db.view() as tx:
            bref = schema.unpack(tx.kv.get(schema.T_OBJECTS, schema.object_key("default", schema.K_INGEST, "up")))["b"]
        empty_meta(db.content_store.ingest_dir(bref))
    with cargohold.open(root, clock=later_clock(hours=1)) as db:  # the directory is past the abandon age
        ns = db.namespace("default")
        assert ns.content.status("up").offset == len(DATA)
        assert cargohold.fsck(db).problems == []
        assert db.content_store.ingest_leftovers({bref}) == []
        clean_content(db)
        cargohold.fsck(db, repair=True, prune_orphans=True)
        assert ingest_bytes(db, "up") == DATA
        resume_and_commit(db)


def test_a_directory_without_meta_goes_only_if_no_ref_kept_names_it(tmp_path):
    store = LocalStore(tmp_path / "content")
    for ref in ("kept", "gone"):
        with store.writer(ref) as w:
            w.write(DATA)
        empty_meta(store.ingest_dir(ref))
    assert store.status("kept").offset == len(DATA)
    later = time.time() + 3600
    assert store.ingest_leftovers({"kept"}, now=later) == [(os.path.basename(store.ingest_dir("gone")), len(DATA))]
    assert store.clean_ingests({"kept"}, now=later) == [os.path.basename(store.ingest_dir("gone"))]
    with pytest.raises(errors.NotFound):
        store.status("gone")
    with store.writer("kept") as w:
        assert w.status().offset == len(DATA)
        assert w.commit(len(DATA), DIGEST) == DIGEST
    assert store.read(DIGEST) == DATA


def test_an_ingest_resumed_after_a_kill_in_its_commit_leaves_the_unowned_blob_alone(tmp_path):
    """Killed after the link: the ingest's data is also the (unowned) blob's file. Writing on gives
    the ingest a file of its own first, so the blob keeps its bytes, and the new content commits."""
    call, occurrence, _ = after_the_link(commit_points(tmp_path, "tx"))
    root = tmp_path / "root"
    prepared(root)
    assert child(tmp_path, root, "tx", "-o", "/dev/null", "-e", f"inject={call}:signal=KILL:when={occurrence}").returncode
    more = DATA + b", and more"
    with cargohold.open(root) as db:
        blob = db.content_store.blob_path(DIGEST)
        assert os.path.exists(blob)
        ns = db.namespace("default")
        with ns.content.writer("up") as w:
            assert w.status().offset == len(DATA)
            w.write(b", and more")
            w.commit(len(more), digest_of(more), ROOT)
        with open(blob, "rb") as fh:
            assert fh.read() == DATA
        assert ns.content.read(digest_of(more)) == more
        clean_content(db)
        assert not os.path.exists(blob)
        assert ns.content.read(digest_of(more)) == more
