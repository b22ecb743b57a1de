"""Hostile storage: lost and damaged metadata files, foreign backends, another process growing the map.

Every attempt on a damaged file runs in a child process, so that a crash fails
the test (the child died by a signal) instead of killing pytest.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time

import pytest

import cargohold
from cargohold import Descriptor, Image, errors, schema
from cargohold.kv import Env
from cargohold.snapshots import metastore
from cliutil import NAME, fails, invoke, parsed
from conftest import run_python
from oci_fixtures import Layer, Layout

PSIZE = 4096
P_BRANCH, P_LEAF, P_OVERFLOW, P_META = 0x01, 0x02, 0x04, 0x08
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


# -- a real root, and what it holds ------------------------------------------------------------


def _populate(root) -> None:
    """Records on leaf and branch pages (many namespaces) and on overflow pages (large images)."""
    with cargohold.open(root) as db:
        with db.update() as tx:
            for i in range(300):
                db.namespaces.create(f"ns{i:03d}", {"pad": f"{i}" * 60}, tx=tx)
            images = db.namespace("big").images
            target = Descriptor(MANIFEST, "sha256:" + "ab" * 32, 1234)
            for i in range(6):
                labels = {f"label{k}": f"{i}-{k}-" * 500 for k in range(4)}
                images.create(Image(f"example.com/big:{i}", target, labels), tx=tx)


SUMMARY = """
import hashlib, json, sys
import cargohold

def summary(db):
    out = {name: db.namespaces.labels(name) for name in db.namespaces.list()}
    out["images"] = sorted((i.name, sorted(i.labels.items()), i.target.digest)
                           for i in db.namespace("big").images.list())
    return hashlib.sha256(json.dumps(out, sort_keys=True).encode()).hexdigest()
"""

ATTEMPT = SUMMARY + """
try:
    with cargohold.open(sys.argv[1]) as db:
        print("data", summary(db))
except cargohold.errors.Corrupted as exc:
    print("Corrupted", exc)
except cargohold.errors.Error as exc:
    print("error", type(exc).__name__, exc)
"""


def _summary(root) -> str:
    scope: dict = {}
    exec(SUMMARY, scope)
    with cargohold.open(root) as db:
        return scope["summary"](db)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A populated root closed cleanly, and the summary of its records."""
    root = tmp_path_factory.mktemp("pristine") / "root"
    _populate(root)
    return root, _summary(root)


def _pages(data: bytes) -> dict:
    """Page numbers by type (branch, leaf, overflow head, overflow body), from the page headers."""
    found: dict = {"branch": [], "leaf": [], "overflow": [], "overflow-body": []}
    pgno = 2
    while pgno * PSIZE < len(data):
        (flags,) = struct.unpack_from("<H", data, pgno * PSIZE + 10)
        if flags & P_OVERFLOW:
            (count,) = struct.unpack_from("<I", data, pgno * PSIZE + 12)
            found["overflow"].append(pgno)
            found["overflow-body"].extend(range(pgno + 1, pgno + max(count, 1)))
            pgno += max(count, 1)
            continue
        if flags & P_BRANCH:
            found["branch"].append(pgno)
        elif flags & P_LEAF:
            found["leaf"].append(pgno)
        pgno += 1
    return found


def _damage(path, kind: str, seed: int) -> None:
    """Damage data.mdb in place, keeping its size and (like `touch -d`) its mtime."""
    rng = random.Random(seed)
    st = os.stat(path)
    data = bytearray(open(path, "rb").read())
    pages = _pages(bytes(data))
    where, _, how = kind.partition(":")
    if where == "meta":
        start, span = rng.choice([0, PSIZE]) + 16, 136  # a meta page's MDB_meta (magic .. txnid)
    else:
        pgno = rng.choice(pages[where])
        start, span = pgno * PSIZE + (0 if how == "header" else 16), 16 if how == "header" else PSIZE - 16
    if how == "zero":
        while True:  # a range that held something: zeroing zeros changes nothing
            offset = start + rng.randrange(0, max(span - 64, 1))
            if any(data[offset:offset + 64]):
                break
        data[offset:offset + 64] = bytes(64)
    else:
        for _ in range(rng.choice([1, 3, 8])):
            offset = start + rng.randrange(span)
            data[offset] ^= 1 << rng.randrange(8)
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size and os.stat(path).st_mtime_ns == st.st_mtime_ns


