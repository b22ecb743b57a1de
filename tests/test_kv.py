"""The LMDB engine: transactions, map growth, error translation."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import threading

import pytest

from cargohold import errors
from cargohold.kv import Env
from conftest import run_python

TABLES = ("a", "b")


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path / "env", TABLES, map_size=1 << 20)
    yield e
    e.close()


def test_put_get_scan_delete(env):
    with env.write() as txn:
        for i in range(10):
            txn.put("a", b"k%02d" % i, b"v%d" % i)
        txn.put("b", b"k00", b"other")
        assert txn.put("a", b"k00", b"x", overwrite=False) is False
    with env.read() as txn:
        assert txn.get("a", b"k03") == b"v3"
        assert txn.get("b", b"k00") == b"other"
        assert [k for k, _ in txn.scan("a", b"k0")] == [b"k%02d" % i for i in range(10)]
        assert [k for k, _ in txn.scan("a", b"k0", start=b"k05")] == [b"k%02d" % i for i in range(5, 10)]
        assert txn.count("a") == 10
    with env.write() as txn:
        assert txn.delete_prefix("a", b"k0") == 10
        assert txn.delete("a", b"missing") is False
    with env.read() as txn:
        assert txn.count("a") == 0


def test_failed_transaction_rolls_back(env):
    with pytest.raises(RuntimeError):
        with env.write() as txn:
            txn.put("a", b"key", b"value")
            raise RuntimeError("boom")
    with env.read() as txn:
        assert txn.get("a", b"key") is None


def test_write_in_read_transaction_refused(env):
    with env.read() as txn:
        with pytest.raises(errors.InvalidArgument):
            txn.put("a", b"k", b"v")


def test_over_long_key_is_invalid_argument(env):
    with env.write() as txn:
        with pytest.raises(errors.InvalidArgument, match="512 bytes"):
            txn.put("a", b"x" * 512, b"v")


def test_unknown_table(env):
    with env.read() as txn:
        with pytest.raises(errors.InvalidArgument, match="unknown table"):
            txn.get("zzz", b"k")


def test_map_grows_within_one_transaction(env):
    """Writing 8 MiB into a 1 MiB map in one transaction succeeds (abort, grow, replay)."""
    start = env.map_size
    blob = os.urandom(4096)
    with env.write() as txn:
        for i in range(2048):
            txn.put("a", b"%06d" % i, blob)
    assert env.map_size > start
    with env.read() as txn:
        assert txn.count("a") == 2048
        assert txn.get("a", b"001234") == blob


def test_map_grows_across_transactions(env):
    blob = os.urandom(2048)
    for batch in range(20):
        with env.write() as txn:
            for i in range(200):
                txn.put("b", b"%02d-%04d" % (batch, i), blob)
    with env.read() as txn:
        assert txn.count("b") == 4000


def test_growth_waits_for_readers_in_other_threads(env):
    """A reader open in another thread keeps its snapshot while the map grows under it."""
    with env.write() as txn:
        txn.put("a", b"before", b"1")
    opened = threading.Event()
    release = threading.Event()
    seen = []

    def reader():
        with env.read() as txn:
            opened.set()
            release.wait(10)
            seen.append(txn.get("a", b"before"))
            seen.append(txn.get("a", b"after"))

    t = threading.Thread(target=reader)
    t.start()
    opened.wait(10)
    writer_done = threading.Event()

    def writer():
        blob = os.urandom(4096)
        with env.write() as txn:
            for i in range(1024):
                txn.put("a", b"after" if i == 0 else b"%06d" % i, blob)
        writer_done.set()

    w = threading.Thread(target=writer)
    w.start()
    release.set()
    t.join(20)
    w.join(20)
    assert writer_done.is_set()
    assert seen == [b"1", None]


def test_growth_by_another_process_is_adopted(tmp_path):
    path = tmp_path / "shared"
    env = Env(path, TABLES, map_size=1 << 20)
    try:
        with env.write() as txn:
            txn.put("a", b"mine", b"1")
        run_python(f"""
            import os
            from cargohold.kv import Env
            env = Env({str(path)!r}, {TABLES!r}, map_size=1 << 20)
            with env.write() as txn:
                for i in range(4096):
                    txn.put("a", b"%06d" % i, os.urandom(2048))
            env.close()
        """)
        with env.read() as txn:
            assert txn.count("a") == 4097
        with env.write() as txn:
            txn.put("a", b"again", b"2")
        with env.read() as txn:
            assert txn.get("a", b"again") == b"2"
    finally:
        env.close()


def test_a_write_that_skips_the_fill_check_still_fits_after_another_process_filled_the_map(tmp_path):
    """After a write found the map at most a quarter full, the next writes begin without looking
    at it: when a writer of another process (raw LMDB: it grows nothing) fills the map meanwhile,
    such a write hits MDB_MAP_FULL and is replayed in a doubled map, not lost."""
    path = tmp_path / "shared"
    env = Env(path, TABLES, map_size=1 << 22)
    try:
        with env.write() as txn:
            txn.put("a", b"mine", b"1")
        assert env._unchecked_writes > 0  # the next write does not look
        start = env.map_size
        run_python(f"""
            import os, lmdb
            env = lmdb.open({str(path)!r}, max_dbs=8, map_size={start})
            db = env.open_db(b"a")
            with env.begin(write=True) as txn:
                for i in range(700):  # 700 of the map's 1024 pages
                    txn.put(b"%06d" % i, os.urandom(3000), db=db)
            env.close()
        """)
        blob = os.urandom(3000)
        with env.write() as txn:
            for i in range(600):
                txn.put("a", b"late%04d" % i, blob)
        assert env.map_size > start
        with env.read() as txn:
            assert txn.count("a") == 1 + 700 + 600
            assert txn.get("a", b"late0599") == blob
    finally:
        env.close()


def test_closed_env_is_unavailable(tmp_path):
    env = Env(tmp_path / "c", TABLES)
    env.close()
    with pytest.raises(errors.Unavailable):
        env.read()


def test_a_writing_session_drops_the_clean_marker_until_it_closes(tmp_path):
    """A crash after a write must never leave a marker vouching for bytes it did not see."""
    path = tmp_path / "env"
    Env(path, TABLES).close()
    marker = path / "clean.json"
    env = Env(path, TABLES)
    assert marker.exists()  # reading sessions keep it
    with env.read() as txn:
        txn.get("a", b"k")
    assert marker.exists()
    with env.write() as txn:
        txn.put("a", b"k", b"v")
    assert not marker.exists()
    env.close()
    recorded = json.loads(marker.read_text())
    assert recorded["sha256"] == hashlib.sha256((path / "data.mdb").read_bytes()).hexdigest()


@pytest.mark.parametrize("sig, error", [(signal.SIGBUS, errors.Corrupted), (signal.SIGKILL, errors.Unavailable)])
def test_verifier_killed_by_a_signal(tmp_path, monkeypatch, sig, error):
    """The child verifying a file dies by a signal: a fault means damage, a kill means nothing."""
    path = tmp_path / "env"
    env = Env(path, TABLES)
    with env.write() as txn:
        txn.put("a", b"k", b"v")
    env.close()
    (path / "clean.json").unlink()  # as after a crash: the next open verifies
    verifier = tmp_path / "verifier"
    verifier.write_text(f"#!/bin/sh\nkill -{sig.name[3:]} $$\n")
    verifier.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(verifier))
    with pytest.raises(error, match=sig.name):
        Env(path, TABLES)
    assert not (path / "clean.json").exists()


def test_a_scan_with_release_every_leaves_the_table_not_resident(tmp_path):
    """A whole-table read (the collector's) gives the map's pages back as it goes, so the
    process's RSS does not grow by the table's size; a plain scan keeps them resident."""
    out = run_python(f"""
        import json, os
        from cargohold.kv import Env

        def rss_file():
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("RssFile:"):
                        return int(line.split()[1]) * 1024

        env = Env({str(tmp_path / "db")!r}, ["t"])
        with env.write() as txn:
            for i in range(40000):
                txn.put("t", b"%08d" % i, os.urandom(200))
        env.close()
        env = Env({str(tmp_path / "db")!r}, ["t"])
        grown = {{}}
        for mode, every in (("released", 1000), ("plain", 0)):
            before = rss_file()
            with env.read() as txn:
                rows = sum(1 for _ in txn.scan("t", release_every=every))
            assert rows == 40000
            grown[mode] = rss_file() - before
        print(json.dumps(grown))
    """)
    grown = json.loads(out.stdout)
    assert grown["plain"] > 6 << 20, grown  # the table is about 10 MB
    assert grown["released"] < 1 << 20, grown


def test_a_child_transaction_commits_into_its_parent_or_vanishes_and_survives_map_growth(env):
    start = env.map_size
    with env.write() as txn:
        txn.put("a", b"parent", b"1")
        kept = txn.child()
        for i in range(3000):  # far past the 1 MiB map: grown, the parent and this child replayed
            kept.put("a", b"kept%05d" % i, b"x" * 500)
        kept.commit()
        dropped = txn.child()
        dropped.put("a", b"dropped", b"1")
        assert dropped.get("a", b"parent") == b"1"
        dropped.abort()
        assert txn.get("a", b"dropped") is None
    assert env.map_size > start
    with env.read() as txn:
        assert txn.get("a", b"parent") == b"1"
        assert len(txn.keys("a", b"kept")) == 3000
        assert txn.get("a", b"dropped") is None
