"""The garbage collector, driven through the public API (containerd's gc tests, re-expressed)."""

from __future__ import annotations

import os
import threading

import pytest

import cargohold
from cargohold import Node, Resource, ResourceType as RT, errors
from cargohold.events import ImageDelete, SnapshotRemove
from gcutil import Clock, blob, chain, container, content_node as cn, image, snap_node as sn

NS = "test"


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def events():
    return []


@pytest.fixture
def db(root, clock, events):
    with cargohold.open(root, clock=clock,
                        publisher=lambda ns, topic, ev: events.append((ns, topic, ev))) as database:
        yield database


@pytest.fixture
def ns(db):
    return db.namespace(NS)


def survivors(db) -> set:
    return set(db.nodes())


def backend_blobs(db) -> set:
    return {info.digest for info in db.content_store.walk()}


def backend_snapshots(db, name="native") -> int:
    return len(list(db.snapshotters[name].walk()))


def test_nothing_to_collect_on_an_empty_database(db):
    stats = db.garbage_collect()
    assert stats.removed == [] and stats.meta_d >= 0 and stats.elapsed() == stats.meta_d
    assert stats.content_d == 0 and stats.snapshot_d == {}


def test_roots_keep_and_the_rest_goes(db, ns):
    target = blob(ns, b"manifest")
    image(ns, "img", target)
    orphan = blob(ns, b"orphan")
    rooted = blob(ns, b"rooted", labels={"containerd.io/gc.root": "true"})
    chain(ns, ["base", "top"])
    chain(ns, ["lonely"])
    chain(ns, ["pinned"], labels={"containerd.io/gc.root": "true"})
    ns.snapshotter("native").prepare("rootfs", "top")
    container(ns, "ctr", "rootfs")
    assert backend_snapshots(db) == 5
    stats = db.garbage_collect()
    assert set(stats.removed) == {cn(NS, orphan), sn(NS, "lonely")}
    assert survivors(db) == {cn(NS, target), cn(NS, rooted), sn(NS, "base"), sn(NS, "top"),
                             sn(NS, "pinned"), sn(NS, "rootfs"), Node(RT.IMAGE, NS, "img")}
    # the backends were cleaned after the commit
    assert backend_blobs(db) == {target, rooted}
    assert backend_snapshots(db) == 4
    assert stats.content_d > 0 and set(stats.snapshot_d) == {"native"}
    with pytest.raises(errors.NotFound):
        ns.content.info(orphan)
    assert ns.content.read(target) == b"manifest"


def test_label_references_and_suffix_rules(db, ns):
    layers = [blob(ns, b"layer%d" % i) for i in range(4)]
    near_miss = blob(ns, b"near-miss")
    chain(ns, ["snap"])
    chain(ns, ["other-snapshotter"], snapshotter="overlay")
    config = blob(ns, b"config", labels={
        "containerd.io/gc.ref.content": layers[0],
        "containerd.io/gc.ref.content.l.1": layers[1],
        "containerd.io/gc.ref.content/l/2": layers[2],
        "containerd.io/gc.ref.contentbad": near_miss,
        "containerd.io/gc.ref.snapshot.native": "snap",
        "containerd.io/gc.ref.snapshot.overlay/x": "other-snapshotter",
    })
    manifest = blob(ns, b"manifest", labels={"containerd.io/gc.ref.content.config": config})
    image(ns, "img", manifest)
    unreferenced = blob(ns, b"unreferenced", labels={"containerd.io/gc.ref.content": layers[3]})
    db.garbage_collect()
    kept = survivors(db)
    assert {cn(NS, d) for d in layers[:3] + [config, manifest]} <= kept
    assert sn(NS, "snap") in kept and sn(NS, "other-snapshotter", "overlayfs") in kept
    assert cn(NS, near_miss) not in kept
    assert cn(NS, unreferenced) not in kept and cn(NS, layers[3]) not in kept


