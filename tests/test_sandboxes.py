"""The sandbox store (``ns.sandboxes``), including containerd's sandbox_test.go scenarios."""

from __future__ import annotations

from dataclasses import replace

import pytest

import cargohold
from cargohold import RuntimeInfo, Sandbox, errors
from cargohold.gc import index
from storeutil import db, ns  # noqa: F401 (pytest fixtures)
from storeutil import START, digest, edges, entry, node, record_count

ANY = {"type_url": "url/3", "value": b"\x04\x05\x06"}


def bare(sb: Sandbox) -> Sandbox:
    return replace(sb, created_at=None, updated_at=None)


# -- containerd's sandbox_test.go ---------------------------------------------------------------

def test_create(ns):
    sb = Sandbox("1", RuntimeInfo("test", ANY), b"\x01\x02\x03", "test-sandboxer", {"a": "1", "b": "2"},
                 {"ext1": {"type_url": "url/1", "value": b"\x01\x02\x03"},
                  "ext2": {"type_url": "url/2", "value": b"\x03\x02\x01"}})
    created = ns.sandboxes.create(sb)
    assert created.created_at == created.updated_at > START
    assert bare(created) == sb
    assert ns.sandboxes.get("1") == created


def test_create_duplicate(ns):
    sb = Sandbox("1", RuntimeInfo("test"), b"\x01\x02\x03")
    first = ns.sandboxes.create(sb)
    with pytest.raises(errors.AlreadyExists, match="'1'"):
        ns.sandboxes.create(sb)
    assert ns.sandboxes.get("1") == first


def test_update(ns):
    created = ns.sandboxes.create(Sandbox("2", RuntimeInfo("test"), b"\x01", "test-sandboxer", {"lbl1": "existing"},
                                          {"ext2": {"type_url": "url2", "value": b"\x04\x05\x06"}}))
    new = Sandbox("2", spec=b"\x03\x02\x01", labels={"lbl1": "new"},
                  extensions={"ext1": {"type_url": "url1", "value": b"\x01\x02"}})
    out = ns.sandboxes.update(new, "labels.lbl1", "extensions.ext1", "spec")
    assert bare(out) == Sandbox("2", RuntimeInfo("test"), b"\x03\x02\x01", "test-sandboxer", {"lbl1": "new"},
                                {"ext1": {"type_url": "url1", "value": b"\x01\x02"},
                                 "ext2": {"type_url": "url2", "value": b"\x04\x05\x06"}})
    assert out.created_at == created.created_at and out.updated_at > created.updated_at
    assert ns.sandboxes.get("2") == out


def test_get_missing(ns):
    with pytest.raises(errors.NotFound, match="invalid_id"):
        ns.sandboxes.get("invalid_id")


LIST_SET = [
    Sandbox("1", RuntimeInfo("test"), b"\x01\x02\x03", labels={"test": "1"}, extensions={"ext": {}}),
    Sandbox("2", RuntimeInfo("test"), b"\x03\x02\x01", "test-sandboxer", {"test": "2"},
            {"ext": {"type_url": "test", "value": b"\x09"}}),
]


def test_list(ns):
    for sb in LIST_SET:
        ns.sandboxes.create(sb)
    assert [bare(sb) for sb in ns.sandboxes.list()] == LIST_SET


def test_list_with_filter(ns):
    for sb in LIST_SET:
        ns.sandboxes.create(sb)
    assert [bare(sb) for sb in ns.sandboxes.list("id==1")] == LIST_SET[:1]


def test_delete(db, ns):
    ns.sandboxes.create(Sandbox("2", RuntimeInfo("test"), b"\x01\x02\x03"))
    ns.sandboxes.delete("2")
    with pytest.raises(errors.NotFound):
        ns.sandboxes.get("2")
    with pytest.raises(errors.NotFound):
        ns.sandboxes.delete("2")
    assert db.dirty == 1


def test_nil_fields_round_trip(ns):
    ns.sandboxes.create(Sandbox("nil-fields", RuntimeInfo("test")))
    out = ns.sandboxes.get("nil-fields")
    assert out.spec == b"" and out.runtime.options is None and out.extensions == {} and out.labels == {}


