"""`import_root` makes a cargohold root holding exactly the state of a containerd root.

The source is built by a private containerd 1.6 (native and overlayfs unpacked
layers with owners, modes, xattrs, hard links, symlinks, devices and
whiteouts; containers; leases with resources; ingests; garbage) and stopped.
After the import: every listing matches, blobs are hard links (or copies with
--copy) with verified digests, snapshot trees are identical, cargohold's own
``gc --dry-run`` names what ``cargohold containerd gc --dry-run`` named, and
the source is unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat

import pytest

import cargohold
import cargohold.containerd as ctrd
from cargohold.cli.main import cli
from cargohold.errors import AlreadyExists, Corrupted, FailedPrecondition
from cargohold.model import Kind
from containerd_daemon import Api, needs_containerd, start_daemon, unmount_under
from oci_fixtures import Layer

pytestmark = needs_containerd


def _rich_layer() -> bytes:
    layer = Layer()
    layer.dir("etc").dir("srv", mode=0o750, uid=1000, gid=1000)
    layer.file("etc/conf", b"key=value\n", mode=0o640, uid=0, gid=42, xattrs={"user.note": "kept"})
    layer.file("srv/tool", b"#!/bin/sh\n", mode=0o4755, uid=1000, gid=1000)
    layer.hardlink("srv/tool-again", "srv/tool")
    layer.symlink("srv/link", "../etc/conf")
    layer.fifo("srv/pipe")
    layer.chardev("srv/null", 1, 3)
    layer.file("old", b"to be whited out")
    return layer.bytes()


def _upper_layer() -> bytes:
    layer = Layer()
    layer.whiteout("old")
    layer.dir("etc", mode=0o755)
    layer.opaque("etc")
    layer.file("etc/new", b"replaced")
    return layer.bytes()


def _archive(path: str, name: str) -> None:
    from cargohold.oci.build import write_image

    write_image(path, name, [_rich_layer(), _upper_layer()])


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A stopped containerd root and what the test needs to know of it."""
    base = tmp_path_factory.mktemp("import-src")
    d = start_daemon(str(base / "d"))
    api = Api(d.address)
    try:
        _archive(str(base / "rich.tar"), "example.com/rich:1")
        d.ctr("namespaces", "create", "other", "team=storage")
        d.ctr("images", "import", "--snapshotter", "native", str(base / "rich.tar"))
        d.ctr("images", "import", "--snapshotter", "overlayfs", str(base / "rich.tar"), namespace="other")
        d.ctr("images", "label", "example.com/rich:1", "team=infra")
        d.ctr("containers", "create", "--snapshotter", "native", "--label", "app=web", "example.com/rich:1", "web")
        d.ctr("containers", "create", "--snapshotter", "overlayfs", "example.com/rich:1", "db", namespace="other")
        d.ctr("content", "ingest", "garbage", input=b"nobody holds me")
        d.ctr("leases", "create", "--id", "build", "--expires", "2h", "purpose=build")
        d.ctr("content", "ingest", "held", input=b"a lease holds me")
        api.lease_add("build", "sha256:" + hashlib.sha256(b"a lease holds me").hexdigest(), "content")
        api.lease_add("build", "web", "snapshots/native")
        api.write("in-lease", b"half of it", lease="build", commit=False)
        api.write("no-lease", b"some bytes", commit=False)
        committed = [line.split()[0] for line in d.ctr_lines("snapshots", "--snapshotter", "overlayfs", "ls",
                                                             namespace="other") if line.split()[-1] == "Committed"]
        d.ctr("snapshots", "--snapshotter", "overlayfs", "view", "peek", committed[0], namespace="other")
    finally:
        api.close()
        unmount_under(str(base))
        d.stop()
    with ctrd.open_root(d.root) as host:   # the container "web" writes into its active snapshot
        record = {r.key: r for r in host.snapshot_records("default", "native")}["web"]
        backend = host.backend("native")
        with open(os.path.join(backend.tree_dir(backend.get(record.backend_key).id), "by-container"), "w") as f:
            f.write("runtime data")
    return d.root


def _state(root: str) -> dict:
    """Path → (mode, uid, gid, size, mtime, content hash or link target) of a tree, for "unchanged" checks."""
    out = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            digest = None
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                digest = os.readlink(path)
            out[os.path.relpath(path, root)] = (st.st_mode, st.st_uid, st.st_gid, st.st_size,
                                                st.st_mtime_ns if not stat.S_ISDIR(st.st_mode) else None, digest)
    return out


