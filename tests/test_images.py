"""The image store (``ns.images``), including containerd's images_test.go scenarios."""

from __future__ import annotations

from dataclasses import replace

import pytest

import cargohold
from cargohold import Descriptor, Image, Resource, ResourceType, errors, images
from cargohold.events import TOPIC_IMAGE_DELETE, ImageDelete
from cargohold.gc import index
from storeutil import ns  # noqa: F401 (pytest fixtures)
from storeutil import START, Ticker, digest, edges, entry, node, record_count

MT = "application/vnd.oci.blab"


@pytest.fixture
def events():
    return []


@pytest.fixture
def db(root, events):
    with cargohold.open(root, clock=Ticker(), publisher=lambda *e: events.append(e)) as database:
        yield database


def image(name: str, size: int = 10, labels=None, annotations=None, media_type=MT) -> Image:
    return Image(name, Descriptor(media_type, digest(f"{name}-{size}"), size, annotations), labels)


# -- containerd's TestImagesList ----------------------------------------------------------------

def test_images_list_scenario(ns):
    created = {}
    for i in range(4):
        name = f"image-{i}"
        img = image(name, labels={"namelabel": name, "even": str(i % 2 == 0).lower(),
                                  "odd": str(i % 2 != 0).lower()}, annotations={"foo": "bar"})
        result = ns.images.create(img)
        assert result.created_at == result.updated_at and result.created_at > START
        assert replace(result, created_at=None, updated_at=None) == img
        created[name] = result

    cases = {
        (): set(created),
        ("labels.even==true", "labels.odd==true"): set(created),
        ("labels.even==true",): {"image-0", "image-2"},
        ("labels.odd==true",): {"image-1", "image-3"},
        ("name==image-0",): {"image-0"},
        ("labels.namelabel==image-0,labels.even==true",): {"image-0"},
        ("target.mediatype~=application/vnd.*",): set(created),
    }
    for filters, expected in cases.items():
        results = ns.images.list(*filters)
        assert results, filters
        assert {r.name for r in results} == expected, filters
        for r in results:
            assert r == created[r.name]

    for name in created:
        ns.images.delete(name)
        with pytest.raises(errors.NotFound, match=name):
            ns.images.delete(name)
    assert ns.images.list() == []


# -- containerd's TestImagesCreateUpdateDelete --------------------------------------------------

BASE = dict(labels={"foo": "bar", "baz": "boo"}, annotations={"foo": "bar", "baz": "boo"})

# name: (original kwargs or None for BASE, create error, input kwargs, field paths, expected kwargs,
#        update error, delete error)
CRUD_CASES = {
    "Touch": (None, None, dict(labels={"foo": "bar", "baz": "boo"}, annotations={"foo": "bar"}), (),
              dict(labels={"foo": "bar", "baz": "boo"}, annotations={"foo": "bar"}), None, None),
    "NoTarget": (dict(labels={"foo": "bar"}, size=0, media_type=""), errors.InvalidArgument,
                 None, (), None, None, None),
    "ReplaceLabels": (None, None, dict(labels={"for": "bar", "boo": "boo"}, annotations={"foo": "bar"}), (),
                      dict(labels={"for": "bar", "boo": "boo"}, annotations={"foo": "bar"}), None, None),
    "ReplaceLabelsFieldPath": (
        None, None, dict(labels={"for": "bar", "boo": "boo"}, media_type=MT + "+ignored",
                         annotations={"not": "bar", "new": "boo"}), ("labels",),
        dict(labels={"for": "bar", "boo": "boo"}, annotations=BASE["annotations"]), None, None),
    "ReplaceLabelsAnnotationsFieldPath": (
        None, None, dict(labels={"for": "bar", "boo": "boo"}, media_type=MT + "+ignored",
                         annotations={"foo": "boo"}), ("annotations", "labels"),
        dict(labels={"for": "bar", "boo": "boo"}, annotations={"foo": "boo"}), None, None),
    "ReplaceLabel": (
        None, None, dict(labels={"foo": "baz", "baz": "bunk"}, media_type=MT + "+ignored",
                         annotations={"foo": "bar"}), ("labels.foo",),
        dict(labels={"foo": "baz", "baz": "boo"}, annotations=BASE["annotations"]), None, None),
    "ReplaceAnnotation": (
        None, None, dict(labels={"foo": "baz", "baz": "bunk"}, media_type=MT + "+ignored",
                         annotations={"foo": "baz", "baz": "bunk"}), ("annotations.foo",),
        dict(labels=BASE["labels"], annotations={"foo": "baz", "baz": "boo"}), None, None),
    "ReplaceTargetTypeAndAnnotations": (
        None, None, dict(media_type=MT + "+replaced", annotations={"fox": "dog"}), ("target",),
        dict(labels=BASE["labels"], media_type=MT + "+replaced", annotations={"fox": "dog"}), None, None),
    "ReplaceTargetFieldpath": (
        None, None, dict(size=20, media_type=MT + "+replaced", annotations={"fox": "dog"}), ("target",),
        dict(labels=BASE["labels"], size=20, media_type=MT + "+replaced", annotations={"fox": "dog"}),
        None, errors.NotFound),
    "ReplaceTarget": (
        None, None, dict(size=20, media_type=MT + "+replaced", annotations={"fox": "dog"}), (),
        dict(size=20, media_type=MT + "+replaced", annotations={"fox": "dog"}), None, errors.NotFound),
    "EmptySize": (None, None, dict(labels=BASE["labels"], size=0, annotations={"foo": "bar"}), (),
                  None, errors.InvalidArgument, None),
    "EmptySizeOnCreate": (dict(labels=BASE["labels"], size=0, annotations={"foo": "bar"}),
                          errors.InvalidArgument, None, (), None, None, None),
    "EmptyMediaType": (None, None, dict(labels=BASE["labels"], media_type=""), (), None,
                       errors.InvalidArgument, None),
    "EmptyMediaTypeOnCreate": (dict(labels=BASE["labels"], media_type=""), errors.InvalidArgument,
                               None, (), None, None, None),
    "TryUpdateNameFail": (None, None, dict(name="test should fail", labels=BASE["labels"],
                                           annotations={"foo": "bar"}), (), None, errors.NotFound, None),
}


