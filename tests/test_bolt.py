"""cargohold.bolt reads real bbolt files (written by go.etcd.io/bbolt itself) as bbolt does."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boltutil import Missing, as_dump, build_gobolt
from conftest import IMPLEMENTATIONS
from cargohold import bolt, errors
from cargohold._fallback import BOLT_BRANCH
from cargohold.bolt import reader

PAGE_SIZES = [4096, 8192, 16384, 65536]


@pytest.fixture(scope="session")
def gobolt(tmp_path_factory):
    try:
        return build_gobolt(tmp_path_factory.mktemp("gobolt"))
    except Missing as exc:
        pytest.skip(f"bbolt files cannot be written here: {exc}")


@pytest.fixture
def reader_impl(impl, monkeypatch):
    """Run the reader on each implementation of the walk and page decoders (compiled and fallback)."""
    monkeypatch.setattr(reader, "BoltTx", impl.BoltTx)
    return impl


def rich_spec(page_size: int, txns: int = 6, wide: int = 3000) -> dict:
    """Nested and inline buckets, overflow values, deep branch trees, deletions, many commits."""
    wide_key = "w" * (page_size // 64) + "-{i}"
    first = [
        {"op": "bucket", "path": ["empty"]},
        {"op": "fill", "path": ["inline"], "count": 5, "key": "k{i}", "value": "v{i}"},
        {"op": "put", "path": ["nest"], "key": "top", "value": "1"},
        {"op": "put", "path": ["nest", "l1"], "key": "x", "value": "2"},
        {"op": "put", "path": ["nest", "l1", "l2", "l3"], "key": "deep", "value": "yes"},
        {"op": "fill", "path": ["nest", "inl"], "count": 3, "key": "i{i}", "value": "small"},
        {"op": "sequence", "path": ["nest"], "value": 7},
        {"op": "sequence", "path": ["nest", "inl"], "value": 2**63 + 5},
        {"op": "put", "path": ["large"], "key": "one", "value": {"random": 3 * page_size + 100}},
        {"op": "put", "path": ["large"], "key": "huge", "value": {"random": 20 * page_size}},
        {"op": "put", "path": ["large"], "key": "tiny", "value": "t"},
        {"op": "fill", "path": ["wide"], "count": wide, "key": wide_key, "value": "{i}"},
        {"op": "put", "path": ["bin"], "key": "hex:00", "value": ""},
        {"op": "put", "path": ["bin"], "key": "hex:ff00", "value": "hex:000102"},
        {"op": "repeat", "count": 40, "ops": [
            {"op": "fill", "path": ["many", "b{i}"], "count": 4, "key": "key{i}", "value": {"random": 30}}]},
    ]
    second = [
        {"op": "repeat", "count": wide // 2, "ops": [{"op": "delete", "path": ["wide"], "key": wide_key}]},
        {"op": "delete_bucket", "path": ["many", "b7"]},
        {"op": "put", "path": ["large"], "key": "one", "value": "replaced"},
    ]
    spec = {"page_size": page_size, "txns": [{"ops": first}, {"ops": second}]}
    for t in range(2, txns):
        spec["txns"].append({"ops": [{"op": "put", "path": ["commits"], "key": f"t{t}", "value": f"{t}"}]})
    return spec


@pytest.fixture(scope="session")
def rich_files(gobolt, tmp_path_factory):
    """{page size: (path, bbolt's dump)} of rich_spec files."""
    out = {}
    for page_size in PAGE_SIZES:
        path = gobolt.write(rich_spec(page_size), tmp_path_factory.mktemp("rich") / f"rich-{page_size}.db")
        out[page_size] = (path, gobolt.dump(path))
    return out


# -- reading what bbolt wrote -----------------------------------------------------------------------


@pytest.mark.parametrize("page_size", PAGE_SIZES)
def test_reads_what_bbolt_reads(rich_files, page_size, reader_impl):
    path, expected = rich_files[page_size]
    stats = expected.pop("stats")
    # the file really exercises deep trees, overflow pages and inline buckets
    assert stats["Depth"] >= 3 and stats["LeafOverflowN"] > 0 and stats["InlineBucketN"] > 0
    with bolt.open(path) as f:
        assert as_dump(f) == expected
        assert f.page_size == page_size and f.txid == expected["txid"] == 7
        assert f.path == str(path)
    expected["stats"] = stats


def test_bucket_api(rich_files, reader_impl):
    path, _ = rich_files[4096]
    with bolt.open(path) as f:
        assert [name for name, _ in f.buckets()] == [b"bin", b"commits", b"empty", b"inline", b"large",
                                                     b"many", b"nest", b"wide"]
        assert f.bucket(b"missing") is None
        nest = f.bucket(b"nest")
        assert nest.sequence == 7 and nest.get(b"top") == b"1"
        assert nest.get(b"l1") is None and nest.bucket(b"top") is None and nest.get(b"nope") is None
        assert list(nest.items()) == [(b"inl", None), (b"l1", None), (b"top", b"1")]
        assert [k for k, _ in nest.buckets()] == [b"inl", b"l1"]
        assert nest.bucket(b"inl").sequence == 2**63 + 5
        assert nest.bucket(b"l1").bucket(b"l2").bucket(b"l3").get(b"deep") == b"yes"
        assert len(f.bucket(b"empty")) == 0 and list(f.bucket(b"empty").items()) == []
        bin_ = f.bucket(b"bin")
        assert bin_.get(b"\x00") == b"" and bin_.get(bytearray(b"\xff\x00")) == b"\x00\x01\x02"
        assert b"\x00" in bin_ and b"\x01" not in bin_
        large = f.bucket(b"large")
        assert large.get(b"one") == b"replaced" and len(large.get(b"huge")) == 20 * 4096
        wide = f.bucket(b"wide")
        assert len(wide) == 1500 and list(wide) == sorted(wide.keys())
        many = f.bucket(b"many")
        assert len(many) == 39 and many.bucket(b"b7") is None
        assert [k for k, _ in many.items(prefix=b"b1")] == [b"b1"] + [b"b1%d" % i for i in range(10)]
        assert list(many.keys(prefix=b"zz")) == []
        with pytest.raises(errors.InvalidArgument, match="not str"):
            nest.get("top")
        with pytest.raises(errors.InvalidArgument):
            f.bucket(None)
    with pytest.raises(errors.Unavailable, match="closed"):
        f.bucket(b"nest")


def test_fresh_database(gobolt, tmp_path):
    """A database with no buckets at all (bbolt's initial four pages)."""
    path = gobolt.write({"page_size": 4096, "txns": []}, tmp_path / "fresh.db")
    with bolt.open(path) as f:
        assert list(f.buckets()) == [] and f.txid == 1 and len(f.root) == 0


def test_no_freelist_sync_file(gobolt, tmp_path):
    path = gobolt.write({"page_size": 4096, "no_freelist_sync": True,
                         "txns": [{"ops": [{"op": "fill", "path": ["b"], "count": 500, "key": "k{i}",
                                            "value": "v"}]}]}, tmp_path / "nfs.db")
    with bolt.open(path) as f:
        assert len(f.bucket(b"b")) == 500
        assert f.meta.freelist == 0xFFFFFFFFFFFFFFFF


# -- the meta pages ---------------------------------------------------------------------------------


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) % 2**64
    return h


META = struct.Struct("<IIIIQQQQQQ")


def meta_fields(path, page: int, page_size: int) -> list:
    with open(path, "rb") as fh:
        fh.seek(page * page_size + 16)
        return list(META.unpack(fh.read(META.size)))


def write_meta(path, page: int, page_size: int, *, resum: bool = True, **changes) -> None:
    """Rewrite fields of a meta page (names as in bbolt's meta struct), with a fresh checksum."""
    names = ["magic", "version", "page_size", "flags", "root", "sequence", "freelist", "pgid", "txid",
             "checksum"]
    fields = meta_fields(path, page, page_size)
    for name, value in changes.items():
        fields[names.index(name)] = value
    raw = META.pack(*fields)
    if resum:
        raw = raw[:-8] + struct.pack("<Q", fnv1a64(raw[:-8]))
    with open(path, "r+b") as fh:
        fh.seek(page * page_size + 16)
        fh.write(raw)


def test_fnv_checksum_matches_go():
    from cargohold.bolt.meta import fnv1a64 as ours

    # Go: fnv.New64a() of "" and of "a"
    assert ours(b"") == 0xCBF29CE484222325 and ours(b"a") == 0xAF63DC4C8601EC8C


def older_state(gobolt, tmp_path, page_size):
    """bbolt's dump of the rich file as it was one commit earlier."""
    spec = rich_spec(page_size, txns=5)
    return gobolt.dump(gobolt.write(spec, tmp_path / "older.db"))


@pytest.mark.parametrize("page_size", [4096, 16384])
def test_falls_back_to_the_older_meta(rich_files, gobolt, tmp_path, page_size, reader_impl):
    path, newest = rich_files[page_size]
    copy = tmp_path / "copy.db"
    copy.write_bytes(path.read_bytes())
    newer_page = newest["txid"] % 2
    assert meta_fields(copy, newer_page, page_size)[8] == newest["txid"]
    assert meta_fields(copy, 1 - newer_page, page_size)[8] == newest["txid"] - 1
    # a torn write of the newer meta: bbolt uses the other one
    with open(copy, "r+b") as fh:
        fh.seek(newer_page * page_size + 16 + 40)
        fh.write(b"\xde\xad")
    older = older_state(gobolt, tmp_path, page_size)
    older.pop("stats")
    with bolt.open(copy) as f:
        assert f.txid == newest["txid"] - 1
        assert as_dump(f) == older


def test_page_size_found_through_meta_1(rich_files, tmp_path):
    """Meta 0 is damaged: the page size comes from meta 1, probed as bbolt does."""
    path, newest = rich_files[16384]
    copy = tmp_path / "copy.db"
    copy.write_bytes(path.read_bytes())
    with open(copy, "r+b") as fh:
        fh.seek(16)
        fh.write(b"\0\0\0\0")
    with bolt.open(copy) as f:
        assert f.page_size == 16384 and f.txid == meta_fields(copy, 1, 16384)[8]


@pytest.mark.parametrize("change, message", [
    ({"magic": 0x12345678}, "bad magic 0x12345678"),
    ({"version": 1}, "unsupported version 1"),
    ({"checksum": 1, "resum": False}, "checksum mismatch"),
])
def test_both_metas_bad(rich_files, tmp_path, change, message):
    path, _ = rich_files[4096]
    copy = tmp_path / "copy.db"
    copy.write_bytes(path.read_bytes())
    for page in (0, 1):
        write_meta(copy, page, 4096, **change)
    with pytest.raises(errors.Corrupted, match=message) as exc:
        bolt.open(copy)
    assert str(copy) in str(exc.value) and "not a bbolt file" in str(exc.value)


def test_checksum_zero_is_accepted_as_bbolt_does(rich_files, tmp_path):
    path, newest = rich_files[4096]
    copy = tmp_path / "copy.db"
    copy.write_bytes(path.read_bytes())
    write_meta(copy, newest["txid"] % 2, 4096, resum=False, checksum=0)
    with bolt.open(copy) as f:
        assert f.txid == newest["txid"]


def lmdb_file(tmp_path):
    import lmdb

    env = lmdb.open(str(tmp_path / "lmdb"), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"key", b"value")
    env.close()
    return tmp_path / "lmdb" / "data.mdb"


@pytest.mark.parametrize("kind, message", [
    ("empty", "the file is empty"),
    ("short", "not a bbolt file"),
    ("zeros", "bad magic 0x00000000"),
    ("random", "not a bbolt file"),
    ("lmdb", "an LMDB file"),
    ("text", "not a bbolt file"),
])
def test_not_a_bbolt_file(tmp_path, kind, message):
    path = tmp_path / "file"
    if kind == "lmdb":
        path = lmdb_file(tmp_path)
    else:
        path.write_bytes({"empty": b"", "short": b"bolt", "zeros": bytes(65536),
                          "random": os.urandom(50000), "text": b"hello\n" * 3000}[kind])
    with pytest.raises(errors.Corrupted, match=message) as exc:
        bolt.open(path)
    assert str(path) in str(exc.value)


def test_bad_paths(tmp_path):
    with pytest.raises(errors.NotFound, match="no bbolt file"):
        bolt.open(tmp_path / "missing.db")
    with pytest.raises(errors.InvalidArgument, match="is a directory"):
        bolt.open(tmp_path)
    with pytest.raises(errors.InvalidArgument, match="not int"):
        bolt.open(42)
    with pytest.raises(errors.InvalidArgument):
        bolt.open("")
    os.mkfifo(tmp_path / "fifo")   # opened without a writer, a FIFO would block a plain open
    with pytest.raises(errors.InvalidArgument, match="not a regular file"):
        bolt.open(tmp_path / "fifo")


# -- never writes -----------------------------------------------------------------------------------


def fingerprint(path) -> tuple:
    st = os.stat(path)
    return hashlib.sha256(open(path, "rb").read()).hexdigest(), st.st_size, st.st_mtime_ns, st.st_ctime_ns


def test_reading_changes_nothing(rich_files, tmp_path):
    path, _ = rich_files[8192]
    copy = tmp_path / "copy.db"
    copy.write_bytes(path.read_bytes())
    os.chmod(copy, 0o444)   # and needs no write permission
    before = fingerprint(copy)
    with bolt.open(copy) as f:
        as_dump(f)
    assert fingerprint(copy) == before


# -- damage: each kind raises Corrupted naming the page -----------------------------------------------

HEADER = struct.Struct("<QHHI")


class Damaged:
    """A copy of a rich 4096-byte-page file with helpers to break one page of it."""

    page_size = 4096

    def __init__(self, rich_files, gobolt, tmp_path):
        source, self.dump = rich_files[self.page_size]
        self.path = tmp_path / "damaged.db"
        self.path.write_bytes(source.read_bytes())
        self.pages = [p for p in gobolt.pages(self.path) if p["Type"] in ("branch", "leaf")]

    def live(self, kind: str, min_count: int = 1) -> dict:
        return next(p for p in self.pages if p["Type"] == kind and p["Count"] >= min_count)

    def header(self, pgid: int) -> list:
        with open(self.path, "rb") as fh:
            fh.seek(pgid * self.page_size)
            return list(HEADER.unpack(fh.read(HEADER.size)))

    def poke(self, offset: int, data: bytes) -> None:
        with open(self.path, "r+b") as fh:
            fh.seek(offset)
            fh.write(data)

    def set_header(self, pgid: int, **changes) -> None:
        fields = self.header(pgid)
        for name, value in changes.items():
            fields[["id", "flags", "count", "overflow"].index(name)] = value
        self.poke(pgid * self.page_size, HEADER.pack(*fields))

    def element(self, pgid: int, index: int) -> int:
        """File offset of element `index` of page `pgid`."""
        return pgid * self.page_size + 16 + 16 * index

    def corrupted(self, *fragments: str) -> str:
        with pytest.raises(errors.Corrupted) as exc:
            bolt.open(self.path)
        message = str(exc.value)
        assert str(self.path) in message
        for fragment in fragments:
            assert fragment in message
        return message


@pytest.fixture
def damaged(rich_files, gobolt, tmp_path, reader_impl):
    return Damaged(rich_files, gobolt, tmp_path)


def test_root_beyond_the_high_water_mark(damaged):
    high_water = meta_fields(damaged.path, 0, 4096)[7]
    for page in (0, 1):
        write_meta(damaged.path, page, 4096, root=high_water + 3)
    damaged.corrupted(f"page {high_water + 3} (referenced by the meta's root bucket)",
                      f"beyond the high-water mark {high_water}")


def test_root_on_a_meta_page(damaged):
    for page in (0, 1):
        write_meta(damaged.path, page, 4096, root=1)
    damaged.corrupted("page 1 ", "is a meta page id")


def test_truncated_file(damaged):
    os.truncate(damaged.path, 6 * 4096)
    damaged.corrupted("truncated")


def test_page_of_the_wrong_type(damaged):
    leaf = damaged.live("leaf")
    damaged.set_header(leaf["ID"], flags=0x10)
    damaged.corrupted(f"page {leaf['ID']} ", "is a freelist page where a branch or leaf page belongs")


def test_header_naming_another_page(damaged):
    branch = damaged.live("branch")
    damaged.set_header(branch["ID"], id=branch["ID"] + 1)
    damaged.corrupted(f"page {branch['ID']} ", f"its header names page {branch['ID'] + 1}")


def test_element_outside_its_page(damaged):
    leaf = damaged.live("leaf")
    damaged.poke(damaged.element(leaf["ID"], 0) + 4, struct.pack("<I", 0xFFFFFF))
    damaged.corrupted(f"page {leaf['ID']} ", "leaf element 0", "lies outside")


def test_branch_element_outside_its_page(damaged):
    branch = damaged.live("branch")
    damaged.poke(damaged.element(branch["ID"], 1) + 4, struct.pack("<I", 5000))   # ksize
    damaged.corrupted(f"page {branch['ID']} ", "branch element 1", "lies outside")


def test_absurd_element_count(damaged):
    leaf = damaged.live("leaf")
    damaged.set_header(leaf["ID"], count=0xFFFF)
    damaged.corrupted(f"page {leaf['ID']} ", "65535 leaf elements do not fit in 4096 bytes")


def test_cycle_in_the_page_graph(damaged):
    branch = damaged.live("branch")
    damaged.poke(damaged.element(branch["ID"], 0) + 8, struct.pack("<Q", branch["ID"]))
    damaged.corrupted(f"page {branch['ID']} (referenced by page {branch['ID']})", "reached twice")


def test_shared_page_beyond_the_file(damaged):
    """Two references to one page id past the end of the file: a shared page, found before the range."""
    branch = damaged.live("branch", min_count=2)
    beyond = meta_fields(damaged.path, 0, 4096)[7] + 1000
    for i in (0, 1):
        damaged.poke(damaged.element(branch["ID"], i) + 8, struct.pack("<Q", beyond))
    damaged.corrupted(f"page {beyond} (referenced by page {branch['ID']})", "reached twice")


def test_absurd_overflow(damaged):
    leaf = damaged.live("leaf")
    damaged.set_header(leaf["ID"], overflow=0xFFFFFFFF)
    damaged.corrupted(f"page {leaf['ID']} ", "beyond the high-water mark")


def test_overflow_covering_another_page(damaged):
    ids = sorted(p["ID"] for p in damaged.pages)
    first, second = next((a, b) for a, b in zip(ids, ids[1:]) if b - a <= 3)
    damaged.set_header(first, overflow=second - first)
    damaged.corrupted(f"page {second} lies inside the {second - first + 1} pages of page {first}")


def test_keys_out_of_order_in_a_page(damaged):
    leaf = damaged.live("leaf", min_count=2)
    flags, pos, ksize, vsize = struct.unpack("<IIII", damaged.path.read_bytes()[
        damaged.element(leaf["ID"], leaf["Count"] - 1):][:16])
    damaged.poke(damaged.element(leaf["ID"], leaf["Count"] - 1) + pos, b"\x00")
    damaged.corrupted(f"page {leaf['ID']} ", f"leaf element {leaf['Count'] - 1}", "does not sort after")


def test_keys_out_of_order_across_pages(damaged):
    # the leaf holding the highest keys of bucket "wide" starts below its left neighbour's keys
    data = damaged.path.read_bytes()

    def first_key(pgid):
        elem = damaged.element(pgid, 0)
        _, pos, ksize, _ = struct.unpack("<IIII", data[elem:elem + 16])
        return elem + pos, data[elem + pos:elem + pos + ksize]

    wide = [(first_key(p["ID"])[1], p["ID"]) for p in damaged.pages
            if p["Type"] == "leaf" and first_key(p["ID"])[1].startswith(b"w" * 64)]
    assert len(wide) > 2
    _, pgid = max(wide)
    damaged.poke(first_key(pgid)[0], b"\x00")
    message = damaged.corrupted(f"page {pgid}: leaf key", "does not sort after the previous page's last key")
    assert "..." in message and " bytes)" in message   # long keys are cut in messages


def test_damaged_inline_bucket(damaged):
    data = damaged.path.read_bytes()
    start = -1
    # the key/value data of the inline bucket "inline" (in the live root leaf, and in freed copies)
    while (start := data.find(b"k0v0k1v1k2v2", start + 1)) >= 0:
        page = start - 5 * 16 - 16
        assert HEADER.unpack(data[page:page + 16])[1:3] == (0x02, 5)
        damaged.poke(page + 8, struct.pack("<H", 0x01))
    damaged.corrupted("inline bucket b'inline': holds a branch page")


# -- a writer committing while we read ----------------------------------------------------------------


def test_consistent_snapshots_under_a_committing_writer(gobolt, tmp_path, reader_impl, monkeypatch):
    """bbolt's writer holds its exclusive flock and commits non-stop: every read is one transaction."""
    import fcntl

    path = gobolt.write({"page_size": 4096, "txns": []}, tmp_path / "churn.db")
    static = [(b"static-%04d" % k, b"static-%04d" % k) for k in range(2000)]
    writer = gobolt.churn(path, 60.0)
    try:
        seen, retried, reused, unavailable = [], 0, 0, []
        # as many reads as it takes, on a slow or loaded machine, to see what the assertions below need
        while not (len(seen) > 60 and unavailable and retried and reused and len({g for _, g in seen}) > 10):
            assert writer.poll() is None, f"the writer stopped: {writer.stderr.read()}"
            forced = len(seen) > 50 and not unavailable
            if forced:
                monkeypatch.setattr(reader, "MAX_ATTEMPTS", 1)   # now give up at the first change
            try:
                f = bolt.open(path)
            except errors.Unavailable as exc:
                if forced:  # (a slow reader may also give up on its own after 10 changed reads: allowed)
                    unavailable.append(str(exc))
                    monkeypatch.setattr(reader, "MAX_ATTEMPTS", 10)
                continue
            churn = f.bucket(b"churn")
            if churn is None:
                continue
            values = {value for _, value in churn.items()}
            assert len(churn) == 300 and len(values) == 1, f"a torn read at txid {f.txid}: {sorted(values)[:3]}"
            assert list(f.bucket(b"static").items()) == static
            seen.append((f.txid, int(values.pop())))
            retried += f.stats.attempts > 1
            reused += f.stats.pages_reused
            if len(seen) == 1:   # the writer really holds bbolt's lock while we read
                with open(path, "rb") as fh, pytest.raises(BlockingIOError):
                    fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
    finally:
        if writer.poll() is None:
            writer.kill()
        writer.wait()
    assert len(seen) > 20 and [t for t, _ in seen] == sorted(t for t, _ in seen)
    assert len({gen for _, gen in seen}) > 10
    # retries happened, reusing the pages the newer transaction still had; giving up says why
    assert retried and reused
    assert unavailable and "changed during 1 consecutive reads" in unavailable[0] and str(path) in unavailable[0]


# -- mutations of real files: Corrupted or a consistent read, never anything else ----------------------


@pytest.fixture(scope="session")
def fuzz_files(gobolt, tmp_path_factory):
    """Small rich files and the byte ranges of their meta and live pages, for the fuzzer."""
    out = []
    for page_size in (4096, 8192):
        path = gobolt.write(rich_spec(page_size, wide=300), tmp_path_factory.mktemp("fuzz") / f"f{page_size}.db")
        ranges = [(0, 2 * page_size)] + [
            (p["ID"] * page_size, (p["ID"] + p["OverflowCount"] + 1) * page_size)
            for p in gobolt.pages(path) if p["Type"] in ("branch", "leaf")]
        out.append({"path": str(path), "ranges": ranges, "page_size": page_size})
    return out


def run_fuzzer(fuzz_files, tmp_path, impl_name: str, examples: int, timeout: float) -> dict:
    spec = tmp_path / "fuzz.json"
    spec.write_text(json.dumps({"files": fuzz_files, "examples": examples, "workdir": str(tmp_path)}))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent),
                                                       os.environ.get("PYTHONPATH", "")]))
    env.pop("CARGOHOLD_PUREPYTHON", None)
    if impl_name == "fallback":
        env["CARGOHOLD_PUREPYTHON"] = "1"
    proc = subprocess.run([sys.executable, str(Path(__file__).parent / "bolt_fuzz.py"), str(spec)],
                          capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    outcomes = json.loads(proc.stdout.strip().splitlines()[-1])
    assert outcomes["corrupted"] > 0 and outcomes["read"] > 0   # both outcomes are really exercised
    return outcomes


@pytest.mark.parametrize("impl_name", sorted(IMPLEMENTATIONS))
def test_mutated_files_raise_only_corrupted(fuzz_files, tmp_path, impl_name):
    run_fuzzer(fuzz_files, tmp_path, impl_name, examples=200, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("impl_name", sorted(IMPLEMENTATIONS))
def test_mutated_files_raise_only_corrupted_long(fuzz_files, tmp_path, impl_name, request):
    if "slow" not in (request.config.option.markexpr or ""):
        pytest.skip("about two minutes: runs with -m slow")
    run_fuzzer(fuzz_files, tmp_path, impl_name, examples=5000, timeout=3000)


# -- the compiled page decoders and their pure-Python twins agree ---------------------------------------


def normal(value):
    """A decoder's result with buckets of either implementation turned into comparable tuples."""
    if isinstance(value, (list, tuple)):
        return type(value)(normal(v) for v in value)
    if isinstance(value, dict):
        return {k: normal(v) for k, v in value.items()}
    if hasattr(value, "buckets"):
        return ("bucket", value.sequence, value._root, list(value.items()), normal(dict(value.buckets())))
    return value


def decode_with(impl, buf: bytes, start: int, end: int, count: int, branch: bool, pgid=None):
    try:
        if pgid is not None:   # a leaf's record is internal to each implementation: compare its bucket
            tx = impl.BoltTx(None, 4096, 2**64, 2**64)
            kind, overflow, referenced = tx.add_page(buf, start, end, pgid)
            if kind == BOLT_BRANCH:
                return kind, overflow, pgid, referenced
            for child in referenced:   # sub-buckets held in pages: empty here
                tx.add_page(HEADER.pack(child, 0x02, 0, 0), 0, 16, child)
            return (kind, overflow, pgid), normal(tx.bucket(pgid, 0))
        if branch:
            return impl.bolt_branch(buf, start, end, count)
        return impl.bolt_leaf(buf, start, end, count)
    except errors.Corrupted as exc:
        return ("Corrupted", exc.args)


def test_decoders_agree_on_every_real_page(rich_files):
    compiled = pytest.importorskip("cargohold._core")
    from cargohold import _fallback

    checked = 0
    for page_size, (path, _) in rich_files.items():
        data = path.read_bytes()
        for offset in range(2 * page_size, len(data), page_size):
            _, flags, count, overflow = HEADER.unpack_from(data, offset)
            end = min(len(data), offset + (overflow + 1) * page_size)
            for branch in (True, False):   # free and overflow pages decode too, as either kind
                ours = decode_with(compiled, data, offset, end, count, branch)
                assert ours == decode_with(_fallback, data, offset, end, count, branch), (page_size, offset)
                checked += not (isinstance(ours, tuple) and ours[0] == "Corrupted")
            for pgid in (offset // page_size, offset // page_size + 1):   # whole pages, and a wrong id
                ours = decode_with(compiled, data, offset, end, count, False, pgid)
                assert ours == decode_with(_fallback, data, offset, end, count, False, pgid), (page_size, offset)
    assert checked > 1000


@settings(max_examples=300, deadline=None)
@given(elements=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2**32 - 1), st.integers(0, 300),
                                   st.integers(0, 300), st.integers(0, 2**64 - 1)), max_size=12),
       extra=st.integers(0, 4), keys=st.binary(min_size=0, max_size=600), slack=st.integers(-20, 20),
       start=st.integers(0, 3))
