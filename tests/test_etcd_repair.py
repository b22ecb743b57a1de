"""`fsck --repair` on one host of a fleet (two hosts on one etcd prefix, the same snapshot keys on
both, `cargohold.snapshots.scope`): the findings about this host's snapshotter name it as the
shared metadata keys it (``snapshots/native@<scope>``), the repair maps that back to this host's
backend, and it rebuilds, drops and prunes only this host's records and directories. The other
host's rows in the shared metadata and its snapshot directories stay byte for byte as they were."""

from __future__ import annotations

import os
import shutil

import pytest

import cargohold
from cargohold import schema
from cargohold.integrity import findings as f
from cargohold.model import Container, ResourceType, RuntimeInfo
from cargohold.snapshots import storage

from cliutil import subprocess_run
from fleetutil import NS, build, open_host

EXTRA = "lost-backend"
"""A snapshot both hosts have, whose backend snapshot one host loses."""


@pytest.fixture
def fleet(tmp_path, etcd_url):
    content = str(tmp_path / "content")
    hosts = [open_host(str(tmp_path / name), content, etcd_url) for name in ("host-a", "host-b")]
    for db, name in zip(hosts, "ab"):
        build(db, name)
        db.namespace(NS).snapshotter("native").prepare(EXTRA)
    yield hosts
    for db in hosts:
        db.close()


def rows(db, stored: str) -> dict:
    """Every row of the shared metadata that names snapshotter `stored` (in its key or value): its
    records, child links, node-table entries, id counter, dirty marker and backend records."""
    needle = stored.encode()
    with db.view() as tx:
        return {(table, key): value for table in schema.TABLES for key, value in tx.kv.scan(table)
                if needle in key or needle in value}


def tree(db) -> dict:
    """Every file and directory of the host's snapshot root: mode, mtime and bytes (or link target)."""
    root = db.snapshotter_backend("native").root
    out = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(top, name)
            st = os.lstat(path)
            if os.path.islink(path):
                data = os.readlink(path)
            elif os.path.isfile(path):
                with open(path, "rb") as fh:
                    data = fh.read()
            else:
                data = None
            out[os.path.relpath(path, root)] = (st.st_mode, st.st_mtime_ns, data)
    return out


def other_host(db) -> tuple:
    """What must not change on host `db` while another host repairs."""
    return rows(db, db.stored_snapshotter("native")), tree(db)


def record(db, key: str) -> dict:
    with db.view() as tx:
        raw = tx.kv.get(schema.T_OBJECTS, schema.object_key(NS, schema.K_SNAPSHOT, db.stored_snapshotter("native"), key))
    return schema.unpack(raw)


def snapshot_dir(db, key: str) -> str:
    backend = db.snapshotter_backend("native")
    return backend.snapshot_dir(backend.snapshot_id(record(db, key)["b"]))


def problems(report) -> set:
    return {(x.kind, x.store, x.key, x.repair) for x in report.problems}


def walk(db) -> list:
    return sorted(info.name for info in db.namespace(NS).snapshotter("native").walk())


def test_records_whose_data_is_gone_are_dropped_and_orphans_pruned_on_that_host_only(fleet):
    a, b = fleet
    mine, store = a.stored_snapshotter("native"), f"snapshots/{a.stored_snapshotter('native')}"
    os.makedirs(os.path.join(b.snapshotter_backend("native").root, "snapshots", "99999"))  # b's own stray
    b_report = problems(b.fsck())
    backend = a.snapshotter_backend("native")
    shutil.rmtree(snapshot_dir(a, "orphan"))  # a record whose directory is gone
    with backend._store.write() as txn:  # a record whose backend snapshot is gone
        storage.remove(txn, record(a, EXTRA)["b"])
    stray = os.path.join(backend.root, "snapshots", "99999")  # a directory no record owns
    os.makedirs(stray)
    b_before = other_host(b)

    report = a.fsck(repair=True, prune_orphans=True)
    found = {(x.kind, x.store, x.key, x.repair) for x in report.findings}  # notes too: a's backend is dirty
    assert {(f.MISSING_SNAPSHOT_DIR, store, "orphan", f.DROP), (f.MISSING_BACKEND_SNAPSHOT, store, EXTRA, f.DROP),
            (f.UNOWNED_SNAPSHOT_DIR, store, "99999", f.PRUNE), (f.DIRTY_BACKEND, store, mine, "")} <= found
    assert {x[1] for x in found} == {store}  # nothing about b's backend, not even its dirty marker
    assert all(r.done for r in report.repairs), [(r.finding.key, r.message) for r in report.repairs]
    assert {(r.action, r.finding.key) for r in report.repairs} >= {("drop", "orphan"), ("drop", EXTRA),
                                                                   ("prune", "99999")}

    assert walk(a) == ["base", "work"] and not os.path.exists(stray)
    assert walk(b) == sorted(["base", "orphan", "work", EXTRA])
    assert other_host(b) == b_before  # b's rows and directories byte for byte, its stray dir too
    assert problems(a.fsck()) == set()
    assert problems(b.fsck()) == b_report
    with a.view() as tx:  # the drops left this host's snapshotter dirty (b's marker is in b_before)
        assert tx.kv.get(schema.T_META, schema.META_DIRTY_SNAPSHOTTER + mine.encode()) is not None


