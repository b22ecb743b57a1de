"""The write path: a metadata transaction commits once (the snapshot backends' records join it),
a failing call inside it leaves nothing (savepoints), concurrent writers share commits (group
commit), ``durable=False``, and the modules' layering (no import circle)."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from crashutil import check_records, strace

import cargohold
from cargohold import Descriptor, Image, Kind
from cargohold.errors import AlreadyExists, InvalidArgument, NotFound
from cargohold.snapshots import NativeSnapshotter

DIGEST = "sha256:" + "ab" * 32
TARGET = Descriptor("application/vnd.oci.image.manifest.v1+json", DIGEST, 10)


def snapshot_dirs(root) -> list[str]:
    return sorted(os.listdir(root / "snapshots" / "native" / "snapshots"))


def backend_keys(db) -> list[str]:
    return sorted(info.name for info in db.snapshotters["native"].walk())


def seen_elsewhere(db) -> list[str]:
    """The backend keys another thread sees (no transaction of this thread's joins it)."""
    found: list = []
    reader = threading.Thread(target=lambda: found.extend(backend_keys(db)))
    reader.start()
    reader.join()
    return found


def build_chain(sn, prefix: str, length: int = 3) -> None:
    parent = ""
    for i in range(length):
        sn.prepare(f"{prefix}-{i}-active", parent)
        sn.commit(f"{prefix}-{i}", f"{prefix}-{i}-active")
        parent = f"{prefix}-{i}"


# -- the backends' records join the metadata transaction ------------------------------------


def test_backend_records_are_kept_in_the_metadata_database(root):
    with cargohold.open(root) as db:
        db.namespace("default").snapshotter("native").prepare("a")
        assert backend_keys(db) == ["default/1/a"]
    assert not (root / "snapshots" / "native" / "metadata").exists()
    with cargohold.open(root) as db:
        assert backend_keys(db) == ["default/1/a"]


def _count_syncs(root, body: str) -> int:
    """The flushes `body` makes (the database already open as ``db``), in a child traced by strace:
    fsync and fdatasync calls, and writes to a file opened O_DSYNC (LMDB writes its meta page so)."""
    code = textwrap.dedent("""
        import os, sys, cargohold
        from cargohold import Descriptor, Image
        db = cargohold.open(sys.argv[1], durable=sys.argv[2] == "1")
        ns = db.namespace("default")
        sn = ns.snapshotter("native")
        os.getppid()
    """) + textwrap.dedent(body) + "\nos.getppid()\ndb.close()\n"
    log = f"{root}.trace"
    durable = "0" if body.startswith("#nodurable") else "1"
    proc = subprocess.run([strace(), "-f", "-qq", "-o", log, "-e",
                           "trace=fsync,fdatasync,getppid,openat,pwrite64,write",
                           sys.executable, "-c", code, str(root), durable], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = Path(log).read_text().splitlines()
    marks = [i for i, line in enumerate(lines) if "getppid(" in line]
    assert len(marks) == 2, lines
    dsync = {line.rsplit("=", 1)[1].strip() for line in lines[:marks[0]]
             if "openat(" in line and "O_DSYNC" in line}
    flushes = 0
    for line in lines[marks[0] + 1:marks[1]]:
        call = line.split(None, 1)[1]
        if call.startswith(("fsync(", "fdatasync(")):
            flushes += 1
        elif call.startswith(("pwrite64(", "write(")) and call.split("(", 1)[1].split(",", 1)[0] in dsync:
            flushes += 1
    return flushes


def test_a_transaction_of_snapshot_calls_makes_one_durable_commit(root):
    """Seven prepares and commits and an image in one db.update(): the flushes of one LMDB commit
    (before, each backend call committed in the backend's own environment too: 14 more), and one
    flush of the snapshot directory for the seven directories renamed into it."""
    syncs = _count_syncs(root, """
        with db.update():
            parent = ""
            for i in range(7):
                sn.prepare(f"s{i}-active", parent)
                sn.commit(f"s{i}", f"s{i}-active")
                parent = f"s{i}"
            ns.images.create(Image("img", Descriptor("m", "sha256:" + "ab" * 32, 1)))
    """)
    assert syncs <= 3, syncs


def test_a_blob_ingest_flushes_its_bytes_once(root):
    """A writer's ingest record (one LMDB commit: data pages, meta page), then the commit: the
    bytes flushed once (``Writer.commit`` syncs them before taking any lock, the backend's commit
    does not flush them again), the new ``blobs/sha256`` directory (the store's first blob) and
    the link into it, and one LMDB commit."""
    syncs = _count_syncs(root, """
        import hashlib
        data = b"x" * 256
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with ns.content.writer("ref", total=len(data), expected=digest) as w:
            w.write(data)
            w.commit(len(data), digest)
    """)
    assert syncs == 2 + 1 + 2 + 2, syncs


def test_blobs_committed_in_one_transaction_flush_their_directory_once(root):
    """Three blobs in one db.update(): each one's bytes, the new ``blobs/sha256`` directory, then
    one flush of it for the three links, just before the one LMDB commit (before, one each)."""
    syncs = _count_syncs(root, """
        import hashlib
        with db.update():
            for i in range(3):
                data = bytes([i]) * 256
                digest = "sha256:" + hashlib.sha256(data).hexdigest()
                with ns.content.writer(f"ref-{i}", total=len(data), expected=digest) as w:
                    w.write(data)
                    w.commit(len(data), digest)
    """)
    assert syncs == 3 + 1 + 1 + 2, syncs
    with cargohold.open(root) as db:
        assert len(list(db.namespace("default").content.walk())) == 3


def test_work_before_the_commit_runs_once_per_key_and_its_failure_aborts(root):
    """`Transaction.before_commit`: run once per key just before the commit, in a db.update() and
    in a shared commit; a failing one keeps the transaction from committing (its undo steps run);
    one registered in a savepoint that rolled back is dropped."""
    with cargohold.open(root) as db:
        ns = db.namespace("default")
        ran = []
        with db.update() as tx:
            ns.images.create(Image("kept", TARGET))
            tx.before_commit("k", lambda: ran.append(1))
            tx.before_commit("k", lambda: ran.append(2))
            with pytest.raises(RuntimeError):
                with tx.savepoint():
                    tx.before_commit("dropped", lambda: ran.append(3))
                    raise RuntimeError("rolled back")
        assert ran == [1]

        def fail() -> None:
            raise OSError("flush failed")

        undone = []
        with pytest.raises(OSError, match="flush failed"):
            with db.update() as tx:
                ns.images.create(Image("gone", TARGET))
                tx.on_abort(lambda: undone.append("update"))
                tx.before_commit("fail", fail)

        def shared(t) -> None:
            ns.images.create(Image("gone-too", TARGET), tx=t)
            t.on_abort(lambda: undone.append("shared"))
            t.before_commit("fail", fail)

        with pytest.raises(OSError, match="flush failed"):
            db.write(None, shared)
        assert undone == ["update", "shared"]
        assert [image.name for image in ns.images.list()] == ["kept"]


def test_an_aborted_transaction_leaves_no_backend_record_or_directory(root):
    with cargohold.open(root) as db:
        sn = db.namespace("default").snapshotter("native")
        sn.prepare("kept")
        with pytest.raises(RuntimeError):
            with db.update():
                build_chain(sn, "gone")
                sn.prepare("gone-last", "gone-2")
                assert len(snapshot_dirs(root)) == 5
                assert len(backend_keys(db)) == 5  # this thread reads its transaction's records
                assert seen_elsewhere(db) == ["default/1/kept"]  # nothing committed yet
                raise RuntimeError("caller fails")
        assert backend_keys(db) == ["default/1/kept"]
        assert snapshot_dirs(root) == ["1"]
        assert [info.name for info in sn.walk()] == ["kept"]
        sn.prepare("after")  # ids and keys are free again
        assert sorted(info.name for info in sn.walk()) == ["after", "kept"]


def test_a_call_that_fails_half_way_inside_a_transaction_leaves_nothing_and_the_transaction_goes_on(root):
    """The prepare through a handle of a lease that does not exist fails after the backend made its
    snapshot: its savepoint rolls back the backend's record and removes the directory at once."""
    with cargohold.open(root) as db:
        ns = db.namespace("default")
        with db.update():
            ns.snapshotter("native").prepare("first")
            with pytest.raises(NotFound, match="no-such-lease"):
                ns.with_lease("no-such-lease").snapshotter("native").prepare("second")
            assert snapshot_dirs(root) == ["1"]
            assert backend_keys(db) == ["default/1/first"]
            assert seen_elsewhere(db) == []
            ns.snapshotter("native").prepare("third")
        assert sorted(info.name for info in ns.snapshotter("native").walk()) == ["first", "third"]
        assert len(snapshot_dirs(root)) == 2


def test_a_call_that_fails_half_way_in_its_own_transaction_leaves_nothing(root):
    """A call outside any transaction runs in one of its own, which stands for its savepoint (the
    backend's records join it without a child transaction): failing after the backend made its
    snapshot, it leaves no record and no directory, and the next call commits."""
    with cargohold.open(root) as db:
        ns = db.namespace("default")
        ns.snapshotter("native").prepare("first")
        with pytest.raises(NotFound, match="no-such-lease"):
            ns.with_lease("no-such-lease").snapshotter("native").prepare("second")
        assert snapshot_dirs(root) == ["1"]
        assert backend_keys(db) == ["default/1/first"]
        ns.snapshotter("native").prepare("third")
        assert sorted(info.name for info in ns.snapshotter("native").walk()) == ["first", "third"]
        assert len(snapshot_dirs(root)) == 2 and len(backend_keys(db)) == 2


def test_remove_undone_when_the_transaction_aborts(root):
    """A backend removal inside a transaction that aborts puts the directory and record back."""
    with cargohold.open(root) as db:
        backend = db.snapshotters["native"]
        backend.prepare("direct")
        (root / "snapshots" / "native" / "snapshots" / "1" / "f").write_text("data")
        with pytest.raises(RuntimeError):
            with db.update():
                backend.remove("direct")
                raise RuntimeError("caller fails")
        assert backend_keys(db) == ["direct"]
        assert (root / "snapshots" / "native" / "snapshots" / "1" / "f").read_text() == "data"
        backend.remove("direct")
        assert snapshot_dirs(root) == [] and backend_keys(db) == []


def _writer_lock_free(root) -> bool:
    """Whether another process could take the metadata writer lock right now."""
    code = ("import fcntl, os, sys\n"
            f"fd = os.open({str(root / 'meta' / 'writer.lock')!r}, os.O_RDONLY)\n"
            "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(1)\n")
    return subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_undo_runs_before_the_writer_lock_goes(root):
    """An aborted transaction's undo steps (here: a removed snapshot's directory renamed back) run
    while it still holds the writer lock: a backend cleanup in another process, which takes that
    lock to set aside the ``rm-*`` directories it listed, cannot take the directory in between."""
    seen = []
    with cargohold.open(root) as db:
        backend = db.snapshotters["native"]
        backend.prepare("direct")
        with pytest.raises(RuntimeError):
            with db.update() as tx:
                backend.remove("direct")
                tx.on_abort(lambda: seen.append(_writer_lock_free(root)))
                raise RuntimeError("caller fails")
        assert seen == [False]
        assert backend_keys(db) == ["direct"] and snapshot_dirs(root) == ["1"]
        with pytest.raises(RuntimeError):
            with backend._store.write() as view:
                view.on_abort(lambda: seen.append(_writer_lock_free(root)))
                raise RuntimeError("caller fails")
        assert seen == [False, False]
        assert _writer_lock_free(root)


def test_killed_inside_a_transaction_leaves_no_record_and_the_orphans_go(root):
    """kill -9 while a transaction holds a chain of snapshots: nothing of it is recorded anywhere,
    its directories are orphans the next collection deletes; what committed before stays whole."""
    code = f"""
        import os, signal, cargohold
        db = cargohold.open({str(root)!r})
        sn = db.namespace("default").snapshotter("native")
        sn.prepare("before", labels={{"containerd.io/gc.root": "yes"}})
        with db.update():
            parent = ""
            for i in range(3):
                sn.prepare(f"s{{i}}-active", parent)
                sn.commit(f"s{{i}}", f"s{{i}}-active")
                parent = f"s{{i}}"
            os.kill(os.getpid(), signal.SIGKILL)
    """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert len(snapshot_dirs(root)) == 4
    check_records(root)
    with cargohold.open(root) as db:
        sn = db.namespace("default").snapshotter("native")
        assert [info.name for info in sn.walk()] == ["before"]
        assert backend_keys(db) == ["default/1/before"]
        assert db.garbage_collect().errors == []
        assert snapshot_dirs(root) == ["1"]
        assert sn.stat("before").kind == Kind.ACTIVE


def test_a_backends_own_metastore_is_moved_into_the_metadata_database(root):
    """A root whose backend kept its records in ``<backend>/metadata`` (older cargohold, or the
    backend used alone): the first open moves them in, once, and deletes that environment."""
    backend = NativeSnapshotter(root / "snapshots" / "native")
    backend.prepare("old")
    backend.close()
    assert (root / "snapshots" / "native" / "metadata").is_dir()
    with cargohold.open(root) as db:
        assert backend_keys(db) == ["old"]
        assert db.snapshotters["native"].stat("old").kind == Kind.ACTIVE
    assert not (root / "snapshots" / "native" / "metadata").exists()
    with cargohold.open(root) as db:
        assert backend_keys(db) == ["old"]


# -- group commit ---------------------------------------------------------------------------


def test_concurrent_writers_share_commits(root):
    threads, per_thread = 8, 25
    with cargohold.open(root) as db:
        ns = db.namespace("default")
        start = threading.Barrier(threads)
        errors: list = []

        def create(t: int) -> None:
            start.wait()
            try:
                for i in range(per_thread):
                    stored = ns.images.create(Image(f"img-{t}-{i}", TARGET))
                    assert stored.created_at is not None
                    # returned: committed, visible to a new read transaction at once
                    assert ns.images.get(f"img-{t}-{i}").name == f"img-{t}-{i}"
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        workers = [threading.Thread(target=create, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert errors == []
        assert len(ns.images.list()) == threads * per_thread
        assert db._group.calls == threads * per_thread
        assert db._group.batches < db._group.calls
    with cargohold.open(root) as db:
        assert len(db.namespace("default").images.list()) == threads * per_thread


def test_a_failing_call_in_a_shared_commit_fails_alone(root):
    """Threads race to create the same names: each name is created once, every loser gets
    AlreadyExists, and no partial write of a loser is left."""
    threads = 6
    with cargohold.open(root) as db:
        ns = db.namespace("default")
        start = threading.Barrier(threads)
        outcomes: list = []
        lock = threading.Lock()

        def create(t: int) -> None:
            start.wait()
            for i in range(20):
                try:
                    ns.images.create(Image(f"img-{i}", TARGET, labels={"by": str(t)}))
                    result = ("ok", i)
                except AlreadyExists:
                    result = ("exists", i)
                with lock:
                    outcomes.append(result)

        workers = [threading.Thread(target=create, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert sorted(i for kind, i in outcomes if kind == "ok") == list(range(20))
        assert sum(1 for kind, _ in outcomes if kind == "exists") == 20 * (threads - 1)
        assert len(ns.images.list()) == 20
        assert len(list(db.nodes())) == 20
        assert db._group.batches < db._group.calls  # the losers failed inside shared commits


def test_group_commit_runs_undo_steps_of_a_failed_call(root):
    """Concurrent prepares, half through a lease that does not exist: those fail after the backend
    made their directories, which go; the others commit."""
    with cargohold.open(root) as db:
        ns = db.namespace("default")
        start = threading.Barrier(6)
        failures: list = []

        def prepare(t: int) -> None:
            handle = ns.with_lease("missing") if t % 2 else ns
            start.wait()
            for i in range(5):
                try:
                    handle.snapshotter("native").prepare(f"s-{t}-{i}")
                except NotFound:
                    failures.append((t, i))

        workers = [threading.Thread(target=prepare, args=(t,)) for t in range(6)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert len(failures) == 15
        assert len(list(ns.snapshotter("native").walk())) == 15
        assert len(backend_keys(db)) == 15 and len(snapshot_dirs(root)) == 15
        assert db._group.batches < db._group.calls


# -- durable=False --------------------------------------------------------------------------


def test_durable_false_flushes_each_commit_once_and_keeps_everything_after_a_close(root):
    body = """
        for i in range(10):
            ns.images.create(Image(f"img-{i}", Descriptor("m", "sha256:" + "ab" * 32, 1)))
    """
    root.mkdir()
    durable = _count_syncs(root / "a", body)
    relaxed = _count_syncs(root / "b", "#nodurable\n" + textwrap.dedent(body))
    assert durable >= 20 and relaxed <= durable // 2 + 1, (durable, relaxed)
    with cargohold.open(root / "b") as db:
        assert len(db.namespace("default").images.list()) == 10


def test_sync_makes_a_non_durable_databases_commits_durable(root):
    with cargohold.open(root, durable=False) as db:
        assert db.durable is False
        db.namespace("default").images.create(Image("img", TARGET))
        db.sync()
    with cargohold.open(root) as db:
        assert db.durable is True
        assert [image.name for image in db.namespace("default").images.list()] == ["img"]


def test_durable_must_be_a_bool(root):
    with pytest.raises(InvalidArgument, match="'yes'"):
        cargohold.open(root, durable="yes")
    assert not root.exists()


# -- structure ------------------------------------------------------------------------------

PACKAGE = Path(cargohold.__file__).parent


def _import_graph() -> dict[str, set[str]]:
    """Every import between cargohold's modules, wherever it is written (also under
    TYPE_CHECKING and inside functions)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package[:len(package) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    deps.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
            elif isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_modules_form_no_import_circle():
    graph = _import_graph()
    assert _cycles(graph) == []
    below = {"cargohold.transaction", "cargohold.kv", "cargohold.schema"}
    stores = {"cargohold.images", "cargohold.containers", "cargohold.sandboxes", "cargohold.leases",
              "cargohold.namespaces", "cargohold.records", "cargohold.content.store",
              "cargohold.snapshots.store", "cargohold.db", "cargohold.gc.context"}
    for module in below:
        assert not graph[module] & stores, (module, graph[module] & stores)
    for module in stores - {"cargohold.db"}:
        assert "cargohold.db" not in graph[module], module


def test_ctrl_c_just_after_a_lone_call_takes_the_lead_leaves_the_next_call_free(root):
    """A KeyboardInterrupt raised as the group commit's lock is let go, the moment a lone call has made
    itself the leader (a signal's handler runs right after a call such as the lock's release
    returns), left the leader flag set: the next call of the process, such as the import's lease
    cleanup after Ctrl-C, then waited forever (seen as a hung `images import`)."""
    from cargohold.groupcommit import GroupCommit

    target = Descriptor("m", "sha256:" + "ab" * 32, 1)
    with cargohold.open(root) as db:
        ns = db.namespace("default")
        lock, held = db._group._lock, [False]

        def local(frame, event, arg):
            if event == "line":
                if held[0] and not lock.locked():
                    raise KeyboardInterrupt
                held[0] = lock.locked()
            return local

        sys.settrace(lambda frame, event, arg: local if frame.f_code is GroupCommit.run.__code__ else None)
        try:
            with pytest.raises(KeyboardInterrupt):
                ns.images.create(Image("cut", target))
        finally:
            sys.settrace(None)
        follower = threading.Thread(target=ns.images.create, args=(Image("next", target),), daemon=True)
        follower.start()
        follower.join(20)
        assert not follower.is_alive(), "the call after the interrupt never ended"
        assert [image.name for image in ns.images.list()] == ["next"]