@pytest.mark.parametrize("case", sorted(CRUD_CASES))
def test_create_update_delete_scenario(db, ns, case):
    original, create_err, new, paths, expected, update_err, delete_err = CRUD_CASES[case]
    original = image(case, **(original or BASE))
    before = record_count(db)
    if create_err:
        with pytest.raises(create_err):
            ns.images.create(original)
        assert record_count(db) == before
        return
    start = db.clock.now
    created = ns.images.create(original)
    assert created.created_at == created.updated_at > start
    assert replace(created, created_at=None, updated_at=None) == original

    new = dict(new)
    name = new.pop("name", case)
    new_image = image(name, **new)
    start = db.clock.now
    if update_err:
        with pytest.raises(update_err):
            ns.images.update(new_image, *paths)
        assert ns.images.get(case) == created
        return
    updated = ns.images.update(new_image, *paths)
    assert updated.updated_at > updated.created_at == created.created_at
    assert updated.updated_at > start
    want = image(case, **expected)
    want = replace(want, target=replace(want.target, digest=new_image.target.digest),
                   created_at=updated.created_at, updated_at=updated.updated_at)
    assert updated == want
    assert ns.images.get(case) == want

    if delete_err:
        with pytest.raises(delete_err, match="has target"):
            ns.images.delete(case, target=original.target)
        assert ns.images.get(case) == want
        ns.images.delete(case, target=want.target)
    else:
        ns.images.delete(case, target=original.target)
    with pytest.raises(errors.NotFound):
        ns.images.get(case)


# -- filters ---------------------------------------------------------------------------------------

FILTER_SET = [
    image("docker.io/library/alpine:3.19", labels={"env": "prod", "a.b": "dotted", "gc": "x"},
          annotations={"org.opencontainers.image.ref.name": "3.19"}),
    image("docker.io/library/busybox:1", labels={"env": "dev"},
          media_type="application/vnd.docker.distribution.manifest.v2+json"),
    image("ghcr.io/acme/tool:latest", labels={"with space": "v v"}),
]