def _spawn(root) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", ATTEMPT, str(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _outcome(case, proc: subprocess.Popen) -> tuple:
    """(case, "data" | "Corrupted" | "error", the line printed) of an attempt that did not crash."""
    out, err = proc.communicate(timeout=300)
    assert proc.returncode >= 0, f"{case}: the process died by {signal.Signals(-proc.returncode).name}"
    assert proc.returncode == 0, f"{case}: not a cargohold error:\n{err}"
    return case, out.split(maxsplit=1)[0], out.strip()


def _attempts(cases, pristine, tmp_path, *, after_crash: bool) -> list:
    """Damage a copy of the pristine root per case and open each in its own child process."""
    root, expected = pristine
    procs = []
    for n, (kind, seed) in enumerate(cases):
        copy = tmp_path / f"case{n}"
        shutil.copytree(root, copy, copy_function=shutil.copy2)
        if after_crash:  # as a crashed session leaves it: no clean marker
            os.unlink(copy / "meta" / "clean.json")
        _damage(copy / "meta" / "data.mdb", kind, seed)
        procs.append(((kind, seed), copy, _listing(copy), _spawn(copy)))
    results = []
    for case, copy, before, proc in procs:
        result = _outcome(case, proc)
        if "Nothing was changed" in result[2]:  # refused at open (not a damaged record read later)
            assert _listing(copy) == before, f"{case}: a refused open wrote"
        results.append(result)
    return results


def _free_list_entry(data: bytes) -> int:
    """Offset of the first page number in the first record of the free list (of the current meta page)."""
    meta = max((0, PSIZE), key=lambda base: struct.unpack_from("<Q", data, base + 144)[0])  # mm_txnid
    (depth,) = struct.unpack_from("<H", data, meta + 46)  # mm_dbs[FREE_DBI].md_depth
    (root,) = struct.unpack_from("<Q", data, meta + 80)  # .md_root
    assert depth == 1, "expected a free list on one leaf page"
    page = root * PSIZE
    (first,) = struct.unpack_from("<H", data, page + 16)  # mp_ptrs[0]
    (ksize,) = struct.unpack_from("<H", data, page + first + 6)  # mn_ksize
    return page + first + 8 + ksize + 8  # node header, key (txnid), the list's count


FAST_CASES = [("leaf:body", 1), ("branch:header", 2), ("overflow:header", 3), ("overflow-body:zero", 4),
              ("meta:zero", 5)]
KINDS = ["leaf:body", "leaf:header", "leaf:zero", "branch:body", "branch:header", "branch:zero",
         "overflow:header", "overflow:body", "overflow-body:flip", "overflow-body:zero", "meta:flip", "meta:zero"]
SLOW_CASES = [(kind, seed) for kind in KINDS for seed in range(100, 106)]


def _check_after_clean_close(results, expected) -> None:
    for case, outcome, line in results:
        assert outcome in ("data", "Corrupted"), (case, line)
        if outcome == "data":
            assert line == f"data {expected}", (case, line)  # readable means: exactly the records stored
        else:
            assert "Nothing was changed" in line, (case, line)


def _check_after_crash(results) -> None:
    # Without a clean marker only the structure can be verified: a changed value may read back
    # changed (LMDB has no checksums), but nothing crashes and every failure is a cargohold error.
    for case, outcome, line in results:
        assert outcome in ("data", "Corrupted", "error"), (case, line)


def test_damage_with_restored_mtime_never_crashes_nor_reads_wrong_data(pristine, tmp_path):
    results = _attempts(FAST_CASES, pristine, tmp_path, after_crash=False)
    _check_after_clean_close(results, pristine[1])
    assert {outcome for _, outcome, _ in results} == {"Corrupted"}


