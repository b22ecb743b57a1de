"""Whole tables read from LMDB's pages (`Marker.add_nodes_mapped`, ``_ext/lmdbpages.pxi`` and its
twin `_fallback._lm_rows`): the same rows, in the same order, as LMDB's own cursor, on real
data files; damaged pages are Corrupted; a format the reader does not know loads nothing."""

from __future__ import annotations

import mmap
import os
import shutil

import pytest

from cargohold import Resource, _fallback, errors, schema
from cargohold.gc import index
from cargohold.gc.labels import LabelRefs
from cargohold.kv import Env
from cargohold.model import ResourceType as RT
from conftest import IMPLEMENTATIONS

TABLES = (schema.T_GC, schema.T_LEASERES)
NOW = 1_000_000_000_000


def _entries(count: int) -> dict:
    """Node-table entries: chains of snapshots, images on blobs, leases; every 50th one is too big
    for a page (its value goes to overflow pages)."""
    entries = {}
    for i in range(count):
        blob = schema.pack_node(RT.CONTENT, "ns", f"sha256:{i:064x}")
        snap = schema.pack_node(RT.SNAPSHOT, "ns", f"native/snapshot-{i}")
        parent = [schema.pack_node(RT.SNAPSHOT, "ns", f"native/snapshot-{i - 1}")] if i % 7 else []
        refs = LabelRefs(refs=[blob])
        if i % 50 == 0:
            refs.refs.extend(schema.pack_node(RT.CONTENT, "ns", f"sha256:{j:064x}") for j in range(60))
        entries[blob] = index.encode()
        entries[snap] = index.encode(strong=parent, refs=refs, usedat=[NOW - i])
        if i % 3 == 0:
            entries[schema.pack_node(RT.IMAGE, "ns", f"image-{i}")] = index.encode(root=True, strong=[blob])
        if i % 11 == 0:
            entries[schema.pack_node(RT.LEASE, "ns", f"lease-{i}")] = index.encode(root=True, expire=NOW + i)
    return entries


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """A real environment: the node table several levels deep, with overflow values, a few
    lease rows; returns its path and what was written."""
    path = tmp_path_factory.mktemp("pages") / "env"
    entries = _entries(4000)
    rows = {schema.lease_resource_key("ns", f"lease-{i}", RT.SNAPSHOT, f"native/snapshot-{i}"): b""
            for i in range(0, 4000, 11)}
    env = Env(path, TABLES, map_size=1 << 24)
    with env.write() as txn:
        for key, value in entries.items():
            txn.put(schema.T_GC, key, value)
        for key, value in rows.items():
            txn.put(schema.T_LEASERES, key, value)
    env.close()
    return path, entries, rows


def _mapped(txn, table):
    where = txn.table_file(table)
    with open(where.path, "rb") as data:
        return where, mmap.mmap(data.fileno(), 0, access=mmap.ACCESS_READ)


def _outputs(marker):
    marker.mark(NOW, [])
    return (marker.node_count, marker.edge_count, marker.live_leases(NOW), marker.unreachable(),
            marker.reachable(), [marker.chain(k) for k in marker.reachable()[::97]])


def test_rows_are_the_cursor_rows(filled):
    path, entries, rows = filled
    env = Env(path, TABLES)
    try:
        with env.read() as txn:
            for table, written in ((schema.T_GC, entries), (schema.T_LEASERES, rows)):
                where, view = _mapped(txn, table)
                try:
                    if table == schema.T_GC:  # a tree of branch pages, leaves and overflow pages
                        assert int.from_bytes(where.record[6:8], "little") >= 2
                        assert int.from_bytes(where.record[24:32], "little") > 0
                    assert _fallback._lm_known(view, where.page_size, where.record)
                    got = list(_fallback._lm_rows(view, where.page_size, where.record, table, release_every=3))
                finally:
                    view.close()
                assert got == list(txn.scan(table)) == sorted(written.items())
    finally:
        env.close()


@pytest.mark.parametrize("release_every", [0, 1])
def test_marking_from_pages_is_the_marking_from_rows(filled, impl, release_every):
    path, entries, rows = filled
    env = Env(path, TABLES)
    try:
        with env.read() as txn:
            by_rows = impl.Marker()
            by_rows.add_nodes(txn.scan(schema.T_GC))
            by_rows.add_lease_resources(txn.scan(schema.T_LEASERES))
            by_pages = impl.Marker()
            for table, add in ((schema.T_GC, by_pages.add_nodes_mapped),
                               (schema.T_LEASERES, by_pages.add_lease_resources_mapped)):
                where, view = _mapped(txn, table)
                try:
                    assert add(view, where.page_size, where.record, table, release_every) is True
                finally:
                    view.close()
            assert _outputs(by_pages) == _outputs(by_rows)
            assert by_pages.node_count == len(entries)  # every target has an entry
    finally:
        env.close()


def test_implementations_read_the_same(filled):
    path, _, _ = filled
    env = Env(path, TABLES)
    results = []
    try:
        with env.read() as txn:
            where, view = _mapped(txn, schema.T_GC)
            try:
                for impl in IMPLEMENTATIONS.values():
                    marker = impl.Marker()
                    marker.add_nodes_mapped(view, where.page_size, where.record, schema.T_GC)
                    results.append(_outputs(marker))
            finally:
                view.close()
    finally:
        env.close()
    assert all(result == results[0] for result in results)