def test_decoders_agree_on_arbitrary_pages(elements, extra, keys, slack, start):
    compiled = pytest.importorskip("cargohold._core")
    from cargohold import _fallback

    count = len(elements) + extra
    table = b"".join(struct.pack("<IIII", flags, pos % 4096, ksize, vsize) for flags, pos, ksize, vsize, _ in elements)
    leaf = bytes(start) + bytes(16) + table + keys
    branch = bytes(start) + bytes(16) + b"".join(
        struct.pack("<IIQ", pos % 4096, ksize, child) for _, pos, ksize, _, child in elements) + keys
    for buf, is_branch in ((leaf, False), (branch, True)):
        end = max(0, min(len(buf), len(buf) + slack))
        for c in (count, len(elements)):
            assert decode_with(compiled, buf, start, end, c, is_branch) == \
                decode_with(_fallback, buf, start, end, c, is_branch)
            # as a whole page: a header of this id, the kind's flags and this count
            page = bytearray(buf)
            page[start:start + 16] = HEADER.pack(7, 0x01 if is_branch else 0x02, c % 65536, 0)
            page = bytes(page)
            assert decode_with(compiled, page, start, end, c, is_branch, pgid=7) == \
                decode_with(_fallback, page, start, end, c, is_branch, pgid=7)


