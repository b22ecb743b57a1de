"""LocalStore: the on-disk content-addressed backend (real files under tmp_path)."""

from __future__ import annotations

import os
import stat
import threading
import time

import pytest

from cargohold import errors
from cargohold.content import LocalStore
from cargohold.content.local import ABANDONED_AFTER
from conftest import run_python
from content_util import EMPTY_SHA256, blob, digest_of, expect_line, files_under, spawn


@pytest.fixture
def store(tmp_path):
    backend = LocalStore(tmp_path / "content")
    yield backend
    backend.close()


def write_blob(store, ref, data, **kwargs):
    with store.writer(ref, **kwargs) as w:
        w.write(data)
        return w.commit(len(data), digest_of(data, kwargs.get("algorithm") or "sha256"))


def test_write_commit_info_read_open(store):
    data = blob(100_000, 1)
    expected = digest_of(data)
    with store.writer("r1", total=len(data), expected=expected) as w:
        for i in range(0, len(data), 4096):
            assert w.write(data[i:i + 4096]) == len(data[i:i + 4096])
        status = w.status()
        assert (status.ref, status.offset, status.total) == ("r1", len(data), len(data))
        assert w.digest() == expected
        assert w.commit(len(data), expected) == expected
    path = store.blob_path(expected)
    assert path == os.path.join(store.root, "blobs", "sha256", expected.split(":")[1])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o444
    info = store.info(expected)
    assert (info.digest, info.size, info.labels) == (expected, len(data), {})
    assert store.read(expected) == data
    with store.open(expected) as f:
        assert f.seekable()
        f.seek(5000)
        assert f.read(10) == data[5000:5010]
        f.seek(-3, os.SEEK_END)
        assert f.read() == data[-3:]
    # the ingest is gone once committed
    assert store.statuses() == []
    assert os.listdir(os.path.join(store.root, "ingest")) == []


@pytest.mark.parametrize("algorithm", ["sha512", "sha384"])
def test_other_algorithms(store, algorithm):
    data = blob(3000, 2)
    expected = digest_of(data, algorithm)
    with store.writer("r", expected=expected) as w:
        w.write(data)
        assert w.digest() == expected
        w.commit(0, expected)
    assert os.path.isfile(os.path.join(store.root, "blobs", algorithm, expected.split(":")[1]))
    assert [i.digest for i in store.walk()] == [expected]


def test_write_accepts_bytes_like_objects(store):
    data = blob(1024, 3)
    with store.writer("r") as w:
        w.write(bytearray(data[:100]))
        w.write(memoryview(data)[100:])
        assert w.commit() == digest_of(data)
    with store.writer("r2") as w, pytest.raises(errors.InvalidArgument, match="str"):
        w.write("text")


def test_size_mismatch_stores_nothing_and_keeps_ingest(store):
    data = blob(5000, 4)
    w = store.writer("r")
    w.write(data)
    with pytest.raises(errors.FailedPrecondition, match="5000 bytes written, expected size 4999"):
        w.commit(4999)
    assert w.closed  # a commit, failed or not, closes the writer (the ref is free again)
    assert list(store.walk()) == []
    assert store.status("r").offset == 5000
    with store.writer("r") as w:
        assert w.commit(5000) == digest_of(data)


def test_digest_mismatch_stores_nothing_and_keeps_ingest(store):
    data = blob(5000, 5)
    wrong = digest_of(b"other")
    w = store.writer("r")
    w.write(data)
    with pytest.raises(errors.FailedPrecondition, match=wrong):
        w.commit(0, wrong)
    assert list(store.walk()) == []
    assert not os.path.exists(store.blob_path(digest_of(data)))
    with store.writer("r") as w:
        assert w.status().offset == 5000
        assert w.commit(0, digest_of(data)) == digest_of(data)


def test_failing_file_system_is_unavailable_and_keeps_the_ingest(store):
    data = b"cannot land"
    blocker = os.path.join(store.root, "blobs", "sha256")
    open(blocker, "w").close()  # a file where the algorithm directory should be
    w = store.writer("r")
    w.write(data)
    with pytest.raises(errors.Unavailable, match="commit failed"):
        w.commit(len(data))
    os.unlink(blocker)
    assert store.status("r").offset == len(data)
    with store.writer("r") as w:
        assert w.commit(len(data)) == digest_of(data)


def test_commit_of_existing_content(store):
    data = blob(256, 6)
    write_blob(store, "first", data)
    with pytest.raises(errors.AlreadyExists):
        store.writer("again", expected=digest_of(data))
    w = store.writer("again")
    w.write(data)
    with pytest.raises(errors.AlreadyExists, match=digest_of(data)):
        w.commit(len(data))
    with pytest.raises(errors.NotFound):
        store.status("again")  # the duplicate ingest was discarded
    assert store.read(digest_of(data)) == data


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_resume_across_reopen(tmp_path, fraction):
    data = blob(50_000, 7)
    expected = digest_of(data)
    cut = int(len(data) * fraction)
    first = LocalStore(tmp_path / "c")
    with first.writer("resume", total=len(data), expected=expected) as w:
        w.write(data[:cut])
    started = first.status("resume").started_at
    first.close()

    second = LocalStore(tmp_path / "c")  # a new instance: nothing kept in memory
    with second.writer("resume", total=len(data), expected=expected) as w:
        status = w.status()
        assert (status.offset, status.total, status.started_at) == (cut, len(data), started)
        assert w.digest() == digest_of(data[:cut])
        w.write(data[status.offset:])
        assert w.commit(len(data), expected) == expected
    assert second.read(expected) == data


