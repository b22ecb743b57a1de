"""The namespace store and namespace handles."""

from __future__ import annotations

import pytest

from cargohold import errors, schema


def test_create_list_labels(db):
    db.namespaces.create("b", {"x": "1"})
    db.namespaces.create("a")
    assert db.namespaces.list() == ["a", "b"]
    assert db.namespaces.labels("b") == {"x": "1"}
    assert db.namespaces.labels("a") == {}
    with pytest.raises(errors.AlreadyExists, match="'a'"):
        db.namespaces.create("a")


def test_set_label_and_delete_label(db):
    db.namespaces.create("ns")
    db.namespaces.set_label("ns", "k", "v")
    db.namespaces.set_label("ns", "k2", "v2")
    db.namespaces.set_label("ns", "k", "")
    assert db.namespaces.labels("ns") == {"k2": "v2"}


def test_set_label_creates_namespace(db):
    db.namespaces.set_label("fresh", "k", "v")
    assert db.namespaces.list() == ["fresh"]


def test_missing_namespace(db):
    with pytest.raises(errors.NotFound, match="'nope'"):
        db.namespaces.labels("nope")
    with pytest.raises(errors.NotFound, match="'nope'"):
        db.namespaces.delete("nope")


def test_delete_empty_namespace(db):
    db.namespaces.create("ns")
    db.namespaces.delete("ns")
    assert db.namespaces.list() == []


@pytest.mark.parametrize("kind", schema.DATA_KINDS)
def test_delete_refuses_non_empty(db, kind):
    db.namespaces.create("ns")
    with db.update() as tx:  # an object record of that kind, as the stores write it
        tx.kv.put(schema.T_OBJECTS, schema.object_key("ns", kind, "x"), schema.pack({}))
    with pytest.raises(errors.FailedPrecondition, match=f"must be empty.*{kind.decode()}"):
        db.namespaces.delete("ns")
    assert db.namespaces.list() == ["ns"]


@pytest.mark.parametrize("bad", ["", "a b", "-x", "x" * 77, None])
def test_every_call_validates_the_name(db, bad):
    for call in (lambda: db.namespaces.create(bad), lambda: db.namespaces.labels(bad),
                 lambda: db.namespaces.set_label(bad, "k", "v"), lambda: db.namespaces.delete(bad),
                 lambda: db.namespace(bad)):
        with pytest.raises(errors.InvalidArgument):
            call()
    assert db.namespaces.list() == []


def test_bad_labels_change_nothing(db):
    with pytest.raises(errors.InvalidArgument):
        db.namespaces.create("ns", {"k": "v" * 5000})
    db.namespaces.create("ns")
    with pytest.raises(errors.InvalidArgument):
        db.namespaces.set_label("ns", "k" * 5000, "v")
    assert db.namespaces.labels("ns") == {}


def test_namespace_handle(db):
    ns = db.namespace("default")
    assert ns.name == "default" and ns.lease is None
    leased = ns.with_lease("l1")
    assert leased.lease == "l1" and leased.name == "default"
    with pytest.raises(errors.InvalidArgument):
        ns.with_lease("bad lease")
    assert db.namespaces.list() == []  # handles write nothing