# -- a real containerd's meta.db, read while the daemon holds it ----------------------------------------

CONTAINERD_CONFIG = """\
version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = "{d}/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"""


@pytest.fixture
def containerd(tmp_path):
    """A private containerd (own root, state and sockets under tmp_path); yields (socket, root, process)."""
    import shutil
    import time

    if not (shutil.which("containerd") and shutil.which("ctr")):
        pytest.skip("containerd and ctr are not installed (Debian package containerd)")
    if os.geteuid() != 0:
        pytest.skip("containerd needs root")
    d = tmp_path / "ctrd"
    d.mkdir()
    (d / "config.toml").write_text(CONTAINERD_CONFIG.format(d=d))
    log = open(d / "containerd.log", "wb")
    proc = subprocess.Popen(["containerd", "--config", str(d / "config.toml")], stdout=log, stderr=log)
    sock = d / "containerd.sock"
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(["ctr", "--address", str(sock), "version"], capture_output=True,
                             timeout=30).returncode != 0:
            assert proc.poll() is None, (d / "containerd.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "containerd did not start"
            time.sleep(0.1)
        yield sock, d / "root", proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def ctr(sock, *args) -> None:
    subprocess.run(["ctr", "--address", str(sock), *args], check=True, capture_output=True, timeout=60)


def check_containerd_contents(meta_db, snapshots_db) -> None:
    from cargohold._native import decode_varint

    with bolt.open(meta_db) as f:
        v1 = f.bucket(b"v1")
        assert decode_varint(v1.get(b"version"))[0] == 3   # containerd 1.6's schema
        ns = v1.bucket(b"testns")
        assert ns.bucket(b"labels").get(b"team") == b"bolt"
        lease = ns.bucket(b"leases").bucket(b"lease-1")
        assert lease.bucket(b"labels").get(b"purpose") == b"test" and lease.get(b"createdat")
    with bolt.open(snapshots_db) as f:
        snap = f.bucket(b"v1").bucket(b"snapshots").bucket(b"testns/1/snap-1")
        assert snap is not None and snap.get(b"kind") is not None


def test_containerd_meta_db_while_running_and_after(containerd):
    import fcntl

    sock, root, proc = containerd
    ctr(sock, "namespaces", "create", "testns", "team=bolt")
    ctr(sock, "-n", "testns", "leases", "create", "--id", "lease-1", "--expires", "0", "purpose=test")
    ctr(sock, "-n", "testns", "snapshots", "--snapshotter", "native", "prepare", "snap-1")
    meta_db = root / "io.containerd.metadata.v1.bolt" / "meta.db"
    snapshots_db = root / "io.containerd.snapshotter.v1.native" / "metadata.db"
    with open(meta_db, "rb") as fh, pytest.raises(BlockingIOError):
        fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)   # containerd holds bbolt's exclusive lock
    # while it runs: containerd itself may commit (its GC), so look for a window in which it did not
    for _ in range(20):
        before = fingerprint(meta_db), fingerprint(snapshots_db)
        check_containerd_contents(meta_db, snapshots_db)
        if (fingerprint(meta_db), fingerprint(snapshots_db)) == before:
            break
    else:
        pytest.fail("meta.db changed during every one of 20 reads")
    proc.terminate()
    assert proc.wait(timeout=30) == 0
    before = fingerprint(meta_db), fingerprint(snapshots_db)
    check_containerd_contents(meta_db, snapshots_db)
    assert (fingerprint(meta_db), fingerprint(snapshots_db)) == before