# -- filters ---------------------------------------------------------------------------------------

FILTER_CASES = [
    ((), {"pod-a", "pod-b", "pod-c"}),
    (("id==pod-a",), {"pod-a"}),
    (("id!=pod-a",), {"pod-b", "pod-c"}),
    (("id~=[ab]$",), {"pod-a", "pod-b"}),
    (("id",), {"pod-a", "pod-b", "pod-c"}),
    (("labels.tier==web",), {"pod-a"}),
    (("labels.tier",), {"pod-a", "pod-b"}),
    (('labels."io.kubernetes.pod.namespace"==kube-system',), {"pod-b"}),
    (('labels.tier==db,labels."io.kubernetes.pod.namespace"==kube-system',), {"pod-b"}),
    (("labels.tier==web", "id==pod-c"), {"pod-a", "pod-c"}),
    (("sandboxer==x",), set()),
]


@pytest.mark.parametrize("filters,expected", FILTER_CASES, ids=[" | ".join(f) for f, _ in FILTER_CASES])
def test_list_filters(ns, filters, expected):
    ns.sandboxes.create(Sandbox("pod-a", labels={"tier": "web"}))
    ns.sandboxes.create(Sandbox("pod-b", labels={"tier": "db", "io.kubernetes.pod.namespace": "kube-system"}))
    ns.sandboxes.create(Sandbox("pod-c"))
    assert {sb.id for sb in ns.sandboxes.list(*filters)} == expected


def test_list_filter_syntax_error(ns):
    with pytest.raises(errors.InvalidArgument, match="position 2"):
        ns.sandboxes.list("id=x")


# -- validation ----------------------------------------------------------------------------------

