"""The lease store (``ns.leases``), lease resources and `leases.attach`,
including containerd's leases_test.go scenarios."""

from __future__ import annotations

import pytest

import cargohold
from cargohold import Lease, Resource, ResourceType, errors, leases, schema
from cargohold.gc import index
from cargohold.validation import validate_identifier
from storeutil import db, ns  # noqa: F401 (pytest fixtures)
from storeutil import START, digest, entry, lease_rows, record_count

SNAPSHOT_KEY = "RstMI3X8vguKoPFkmIStZ5fQFI7F1L0o"


# -- containerd's TestLeases ---------------------------------------------------------------------

def test_leases_scenario(db, ns):
    made = []
    for lease_id, create_err in [("tx1", None), ("tx1", errors.AlreadyExists), ("tx2", None)]:
        with db.update() as tx:
            if create_err:
                with pytest.raises(create_err, match=lease_id):
                    ns.leases.create(lease_id, tx=tx)
            else:
                made.append(ns.leases.create(lease_id, tx=tx))
    listed = ns.leases.list()
    assert [(l.id, l.created_at) for l in listed] == [(l.id, l.created_at) for l in made]
    assert all(l.created_at > START for l in listed)

    ns.leases.delete("tx1")
    with pytest.raises(errors.NotFound, match="tx1"):
        ns.leases.delete("tx1")
    ns.leases.delete("tx2")
    assert ns.leases.list() == []


# -- containerd's TestLeasesList -----------------------------------------------------------------

LIST_SET = [
    ("lease1", {"label1": "value1", "label3": "other"}),
    ("lease2", {"label1": "value1", "label2": "", "label3": "other"}),
    ("lease3", {"label1": "value2", "label2": "something"}),
]

LIST_CASES = [
    ((), {"lease1", "lease2", "lease3"}),
    (("id==lease1",), {"lease1"}),
    (("id==lease1", "id==lease2"), {"lease1", "lease2"}),
    (("labels.label1",), {"lease1", "lease2", "lease3"}),
    (("labels.label1==value1",), {"lease1", "lease2"}),
    (("labels.label1==value2",), {"lease3"}),
    (("labels.label2",), {"lease3"}),
    (("labels.label2", "labels.label3"), {"lease1", "lease2", "lease3"}),
    # beyond containerd's table: every operator, quoting, AND
    (("id!=lease1",), {"lease2", "lease3"}),
    (("id~=[23]$",), {"lease2", "lease3"}),
    (('labels."label1"=="value1",labels.label3==other',), {"lease1", "lease2"}),
    (("labels.label1==value1,id!=lease1",), {"lease2"}),
    (("labels.label3!=other",), {"lease3"}),
    (("name==lease1",), set()),
]


@pytest.mark.parametrize("filters,expected", LIST_CASES, ids=[" | ".join(f) for f, _ in LIST_CASES])
def test_list_filters(db, ns, filters, expected):
    with db.update() as tx:
        for lease_id, labels in LIST_SET:
            ns.leases.create(lease_id, labels, tx=tx)
    assert {l.id for l in ns.leases.list(*filters)} == expected


def test_list_then_delete_everything(ns):
    for lease_id, labels in LIST_SET:
        ns.leases.create(lease_id, labels)
    assert ns.leases.list("id==lease2")[0].labels == {"label1": "value1", "label3": "other"}
    for lease_id, _ in LIST_SET:
        ns.leases.delete(lease_id)
        with pytest.raises(errors.NotFound):
            ns.leases.delete(lease_id)


def test_list_filter_syntax_error(ns):
    with pytest.raises(errors.InvalidArgument, match="position 4"):
        ns.leases.list("id==")


# -- containerd's TestLeaseResource ---------------------------------------------------------------

