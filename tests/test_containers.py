"""The container store (``ns.containers``), including containerd's containers_test.go scenarios."""

from __future__ import annotations

from dataclasses import replace

import pytest

import cargohold
from cargohold import Container, ResourceType, RuntimeInfo, errors
from cargohold.gc import index
from storeutil import db, ns  # noqa: F401 (pytest fixtures)
from storeutil import START, digest, edges, entry, node, record_count

SPEC = b'{"ociVersion":"1.1.0"}'
SPEC2 = b'{"ociVersion":"1.1.0","annotations":{"updated":"true"}}'
RT = RuntimeInfo("testruntime")


def container(id: str, **kw) -> Container:
    kw.setdefault("runtime", RT)
    kw.setdefault("spec", SPEC)
    return Container(id, **kw)


def bare(c: Container) -> Container:
    return replace(c, created_at=None, updated_at=None)


# -- containerd's TestContainersList ----------------------------------------------------------------

def test_containers_list_scenario(ns):
    created = {}
    for i in range(4):
        cid = f"container-{i}"
        c = container(cid, labels={"idlabel": cid, "even": str(i % 2 == 0).lower(), "odd": str(i % 2 != 0).lower()},
                      snapshot_key="test-snapshot-key", snapshotter="snapshotter", image="test image")
        result = ns.containers.create(c)
        assert result.created_at == result.updated_at > START
        assert bare(result) == c
        created[cid] = result

    cases = {
        (): set(created),
        ("labels.even==true", "labels.odd==true"): set(created),
        ("labels.even==true",): {"container-0", "container-2"},
        ("labels.odd==true",): {"container-1", "container-3"},
        ("id==container-0",): {"container-0"},
        ("labels.idlabel==container-0,labels.even==true",): {"container-0"},
        ("runtime.name==testruntime",): set(created),
    }
    for filters, expected in cases.items():
        results = ns.containers.list(*filters)
        assert {r.id for r in results} == expected, filters
        assert all(r == created[r.id] for r in results)

    for cid in created:
        ns.containers.delete(cid)
        with pytest.raises(errors.NotFound, match=cid):
            ns.containers.delete(cid)
    assert ns.containers.list() == []


# -- containerd's TestContainersCreateUpdateDelete -----------------------------------------------

WITH_SNAPSHOT = dict(snapshot_key="test-snapshot-key", snapshotter="snapshotter")
EXT_HELLO = {"hello": {"type_url": "test.update.extensions", "value": b"hello"}}
EXT_WORLD = {"hello": {"type_url": "test.update.extensions", "value": b"world"}}

# name: (original, create error, input, field paths, expected, update error)
CRUD_CASES = {
    "UpdateIDFail": (dict(WITH_SNAPSHOT), None, dict(id="newid"), ("id",), None, errors.NotFound),
    "UpdateRuntimeFail": (dict(WITH_SNAPSHOT), None, dict(runtime=RuntimeInfo("testruntimedifferent")),
                          ("runtime",), None, errors.InvalidArgument),
    "UpdateRuntimeClearFail": (dict(WITH_SNAPSHOT), None, dict(runtime=RuntimeInfo("")), ("runtime",), None,
                               errors.InvalidArgument),
    "UpdateSpec": (dict(WITH_SNAPSHOT, image="test image"), None, dict(spec=SPEC2), ("spec",),
                   dict(WITH_SNAPSHOT, image="test image", spec=SPEC2), None),
    "UpdateSnapshot": (dict(WITH_SNAPSHOT, image="test image"), None, dict(snapshot_key="test2-snapshot-key"),
                       ("snapshotkey",), dict(WITH_SNAPSHOT, image="test image", snapshot_key="test2-snapshot-key"),
                       None),
    "UpdateImage": (dict(WITH_SNAPSHOT, image="test image"), None, dict(image="test2 image"), ("image",),
                    dict(WITH_SNAPSHOT, image="test2 image"), None),
    "UpdateLabel": (dict(WITH_SNAPSHOT, image="test image", labels={"foo": "one", "bar": "two"}), None,
                    dict(labels={"bar": "baz"}), ("labels.bar",),
                    dict(WITH_SNAPSHOT, image="test image", labels={"foo": "one", "bar": "baz"}), None),
    "DeleteAllLabels": (dict(WITH_SNAPSHOT, image="test image", labels={"foo": "one", "bar": "two"}), None,
                        dict(labels=None), ("labels",), dict(WITH_SNAPSHOT, image="test image"), None),
    "DeleteLabel": (dict(WITH_SNAPSHOT, image="test image", labels={"foo": "one", "bar": "two"}), None,
                    dict(labels={"bar": ""}), ("labels.bar",),
                    dict(WITH_SNAPSHOT, image="test image", labels={"foo": "one"}), None),
    "UpdateSnapshotKeyImmutable": ({}, None, dict(snapshot_key="something", snapshotter="something"),
                                   ("snapshotkey", "snapshotter"), None, errors.InvalidArgument),
    "SnapshotKeyWithoutSnapshot": (dict(snapshot_key="/nosnapshot"), errors.InvalidArgument, None, (), None,
                                   None),
    "UpdateExtensionsFull": (dict(extensions=EXT_HELLO), None, dict(runtime=RT, spec=SPEC, extensions=EXT_WORLD), (),
                             dict(extensions=EXT_WORLD), None),
    "UpdateExtensionsNotInFieldpath": (dict(extensions=EXT_HELLO), None,
                                       dict(runtime=RT, spec=SPEC, extensions=EXT_WORLD),
                                       ("labels",), dict(extensions=EXT_HELLO), None),
    "UpdateExtensionsFieldPath": (dict(extensions=EXT_HELLO), None,
                                  dict(labels={"foo": "one"}, extensions=EXT_WORLD), ("extensions",),
                                  dict(extensions=EXT_WORLD), None),
    "UpdateExtensionsFieldPathIsolated": (
        dict(extensions=EXT_HELLO), None,
        dict(extensions={"hello": {"value": b"universe"}, "bar": {"value": b"foo"}}), ("extensions.bar",),
        dict(extensions={**EXT_HELLO, "bar": {"value": b"foo"}}), None),
}