def test_resume_with_another_total_restarts(store):
    with store.writer("r", total=100) as w:
        w.write(b"x" * 40)
    with store.writer("r", total=200) as w:
        assert (w.status().offset, w.status().total) == (0, 200)
        assert w.digest() == EMPTY_SHA256


def test_truncate(store):
    data = blob(10_000, 8)
    with store.writer("t") as w:
        w.write(b"garbage" * 100)
        w.truncate(0)
        assert (w.status().offset, w.digest()) == (0, EMPTY_SHA256)
        w.write(data)
        w.truncate(4000)
        assert (w.status().offset, w.digest()) == (4000, digest_of(data[:4000]))
        with pytest.raises(errors.InvalidArgument, match="only 4000 were written"):
            w.truncate(4001)
        w.write(data[4000:])
        assert w.commit(len(data)) == digest_of(data)


def test_second_writer_on_open_ref_is_unavailable_in_threads(store):
    w = store.writer("busy")
    results = []

    def contender():
        try:
            store.writer("busy").close()
            results.append("opened")
        except errors.Unavailable as exc:
            results.append(str(exc))

    threads = [threading.Thread(target=contender) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and all("'busy' is open in another writer" in r for r in results)
    w.close()
    store.writer("busy").close()  # free once closed


def test_a_writer_dropped_without_closing_lets_go_of_its_ref(store):
    """The ingest lock is a bare descriptor: a writer that is garbage collected unclosed still
    releases it, as a file object would."""
    import gc

    w = store.writer("dropped")
    w.write(b"abc")
    del w
    gc.collect()
    with store.writer("dropped") as again:
        assert again.status().offset == 3


def test_second_writer_on_open_ref_is_unavailable_across_processes(store):
    child = spawn(f"""
        from cargohold.content import LocalStore
        store = LocalStore({store.root!r})
        w = store.writer("shared-ref")
        w.write(b"abc")
        print("holding", flush=True)
        input()
        w.close()
        print("closed", flush=True)
    """)
    try:
        expect_line(child, "holding")
        with pytest.raises(errors.Unavailable, match="shared-ref"):
            store.writer("shared-ref")
        with pytest.raises(errors.Unavailable):
            store.abort("shared-ref")
        child.stdin.write("\n")
        child.stdin.flush()
        expect_line(child, "closed")
    finally:
        child.kill()
        child.wait()
    with store.writer("shared-ref") as w:
        assert w.status().offset == 3


def test_abort(store):
    with pytest.raises(errors.NotFound, match="nothing"):
        store.abort("nothing")
    w = store.writer("a")
    w.write(b"partial")
    with pytest.raises(errors.Unavailable):
        store.abort("a")  # open in a writer
    w.close()
    store.abort("a")
    with pytest.raises(errors.NotFound):
        store.status("a")
    with pytest.raises(errors.NotFound):
        store.abort("a")
    assert os.listdir(os.path.join(store.root, "ingest")) == []
    with store.writer("a") as w:
        assert w.status().offset == 0  # a new ingest


def test_status_and_statuses(store):
    for ref, size in [("alpha", 10), ("beta", 20), ("gamma", 30)]:
        with store.writer(ref, total=100) as w:
            w.write(b"z" * size)
    status = store.status("beta")
    assert (status.ref, status.offset, status.total) == ("beta", 20, 100)
    assert status.started_at <= status.updated_at
    assert sorted((s.ref, s.offset) for s in store.statuses()) == [("alpha", 10), ("beta", 20), ("gamma", 30)]
    assert [s.ref for s in store.statuses("ref==gamma")] == ["gamma"]
    assert sorted(s.ref for s in store.statuses("ref~=^(alpha|beta)$")) == ["alpha", "beta"]
    with pytest.raises(errors.NotFound, match="delta"):
        store.status("delta")
    with pytest.raises(errors.InvalidArgument):
        store.statuses("ref==")


def test_walk_filters_and_stray_files(store):
    d1 = write_blob(store, "a", b"one")
    d2 = write_blob(store, "b", b"two")
    # stray entries that are not blobs are skipped
    os.makedirs(os.path.join(store.root, "blobs", "md5"))
    open(os.path.join(store.root, "blobs", "md5", "abc"), "w").close()
    open(os.path.join(store.root, "blobs", "sha256", "not-a-digest"), "w").close()
    assert sorted(i.digest for i in store.walk()) == sorted([d1, d2])
    assert [i.digest for i in store.walk(f"digest=={d2}")] == [d2]
    assert sorted(i.digest for i in store.walk(f"digest=={d1}", f"digest=={d2}")) == sorted([d1, d2])
    assert list(store.walk("labels.x")) == []


def test_delete(store):
    digest = write_blob(store, "a", b"bytes")
    with store.open(digest) as reader:
        store.delete(digest)
        assert reader.read() == b"bytes"  # an open reader keeps its bytes
    with pytest.raises(errors.NotFound):
        store.info(digest)
    with pytest.raises(errors.NotFound):
        store.delete(digest)
    with pytest.raises(errors.NotFound):
        store.open(digest)


@pytest.mark.parametrize("ref", ["../../x", "/etc/passwd", "../../../../../../tmp/evil", "..", "a/../../b",
                                 "./.", "x\\..\\..\\y", "~root/.ssh/authorized_keys"])
def test_refs_stay_inside_root(tmp_path, ref):
    store = LocalStore(tmp_path / "root" / "content")
    before = files_under(tmp_path)
    with store.writer(ref) as w:
        w.write(b"data of " + ref.encode())
    assert store.status(ref).ref == ref
    outside = {p for p in files_under(tmp_path) - before if not p.startswith(os.path.join("root", "content"))}
    assert outside == set()
    (name,) = os.listdir(os.path.join(store.root, "ingest"))
    assert len(name) == 64 and set(name) <= set("0123456789abcdef")
    with store.writer(ref) as w:
        w.commit()
    assert os.listdir(os.path.join(store.root, "ingest")) == []
    store.close()


@pytest.mark.parametrize("call,message", [
    (lambda s: s.writer(""), "must not be empty"),
    (lambda s: s.writer("a\x00b"), "NUL"),
    (lambda s: s.writer("r" * 256), "255-byte limit"),
    (lambda s: s.writer("r", total=-1), "negative"),
    (lambda s: s.writer("r", expected="sha256:xyz"), "sha256:xyz"),
    (lambda s: s.writer("r", algorithm="md5"), "md5"),
    (lambda s: s.info("sha1:" + "a" * 40), "sha1"),
    (lambda s: s.read("nope"), "nope"),
    (lambda s: s.status(""), "must not be empty"),
])
def test_bad_input_is_invalid_argument(store, call, message):
    with pytest.raises(errors.InvalidArgument, match=message):
        call(store)
    assert os.listdir(os.path.join(store.root, "ingest")) == []


def test_clean_ingests(store):
    for ref in ("keep", "drop"):
        with store.writer(ref) as w:
            w.write(b"x")
    busy = store.writer("busy")
    abandoned = os.path.join(store.root, "ingest", "f" * 64)
    os.makedirs(abandoned)  # what a crash in the middle of a removal leaves: no meta
    open(os.path.join(abandoned, "data"), "w").close()
    young = os.path.join(store.root, "ingest", "e" * 64)
    os.makedirs(young)  # a writer between creating its directory and locking it
    old = time.time() - ABANDONED_AFTER - 1
    os.utime(abandoned, (old, old))
    removed = store.clean_ingests({"keep"})
    assert sorted(removed) == sorted(["drop", "f" * 64])
    assert sorted(s.ref for s in store.statuses()) == ["busy", "keep"]
    assert not os.path.exists(abandoned) and os.path.isdir(young)
    busy.close()


def test_writer_streams_with_bounded_memory(tmp_path):
    """Ingesting 64 MiB grows the peak RSS by far less than the blob (measured in a fresh process)."""
    proc = run_python(f"""
        import os, resource
        from cargohold.content import LocalStore
        store = LocalStore({str(tmp_path / 'c')!r})
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        chunk = os.urandom(1 << 20)
        with store.writer("big") as w:
            for i in range(64):
                w.write(chunk[i:] + chunk[:i])
        with store.writer("big") as w:  # resuming re-hashes the 64 MiB from disk
            w.commit(64 << 20)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)
    """)
    growth_kib = int(proc.stdout.split()[-1])
    assert growth_kib < 16 * 1024, f"peak RSS grew by {growth_kib} KiB while ingesting 64 MiB"


def test_clean_ingests_counts_what_it_frees_and_defers_what_it_must_keep(store):
    from cargohold.model import Freed

    with store.writer("drop") as w:
        w.write(b"x" * 1000)
    busy = store.writer("busy")
    young = os.path.join(store.root, "ingest", "e" * 64)
    os.makedirs(young)
    open(os.path.join(young, "data"), "wb").write(b"y" * 50)
    freed, errors_, deferred = Freed(), [], []
    assert store.clean_ingests(set(), freed=freed, errors=errors_, deferred=deferred) == ["drop"]
    assert freed.count == 1 and freed.bytes >= 1000 and errors_ == []
    assert sorted(os.path.basename(p) for p in deferred) == sorted([os.path.basename(store._ingest_path("busy")),
                                                                   "e" * 64])
    later = time.time() + ABANDONED_AFTER + 1  # judged by the caller's clock, not the file system's
    assert store.ingest_leftovers(set(), now=later) == [("e" * 64, 50)]
    assert store.clean_ingests(set(), now=later, freed=freed) == ["e" * 64]
    assert freed.count == 2 and not os.path.exists(young)
    busy.close()