RESOURCE_CASES = [
    ("l1", Resource("sha256:29f5d56d12684887bdfa50dcd29fc31eea4aaf4ad3bec43daf19026a7ce69912", "content"), None),
    ("l1", Resource("d2UdcINOwrBTQG9kS8rySAM3eMNBSojH", "ingests"), None),
    ("l1", Resource("d2UdcINOwrBTQG9kS8rySAM3eMNBSojH", "ingests"), None),  # adding it again is fine
    ("l1", Resource("xCAV3F6PddlXitbtby0Vo23Qof6RTWpG", "leases"), errors.Unsupported),
    ("l1", Resource("05O9ljptPu5Qq9kZGOacEfymBwQFM8ZH", "containers"), errors.Unsupported),
    ("l1", Resource("qBUHpWBn03YaCt9cL3PPGKWoxBqTlLfu", "images"), None),
    ("l1", Resource("HMemOhlygombYhkhHhAZj5aRbDy2a3z2", "snapshots"), errors.InvalidArgument),
    ("l1", Resource(SNAPSHOT_KEY, "snapshots/overlayfs"), None),
    ("l1", Resource("HMemOhlygombYhkhHhAZj5aRbDy2a3z2", "snapshots/overlayfs/type1"), errors.InvalidArgument),
    ("non-found", Resource("HMemOhlygombYhkhHhAZj5aRbDy2a3z2", "snapshots/overlayfs"), errors.NotFound),
]


def test_lease_resource_scenario(db, ns):
    ns.leases.create("l1")
    added = set()
    for lease_id, resource, err in RESOURCE_CASES:
        with db.update() as tx:
            if err:
                with pytest.raises(err):
                    ns.leases.add_resource(lease_id, resource, tx=tx)
            else:
                ns.leases.add_resource(lease_id, resource, tx=tx)
                added.add(resource)
    got = ns.leases.list_resources("l1")
    assert len(got) == len(set(got)) == len(added) == 4
    assert set(got) == added

    ns.leases.delete_resource("l1", Resource(SNAPSHOT_KEY, "snapshots/overlayfs"))
    assert set(ns.leases.list_resources("l1")) == added - {Resource(SNAPSHOT_KEY, "snapshots/overlayfs")}


# -- resources of every type, validation -----------------------------------------------------------

EVERY_TYPE = [Resource(digest("blob"), "content"), Resource("ingest-ref/1", "ingests"),
              Resource("docker.io/library/alpine:3", "images"), Resource("sha256:chain/1", "snapshots/native"),
              Resource("k", "snapshots/overlayfs")]

NODES = {
    "content": (ResourceType.CONTENT, digest("blob")),
    "ingests": (ResourceType.INGEST, "ingest-ref/1"),
    "images": (ResourceType.IMAGE, "docker.io/library/alpine:3"),
    "snapshots/native": (ResourceType.SNAPSHOT, "native/sha256:chain/1"),
    "snapshots/overlayfs": (ResourceType.SNAPSHOT, "overlayfs/k"),
}


def test_the_overlay_alias_names_overlayfs_in_lease_resources(db, ns):
    ns.leases.create("l")
    ns.leases.add_resource("l", Resource("k", "snapshots/overlay"))
    assert ns.leases.list_resources("l") == [Resource("k", "snapshots/overlayfs")]
    ns.leases.delete_resource("l", Resource("k", "snapshots/overlay"))
    assert ns.leases.list_resources("l") == []


def test_resources_of_every_type(db, ns):
    ns.leases.create("l")
    for r in EVERY_TYPE:
        ns.leases.add_resource("l", r)
    assert set(ns.leases.list_resources("l")) == set(EVERY_TYPE)
    rows = lease_rows(db, "testing", "l")
    prefix = schema.lease_resource_key("testing", "l")
    assert {(row[len(prefix)], schema.text(row[len(prefix) + 1:])) for row in rows} == set(NODES.values())
    for r in EVERY_TYPE:
        ns.leases.delete_resource("l", r)
    assert ns.leases.list_resources("l") == [] and lease_rows(db, "testing", "l") == []


BAD_RESOURCES = [
    (Resource("sha256:short", "content"), errors.InvalidArgument, "sha256:short"),
    (Resource("", "ingests"), errors.InvalidArgument, "ingests resource id"),
    (Resource("a\x00b", "images"), errors.InvalidArgument, "NUL"),
    (Resource("k" * 256, "snapshots/native"), errors.InvalidArgument, "255"),
    (Resource("k", "snapshots/"), errors.InvalidArgument, "snapshotter"),
    (Resource("k", "snapshots/bad name"), errors.InvalidArgument, "'bad name'"),
    (Resource("k", "content/x"), errors.InvalidArgument, "'content/x'"),
    (Resource("k", "images/x"), errors.InvalidArgument, "'images/x'"),
    (Resource("k", "snapshots"), errors.InvalidArgument, "'snapshots'"),
    (Resource("k", "blobs"), errors.Unsupported, "'blobs'"),
    (Resource("k", ""), errors.Unsupported, "''"),
    (Resource(1, "images"), errors.InvalidArgument, "lease resource id"),
    (Resource("k", None), errors.InvalidArgument, "lease resource type"),
    (("k", "images"), errors.InvalidArgument, "cargohold.Resource"),
]