@pytest.mark.parametrize("case", sorted(CRUD_CASES))
def test_create_update_delete_scenario(db, ns, case):
    original, create_err, new, paths, expected, update_err = CRUD_CASES[case]
    original = container(case, **original)
    if create_err:
        before = record_count(db)
        with pytest.raises(create_err):
            ns.containers.create(original)
        assert record_count(db) == before
        return
    start = db.clock.now
    created = ns.containers.create(original)
    assert created.created_at == created.updated_at > start
    assert bare(created) == original

    new = dict(new)
    new_container = Container(new.pop("id", case), **new)
    start = db.clock.now
    if update_err:
        with pytest.raises(update_err):
            ns.containers.update(new_container, *paths)
        assert ns.containers.get(case) == created
        return
    updated = ns.containers.update(new_container, *paths)
    assert updated.updated_at > start and updated.created_at == created.created_at
    assert bare(updated) == container(case, **expected)
    assert ns.containers.get(case) == updated
    ns.containers.delete(case)
    with pytest.raises(errors.NotFound):
        ns.containers.get(case)


# -- filters ---------------------------------------------------------------------------------------

FILTER_SET = [
    container("web", image="docker.io/library/nginx:1", snapshotter="overlay", snapshot_key="web",
              labels={"app": "web", "io.k8s.pod": "p1"}),
    container("db", runtime=RuntimeInfo("io.containerd.runc.v2"), image="docker.io/library/postgres:16",
              snapshotter="native", snapshot_key="db", labels={"app": "db"}),
    container("job", runtime=RuntimeInfo("io.containerd.kata.v2"), labels={"batch": ""}),
]

FILTER_CASES = [
    ((), {"web", "db", "job"}),
    (("id==web",), {"web"}),
    (("id!=web",), {"db", "job"}),
    (("id~=^(web|job)$",), {"web", "job"}),
    (("runtime.name==testruntime",), {"web"}),
    (("runtime.name~=io\\.containerd\\.",), {"db", "job"}),
    (("runtime",), set()),
    (("image",), {"web", "db"}),
    (("image==docker.io/library/postgres:16",), {"db"}),
    (("image~=nginx",), {"web"}),
    (("snapshotter==native",), {"db"}),
    (("snapshotter",), {"web", "db"}),
    (("labels.app",), {"web", "db"}),
    (("labels.app!=web",), {"db", "job"}),
    (('labels."io.k8s.pod"==p1',), {"web"}),
    (("labels.batch",), set()),  # empty label values are not stored
    (("labels.app==db,snapshotter==native",), {"db"}),
    (("labels.app==db,snapshotter==overlay",), set()),
    (("labels.app==web", "runtime.name~=kata"), {"web", "job"}),
    (("name==web",), set()),
]


@pytest.mark.parametrize("filters,expected", FILTER_CASES, ids=[" | ".join(f) for f, _ in FILTER_CASES])
def test_list_filters(ns, filters, expected):
    for c in FILTER_SET:
        ns.containers.create(c)
    assert {c.id for c in ns.containers.list(*filters)} == expected