def test_image_references_and_back_references(db, ns):
    base_target = blob(ns, b"base-manifest")
    image(ns, "base", base_target, labels={"containerd.io/gc.expire": "2000-01-01T00:00:00Z"})
    target = blob(ns, b"manifest", labels={"containerd.io/gc.ref.image": "base"})
    image(ns, "app", target)
    # back references: reachable whenever what they name is reachable
    attached = blob(ns, b"signature", labels={"containerd.io/gc.bref.content": target})
    via_image = blob(ns, b"via-image", labels={"containerd.io/gc.bref.image.x": "app"})
    via_container = blob(ns, b"via-container", labels={"containerd.io/gc.bref.container": "ctr"})
    chain(ns, ["via-snapshot"])
    ns.snapshotter("native").update(
        cargohold.SnapshotInfo("via-snapshot", labels={"containerd.io/gc.bref.snapshot.native/x": "rootfs"}),
        "labels")
    dangling = blob(ns, b"dangling", labels={"containerd.io/gc.bref.content": "sha256:" + "0" * 64})
    bad_suffix = blob(ns, b"bad-suffix", labels={"containerd.io/gc.bref.contentx": target})
    ns.snapshotter("native").prepare("rootfs")
    container(ns, "ctr", "rootfs")
    db.garbage_collect()
    kept = survivors(db)
    assert Node(RT.IMAGE, NS, "base") in kept  # expired, but referenced by a label
    assert {cn(NS, attached), cn(NS, via_image), cn(NS, via_container), sn(NS, "via-snapshot")} <= kept
    assert cn(NS, dangling) not in kept and cn(NS, bad_suffix) not in kept


def test_expired_image_is_collected(db, ns, clock, events):
    target = blob(ns, b"manifest")
    image(ns, "temp", target, labels={"containerd.io/gc.expire": clock.rfc3339(hours=1)})
    image(ns, "bad-expiry", blob(ns, b"other"), labels={"containerd.io/gc.expire": "soon"})
    db.garbage_collect()
    assert Node(RT.IMAGE, NS, "temp") in survivors(db)
    clock.advance(hours=2)
    stats = db.garbage_collect()
    assert set(stats.removed) == {Node(RT.IMAGE, NS, "temp"), cn(NS, target)}
    with pytest.raises(errors.NotFound):
        ns.images.get("temp")
    assert ns.images.get("bad-expiry")  # an unparsable expiry is ignored, as containerd does
    assert (NS, "/images/delete", ImageDelete("temp")) in events


def test_leases_hold_resources_until_they_expire(db, ns, clock):
    lease = ns.leases.create("build", labels={"containerd.io/gc.expire": clock.rfc3339(minutes=10)})
    leased = ns.with_lease(lease.id)
    d = blob(leased, b"leased blob")
    chain(leased, ["leased-snap"])
    free = blob(ns, b"free")
    ns.leases.create("forever")
    ns.leases.add_resource("forever", Resource("img", "images"))
    image(ns, "img", blob(ns, b"img-target"), labels={"containerd.io/gc.expire": "2000-01-01T00:00:00Z"})
    db.garbage_collect()
    kept = survivors(db)
    assert {cn(NS, d), sn(NS, "leased-snap"), Node(RT.LEASE, NS, "build"), Node(RT.IMAGE, NS, "img")} <= kept
    assert cn(NS, free) not in kept
    clock.advance(minutes=11)
    stats = db.garbage_collect()
    assert {Node(RT.LEASE, NS, "build"), cn(NS, d), sn(NS, "leased-snap")} <= set(stats.removed)
    assert Node(RT.LEASE, NS, "forever") in survivors(db)


def test_flat_lease_holds_only_direct_resources(db, ns):
    ns.leases.create("flat", labels={"containerd.io/gc.flat": "true"})
    child = blob(ns, b"child")
    parent = blob(ns, b"parent", labels={"containerd.io/gc.ref.content": child})
    chain(ns, ["p1", "p2"], labels={"containerd.io/gc.ref.content": child})
    target = blob(ns, b"target", labels={"containerd.io/gc.ref.content": child})
    image(ns, "img", target, labels={"containerd.io/gc.expire": "2000-01-01T00:00:00Z",
                                      "containerd.io/gc.ref.content": child})
    for resource in (Resource(parent, "content"), Resource("p2", "snapshots/native"), Resource("img", "images")):
        ns.leases.add_resource("flat", resource)
    db.garbage_collect()
    kept = survivors(db)
    # direct resources, a snapshot's parent chain and an image's target stay; their references go
    assert {cn(NS, parent), sn(NS, "p2"), sn(NS, "p1"), Node(RT.IMAGE, NS, "img"), cn(NS, target)} <= kept
    assert cn(NS, child) not in kept