def test_empty_table_and_write_transaction(tmp_path, impl):
    env = Env(tmp_path / "env", TABLES, map_size=1 << 20)
    try:
        with env.write() as txn:
            txn.put(schema.T_GC, schema.pack_node(RT.CONTENT, "ns", "x"), index.encode())
            assert txn.table_file(schema.T_GC) is None  # its pages are not in the file yet
        with env.read() as txn:
            where, view = _mapped(txn, schema.T_LEASERES)
            try:
                marker = impl.Marker()
                assert marker.add_lease_resources_mapped(view, where.page_size, where.record, schema.T_LEASERES)
                assert marker.node_count == 0
            finally:
                view.close()
    finally:
        env.close()


def _copy(path, tmp_path):
    """A copy of the data file, and the node table's record and page size (from the original)."""
    env = Env(path, TABLES)
    try:
        with env.read() as txn:
            where = txn.table_file(schema.T_GC)
    finally:
        env.close()
    copy = tmp_path / "copy.mdb"
    shutil.copyfile(os.path.join(path, "data.mdb"), copy)
    return copy, where


def _load_copy(impl, copy, where):
    with open(copy, "rb") as data:
        view = mmap.mmap(data.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        marker = impl.Marker()
        return marker, marker.add_nodes_mapped(view, where.page_size, where.record, schema.T_GC)
    finally:
        view.close()


def _patch(copy, offset, data):
    with open(copy, "r+b") as f:
        f.seek(offset)
        f.write(data)


@pytest.mark.parametrize("damage", ["page number", "bounds", "flags", "child"])
def test_damaged_page_is_corrupted(filled, tmp_path, impl, damage):
    path, _, _ = filled
    copy, where = _copy(path, tmp_path)
    root = int.from_bytes(where.record[40:48], "little")
    at = root * where.page_size
    if damage == "page number":
        _patch(copy, at, (root + 1).to_bytes(8, "little"))
    elif damage == "bounds":
        _patch(copy, at + 12, (where.page_size + 2).to_bytes(2, "little"))
    elif damage == "flags":
        _patch(copy, at + 10, (0x04).to_bytes(2, "little"))
    else:  # the root's first child points past the end of the file
        with open(copy, "rb") as f:
            f.seek(at + 16)
            ptr = int.from_bytes(f.read(2), "little")
        _patch(copy, at + ptr, (0xFFFF).to_bytes(2, "little") * 3)
    with pytest.raises(errors.Corrupted, match="page .* of metadata table 'gc'"):
        _load_copy(impl, copy, where)


def test_row_count_is_checked(filled, tmp_path, impl):
    path, entries, _ = filled
    copy, where = _copy(path, tmp_path)
    fewer = where.record[:32] + (len(entries) - 1).to_bytes(8, "little") + where.record[40:]
    with pytest.raises(errors.Corrupted, match="more rows than"):
        _load_copy(impl, copy, where._replace(record=fewer))
    more = where.record[:32] + (len(entries) + 1).to_bytes(8, "little") + where.record[40:]
    with pytest.raises(errors.Corrupted, match="rows where the table records"):
        _load_copy(impl, copy, where._replace(record=more))


@pytest.mark.parametrize("change", ["magic", "version", "dupsort"])
def test_unknown_format_loads_nothing(filled, tmp_path, impl, change):
    path, _, _ = filled
    copy, where = _copy(path, tmp_path)
    if change == "magic":
        _patch(copy, 16, b"\x00\x00\x00\x00")
    elif change == "version":
        _patch(copy, 20, (2).to_bytes(4, "little"))
    else:
        where = where._replace(record=where.record[:4] + b"\x04\x00" + where.record[6:])
    marker, known = _load_copy(impl, copy, where)
    assert known is False
    assert marker.node_count == 0


def test_collection_load_reads_pages_in_a_snapshot_and_rows_in_a_write(tmp_path):
    """`gc.load`: a read snapshot's tables come from the pages, a write transaction's (whose
    changes are not in the file yet) through the cursor, and both load the same graph."""
    import cargohold
    from cargohold._native import Marker
    from cargohold.gc import load
    from gcutil import blob, chain, container, image

    with cargohold.open(tmp_path / "root") as db:
        ns = db.namespace("ns")
        kept = blob(ns, b"kept")
        image(ns, "img", kept)
        blob(ns, b"garbage")
        chain(ns, ["base", "top"])
        container(ns, "c1", "top")
        ns.leases.create("l1")
        ns.leases.add_resource("l1", Resource(blob(ns, b"leased"), "content"))
        markers = {}
        with db.view() as tx:
            assert tx.kv.table_file(schema.T_GC) is not None
            markers["pages"] = marker = Marker()
            load.node_table(tx, marker)
            load.lease_resources(tx, marker)
        with db.update() as tx:
            assert tx.kv.table_file(schema.T_GC) is None
            image(ns, "written", kept)  # in the transaction's tree, not yet in the file
            markers["rows"] = marker = Marker()
            load.node_table(tx, marker)
            load.lease_resources(tx, marker)
        outputs = {name: _outputs(marker) for name, marker in markers.items()}
    written = schema.pack_node(RT.IMAGE, "ns", "written")
    assert written in outputs["rows"][4] and written not in outputs["pages"][4]
    assert outputs["rows"][0] == outputs["pages"][0] + 1