def test_list_filter_syntax_error(ns):
    with pytest.raises(errors.InvalidArgument, match="position 8"):
        ns.containers.list("id==web,")


# -- validation ---------------------------------------------------------------------------------

GOOD = container("good")
BAD = {
    "empty id": (replace(GOOD, id=""), "container id"),
    "id with space": (replace(GOOD, id="a b"), "'a b'"),
    "id too long": (replace(GOOD, id="x" * 77), "76"),
    "id not a string": (replace(GOOD, id=None), "container id"),
    "runtime not RuntimeInfo": (replace(GOOD, runtime="runc"), "RuntimeInfo"),
    "runtime name empty": (replace(GOOD, runtime=RuntimeInfo("")), "runtime of container 'good' name must be set"),
    "runtime name not a string": (replace(GOOD, runtime=RuntimeInfo(3)), "runtime of container 'good' name"),
    "runtime options not storable": (replace(GOOD, runtime=RuntimeInfo("r", object())), "options"),
    "spec not bytes": (replace(GOOD, spec="{}"), "spec of container 'good'"),
    "snapshot key without snapshotter": (replace(GOOD, snapshot_key="k"), "snapshotter.*'k'"),
    "snapshotter with slash": (replace(GOOD, snapshotter="a/b", snapshot_key="k"), "'a/b'"),
    "snapshot key with NUL": (replace(GOOD, snapshotter="native", snapshot_key="a\x00"), "NUL"),
    "snapshot key too long": (replace(GOOD, snapshotter="native", snapshot_key="k" * 256), "255"),
    "image not a string": (replace(GOOD, image=5), "image of container 'good'"),
    "sandbox id invalid": (replace(GOOD, sandbox_id="-x"), "'-x'"),
    "label too big": (replace(GOOD, labels={"k": "v" * 4096}), "'k'"),
    "label empty key": (replace(GOOD, labels={"": "v"}), "label key"),
    "extension empty name": (replace(GOOD, extensions={"": b"x"}), "must not be empty"),
    "extension not storable": (replace(GOOD, extensions={"e": {1, 2}}), "extension of container 'good' 'e'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_create_validates(db, ns, case):
    bad, named = BAD[case]
    before = record_count(db)
    with pytest.raises(errors.InvalidArgument, match=named):
        ns.containers.create(bad)
    assert record_count(db) == before


UPDATABLE = ["spec not bytes", "snapshot key without snapshotter", "image not a string", "sandbox id invalid",
             "label too big", "label empty key", "extension empty name", "extension not storable"]


@pytest.mark.parametrize("case", UPDATABLE)
def test_update_validates_the_result(ns, case):
    stored = ns.containers.create(GOOD)
    bad, named = BAD[case]
    with pytest.raises(errors.InvalidArgument, match=named):
        ns.containers.update(bad, "labels", "spec", "image", "snapshotkey", "extensions", "sandbox")
    if case != "sandbox id invalid":  # a full update keeps the stored sandbox id
        with pytest.raises(errors.InvalidArgument, match=named):
            ns.containers.update(bad)
    assert ns.containers.get("good") == stored


def test_not_a_container(ns):
    with pytest.raises(errors.InvalidArgument, match="cargohold.Container"):
        ns.containers.create(cargohold.Sandbox("x"))


# -- field paths -----------------------------------------------------------------------------------

def test_every_field_path(ns):
    ns.containers.create(container("c", snapshotter="native", snapshot_key="k1", image="i1", sandbox_id="s1",
                                   labels={"a": "1", "b": "2"}, extensions={"x": 1, "y": [1, 2]}))
    new = Container("c", RuntimeInfo("ignored"), SPEC2, "ignored", "k2", "i2", {"a": "9", "c": "3"},
                    {"x": "new", "z": {"k": b"v"}}, "s2")
    steps = [
        ("labels.a", dict(labels={"a": "9", "b": "2"})),
        ("labels.b", dict(labels={"a": "9"})),
        ("labels", dict(labels={"a": "9", "c": "3"})),
        ("extensions.y", dict(extensions={"x": 1})),
        ("extensions.z", dict(extensions={"x": 1, "z": {"k": b"v"}})),
        ("extensions", dict(extensions={"x": "new", "z": {"k": b"v"}})),
        ("spec", dict(spec=SPEC2)),
        ("image", dict(image="i2")),
        ("snapshotkey", dict(snapshot_key="k2")),
        ("sandbox", dict(sandbox_id="s2")),
    ]
    for path, change in steps:
        before = bare(ns.containers.get("c"))
        after = ns.containers.update(new, path)
        assert bare(after) == replace(before, **change), path
    assert after.runtime == RT and after.snapshotter == "native"


@pytest.mark.parametrize("path", ["id", "runtime", "runtime.name", "snapshotter", "created_at", "labels_x",
                                  "spec.x", "Labels"])
def test_unknown_field_path(ns, path):
    stored = ns.containers.create(container("c", labels={"a": "1"}))
    with pytest.raises(errors.InvalidArgument, match=f"cannot update field {path!r} of container 'c'"):
        ns.containers.update(container("c", labels={"a": "2"}), "labels", path)
    assert ns.containers.get("c") == stored


def test_full_update_immutable_fields(ns):
    stored = ns.containers.create(container("c", snapshotter="native", snapshot_key="k"))
    with pytest.raises(errors.InvalidArgument, match="snapshotter of container 'c' is immutable.*'overlayfs'"):
        ns.containers.update(container("c", snapshotter="overlay", snapshot_key="k"))
    with pytest.raises(errors.InvalidArgument, match="runtime name of container 'c' is immutable.*'other'"):
        ns.containers.update(container("c", runtime=RuntimeInfo("other"), snapshotter="native"))
    assert ns.containers.get("c") == stored
    # A full update replaces containerd's list of fields and keeps the sandbox id.
    updated = ns.containers.update(Container("c", RuntimeInfo("testruntime", {"new": 1}), SPEC2, "native", "k2",
                                             "img", {"l": "v"}, {"e": 1}, "ignored-sandbox"))
    assert bare(updated) == container("c", spec=SPEC2, snapshotter="native", snapshot_key="k2", image="img",
                                      labels={"l": "v"}, extensions={"e": 1})


def test_update_missing_container(ns):
    with pytest.raises(errors.NotFound, match="'nope'"):
        ns.containers.update(container("nope"))


# -- existence, persistence, node table --------------------------------------------------------------

def test_create_existing_and_get_missing(ns):
    first = ns.containers.create(container("c"))
    with pytest.raises(errors.AlreadyExists, match="'c'"):
        ns.containers.create(container("c", image="other"))
    assert ns.containers.get("c") == first
    with pytest.raises(errors.NotFound, match="'d'"):
        ns.containers.get("d")


def test_round_trip_across_reopen(root):
    c = Container("c1", RuntimeInfo("io.containerd.runc.v2", {"BinaryName": "runc", "SystemdCgroup": True}),
                  SPEC, "native", "c1-snap", "docker.io/library/alpine:3", {"k": "v"},
                  {"ext": {"type_url": "t", "value": b"\x00\x01"}}, "sb1")
    with cargohold.open(root) as db:
        created = db.namespace("n").containers.create(c)
        assert bare(created) == c
    with cargohold.open(root) as db:
        assert db.namespace("n").containers.get("c1") == created
        updated = db.namespace("n").containers.update(replace(c, image="other"), "image")
    with cargohold.open(root) as db:
        assert db.namespace("n").containers.list() == [updated]
        db.namespace("n").containers.delete("c1")
    with cargohold.open(root) as db:
        assert db.namespace("n").containers.list() == []


def test_node_table_follows_the_container(db, ns):
    cfg = digest("cfg")
    ns.containers.create(container("c", snapshotter="native", snapshot_key="k1",
                                   labels={"containerd.io/gc.ref.content.cfg": cfg}))
    e = entry(db, ResourceType.CONTAINER, "testing", "c")
    assert e.flags & index.F_ROOT and e.flags & index.F_HIDDEN
    assert edges(e, index.E_STRONG) == {node(ResourceType.SNAPSHOT, "testing", "native/k1")}
    assert edges(e, index.E_REF) == {node(ResourceType.CONTENT, "testing", cfg)}

    ns.containers.update(container("c", snapshot_key="k2"), "snapshotkey")
    e = entry(db, ResourceType.CONTAINER, "testing", "c")
    assert edges(e, index.E_STRONG) == {node(ResourceType.SNAPSHOT, "testing", "native/k2")}

    ns.containers.update(container("c", labels={"containerd.io/gc.ref.snapshot.native": "k9"}), "labels")
    e = entry(db, ResourceType.CONTAINER, "testing", "c")
    assert edges(e, index.E_REF) == {node(ResourceType.SNAPSHOT, "testing", "native/k9")}

    ns.containers.update(container("c", snapshot_key=""), "snapshotkey")
    assert edges(entry(db, ResourceType.CONTAINER, "testing", "c"), index.E_STRONG) == set()

    ns.containers.delete("c")
    assert entry(db, ResourceType.CONTAINER, "testing", "c") is None


def test_delete_marks_dirty(db, ns):
    ns.containers.create(container("c"))
    assert db.dirty == 0
    ns.containers.delete("c")
    assert db.dirty == 1