def tree(root: str) -> dict:
    """Everything a snapshot tree must keep: types, modes, owners, times, bytes, links, devices, xattrs."""
    out, inodes = {}, {}
    for directory, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            entry = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid, "mtime": st.st_mtime_ns,
                     "xattrs": {x: os.getxattr(path, x, follow_symlinks=False)
                                for x in sorted(os.listxattr(path, follow_symlinks=False))}}
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    entry["data"] = f.read()
                inodes.setdefault(st.st_ino, []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                entry["target"] = os.readlink(path)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                entry["rdev"] = st.st_rdev
            out[rel] = entry
    out[":links"] = sorted(sorted(paths) for paths in inodes.values() if len(paths) > 1)
    return out


@pytest.fixture(scope="module")
def imported(source, tmp_path_factory):
    before = _state(source)
    dest = str(tmp_path_factory.mktemp("import-dst") / "cargohold")
    report = ctrd.import_root(source, dest)
    return {"dest": dest, "report": report, "before": before}


def test_report_and_source_unchanged(source, imported):
    report = imported["report"]
    assert report.namespaces == ["default", "other"]
    assert report.images == 2 and report.containers == 2 and report.leases == 1 and report.ingests == 2
    assert report.linked == report.blobs > 0 and report.copied == 0
    assert _state(source) == imported["before"]


def test_listings_match(source, imported):
    with ctrd.open_root(source) as host, cargohold.open(imported["dest"]) as db:
        assert db.namespaces.list() == host.namespaces()
        for ns in host.namespaces():
            handle = db.namespace(ns)
            assert db.namespaces.labels(ns) == host.namespace_labels(ns)
            assert handle.images.list() == host.images(ns)  # snapshotters and labels keep containerd's names
            assert handle.containers.list() == host.containers(ns)
            assert handle.leases.list() == host.leases(ns)
            for lease in host.leases(ns):
                assert set(handle.leases.list_resources(lease.id)) == set(host.lease_resources(ns, lease.id))
            assert sorted(handle.content.walk(), key=lambda i: i.digest) == host.content(ns)
            ours = {s.ref: (s.offset, s.total, s.expected) for s in handle.content.statuses()}
            assert ours == {s.ref: (s.offset, s.total, s.expected) for s in host.ingests(ns)}
            for snapshotter in host.snapshotters(ns):
                ours = {i.name: (i.parent, i.kind, i.labels) for i in handle.snapshotter(snapshotter).walk()}
                assert ours == {i.name: (i.parent, i.kind, i.labels) for i in host.snapshots(ns, snapshotter)}


def test_blobs_are_verified_hard_links(source, imported):
    with ctrd.open_root(source) as host, cargohold.open(imported["dest"]) as db:
        for info in host.content("default"):
            theirs, ours = host.content_dir.blob_path(info.digest), db.content_store.blob_path(info.digest)
            assert os.stat(theirs).st_ino == os.stat(ours).st_ino


def test_snapshot_trees_are_identical(source, imported):
    with ctrd.open_root(source) as host, cargohold.open(imported["dest"]) as db:
        compared = 0
        for ns in host.namespaces():
            for snapshotter in host.snapshotters(ns):
                backend = host.backend(snapshotter)
                name = snapshotter
                ours = db.snapshotters[name]
                for record in host.snapshot_records(ns, snapshotter):
                    found = backend.get(record.backend_key)
                    if found.kind == Kind.VIEW:
                        continue
                    mine = _backend_tree_dir(db, ns, name, record.key, ours)
                    assert tree(backend.tree_dir(found.id)) == tree(mine), (ns, snapshotter, record.key)
                    compared += 1
        assert compared >= 6


def _backend_tree_dir(db, ns: str, name: str, key: str, backend) -> str:
    """The directory of cargohold's snapshot `key` in namespace `ns` (its upper ``fs`` for overlay)."""
    from cargohold import schema

    with db.view() as tx:
        record = schema.unpack(tx.kv.get(schema.T_OBJECTS, schema.object_key(ns, schema.K_SNAPSHOT, name, key)))
    with backend._store.read() as txn:
        from cargohold.snapshots import storage

        snapshot_id = storage.get_info(txn, record["b"])[0]
    directory = backend.snapshot_dir(snapshot_id)
    return os.path.join(directory, "fs") if os.path.isdir(os.path.join(directory, "fs")) else directory


def _cli_json(runner_args) -> object:
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, runner_args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_cargohold_gc_plans_what_containerd_would(source, imported):
    theirs = [n for n in _cli_json(["containerd", "gc", "--dry-run", "--json", "--root-dir", source])
              if n["namespace"] is not None]
    ours = [n for n in _cli_json(["--root", imported["dest"], "gc", "--dry-run", "--json"]) if n["namespace"] is not None]
    planned = [(n["type"], n["namespace"], n["key"]) for n in theirs]
    assert sorted(planned) == sorted((n["type"], n["namespace"], n["key"]) for n in ours)
    assert len(planned) >= 3   # the garbage blob, the two index.json blobs


def test_copy_makes_copies(source, tmp_path):
    report = ctrd.import_root(source, str(tmp_path / "copied"), copy=True)
    assert report.copied == report.blobs and report.linked == 0
    with ctrd.open_root(source) as host, cargohold.open(str(tmp_path / "copied")) as db:
        digest = host.content("default")[0].digest
        theirs, ours = host.content_dir.blob_path(digest), db.content_store.blob_path(digest)
        assert os.stat(theirs).st_ino != os.stat(ours).st_ino
        assert open(theirs, "rb").read() == open(ours, "rb").read()


def _copy_root(source: str, tmp_path) -> str:
    """A copy of the source root (devices and fifos included) to damage."""
    import subprocess

    copy = str(tmp_path / "src")
    subprocess.run(["cp", "-a", source, copy], check=True)
    return copy


def test_a_damaged_blob_fails_the_import_and_leaves_nothing(source, tmp_path):
    copy = _copy_root(source, tmp_path)
    with ctrd.open_root(copy) as host:
        digest = host.content("default")[0].digest
        path = host.content_dir.blob_path(digest)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 0x01]))
    dest = tmp_path / "dest"
    with pytest.raises(Corrupted, match=digest):
        ctrd.import_root(copy, str(dest))
    assert not dest.exists() and os.listdir(tmp_path) == ["src"]