@pytest.mark.parametrize("resource,err,named", BAD_RESOURCES, ids=[repr(r) for r, _, _ in BAD_RESOURCES])
def test_bad_resources(db, ns, resource, err, named):
    ns.leases.create("l")
    before = record_count(db)
    for call in (ns.leases.add_resource, ns.leases.delete_resource):
        with pytest.raises(err, match=named.replace("(", r"\(")):
            call("l", resource)
    assert record_count(db) == before and db.dirty == 0


def test_missing_lease(db, ns):
    r = Resource("x", "images")
    for call in (lambda: ns.leases.add_resource("nope", r), lambda: ns.leases.delete_resource("nope", r),
                 lambda: ns.leases.list_resources("nope"), lambda: ns.leases.delete("nope")):
        with pytest.raises(errors.NotFound, match="'nope'"):
            call()
    assert record_count(db) == (0, 0, 0, 0)


@pytest.mark.parametrize("bad", ["", "a b", "-x", "x" * 77, 5])
def test_lease_ids_are_identifiers(db, ns, bad):
    for call in (lambda: ns.leases.create(bad), lambda: ns.leases.delete(bad),
                 lambda: ns.leases.add_resource(bad, Resource("x", "images")),
                 lambda: ns.leases.delete_resource(bad, Resource("x", "images")),
                 lambda: ns.leases.list_resources(bad)):
        with pytest.raises(errors.InvalidArgument, match="lease id"):
            call()
    assert record_count(db) == (0, 0, 0, 0)


@pytest.mark.parametrize("labels,named", [({"k": "v" * 4096}, "'k'"), ({"": "v"}, "label key"),
                                          ({"k": 1}, "'k'"), ([("k", "v")], "mapping")])
def test_lease_labels_are_validated(db, ns, labels, named):
    with pytest.raises(errors.InvalidArgument, match=named):
        ns.leases.create("l", labels)
    assert record_count(db) == (0, 0, 0, 0)


# -- create, ids, labels, node table ------------------------------------------------------------------

def test_generated_ids(ns):
    a, b = ns.leases.create(), ns.leases.create(labels={"x": "y"})
    assert a.id != b.id
    for lease in (a, b):
        assert validate_identifier(lease.id) == lease.id
    assert {l.id for l in ns.leases.list()} == {a.id, b.id}
    assert ns.leases.list(f"id=={b.id}") == [b] and b.labels == {"x": "y"}


def test_gc_labels_are_stored_as_given(db, ns):
    labels = {"containerd.io/gc.expire": "2031-02-03T04:05:06Z", "containerd.io/gc.flat": "true"}
    lease = ns.leases.create("l", labels)
    assert lease == Lease("l", lease.created_at, labels) and ns.leases.list() == [lease]
    e = entry(db, ResourceType.LEASE, "testing", "l")
    assert e.flags & index.F_ROOT and e.flags & index.F_FLAT
    assert e.expire == cargohold.timeutil.parse_rfc3339("2031-02-03T04:05:06Z")

    odd = ns.leases.create("odd", {"containerd.io/gc.expire": "tomorrow"})  # the collector decides
    assert odd.labels == {"containerd.io/gc.expire": "tomorrow"}
    e = entry(db, ResourceType.LEASE, "testing", "odd")
    assert e.flags & index.F_ROOT and not e.flags & (index.F_FLAT | index.F_EXPIRES)


def test_delete_drops_resources_node_and_marks_dirty(db, ns):
    ns.leases.create("l")
    ns.leases.create("other")
    for r in EVERY_TYPE:
        ns.leases.add_resource("l", r)
        ns.leases.add_resource("other", r)
    assert db.dirty == 0
    ns.leases.delete("l")
    assert db.dirty == 1
    assert lease_rows(db, "testing", "l") == [] and entry(db, ResourceType.LEASE, "testing", "l") is None
    assert len(lease_rows(db, "testing", "other")) == len(EVERY_TYPE)
    assert [l.id for l in ns.leases.list()] == ["other"]