def test_damage_after_a_crash_is_verified_in_a_child(pristine, tmp_path):
    cases = [("leaf:header", 1), ("overflow:header", 3), ("meta:zero", 5)]  # structural damage
    results = _attempts(cases, pristine, tmp_path, after_crash=True)
    _check_after_crash(results)
    assert {outcome for _, outcome, _ in results} == {"Corrupted"}


def test_free_list_damage_after_a_crash_is_refused(tmp_path):
    """LMDB reads its free list only to write: a read of every record would not notice damage
    there, and the next write would hand out pages in use. The structural verifier refuses it."""
    root = tmp_path / "root"
    _populate(root)
    with cargohold.open(root) as db:
        with db.update() as tx:  # frees pages: the free list gets records
            for i in range(0, 300, 2):
                db.namespaces.delete(f"ns{i:03d}", tx=tx)
    os.unlink(root / "meta" / "clean.json")
    path = root / "meta" / "data.mdb"
    data = bytearray(path.read_bytes())
    data[_free_list_entry(data)] ^= 1
    path.write_bytes(data)
    _, outcome, line = _outcome("free list", _spawn(root))
    assert outcome == "Corrupted" and "freeDB" in line, line


@pytest.mark.slow
def test_damage_sweep_after_clean_close(pristine, tmp_path):
    _check_after_clean_close(_attempts(SLOW_CASES, pristine, tmp_path, after_crash=False), pristine[1])


@pytest.mark.slow
def test_damage_sweep_after_a_crash(pristine, tmp_path):
    _check_after_crash(_attempts(SLOW_CASES, pristine, tmp_path, after_crash=True))


def test_same_bytes_with_a_new_fingerprint_are_trusted(pristine, tmp_path):
    """A touch or a copy changes the ctime and inode, not the bytes: the file opens, and the marker is renewed."""
    root, expected = pristine
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)  # new inodes and times, same bytes
    marker = (copy / "meta" / "clean.json").read_text()
    assert _summary(copy) == expected
    assert (copy / "meta" / "clean.json").read_text() != marker


def test_crashed_session_is_verified_and_not_blessed(tmp_path):
    """A session killed while another is open: the survivor's close must not vouch for the file."""
    root = tmp_path / "root"
    _populate(root)
    with cargohold.open(root) as db:
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import sys, cargohold
            db = cargohold.open({str(root)!r})
            db.namespaces.create("from-the-crashed-one")
            print("written", flush=True)
            sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline() == "written\n"
        proc.kill()
        proc.wait()
        db.namespaces.list()
    assert not (root / "meta" / "clean.json").exists()
    with cargohold.open(root) as db:  # verified structurally, then trusted again
        assert "from-the-crashed-one" in db.namespaces.list()
    assert (root / "meta" / "clean.json").exists()


# -- a lost metadata database -------------------------------------------------------------------


def _listing(directory) -> dict:
    """Every file under `directory` with its size, mtime and content digest."""
    found = {}
    for dirpath, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(dirpath, name)
            st = os.stat(path)
            found[os.path.relpath(path, directory)] = (st.st_size, st.st_mtime_ns,
                                                       hashlib.sha256(open(path, "rb").read()).hexdigest())
    return found


@pytest.mark.parametrize("loss", ["empty", "short", "missing"])
def test_lost_data_file_is_corrupted_and_nothing_is_written(tmp_path, loss):
    root = tmp_path / "root"
    with cargohold.open(root) as db:
        db.namespaces.create("kept")
    data = root / "meta" / "data.mdb"
    if loss == "missing":
        data.unlink()
    else:
        with open(data, "r+b") as f:
            f.truncate(0 if loss == "empty" else 4096)
    before = _listing(root)
    with pytest.raises(errors.Corrupted, match="is lost.*Nothing was changed.*start over"):
        cargohold.open(root)
    assert _listing(root) == before


def test_new_and_interrupted_environments_are_not_lost(tmp_path):
    from cargohold.kv import Env

    Env(tmp_path / "new", ("t",)).close()  # nothing there yet
    (tmp_path / "interrupted").mkdir()
    (tmp_path / "interrupted" / "data.mdb").write_bytes(b"")  # LMDB died before writing its header
    env = Env(tmp_path / "interrupted", ("t",))
    with env.write() as txn:
        txn.put("t", b"k", b"v")
    env.close()