def test_ingests_expire(db, ns, clock):
    with ns.content.writer("partial", total=10) as w:
        w.write(b"12345")  # left without commit: a resumable ingest, 24 hours to live
    db.garbage_collect()
    assert Node(RT.INGEST, NS, "partial") in survivors(db)
    clock.advance(hours=25)
    stats = db.garbage_collect()
    assert stats.removed == [Node(RT.INGEST, NS, "partial")]
    assert ns.content.statuses() == []
    assert db.content_store.statuses() == []  # the backend ingest was aborted by the cleanup


def test_shared_ingest_keeps_its_expected_blob(db, clock):
    """An ingest that will commit shared content keeps the blob while the last owner lets go."""
    owner, other = db.namespace("owner"), db.namespace("other")
    d = blob(owner, b"shared bytes")
    with other.content.writer("later", expected=d) as w:
        assert w.status().offset == len(b"shared bytes")  # nothing to send
    owner.content.delete(d)
    stats = db.garbage_collect()
    assert Node(RT.INGEST, "other", "later") in survivors(db) and stats.content_d > 0
    assert backend_blobs(db) == {d}  # still expected by the ingest
    with other.content.writer("later", expected=d) as w:
        w.commit(len(b"shared bytes"), d)
    assert other.content.read(d) == b"shared bytes"
    clock.advance(hours=25)
    db.garbage_collect()
    assert backend_blobs(db) == set()  # nothing holds the committed blob in "other" either


def test_leased_ingest_lives_by_its_lease(db, ns, clock):
    ns.leases.create("l")
    with ns.with_lease("l").content.writer("leased", total=3) as w:
        w.write(b"abc")
    clock.advance(hours=48)
    db.garbage_collect()
    assert Node(RT.INGEST, NS, "leased") in survivors(db)
    ns.leases.delete("l")
    db.garbage_collect()
    assert Node(RT.INGEST, NS, "leased") not in survivors(db)


def test_conditional_snapshot_references(db, ns, clock):
    used = clock.rfc3339(minutes=-30)
    chain(ns, ["recent"], labels={"containerd.io/gc.cond.value-usedat": used})
    chain(ns, ["stale"], labels={"containerd.io/gc.cond.value-usedat": clock.rfc3339(hours=-5)})
    chain(ns, ["unused"])
    target = blob(ns, b"manifest", labels={
        "containerd.io/gc.cond.snapshot.native": "usedat<2h|recent",
        "containerd.io/gc.cond.snapshot.native/b": "usedat<2h|stale",
        "containerd.io/gc.cond.snapshot.native/c": "usedat<2h|unused",
    })
    image(ns, "img", target)
    db.garbage_collect()
    kept = survivors(db)
    assert sn(NS, "recent") in kept
    assert sn(NS, "stale") not in kept and sn(NS, "unused") not in kept
    clock.advance(hours=3)  # now the last use is too old
    db.garbage_collect()
    assert sn(NS, "recent") not in survivors(db)


def test_snapshot_events_and_parent_links(db, ns, events):
    chain(ns, ["a", "b", "c"])
    ns.snapshotter("native").prepare("keep", "a")
    container(ns, "ctr", "keep")
    db.garbage_collect()
    assert survivors(db) == {sn(NS, "a"), sn(NS, "keep")}
    removed = {ev for ns_, topic, ev in events if topic == "/snapshot/remove"}
    assert removed == {SnapshotRemove("b", "native"), SnapshotRemove("c", "native")}
    # the parent no longer lists the collected children: it can be removed
    ns.containers.delete("ctr")
    ns.snapshotter("native").remove("keep")
    ns.snapshotter("native").remove("a")
    db.garbage_collect()
    assert backend_snapshots(db) == 0


def test_namespaces_are_independent(db):
    one, two = db.namespace("one"), db.namespace("two")
    d1 = blob(one, b"shared bytes")
    d2 = blob(two, b"shared bytes")
    assert d1 == d2
    image(one, "img", d1)
    db.garbage_collect()
    assert cn("one", d1) in survivors(db) and cn("two", d2) not in survivors(db)
    assert backend_blobs(db) == {d1}  # still referenced from namespace one