FILTER_CASES = [
    ((), {0, 1, 2}),
    (("name==docker.io/library/alpine:3.19",), {0}),
    (('name=="ghcr.io/acme/tool:latest"',), {2}),
    (("name!=docker.io/library/alpine:3.19",), {1, 2}),
    (("name~=^docker\\.io/",), {0, 1}),
    (("name~=library",), {0, 1}),
    (("name~=/busy(box)?:1$/",), {1}),
    ((f"target.digest=={digest('docker.io/library/busybox:1-10')}",), {1}),
    (("target.mediatype==" + MT,), {0, 2}),
    (("target.mediatype~=docker",), {1}),
    (("labels.env==prod",), {0}),
    (("labels.env",), {0, 1}),
    (("labels.env!=prod",), {1, 2}),
    (('labels."a.b"==dotted',), {0}),
    (('labels."with space"=="v v"',), {2}),
    (("labels.missing",), set()),
    (('annotations."org.opencontainers.image.ref.name"==3.19',), {0}),
    (("labels.env==dev,name~=busybox",), {1}),
    (("labels.env==dev,name~=alpine",), set()),
    (("labels.env==dev", "name~=ghcr"), {1, 2}),
    (("id==x",), set()),
    (("target",), set()),
]


@pytest.mark.parametrize("filters,expected", FILTER_CASES, ids=[" | ".join(f) for f, _ in FILTER_CASES])
def test_list_filters(ns, filters, expected):
    for img in FILTER_SET:
        ns.images.create(img)
    assert {img.name for img in ns.images.list(*filters)} == {FILTER_SET[i].name for i in expected}


@pytest.mark.parametrize("bad", ["name==", "name=foo", "name==x,", 'labels."open==x', "name~=/[/"])
def test_list_filter_syntax_error_names_position(ns, bad):
    with pytest.raises(errors.InvalidArgument, match="position"):
        ns.images.list(bad)


# -- validation ---------------------------------------------------------------------------------