def _blob_files(root) -> set:
    blobs = root / "content" / "blobs" / "sha256"
    return set(os.listdir(blobs)) if blobs.exists() else set()


def _many_blobs_layout(tmp_path, count: int) -> Layout:
    """An image of count - 2 tiny layers: with its config and manifest, `count` blobs."""
    layout = Layout(tmp_path / "layout")
    image = layout.image([Layer().file(f"f{i}", b"%d" % i).bytes() for i in range(count - 2)])
    layout.write_index([(image.manifest, {NAME: "example.com/many:1"})])
    return layout


@pytest.mark.parametrize("count", [20, pytest.param(200, marks=pytest.mark.slow)])
def test_lost_database_never_makes_gc_wipe_the_content_store(tmp_path, count):
    root = tmp_path / "root"
    invoke(root, "images", "import", _many_blobs_layout(tmp_path, count).root)
    old = _blob_files(root)
    assert len(old) == count

    with open(root / "meta" / "data.mdb", "r+b") as f:
        f.truncate(0)
    for command in (["images", "ls"], ["gc"]):
        message = fails(root, *command)
        assert "is lost" in message and "Nothing was changed" in message, message
    assert os.path.getsize(root / "meta" / "data.mdb") == 0
    assert _blob_files(root) == old

    shutil.rmtree(root / "meta")  # start over, as the message suggests
    assert invoke(root, "images", "ls", "-q").stdout == ""
    new = invoke(root, "content", "ingest", "new-ref", input=b"new content").stdout.strip()
    invoke(root, "content", "rm", new)  # a deletion: the content store is dirty
    result = invoke(root, "gc", ok=False)  # exit 1: a cleanup did not happen; one line says why
    assert result.exit_code == 1
    assert "content store" in result.stderr and "is not cleaned" in result.stderr
    assert "--adopt-backends" in result.stderr
    assert old <= _blob_files(root)
    again = invoke(root, "gc", "--json", ok=False)  # still refused: the deletion stays pending
    assert again.exit_code == 1 and "is not cleaned" in again.stderr
    assert parsed(again)["removed"] == []
    assert old <= _blob_files(root)

    result = invoke(root, "gc", "--adopt-backends")
    assert result.stderr == ""
    assert _blob_files(root) == set()


def test_lost_database_never_makes_gc_wipe_a_snapshotter(tmp_path):
    root = tmp_path / "root"
    layout = Layout(tmp_path / "layout")
    image = layout.image([Layer().file("a", b"1").bytes(), Layer().file("b", b"2").bytes()])
    layout.write_index([(image.manifest, {NAME: "example.com/app:1"})])
    invoke(root, "images", "import", "--unpack", layout.root)
    native = root / "snapshots" / "native" / "snapshots"
    old = set(os.listdir(native))
    assert len(old) == 2

    shutil.rmtree(root / "meta")
    invoke(root, "snapshots", "prepare", "scratch")
    invoke(root, "snapshots", "rm", "scratch")  # a deletion: the snapshotter is dirty
    result = invoke(root, "gc", ok=False)
    assert result.exit_code == 1
    assert "snapshotter 'native'" in result.stderr and "is not cleaned" in result.stderr
    assert old <= set(os.listdir(native))

    invoke(root, "gc", "--adopt-backends")
    assert os.listdir(native) == []
    with cargohold.open(root) as db:
        assert list(db.snapshotter_backend("native").walk()) == []


def _unpacked_root(tmp_path):
    root = tmp_path / "root"
    layout = Layout(tmp_path / "layout")
    image = layout.image([Layer().file("a", b"1").bytes(), Layer().file("b", b"2").bytes()])
    layout.write_index([(image.manifest, {NAME: "example.com/app:1"})])
    invoke(root, "images", "import", "--unpack", layout.root)
    invoke(root, "containers", "create", "example.com/app:1", "web")
    return root, root / "snapshots" / "native" / "snapshots"