def test_nodes_mark_and_explain(db, ns):
    layer = blob(ns, b"layer")
    manifest = blob(ns, b"manifest", labels={"containerd.io/gc.ref.content.l.0": layer})
    image(ns, "img", manifest)
    ns.snapshotter("native").prepare("rootfs")
    container(ns, "ctr", "rootfs")
    orphan = blob(ns, b"orphan")
    nodes = set(db.nodes())
    assert Node(RT.CONTAINER, NS, "ctr") not in nodes  # containers are never collected
    marked = db.mark()
    assert Node(RT.CONTAINER, NS, "ctr") in marked
    assert marked - {Node(RT.CONTAINER, NS, "ctr")} == nodes - {cn(NS, orphan)}
    assert db.unreachable() == [cn(NS, orphan)]
    assert db.explain(cn(NS, layer)) == [Node(RT.IMAGE, NS, "img"), cn(NS, manifest), cn(NS, layer)]
    assert db.explain(sn(NS, "rootfs")) == [Node(RT.CONTAINER, NS, "ctr"), sn(NS, "rootfs")]
    assert db.explain(cn(NS, orphan)) is None
    assert db.explain(cn(NS, "sha256:" + "9" * 64)) is None
    with pytest.raises(errors.InvalidArgument):
        db.explain("not a node")
    assert set(db.nodes()) == nodes  # none of these changed anything


def test_dirty_tracking_and_cleanup_markers(db, ns):
    d = blob(ns, b"bytes")
    assert db.dirty == 0
    ns.content.delete(d)
    assert db.dirty == 1
    stats = db.garbage_collect()
    assert db.dirty == 0
    assert backend_blobs(db) == set() and stats.content_d > 0
    stats = db.garbage_collect()
    assert stats.content_d == 0  # nothing dirty: the content backend is left alone


def test_collect_refused_inside_a_transaction(db):
    with db.update():
        with pytest.raises(errors.FailedPrecondition):
            db.garbage_collect()


def test_synchronous_image_delete(db, ns):
    target = blob(ns, b"manifest")
    image(ns, "img", target)
    ns.images.delete("img", sync=True)
    assert cn(NS, target) not in survivors(db)
    assert backend_blobs(db) == set()


# -- collectible resources ---------------------------------------------------------------------------

STREAM = 8


class Streams:
    """A user collector: named streams kept in memory, active per namespace or leased."""

    def __init__(self, fail_all=False):
        self.streams = {}   # (ns, name) -> active?
        self.leased = {}    # (ns, lease) -> [names]
        self.removed = []
        self.events = []
        self.fail_all = fail_all

    def reference_label(self):
        return "stream"

    def start_collection(self):
        owner = self

        class Context:
            def all(self, fn):
                if owner.fail_all:
                    raise RuntimeError("collector failure")
                for ns, name in owner.streams:
                    fn(Node(STREAM, ns, name))

            def active(self, namespace, fn):
                for (ns, name), active in owner.streams.items():
                    if ns == namespace and active:
                        fn(Node(STREAM, ns, name))

            def leased(self, namespace, lease, fn):
                for name in owner.leased.get((namespace, lease), []):
                    fn(Node(STREAM, namespace, name))

            def remove(self, node):
                owner.removed.append(node)
                owner.streams.pop((node.namespace, node.key), None)

            def cancel(self):
                owner.events.append("cancel")

            def finish(self):
                owner.events.append("finish")

        return Context()


def test_collectible_resources(db, ns):
    streams = Streams()
    db.register_collectible_resource(STREAM, streams)
    streams.streams = {(NS, "active"): True, (NS, "referenced"): False, (NS, "leased"): False,
                       (NS, "idle"): False, ("nowhere", "ghost"): False}
    ns.leases.create("l")
    streams.leased[(NS, "l")] = ["leased"]
    image(ns, "img", blob(ns, b"m", labels={"containerd.io/gc.ref.stream.x": "referenced"}))
    assert Node(STREAM, NS, "idle") in set(db.nodes())
    assert Node(STREAM, NS, "referenced") in db.mark()
    streams.events.clear()
    stats = db.garbage_collect()
    assert set(streams.removed) == {Node(STREAM, NS, "idle"), Node(STREAM, "nowhere", "ghost")}
    assert set(streams.removed) <= set(stats.removed)
    assert streams.events == ["finish"]
    assert set(streams.streams) == {(NS, "active"), (NS, "referenced"), (NS, "leased")}


def test_collector_registration_rules(db):
    with pytest.raises(errors.InvalidArgument):
        db.register_collectible_resource(RT.CONTENT, Streams())
    with pytest.raises(errors.InvalidArgument):
        db.register_collectible_resource(0x1F, Streams())
    with pytest.raises(errors.InvalidArgument):
        db.register_collectible_resource(STREAM, object())
    db.register_collectible_resource(STREAM, Streams())
    with pytest.raises(errors.AlreadyExists):
        db.register_collectible_resource(STREAM, Streams())