def test_derived_rows_are_rebuilt_under_that_hosts_scope_only(fleet):
    a, b = fleet
    mine = a.stored_snapshotter("native")
    a_before, b_report = rows(a, mine), problems(b.fsck())
    base, work = record(a, "base"), record(a, "work")
    sequence = schema.META_SEQUENCE + f"snapshots/{mine}".encode()
    with a._env.write() as txn:  # what a bug or a hand edit would do to this host's derived rows
        txn.delete(schema.T_GC, schema.pack_node(ResourceType.SNAPSHOT, NS, f"{mine}/base"))
        txn.delete(schema.T_OBJECTS, schema.object_key(NS, schema.K_SNAPSHOT_CHILD, mine, str(work["pi"]), "work"))
        txn.put(schema.T_META, sequence, cargohold._native.encode_varint(1))
    b_before = other_host(b)

    report = a.fsck(repair=True)
    store = f"snapshots/{mine}"
    assert problems(report) == {(f.MISSING_NODE, store, "base", f.REBUILD), (f.MISSING_CHILD_LINK, store, "work", f.REBUILD),
                                (f.SEQUENCE_BEHIND, store, mine, f.REBUILD)}
    assert all(r.done for r in report.repairs), [(r.finding.key, r.message) for r in report.repairs]

    after = rows(a, mine)
    highest = max(record(a, key)["i"] for key in walk(a))
    assert cargohold._native.decode_varint(after.pop((schema.T_META, sequence)))[0] == highest >= base["i"]
    a_before.pop((schema.T_META, sequence))
    assert after == a_before  # the node entry and the link, as they were
    assert other_host(b) == b_before
    assert problems(a.fsck()) == set() and problems(b.fsck()) == b_report
    a.namespace(NS).snapshotter("native").prepare("after-repair", "base")  # a fresh id, not one in use


def test_a_snapshot_the_other_host_references_by_name_is_left_as_lost(fleet):
    """A reference by name keeps every host's snapshot of that name (the collector's rule), so the
    repair leaves this host's record of it, reported lost, as a collection would keep it."""
    a, b = fleet
    b.namespace(NS).containers.create(Container("uses-orphan", RuntimeInfo("io.containerd.runc.v2"),
                                                snapshotter="native", snapshot_key="orphan"))
    shutil.rmtree(snapshot_dir(a, "orphan"))
    a_rows, b_before = rows(a, a.stored_snapshotter("native")), other_host(b)

    report = a.fsck(repair=True)
    (lost,) = report.problems
    assert (lost.kind, lost.store, lost.key, lost.repair) == (
        f.MISSING_SNAPSHOT_DIR, f"snapshots/{a.stored_snapshotter('native')}", "orphan", "")
    assert "a root reaches it" in lost.detail and report.repairs == []
    assert rows(a, a.stored_snapshotter("native")) == a_rows and other_host(b) == b_before
    assert "orphan" in walk(a) and "orphan" in walk(b)


def test_fsck_repair_from_the_command_line_repairs_that_host_only(fleet, etcd_url):
    a, b = fleet
    mine = a.stored_snapshotter("native")
    shutil.rmtree(snapshot_dir(a, "orphan"))
    b_before = other_host(b)
    host = os.path.dirname(os.path.dirname(a.snapshotter_backend("native").root))
    proc = subprocess_run(host, "--metadata", etcd_url, "fsck", "--repair")
    out = proc.stdout.decode()
    assert proc.returncode == 0, (out, proc.stderr)
    assert f"drop {f.MISSING_SNAPSHOT_DIR} {NS} snapshots/{mine} orphan: done" in out
    assert b.stored_snapshotter("native") not in out
    assert walk(a) == sorted(["base", "work", EXTRA]) and "orphan" in walk(b)
    assert other_host(b) == b_before