def _lose_snapshotter_metastore(root, name: str = "native") -> None:
    """Lose the snapshotter's records: its own environment if it has one, else its key range of
    the metadata database (`cargohold.snapshots.metastore`), if that database is still there."""
    own = root / "snapshots" / name / "metadata"
    if own.exists():
        shutil.rmtree(own)
        return
    if not (root / "meta").exists():
        return
    env = Env(str(root / "meta"), schema.TABLES)
    try:
        with env.write() as txn:
            assert txn.delete_prefix(metastore.TABLE, name.encode() + b"\0") > 0
    finally:
        env.close()


def test_a_lost_snapshotter_metastore_never_makes_gc_or_prepare_wipe_its_directories(tmp_path):
    """The metadata database is intact, but the native snapshotter's own metastore is gone."""
    root, native = _unpacked_root(tmp_path)
    before = _listing(native)
    assert len(os.listdir(native)) == 3  # two layers and the container's snapshot
    _lose_snapshotter_metastore(root)

    invoke(root, "snapshots", "prepare", "scratch")  # its fresh ids must not land on the old directories
    invoke(root, "snapshots", "rm", "scratch")  # a deletion: the snapshotter is dirty
    result = invoke(root, "gc", ok=False)
    assert result.exit_code == 1
    assert "snapshotter 'native' is not cleaned: the metadata references 3 snapshots its backend does not know" \
        in " ".join(result.stderr.split())
    assert {path: entry for path, entry in _listing(native).items() if path in before} == before
    again = invoke(root, "gc", ok=False)  # refused again: nothing was deleted, the deletion stays pending
    assert again.exit_code == 1 and {p: e for p, e in _listing(native).items() if p in before} == before


def test_a_lost_metadata_database_and_snapshotter_metastore_keep_every_directory(tmp_path):
    root, native = _unpacked_root(tmp_path)
    before = _listing(native)
    shutil.rmtree(root / "meta")
    _lose_snapshotter_metastore(root)
    invoke(root, "snapshots", "prepare", "scratch")
    invoke(root, "snapshots", "rm", "scratch")
    result = invoke(root, "gc", ok=False)
    assert result.exit_code == 1 and "snapshotter 'native'" in result.stderr and "is not cleaned" in result.stderr
    assert {p: e for p, e in _listing(native).items() if p in before} == before


def test_a_database_collecting_its_own_content_still_cleans(tmp_path):
    root = tmp_path / "root"
    invoke(root, "images", "import", _many_blobs_layout(tmp_path, 20).root)
    assert len(_blob_files(root)) == 20
    invoke(root, "images", "rm", "example.com/many:1")
    result = invoke(root, "gc")
    assert result.stderr == ""
    assert _blob_files(root) == set()


def _unowned(root) -> None:
    for owner in [root / "content" / "owner.json", *(root / "snapshots").glob("*/owner.json")]:
        owner.unlink()


def test_fresh_database_does_not_adopt_an_unowned_store_with_data(tmp_path):
    root = tmp_path / "root"
    with cargohold.open(root) as db:
        with db.namespace("default").content.writer("r") as w:
            w.write(b"old")
            old = w.commit(3).digest
    _unowned(root)  # a store from before owner files
    shutil.rmtree(root / "meta")
    with cargohold.open(root) as db:
        assert not (root / "content" / "owner.json").exists()
        ns = db.namespace("default")
        with ns.content.writer("n") as w:
            w.write(b"new")
            ns.content.delete(w.commit(3).digest)
        stats = db.garbage_collect()
        (message,) = stats.errors
        assert "has no owner file" in message and "adopt_backends=True" in message
        assert db.content_store.exists(old)
        db.garbage_collect(adopt_backends=True)
        assert not db.content_store.exists(old)


def test_namespace_collection_refuses_a_foreign_store_too(tmp_path):
    """A new database that stores a blob the lost one had, then collects it, must not delete
    the bytes the lost records referenced, not even in a collection of one namespace."""
    root = tmp_path / "root"
    with cargohold.open(root) as db:
        with db.namespace("old").content.writer("r") as w:
            w.write(b"shared bytes")
            digest = w.commit(12).digest
    shutil.rmtree(root / "meta")
    with cargohold.open(root) as db:
        ns = db.namespace("new")
        with ns.content.writer("r") as w:
            w.write(b"shared bytes")
            assert w.commit(12).digest == digest  # nothing references it: garbage
        stats = db.garbage_collect(namespace="new")
        assert [node.key for node in stats.removed] == [digest]
        (message,) = stats.errors
        assert "content store" in message and "is not cleaned" in message
        assert db.content_store.exists(digest)