def test_failed_collection_cancels_collectors_and_changes_nothing(db, ns):
    streams = Streams(fail_all=True)
    db.register_collectible_resource(STREAM, streams)
    orphan = blob(ns, b"orphan")
    with pytest.raises(RuntimeError, match="collector failure"):
        db.garbage_collect()
    assert streams.events == ["cancel"]
    streams.fail_all = False
    assert cn(NS, orphan) in set(db.nodes())
    assert backend_blobs(db) == {orphan}


def test_writers_wait_for_the_collection(db, ns):
    """While a collection holds the writer lock, a writer in another thread waits."""
    entered = threading.Event()
    release = threading.Event()
    order = []

    class Slow(Streams):
        def start_collection(self):
            ctx = super().start_collection()
            original = ctx.all

            def all(fn):
                entered.set()
                release.wait(10)
                order.append("gc")
                original(fn)
            ctx.all = all
            return ctx

    db.register_collectible_resource(STREAM, Slow())
    gc_thread = threading.Thread(target=db.garbage_collect)
    gc_thread.start()
    assert entered.wait(10)
    writer = threading.Thread(target=lambda: (ns.leases.create("late"), order.append("write")))
    writer.start()
    writer.join(0.3)
    assert writer.is_alive()  # held off
    assert ns.leases.list() == []  # readers are not blocked
    release.set()
    gc_thread.join(10)
    writer.join(10)
    assert order == ["gc", "write"]
    assert [lease.id for lease in ns.leases.list()] == ["late"]


def test_stats_tell_what_each_store_freed(db, ns, clock):
    """Records by type, blobs, aborted ingests and snapshot directories per snapshotter, with bytes
    measured before deleting, and their total."""
    from cargohold.snapshots.fsutil import disk_usage

    kept = blob(ns, b"kept")
    image(ns, "img", kept)
    doomed = [blob(ns, b"x" * 1000), blob(ns, b"y" * 24)]
    with ns.content.writer("stale") as w:
        w.write(b"z" * 300)
    chain(ns, ["base", "top"])
    ns.snapshotter("overlay").prepare("scratch")
    with open(os.path.join(ns.snapshotter("overlay").mounts("scratch")[0].source, "f"), "wb") as f:
        f.write(b"o" * 5000)
    sizes = {name: sum(disk_usage(entry.path).size
                       for entry in os.scandir(os.path.join(db.snapshotters[name].root, "snapshots")))
             for name in ("native", "overlayfs")}  # all of it is garbage
    clock.advance(hours=25)  # the ingest expires
    stats = db.garbage_collect()
    assert stats.errors == []
    assert stats.records == {"content": 2, "ingest": 1, "snapshot": 3}
    assert (stats.blobs.count, stats.blobs.bytes) == (2, 1024)
    assert (stats.ingests.count, stats.ingests.bytes) >= (1, 300)
    assert {name: (f.count, f.bytes) for name, f in stats.snapshot_dirs.items()} == {
        "native": (2, sizes["native"]), "overlayfs": (1, sizes["overlayfs"])}
    assert stats.snapshot_dirs["overlayfs"].bytes >= 5000
    assert stats.freed_bytes == stats.blobs.bytes + stats.ingests.bytes + sizes["native"] + sizes["overlayfs"]
    assert stats.writers_blocked_s == stats.meta_d == stats.elapsed()
    assert backend_blobs(db) == {kept} and backend_snapshots(db) == backend_snapshots(db, "overlay") == 0
    again = db.garbage_collect()
    assert again.freed_bytes == 0 and again.records == {} and again.snapshot_dirs == {}


def test_a_failed_removal_is_reported_and_the_rest_goes(db, ns):
    """containerd#3923: one blob that cannot be deleted does not stop the others."""
    stuck, free = blob(ns, b"stuck"), blob(ns, b"free")
    path = db.content_store.blob_path(stuck)
    os.unlink(path)
    os.mkdir(path)  # what unlink cannot remove
    open(os.path.join(path, "inside"), "w").close()
    ns.content.delete(stuck)
    ns.content.delete(free)
    stats = db.garbage_collect()
    (line,) = stats.errors
    assert line.startswith(f"cannot delete blob {stuck}: ") and "\n" not in line
    assert stats.blobs.count == 1 and not os.path.exists(db.content_store.blob_path(free))
    assert db.garbage_collect().errors == [line]  # the marker stays: the next collection tries again