def test_delete_resource_marks_dirty_when_it_releases_one(db, ns):
    ns.leases.create("l")
    ns.leases.add_resource("l", EVERY_TYPE[0])
    ns.leases.delete_resource("l", EVERY_TYPE[1])
    assert db.dirty == 0
    ns.leases.delete_resource("l", EVERY_TYPE[0])
    assert db.dirty == 1


def test_remove_for_gc(db, ns):
    ns.leases.create("l", {"containerd.io/gc.expire": "2000-01-01T00:00:00Z"})
    ns.leases.create("keep")
    for r in EVERY_TYPE:
        ns.leases.add_resource("l", r)
        ns.leases.add_resource("keep", r)
    with db.update() as tx:
        leases.remove_for_gc(tx, "testing", "l")
    assert [l.id for l in ns.leases.list()] == ["keep"]
    with pytest.raises(errors.NotFound):
        ns.leases.list_resources("l")
    assert lease_rows(db, "testing", "l") == [] and entry(db, ResourceType.LEASE, "testing", "l") is None
    assert set(ns.leases.list_resources("keep")) == set(EVERY_TYPE)
    assert db.dirty == 0


def test_round_trip_across_reopen(root):
    with cargohold.open(root) as db:
        lease = db.namespace("n").leases.create("l", {"a": "b"})
        for r in EVERY_TYPE:
            db.namespace("n").leases.add_resource("l", r)
    with cargohold.open(root) as db:
        ns = db.namespace("n")
        assert ns.leases.list() == [lease]
        assert set(ns.leases.list_resources("l")) == set(EVERY_TYPE)
        ns.leases.delete_resource("l", EVERY_TYPE[0])
    with cargohold.open(root) as db:
        assert set(db.namespace("n").leases.list_resources("l")) == set(EVERY_TYPE[1:])
        db.namespace("n").leases.delete("l")
    with cargohold.open(root) as db:
        assert db.namespace("n").leases.list() == []


def test_leases_are_per_namespace(db):
    db.namespace("a").leases.create("l")
    assert db.namespace("b").leases.list() == []
    with pytest.raises(errors.NotFound):
        db.namespace("b").leases.add_resource("l", Resource("x", "images"))
    db.namespace("b").leases.create("l")  # the same id in another namespace is another lease
    db.namespace("a").leases.add_resource("l", Resource("x", "images"))
    assert db.namespace("b").leases.list_resources("l") == []


# -- attach: what the other stores call for objects created through with_lease --------------------

def test_attach_adds_resources_of_every_type_to_the_handles_lease(db, ns):
    ns.leases.create("l")
    leased = ns.with_lease("l")
    with db.update() as tx:
        for r in EVERY_TYPE:
            leases.attach(tx, leased, r)
            leases.attach(tx, ns, r)  # a handle without a lease attaches nothing
    assert set(ns.leases.list_resources("l")) == set(EVERY_TYPE)
    assert len(lease_rows(db, "testing", "l")) == len(EVERY_TYPE)


def test_attach_to_a_missing_lease(db, ns):
    with pytest.raises(errors.NotFound, match="lease 'gone'"):
        with db.update() as tx:
            leases.attach(tx, ns.with_lease("gone"), EVERY_TYPE[0])
    assert lease_rows(db, "testing", "gone") == []


@pytest.mark.parametrize("raw", [b"\xc1garbage", schema.pack({"l": {}}), schema.pack("text")])
def test_damaged_record_is_corrupted(db, ns, raw):
    ns.leases.create("l")
    with db.update() as tx:
        tx.kv.put(schema.T_OBJECTS, schema.object_key("testing", schema.K_LEASE, "l"), raw)
    with pytest.raises(errors.Corrupted, match="lease 'l'"):
        ns.leases.list()


def test_deleting_the_namespace_drops_its_leases(db, ns):
    ns.leases.create("l")
    for r in EVERY_TYPE:
        ns.leases.add_resource("l", r)
    db.namespaces.delete("testing")
    assert record_count(db) == (0, 0, 0, 0)
    assert ns.leases.list() == []