GOOD = image("good")
BAD_IMAGES = {
    "empty name": (replace(GOOD, name=""), "image name"),
    "name with NUL": (replace(GOOD, name="a\x00b"), "NUL"),
    "name too long": (replace(GOOD, name="x" * 256), "255"),
    "name not a string": (replace(GOOD, name=5), "image name"),
    "no target": (replace(GOOD, target=None), "target of image 'good'"),
    "bad digest": (replace(GOOD, target=replace(GOOD.target, digest="sha256:abc")), "sha256:abc"),
    "unknown algorithm": (replace(GOOD, target=replace(GOOD.target, digest="md5:" + "0" * 32)), "md5"),
    "size zero": (replace(GOOD, target=replace(GOOD.target, size=0)), "greater than zero"),
    "size negative": (replace(GOOD, target=replace(GOOD.target, size=-1)), "-1"),
    "size bool": (replace(GOOD, target=replace(GOOD.target, size=True)), "True"),
    "size string": (replace(GOOD, target=replace(GOOD.target, size="10")), "'10'"),
    "size past what a record holds": (replace(GOOD, target=replace(GOOD.target, size=1 << 64)), "at most 18446744073709551615"),
    "no media type": (replace(GOOD, target=replace(GOOD.target, media_type="")), "media type"),
    "media type not a string": (replace(GOOD, target=replace(GOOD.target, media_type=None)), "media type"),
    "label too big": (replace(GOOD, labels={"k": "v" * 4096}), "'k'"),
    "label empty key": (replace(GOOD, labels={"": "v"}), "label key"),
    "label value not a string": (replace(GOOD, labels={"k": 1}), "'k'"),
    "annotation not a string": (replace(GOOD, target=replace(GOOD.target, annotations={"a": 1})), "'a'"),
    "annotation empty key": (replace(GOOD, target=replace(GOOD.target, annotations={"": "x"})), "annotation"),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_create_validates(db, ns, case):
    bad, named = BAD_IMAGES[case]
    before = record_count(db)
    with pytest.raises(errors.InvalidArgument, match=named.replace("(", r"\(")):
        ns.images.create(bad)
    assert record_count(db) == before
    assert db.namespaces.list() == []


@pytest.mark.parametrize("case", sorted(c for c in BAD_IMAGES if "name" not in c))
def test_update_validates_the_result(db, ns, case):
    stored = ns.images.create(GOOD)
    bad, named = BAD_IMAGES[case]
    with pytest.raises(errors.InvalidArgument, match=named.replace("(", r"\(")):
        ns.images.update(bad)
    assert ns.images.get("good") == stored


def test_not_an_image(ns):
    with pytest.raises(errors.InvalidArgument, match="cargohold.Image"):
        ns.images.create({"name": "x"})


def test_empty_label_values_are_not_stored(ns):
    img = ns.images.create(image("x", labels={"keep": "1", "drop": ""}, annotations={"a": "", "b": "2"}))
    assert img.labels == {"keep": "1"} and img.target.annotations == {"b": "2"}
    assert ns.images.get("x") == img


# -- field paths -----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["name", "created_at", "target.digest", "target.size", "foo", "label.x", ""])
def test_unknown_field_path(ns, path):
    stored = ns.images.create(image("x"))
    with pytest.raises(errors.InvalidArgument, match=f"cannot update field {path!r} of image 'x'"):
        ns.images.update(image("x", size=3, labels={"a": "b"}), "labels", path)
    assert ns.images.get("x") == stored


def test_field_path_must_be_a_string(ns):
    ns.images.create(image("x"))
    with pytest.raises(errors.InvalidArgument, match="field path"):
        ns.images.update(image("x"), 3)


def test_label_field_paths(ns):
    ns.images.create(image("x", labels={"a": "1", "b": "2", "c": "3"}))
    new = Image("x", None, {"a": "10", "b": "", "d": "4", "e": "5"})
    updated = ns.images.update(new, "labels.a", "labels.b", "labels.c", "labels.d")
    assert updated.labels == {"a": "10", "d": "4"}
    assert ns.images.update(new, "labels").labels == {"a": "10", "d": "4", "e": "5"}


def test_annotation_field_paths_do_not_need_the_rest_of_the_target(ns):
    ns.images.create(image("x", annotations={"a": "1", "b": "2"}))
    new = Image("x", Descriptor("", "", 0, {"a": "9", "c": "3"}))
    assert ns.images.update(new, "annotations.a", "annotations.b").target.annotations == {"a": "9"}
    assert ns.images.update(new, "annotations").target.annotations == {"a": "9", "c": "3"}
    with pytest.raises(errors.InvalidArgument, match="target of image 'x'"):
        ns.images.update(Image("x", None), "annotations")


def test_update_missing_image(ns):
    with pytest.raises(errors.NotFound, match="'nope'"):
        ns.images.update(image("nope"))


# -- existence, isolation, transactions ------------------------------------------------------------

def test_create_existing_and_get_missing(db, ns):
    first = ns.images.create(image("x"))
    with pytest.raises(errors.AlreadyExists, match="'x'"):
        ns.images.create(image("x", size=5))
    assert ns.images.get("x") == first
    with pytest.raises(errors.NotFound, match="'y'"):
        ns.images.get("y")
    with pytest.raises(errors.NotFound, match="'y'"):
        ns.images.delete("y")
    assert db.namespace("other").images.list() == []
    with pytest.raises(errors.NotFound):
        db.namespace("other").images.get("x")


def test_failed_call_in_a_callers_transaction_writes_nothing(db, ns):
    with db.update() as tx:
        ns.images.create(image("x"), tx=tx)
        before = tx.kv.count("objects"), tx.kv.count("gc")
        with pytest.raises(errors.AlreadyExists):
            ns.images.create(image("x"), tx=tx)
        with pytest.raises(errors.NotFound):
            db.namespace("testing").with_lease("missing").images.create(image("y"), tx=tx)
        assert (tx.kv.count("objects"), tx.kv.count("gc")) == before
    assert [i.name for i in ns.images.list()] == ["x"]


def test_one_transaction_one_timestamp(db, ns):
    with db.update() as tx:
        a = ns.images.create(image("a"), tx=tx)
        b = ns.images.create(image("b"))  # joins the open transaction
    assert a.created_at == b.created_at
    assert ns.images.get("b").created_at == a.created_at


def test_round_trip_across_reopen(root):
    img = image("docker.io/x/y:1", labels={"k": "v"}, annotations={"a": "b"})
    with cargohold.open(root) as db:
        created = db.namespace("n").images.create(img)
    with cargohold.open(root) as db:
        assert db.namespace("n").images.get(img.name) == created
        assert db.namespaces.list() == ["n"]
        updated = db.namespace("n").images.update(replace(img, labels={"k": "w"}), "labels.k")
    with cargohold.open(root) as db:
        assert db.namespace("n").images.list() == [updated]
        assert updated.labels == {"k": "w"} and updated.created_at == created.created_at
        db.namespace("n").images.delete(img.name)
    with cargohold.open(root) as db:
        assert db.namespace("n").images.list() == []
        with pytest.raises(errors.NotFound):
            db.namespace("n").images.get(img.name)


# -- node table, dirty marks, events --------------------------------------------------------------

def test_node_table_follows_the_image(db, ns):
    ref = digest("config")
    img = ns.images.create(image("x", labels={"containerd.io/gc.ref.content.config": ref}))
    e = entry(db, ResourceType.IMAGE, "testing", "x")
    assert e.flags & index.F_ROOT and not e.flags & index.F_EXPIRES
    assert edges(e, index.E_STRONG) == {node(ResourceType.CONTENT, "testing", img.target.digest)}
    assert edges(e, index.E_REF) == {node(ResourceType.CONTENT, "testing", ref)}

    moved = ns.images.update(image("x", size=99, labels={"containerd.io/gc.expire": "2030-01-01T00:00:00Z"}))
    e = entry(db, ResourceType.IMAGE, "testing", "x")
    assert edges(e, index.E_STRONG) == {node(ResourceType.CONTENT, "testing", moved.target.digest)}
    assert edges(e, index.E_REF) == set()
    assert e.flags & index.F_EXPIRES and e.expire == cargohold.timeutil.parse_rfc3339("2030-01-01T00:00:00Z")

    ns.images.update(Image("x", None, {"containerd.io/gc.ref.image": "other"}), "labels")
    e = entry(db, ResourceType.IMAGE, "testing", "x")
    assert not e.flags & index.F_EXPIRES
    assert edges(e, index.E_REF) == {node(ResourceType.IMAGE, "testing", "other")}

    ns.images.delete("x")
    assert entry(db, ResourceType.IMAGE, "testing", "x") is None


def test_delete_marks_dirty_and_publishes(db, ns, events):
    seen = []
    db.register_mutation_callback(seen.append)
    ns.images.create(image("x"))
    assert db.dirty == 0 and seen == [False]
    ns.images.delete("x")
    assert db.dirty == 1 and seen == [False, True]
    assert events == [("testing", TOPIC_IMAGE_DELETE, ImageDelete("x"))]


def test_nothing_published_when_the_transaction_fails(db, ns, events):
    ns.images.create(image("x"))
    with pytest.raises(RuntimeError):
        with db.update():
            ns.images.delete("x")
            raise RuntimeError("abort")
    assert events == [] and ns.images.get("x")


def test_remove_for_gc(db, ns, events):
    ns.images.create(image("x"))
    ns.images.create(image("y"))
    with db.update() as tx:
        images.remove_for_gc(tx, "testing", "x")
    with pytest.raises(errors.NotFound):
        ns.images.get("x")
    assert entry(db, ResourceType.IMAGE, "testing", "x") is None
    assert entry(db, ResourceType.IMAGE, "testing", "y") is not None
    assert [i.name for i in ns.images.list()] == ["y"]
    assert events == [] and db.dirty == 0


# -- leases ----------------------------------------------------------------------------------------

def test_image_created_through_a_lease_joins_it(db, ns):
    lease = ns.leases.create("l1")
    leased = ns.with_lease(lease.id)
    leased.images.create(image("x"))
    assert ns.leases.list_resources("l1") == [Resource("x", "images")]
    assert ns.images.get("x").name == "x"

    # An update joins the lease only when the image can expire (containerd).
    ns.images.create(image("y"))
    leased.images.update(image("y", labels={"a": "b"}))
    assert Resource("y", "images") not in ns.leases.list_resources("l1")
    leased.images.update(image("y", labels={"containerd.io/gc.expire": "2031-01-01T00:00:00Z"}))
    assert Resource("y", "images") in ns.leases.list_resources("l1")

    leased.images.delete("x")  # deleting through the lease drops the image from it
    assert ns.leases.list_resources("l1") == [Resource("y", "images")]


def test_image_through_a_missing_lease(db, ns):
    before = record_count(db)
    with pytest.raises(errors.NotFound, match="lease 'gone'"):
        ns.with_lease("gone").images.create(image("x"))
    assert record_count(db) == before
    with pytest.raises(errors.NotFound):
        ns.images.get("x")


@pytest.mark.parametrize("raw", [b"\xc1garbage", cargohold.schema.pack({"l": {}}), cargohold.schema.pack([1])])
def test_damaged_record_is_corrupted(db, ns, raw):
    ns.images.create(image("x"))
    with db.update() as tx:
        tx.kv.put("objects", cargohold.schema.object_key("testing", cargohold.schema.K_IMAGE, "x"), raw)
    for call in (lambda: ns.images.get("x"), ns.images.list, lambda: ns.images.update(image("x"))):
        with pytest.raises(errors.Corrupted, match="image 'x'"):
            call()
