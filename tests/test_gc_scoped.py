"""Namespace-scoped collection: ``garbage_collect(namespace=...)`` removes one namespace's garbage,
and its backend cleanup deletes only what was that namespace's."""

from __future__ import annotations

import os

import pytest

import cargohold
from cargohold.errors import InvalidArgument

from gcutil import blob, chain, content_node, digest_of, image


def _garbage(ns, tag: bytes, shared: bytes) -> dict:
    """An unreferenced blob, a shared blob, a deleted image's chain of snapshots and a leased ingest."""
    own = blob(ns, b"own " + tag)
    common = blob(ns, shared)
    chain(ns, [f"{tag.decode()}-1", f"{tag.decode()}-2"])
    with ns.content.writer(f"upload-{tag.decode()}") as w:
        w.write(b"partial " + tag)
    ns.content.abort(f"upload-{tag.decode()}")  # gone from the namespace: its backend ingest is garbage
    with ns.content.writer(f"pending-{tag.decode()}") as w:
        w.write(b"pending " + tag)  # kept: an unexpired ingest is a root
    return {"own": own, "common": common}


@pytest.fixture
def two(root):
    with cargohold.open(root) as db:
        a, b = db.namespace("a"), db.namespace("b")
        found = {"a": _garbage(a, b"a", b"shared bytes"), "b": _garbage(b, b"b", b"shared bytes")}
        image(b, "keep", blob(b, b"b's manifest"))
        # leftovers no namespace owns: a stray blob, a stray backend snapshot, an ingest dir without meta
        with db.content_store.writer("stray") as w:
            w.write(b"stray")
            found["stray"] = w.commit()
        db.snapshotter_backend("native").prepare("stray")
        os.makedirs(root / "content" / "ingest" / ("0" * 64))
        yield db, found


def _blobs(db) -> set:
    return {info.digest for info in db.content_store.walk()}


def test_a_scoped_dry_run_is_the_whole_dry_run_restricted_to_the_namespace(two):
    db, _ = two
    everything = db.unreachable()
    assert {n.namespace for n in everything} == {"a", "b"}
    assert db.unreachable(namespace="a") == [n for n in everything if n.namespace == "a"]
    assert db.unreachable(namespace="nobody") == []


def test_a_scoped_collection_removes_only_that_namespaces_garbage(two, root):
    db, found = two
    before_b = {n for n in db.unreachable() if n.namespace == "b"}
    leftovers = {(x.type, x.key) for x in db.leftovers()}
    stats = db.garbage_collect(namespace="a")

    assert stats.removed and {n.namespace for n in stats.removed} == {"a"}
    assert set(db.unreachable()) == before_b  # b's garbage is untouched
    a = db.namespace("a")
    assert [i.digest for i in a.content.walk()] == []
    assert [s.name for s in a.snapshotter("native").walk()] == []
    blobs = _blobs(db)
    assert found["a"]["own"] not in blobs  # a's own blob is freed
    assert found["a"]["common"] in blobs  # b still records the shared one
    assert found["b"]["own"] in blobs and found["stray"] in blobs  # not a's: stays
    assert stats.blobs.count == 1 and stats.blobs.bytes == len(b"own a")
    assert {(x.type, x.key) for x in db.leftovers()} >= leftovers  # leftovers belong to no namespace: kept
    backend_keys = {info.name for info in db.snapshotter_backend("native").walk()}
    assert not any(key.startswith("a/") for key in backend_keys)
    assert {"stray"} | {k for k in backend_keys if k.startswith("b/")} == backend_keys
    assert [s.ref for s in db.namespace("b").content.statuses()] == ["pending-b"]

    whole = db.garbage_collect()  # the markers stayed: a whole collection still cleans the rest
    assert {n.namespace for n in whole.removed} == {"b"}
    assert _blobs(db) == {digest_of(b"b's manifest")}  # b's image target alone is still referenced
    assert db.leftovers() == []


def test_a_scoped_collection_of_a_namespace_without_garbage_removes_nothing_anywhere(two):
    db, _ = two
    db.namespaces.create("empty")
    before = _blobs(db), set(db.unreachable())
    stats = db.garbage_collect(namespace="empty")
    assert stats.removed == [] and stats.freed_bytes == 0
    assert (_blobs(db), set(db.unreachable())) == before


@pytest.mark.parametrize("bad", ["", "has space", "-dash", "x" * 77, 7])
def test_a_bad_namespace_is_refused_before_anything_is_removed(two, bad):
    db, _ = two
    before = set(db.unreachable())
    with pytest.raises(InvalidArgument):
        db.garbage_collect(namespace=bad)
    with pytest.raises(InvalidArgument):
        db.unreachable(namespace=bad)
    assert set(db.unreachable()) == before


def test_scoped_collection_keeps_what_only_another_namespace_references(root):
    with cargohold.open(root) as db:
        a, b = db.namespace("a"), db.namespace("b")
        layer = blob(a, b"layer")
        blob(b, b"layer", labels={"containerd.io/gc.root": "pinned"})
        db.garbage_collect(namespace="a")
        assert layer in _blobs(db) and content_node("a", layer) not in db.nodes()
        assert content_node("b", layer) in db.mark()