def test_a_missing_snapshot_directory_fails_the_import(source, tmp_path):
    copy = _copy_root(source, tmp_path)
    with ctrd.open_root(copy) as host:
        record = host.snapshot_records("default", "native")[0]
        found = host.backend("native").get(record.backend_key)
        shutil.rmtree(host.backend("native").snapshot_dir(found.id))
    with pytest.raises(FailedPrecondition, match="is gone"):
        ctrd.import_root(copy, str(tmp_path / "dest"))
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_destination_must_be_new(source, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(AlreadyExists):
        ctrd.import_root(source, str(tmp_path / "full"))


def test_the_new_root_is_on_disk_before_it_becomes_the_destination(source, tmp_path):
    """The import's records name blobs linked in without a flush of their directory: the work
    tree is flushed (syncfs) after the last blob is placed and before it is renamed to the
    destination, and that rename is flushed (an fsync of the destination's parent) before the
    import returns."""
    import re
    import subprocess
    import sys

    from crashutil import strace

    dest = tmp_path / "dest"
    log = tmp_path / "trace"
    code = "import sys, cargohold.containerd as c; c.import_root(sys.argv[1], sys.argv[2])"
    proc = subprocess.run([strace(), "-f", "-qq", "-y", "-o", str(log), "-e",
                           "trace=rename,renameat,renameat2,syncfs,fsync", sys.executable, "-c", code,
                           source, str(dest)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = log.read_text().splitlines()
    placed = [i for i, line in enumerate(lines) if re.search(r"\brename\w*\(", line) and ".import-" in line
              and "/content/blobs/" in line]
    final = [i for i, line in enumerate(lines) if re.search(r"\brename\w*\(", line) and f'"{dest}"' in line]
    assert placed and len(final) == 1, lines
    assert any("syncfs(" in line for line in lines[placed[-1]:final[0]]), lines[placed[-1]:final[0] + 1]
    assert any("fsync(" in line and f"<{tmp_path}>" in line for line in lines[final[0]:]), lines[final[0]:]
