"""What labels mean to the collector, and the node-table encoding the stores write."""

from __future__ import annotations

import pytest

from cargohold import errors, schema
from cargohold.gc import index, labels
from cargohold.model import Resource, ResourceType as RT
from cargohold.timeutil import parse_rfc3339

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
node = schema.pack_node


def test_reference_labels_and_suffix_rules():
    refs = labels.parse("ns", {
        "containerd.io/gc.ref.content": D1,
        "containerd.io/gc.ref.content.config": D2,
        "containerd.io/gc.ref.content/l.0": D2,
        "containerd.io/gc.ref.contentbad": D1,               # near miss: not content
        "containerd.io/gc.ref.image.base": "img",
        "containerd.io/gc.ref.snapshot.overlay": "top",
        "containerd.io/gc.ref.snapshot.native/extra": "other",
        "containerd.io/gc.ref.stream": "s1",
        "unrelated": "x",
    })
    assert sorted(refs.refs) == sorted([
        node(RT.CONTENT, "ns", D1), node(RT.CONTENT, "ns", D2), node(RT.CONTENT, "ns", D2),
        node(RT.IMAGE, "ns", "img"), node(RT.SNAPSHOT, "ns", "overlayfs/top"),  # overlay is overlayfs
        node(RT.SNAPSHOT, "ns", "native/other"),
    ])
    assert sorted(refs.collector) == [("contentbad", D1), ("stream", "s1")]
    assert not refs.root and not refs.brefs


def test_back_references_root_and_conditions():
    refs = labels.parse("ns", {
        "containerd.io/gc.bref.content": D1,
        "containerd.io/gc.bref.image/x": "img",
        "containerd.io/gc.bref.container.c": "ctr",
        "containerd.io/gc.bref.snapshot.native/a": "s",
        "containerd.io/gc.bref.contentx": D2,               # near miss
        "containerd.io/gc.root": "",
        "containerd.io/gc.cond.snapshot.native": "usedat<2h,usedat>1d,usedat=1h,other<1h|key",
        "containerd.io/gc.cond.snapshot/overlay/x": "usedat>90m|k2",
        "containerd.io/gc.cond.snapshot.bad": "usedat<2h",   # no |key: ignored
        "containerd.io/gc.cond.value-usedat": "2026-01-02T03:04:05Z",
    })
    assert sorted(refs.brefs) == sorted([
        node(RT.CONTENT, "ns", D1), node(RT.IMAGE, "ns", "img"), node(RT.CONTAINER, "ns", "ctr"),
        node(RT.SNAPSHOT, "ns", "native/s"),
    ])
    assert refs.root
    hour = 3600 * 10**9
    assert sorted(refs.conds) == sorted([
        (node(RT.SNAPSHOT, "ns", "native/key"), "<", 2 * hour),
        (node(RT.SNAPSHOT, "ns", "overlayfs/k2"), ">", 90 * 60 * 10**9),
    ])  # "1d" is not a Go duration unit
    assert refs.usedat == [parse_rfc3339("2026-01-02T03:04:05Z")]


@pytest.mark.parametrize("text,ns", [
    ("0", 0), ("2h", 7200 * 10**9), ("1h30m", 5400 * 10**9), ("-1.5s", -1_500_000_000),
    ("300ms", 300_000_000), ("1us", 1000), ("1\u00b5s", 1000), ("2h45m30.5s", (9930 * 10**9) + 500_000_000),
    ("", None), ("1", None), ("h", None), ("1d", None), ("1.h", 3600 * 10**9), (".5h", 1800 * 10**9), ("1h-2m", None),
])
def test_go_durations(text, ns):
    assert labels.parse_go_duration(text) == ns


@pytest.mark.parametrize("text,ok", [
    ("2026-11-28T10:00:00Z", True), ("2026-11-28T10:00:00.123456789+02:00", True),
    ("2026-11-28 10:00:00Z", False), ("2026-11-28T10:00:00", False), ("2026-13-01T00:00:00Z", False),
    ("tomorrow", False),
])
def test_expiry_parsing(text, ok):
    assert (labels.expiry({"containerd.io/gc.expire": text}) is not None) is ok


def test_rfc3339_offsets():
    assert parse_rfc3339("2026-01-01T02:00:00+02:00") == parse_rfc3339("2026-01-01T00:00:00Z")
    assert parse_rfc3339("1970-01-01T00:00:00.5Z") == 500_000_000