def test_adopting_cleans_without_pending_deletions(tmp_path):
    """Taking a store over means judging all of it now, not at the next deletion."""
    root = tmp_path / "root"
    with cargohold.open(root) as db:
        with db.namespace("default").content.writer("r") as w:
            w.write(b"old")
            old = w.commit(3).digest
    shutil.rmtree(root / "meta")
    with cargohold.open(root) as db:
        assert db.garbage_collect().errors == []  # nothing deleted: no cleanup, no refusal
        assert db.content_store.exists(old)
        assert db.garbage_collect(adopt_backends=True).errors == []
        assert not db.content_store.exists(old)
        assert json.loads((root / "content" / "owner.json").read_text()) == {"database": db.identity}


def test_damaged_owner_file_is_refused_not_fatal(tmp_path):
    root = tmp_path / "root"
    with cargohold.open(root) as db:
        ns = db.namespace("default")
        with ns.content.writer("r") as w:
            w.write(b"x")
            digest = w.commit(1).digest
        (root / "content" / "owner.json").write_bytes(b"\x00garbage")
        ns.content.delete(digest)
        stats = db.garbage_collect()
        assert len(stats.errors) == 1 and "is damaged" in stats.errors[0]
        assert db.content_store.exists(digest)
        with pytest.raises(errors.InvalidArgument, match="adopt_backends"):
            db.garbage_collect(adopt_backends="yes")


def test_adopt_backends_flag_is_for_a_collection_only(tmp_path):
    root = tmp_path / "root"
    for other in ("--dry-run", "--explain=x"):
        assert "--adopt-backends cannot be combined" in fails(root, "gc", "--adopt-backends", other)


# -- another process grows the map ----------------------------------------------------------------

GROWER = """
import sys
import cargohold
from cargohold import Descriptor, Image

with cargohold.open(sys.argv[1], map_size=1 << 20) as db:
    images = db.namespace("grow").images
    target = Descriptor("application/vnd.oci.image.manifest.v1+json", "sha256:" + "a" * 64, 10)
    for i in range(int(sys.argv[2])):
        with db.update() as tx:  # about 1 MiB a transaction: the map doubles again and again
            for j in range(4):
                labels = {f"l{k}": (f"{i}-{j}-{k}-" * 400)[:3900] for k in range(60)}
                images.create(Image(f"img{i}-{j}", target, labels), tx=tx)
"""

OPENER = """
import json, os, sys
import cargohold

root, stop = sys.argv[1], sys.argv[2]
errors, opens = [], 0
while not os.path.exists(stop) or opens < 3:
    try:
        with cargohold.open(root, map_size=1 << 20) as db:
            db.namespaces.list()
            db.namespace("open").leases.create(f"lease{opens}")
            len(db.namespace("grow").images.list())
    except cargohold.errors.Error as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    opens += 1
print(json.dumps({"opens": opens, "errors": errors}))
"""


def test_map_growth_by_another_process_never_surfaces(tmp_path):
    """One process grows the map with large records while another opens the root, reads and writes."""
    for attempt in range(2):
        root, stop = tmp_path / f"root{attempt}", tmp_path / f"stop{attempt}"
        cargohold.open(root).close()
        opener = subprocess.Popen([sys.executable, "-c", OPENER, str(root), str(stop)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            run_python(GROWER.replace("sys.argv[1]", repr(str(root))).replace("sys.argv[2]", "40"))
        finally:
            stop.touch()
            out, err = opener.communicate(timeout=120)
        assert opener.returncode == 0, err
        report = json.loads(out)
        assert report["errors"] == [], report["errors"][:3]
        with cargohold.open(root) as db:
            assert len(db.namespace("grow").images.list()) == 160
            assert len(db.namespace("open").leases.list()) == report["opens"]