GOOD = Sandbox("good", RuntimeInfo("rt"))
BAD = {
    "empty id": (replace(GOOD, id=""), "sandbox id"),
    "id with slash": (replace(GOOD, id="a/b"), "'a/b'"),
    "id too long": (replace(GOOD, id="s" * 77), "76"),
    "runtime not RuntimeInfo": (replace(GOOD, runtime=None), "RuntimeInfo"),
    "runtime name not a string": (replace(GOOD, runtime=RuntimeInfo(None)), "runtime of sandbox 'good' name"),
    "runtime options not storable": (replace(GOOD, runtime=RuntimeInfo("rt", object())), "options"),
    "spec not bytes": (replace(GOOD, spec=None), "spec of sandbox 'good'"),
    "sandboxer not a string": (replace(GOOD, sandboxer=1), "sandboxer of sandbox 'good'"),
    "label too big": (replace(GOOD, labels={"k" * 4000: "v" * 100}), "4096"),
    "label value not a string": (replace(GOOD, labels={"k": None}), "'k'"),
    "extension name not a string": (replace(GOOD, extensions={1: b""}), "extension of sandbox 'good' name"),
    "extension not storable": (replace(GOOD, extensions={"e": object()}), "'e'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_create_validates(db, ns, case):
    bad, named = BAD[case]
    before = record_count(db)
    with pytest.raises(errors.InvalidArgument, match=named):
        ns.sandboxes.create(bad)
    assert record_count(db) == before


@pytest.mark.parametrize("case", sorted(c for c in BAD if "id" not in c.split() and "sandboxer" not in c))
def test_update_validates_the_result(ns, case):
    stored = ns.sandboxes.create(GOOD)
    bad, named = BAD[case]
    with pytest.raises(errors.InvalidArgument, match=named):
        ns.sandboxes.update(bad, "labels", "extensions", "spec", "runtime")
    assert ns.sandboxes.get("good") == stored


# -- field paths ---------------------------------------------------------------------------------

def test_every_field_path(ns):
    ns.sandboxes.create(Sandbox("s", RuntimeInfo("rt", {"o": 1}), b"spec1", "sbx", {"a": "1", "b": "2"},
                                {"x": 1, "y": 2}))
    new = Sandbox("s", RuntimeInfo("rt2", {"o": 2}), b"spec2", "ignored", {"a": "9", "c": "3"}, {"x": 10, "z": 3})
    steps = [
        ("labels.a", dict(labels={"a": "9", "b": "2"})),
        ("labels.b", dict(labels={"a": "9"})),
        ("labels", dict(labels={"a": "9", "c": "3"})),
        ("extensions.y", dict(extensions={"x": 1})),
        ("extensions.z", dict(extensions={"x": 1, "z": 3})),
        ("extensions", dict(extensions={"x": 10, "z": 3})),
        ("spec", dict(spec=b"spec2")),
        ("runtime", dict(runtime=RuntimeInfo("rt2", {"o": 2}))),
    ]
    for path, change in steps:
        before = bare(ns.sandboxes.get("s"))
        assert bare(ns.sandboxes.update(new, path)) == replace(before, **change), path
    assert ns.sandboxes.get("s").sandboxer == "sbx"


@pytest.mark.parametrize("path", ["id", "sandboxer", "runtime.name", "created_at", "labelsx", "spec.x"])
def test_unknown_field_path(ns, path):
    stored = ns.sandboxes.create(Sandbox("s", labels={"a": "1"}))
    with pytest.raises(errors.InvalidArgument, match=f"cannot update field {path!r} of sandbox 's'"):
        ns.sandboxes.update(Sandbox("s", labels={"a": "2"}), "labels", path)
    assert ns.sandboxes.get("s") == stored


def test_full_update(ns):
    ns.sandboxes.create(Sandbox("s", RuntimeInfo("rt", {"o": 1}), b"spec1", "sbx", {"a": "1"}, {"x": 1}))
    with pytest.raises(errors.InvalidArgument, match="runtime name of sandbox 's' is immutable.*'other'"):
        ns.sandboxes.update(Sandbox("s", RuntimeInfo("other")))
    out = ns.sandboxes.update(Sandbox("s", RuntimeInfo("rt", {"o": 2}), b"spec2", "ignored", {"b": "2"}, {"y": 2}))
    assert bare(out) == Sandbox("s", RuntimeInfo("rt", {"o": 2}), b"spec2", "sbx", {"b": "2"}, {"y": 2})


def test_update_missing_sandbox(ns):
    with pytest.raises(errors.NotFound, match="'nope'"):
        ns.sandboxes.update(Sandbox("nope"))


# -- persistence and node table --------------------------------------------------------------------

def test_round_trip_across_reopen(root):
    sb = Sandbox("pod", RuntimeInfo("io.containerd.runc.v2", [1, "two", None]), b"{}", "podsandbox",
                 {"k": "v"}, {"e": {"nested": [b"x", 2.5, True]}})
    with cargohold.open(root) as db:
        created = db.namespace("n").sandboxes.create(sb)
    with cargohold.open(root) as db:
        assert db.namespace("n").sandboxes.get("pod") == created
        updated = db.namespace("n").sandboxes.update(replace(sb, labels={"k": "w"}), "labels")
    with cargohold.open(root) as db:
        assert db.namespace("n").sandboxes.list() == [updated]
        db.namespace("n").sandboxes.delete("pod")
    with cargohold.open(root) as db:
        assert db.namespace("n").sandboxes.list() == []


def test_node_table_follows_the_sandbox(db, ns):
    blob = digest("blob")
    ns.sandboxes.create(Sandbox("s", labels={"containerd.io/gc.ref.content": blob}))
    e = entry(db, index.SANDBOX, "testing", "s")
    assert e.flags & index.F_ROOT and e.flags & index.F_HIDDEN
    assert edges(e, index.E_REF) == {node(cargohold.ResourceType.CONTENT, "testing", blob)}
    ns.sandboxes.update(Sandbox("s", labels={"containerd.io/gc.ref.image": "img"}), "labels")
    e = entry(db, index.SANDBOX, "testing", "s")
    assert edges(e, index.E_REF) == {node(cargohold.ResourceType.IMAGE, "testing", "img")}
    ns.sandboxes.delete("s")
    assert entry(db, index.SANDBOX, "testing", "s") is None