def test_encode_decode_round_trip():
    refs = labels.parse("ns", {
        "containerd.io/gc.ref.content": D1, "containerd.io/gc.bref.image": "i",
        "containerd.io/gc.cond.snapshot.native": "usedat<1h|k", "containerd.io/gc.ref.stream": "s",
    })
    value = index.encode(root=True, expire=-5, flat=True, usedat=[1, 2], strong=[b"parent"], refs=refs)
    entry = index.decode(value)
    assert entry.flags == index.F_ROOT | index.F_EXPIRES | index.F_FLAT | index.F_USEDAT
    assert entry.expire == -5 and entry.usedat == [1, 2]
    assert entry.edges == [
        (index.E_STRONG, b"parent", None),
        (index.E_REF, node(RT.CONTENT, "ns", D1), None),
        (index.E_BREF, node(RT.IMAGE, "ns", "i"), None),
        (index.E_COND, node(RT.SNAPSHOT, "ns", "native/k"), ("<", 3600 * 10**9)),
        (index.E_LABEL, b"stream", b"s"),
    ]


@pytest.mark.parametrize("damaged", [b"", b"\x02\x00", b"\x00\x02\xff\xff", b"\x00\x09\x01\x00x"])
def test_decode_damaged(damaged):
    with pytest.raises(errors.Corrupted):
        index.decode(damaged)


def test_stores_index_helpers_write_the_node_table(db):
    with db.update() as tx:
        index.index_image(tx, "ns", "img", D1, {"containerd.io/gc.expire": "2030-01-01T00:00:00Z",
                                                "containerd.io/gc.root": ""})
        index.index_snapshot(tx, "ns", "native", "child", "parent", {"containerd.io/gc.root": "x"})
        index.index_container(tx, "ns", "c1", "native", "child", {})
        index.index_ingest(tx, "ns", "ref", None, D2)
        index.index_lease(tx, "ns", "l1", {"containerd.io/gc.flat": ""})
        index.lease_add(tx, "ns", "l1", Resource(D1, "content"))
        index.lease_add(tx, "ns", "l1", Resource("child", "snapshots/native"))
        with pytest.raises(errors.Unsupported):
            index.lease_add(tx, "ns", "l1", Resource("x", "tasks"))
    with db.view() as tx:
        entries = {schema.unpack_node(k): index.decode(v) for k, v in tx.kv.scan(schema.T_GC)}
        assert list(index.lease_resources(tx, "ns", "l1")) == [
            Resource(D1, "content"), Resource("child", "snapshots/native")]
    image = entries[(RT.IMAGE, "ns", "img")]
    assert image.flags == index.F_ROOT | index.F_EXPIRES  # gc.root means nothing on an image
    assert image.expire == parse_rfc3339("2030-01-01T00:00:00Z")
    assert image.edges == [(index.E_STRONG, node(RT.CONTENT, "ns", D1), None)]
    snap = entries[(RT.SNAPSHOT, "ns", "native/child")]
    assert snap.flags == index.F_ROOT
    assert snap.edges == [(index.E_STRONG, node(RT.SNAPSHOT, "ns", "native/parent"), None)]
    assert entries[(RT.CONTAINER, "ns", "c1")].flags == index.F_ROOT | index.F_HIDDEN
    assert entries[(RT.INGEST, "ns", "ref")].flags == 0  # no expiry: lives only by a lease
    assert entries[(RT.LEASE, "ns", "l1")].flags == index.F_ROOT | index.F_FLAT


def test_longest_names_fit_every_table(db):
    """The longest namespace, lease, snapshotter and key still make valid LMDB keys."""
    from cargohold.validation import MAX_IDENTIFIER_LENGTH, MAX_KEY_BYTES

    ns, lease, sn = "n" * MAX_IDENTIFIER_LENGTH, "l" * MAX_IDENTIFIER_LENGTH, "s" * MAX_IDENTIFIER_LENGTH
    key = "k" * MAX_KEY_BYTES
    with db.update() as tx:
        tx.kv.put(schema.T_OBJECTS, schema.object_key(ns, schema.K_SNAPSHOT, sn, key), b"")
        index.index_snapshot(tx, ns, sn, key, key, {})
        index.lease_add(tx, ns, lease, Resource(key, f"snapshots/{sn}"))
    with db.view() as tx:
        assert index.lease_resources(tx, ns, lease) == [Resource(key, f"snapshots/{sn}")]
