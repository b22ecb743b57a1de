"""Bad input to `open_root`: every case a clear cargohold error (or an fsck finding), never a crash
or a hang, and nothing written.

Damaged copies of a real containerd 1.6 meta.db (truncated, zero-filled,
bit-flipped), files that are not containerd metadata, and hand-made bbolt
files (written by bbolt itself, tests/gobolt) for a newer db version, a
version-4 (containerd 2.x) layout and malformed records.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from datetime import datetime, timezone

import pytest

import cargohold.containerd as ctrd
from cargohold.containerd import fsck, usage
from cargohold.errors import Corrupted, Error, InvalidArgument, NotFound, Unsupported
from cargohold.model import Node, ResourceType
from boltutil import Missing, build_gobolt
from ctrd_records import digest_of, gotime, tree_spec, varint
from containerd_daemon import META_DB, image_archive, layer, start_daemon


@pytest.fixture(scope="module")
def gobolt(tmp_path_factory):
    try:
        return build_gobolt(tmp_path_factory.mktemp("gobolt-ctrd"))
    except Missing as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def real_root(tmp_path_factory):
    """A stopped containerd root: an unpacked image, a container, a lease."""
    base = tmp_path_factory.mktemp("bad-input")
    d = start_daemon(str(base / "d"))
    try:
        image_archive(str(base / "a.tar"), "example.com/a:1", [layer({"a": b"1"}), layer({"b": b"2"})])
        d.ctr("images", "import", "--snapshotter", "native", str(base / "a.tar"))
        d.ctr("containers", "create", "--snapshotter", "native", "example.com/a:1", "web")
        d.ctr("leases", "create", "--id", "l1", "x=y")
    finally:
        d.stop()
    return d.root


def _everything(path) -> None:
    """Every read the API offers."""
    with ctrd.open_root(path) as host:
        for ns in host.namespaces():
            host.images(ns), host.containers(ns), host.sandboxes(ns), host.content(ns), host.ingests(ns)
            for lease in host.leases(ns):
                host.lease_resources(ns, lease.id)
            for snapshotter in host.snapshotters(ns):
                host.snapshots(ns, snapshotter)
        host.nodes(), host.unreachable()
        if host.root:
            usage.du(host), fsck.check(host)


def _digest(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _damaged(real_root, tmp_path, damage) -> str:
    meta = str(tmp_path / "meta.db")
    shutil.copyfile(os.path.join(real_root, META_DB), meta)
    with open(meta, "r+b") as f:
        damage(f, os.path.getsize(meta))
    return meta


@pytest.mark.parametrize("damage", ["truncate-half", "truncate-page", "zero-fill", "zero-metas"])
def test_damaged_files_are_corrupted(real_root, tmp_path, damage):
    def apply(f, size):
        if damage == "truncate-half":
            f.truncate(size // 2)
        elif damage == "truncate-page":
            f.truncate(4096 * 3 + 100)
        elif damage == "zero-fill":
            f.write(b"\0" * size)
        else:
            f.write(b"\0" * 8192)

    meta = _damaged(real_root, tmp_path, apply)
    before = _digest(meta)
    with pytest.raises(Corrupted):
        _everything(meta)
    assert _digest(meta) == before


def _flip_test(real_root, tmp_path, positions) -> dict:
    outcomes = {"ok": 0, "error": 0}
    for i, position in enumerate(positions):
        meta = _damaged(real_root, tmp_path, lambda f, size: None)
        with open(meta, "r+b") as f:
            f.seek(position)
            byte = f.read(1)
            f.seek(position)
            f.write(bytes([byte[0] ^ (1 << (i % 8))]))
        before = _digest(meta)
        try:
            _everything(meta)
            outcomes["ok"] += 1
        except Error:
            outcomes["error"] += 1   # anything else escaping is a bug: the test fails with it
        assert _digest(meta) == before
    return outcomes


def test_bit_flips_fail_cleanly(real_root, tmp_path):
    size = os.path.getsize(os.path.join(real_root, META_DB))
    rng = random.Random(7)
    outcomes = _flip_test(real_root, tmp_path, [rng.randrange(size) for _ in range(40)])
    assert sum(outcomes.values()) == 40


@pytest.mark.slow
def test_bit_flips_everywhere_fail_cleanly(real_root, tmp_path):
    """One flip in every 97th byte of the whole file (metas, branches, leaves, free pages)."""
    meta = os.path.join(real_root, META_DB)
    outcomes = _flip_test(real_root, tmp_path, range(0, os.path.getsize(meta), 97))
    assert outcomes["error"] > 0


def test_not_bbolt_at_all(tmp_path):
    junk = tmp_path / "meta.db"
    junk.write_bytes(random.Random(1).randbytes(20000))
    with pytest.raises(Corrupted):
        ctrd.open_root(junk)
    text = tmp_path / "text.db"
    text.write_text("not a database\n" * 100)
    with pytest.raises(Corrupted):
        ctrd.open_root(text)
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with pytest.raises(Corrupted):
        ctrd.open_root(empty)


def test_other_bbolt_schemas(real_root, gobolt, tmp_path):
    snapshotter_db = os.path.join(real_root, "io.containerd.snapshotter.v1.native", "metadata.db")
    with pytest.raises(Corrupted, match="no db version"):
        ctrd.open_root(snapshotter_db)
    other = gobolt.write(tree_spec({b"settings": {b"a": b"b"}}), tmp_path / "other.db")
    with pytest.raises(Corrupted, match="no v1 bucket"):
        ctrd.open_root(other)


def test_newer_db_version_is_refused(gobolt, tmp_path):
    newer = gobolt.write(tree_spec({b"v1": {b"version": varint(5), b"default": {b"labels": {}}}}), tmp_path / "v5.db")
    with pytest.raises(Unsupported, match="db version 5"):
        ctrd.open_root(newer)


def test_paths(tmp_path):
    with pytest.raises(NotFound, match="not a containerd root"):
        ctrd.open_root(tmp_path)
    with pytest.raises(NotFound, match="does not exist"):
        ctrd.open_root(tmp_path / "nowhere")
    with pytest.raises(InvalidArgument):
        ctrd.open_root(42)
    with pytest.raises(InvalidArgument):
        ctrd.open_root(tmp_path, rules="3.x")


def test_cli_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        from cargohold.cli.main import main
        main(["containerd", "ls", "images", "--root-dir", str(tmp_path)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cargohold: NotFound: ") and str(tmp_path) in err


def test_missing_snapshot_directory_is_an_fsck_finding(real_root, tmp_path):
    import subprocess

    copy = str(tmp_path / "root")
    subprocess.run(["cp", "-a", real_root, copy], check=True)
    with ctrd.open_root(copy) as host:
        backend = host.backend("native")
        record = next(r for r in host.snapshot_records("default", "native") if r.key == "web")
        shutil.rmtree(backend.snapshot_dir(backend.get(record.backend_key).id))
        blob = host.content("default")[0].digest
        os.unlink(host.content_dir.blob_path(blob))
    with ctrd.open_root(copy) as host:
        found = {(f.kind, f.name) for f in fsck.check(host)}
        assert (fsck.MISSING_SNAPSHOT_DIR, "web") in found
        assert (fsck.MISSING_BLOB, blob) in found
        assert [s.name for s in host.snapshots("default", "native") if s.name == "web"] == ["web"]


# -- hand-made databases -------------------------------------------------------------------------


PAST = datetime(2020, 1, 1, tzinfo=timezone.utc)


def _v4_tree() -> dict:
    """A containerd 2.x database: sandboxes in v1, an expired image, an image lease resource."""
    kept, gone, leased = digest_of(b"kept"), digest_of(b"gone"), digest_of(b"leased")
    blob = {b"size": varint(4), b"createdat": gotime(PAST), b"updatedat": gotime(PAST)}

    def image(digest, labels=None):
        out = {b"target": {b"digest": digest, b"mediatype": b"application/vnd.oci.image.manifest.v1+json",
                           b"size": varint(4)}, b"createdat": gotime(PAST), b"updatedat": gotime(PAST)}
        if labels:
            out[b"labels"] = labels
        return out

    return {b"v1": {b"version": varint(4), b"default": {
        b"labels": {b"owner": b"me"},
        b"images": {b"kept:1": image(kept), b"old:1": image(gone, {b"containerd.io/gc.expire": b"2021-01-01T00:00:00Z"}),
                    b"leased:1": image(leased, {b"containerd.io/gc.expire": b"2021-01-01T00:00:00Z"})},
        b"content": {b"blob": {kept: dict(blob), gone: dict(blob), leased: dict(blob)}},
        b"sandboxes": {b"pod": {b"createdat": gotime(PAST), b"updatedat": gotime(PAST), b"sandboxer": b"shim",
                                b"runtime": {b"name": b"io.containerd.runc.v2"},
                                b"labels": {b"containerd.io/gc.ref.content": kept}}},
        b"leases": {b"hold": {b"createdat": gotime(PAST), b"images": {b"leased:1": b""}}},
    }}}


def test_db_version_4_layout_and_rules(gobolt, tmp_path):
    path = gobolt.write(tree_spec(_v4_tree()), tmp_path / "v4.db")
    with ctrd.open_root(path) as host:
        assert (host.db_version, host.rules, host.root) == (4, "2.x", None)
        assert host.namespace_labels("default") == {"owner": "me"}
        [pod] = host.sandboxes("default")
        assert (pod.id, pod.sandboxer, pod.runtime.name, pod.created_at) == ("pod", "shim", "io.containerd.runc.v2", PAST)
        assert host.lease_resources("default", "hold")[0].type == "images"
        gone = Node(ResourceType.CONTENT, "default", digest_of(b"gone").decode())
        assert host.unreachable() == [gone, Node(ResourceType.IMAGE, "default", "old:1")]
        assert host.explain(Node(ResourceType.CONTENT, "default", digest_of(b"leased").decode()))[0] == \
            Node(ResourceType.LEASE, "default", "hold")
    with ctrd.open_root(path, rules="1.x") as host:   # 1.x: images never expire, no image leases
        assert host.unreachable() == []


@pytest.mark.parametrize("record, message", [
    ({b"images": {b"x": {b"createdat": gotime(PAST)}}}, "has no target"),
    ({b"images": {b"x": {b"target": {b"digest": b"sha256:00", b"size": b"\xff"}}}}, "not a varint"),
    ({b"images": {b"x": {b"target": {}, b"createdat": b"\x07junk"}}}, "not a Go binary time"),
    ({b"images": {b"x": {b"target": {}, b"labels": {b"k": {b"nested": b"v"}}}}}, "is a bucket"),
    ({b"images": {b"x": {b"target": {}, b"labels": {b"k": b"\xff\xfe"}}}}, "not UTF-8"),
    ({b"containers": {b"c": {b"spec": b"\x0a\xff"}}}, "protobuf"),
    ({b"images": {b"x": {b"target": b"a value"}}}, "is a value"),
])
def test_malformed_records_are_named(gobolt, tmp_path, record, message):
    path = gobolt.write(tree_spec({b"v1": {b"version": varint(3), b"default": record}}), tmp_path / "bad.db")
    with ctrd.open_root(path) as host:
        with pytest.raises(Corrupted, match=message):
            host.images("default") if b"images" in record else host.containers("default")


def test_db_version_3_sandboxes_outside_v1(gobolt, tmp_path):
    """containerd 1.7 wrote sandboxes to <ns>/sandboxes, outside v1: listed there, never roots."""
    held = digest_of(b"held")
    tree = {b"v1": {b"version": varint(3), b"default": {
                b"content": {b"blob": {held: {b"size": varint(4)}}}}},
            b"default": {b"sandboxes": {b"pod": {b"sandboxer": b"", b"runtime": {b"name": b"io.containerd.runc.v2"},
                                                  b"labels": {b"containerd.io/gc.ref.content": held}}}}}
    path = gobolt.write(tree_spec(tree), tmp_path / "v3.db")
    with ctrd.open_root(path) as host:
        assert [s.id for s in host.sandboxes("default")] == ["pod"]
        assert host.unreachable() == [Node(ResourceType.CONTENT, "default", held.decode())]
