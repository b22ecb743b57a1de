"""The plan's node table is, entry for entry, what cargohold's own index functions give the objects
decoded in full; the compiled walk and its pure-Python twin agree.

`plan.graph` walks the bulk of a namespace (blobs, snapshots, images, containers) with
`cargohold._native.ctrd_*`, which give an object whose labels cannot matter to the collector its
entry from a constant. Checked against the entry functions of `cargohold.gc.index` fed what the
full decoders (`Host.content`, `Host.images`, ...) return: the same node table and the same
unreachable set, under both rule sets, on the compiled core and on its twin, on

* a root a private containerd wrote (objects with and without labels);
* a root of containerd's BenchmarkGarbageCollect workload written by benchmarks/gogen;
* hand-made databases (tests/gobolt) holding every kind of label the walk must tell apart.
"""

from __future__ import annotations

import importlib.util
import random
from datetime import datetime, timezone
from pathlib import Path

import pytest

import cargohold.containerd as ctrd
from cargohold import _native as native
from cargohold import schema
from cargohold.bolt import reader
from cargohold.containerd import decode, plan
from cargohold.errors import Corrupted
from cargohold.gc import index
from cargohold.gc import labels as gclabels
from cargohold.model import ResourceType
from boltutil import Missing, build_gobolt
from conftest import IMPLEMENTATIONS
from containerd_daemon import image_archive, layer, start_daemon
from ctrd_records import digest_of, gotime, tree_spec, varint

CONTENT, SNAPSHOT, IMAGE, CONTAINER = ResourceType.CONTENT, ResourceType.SNAPSHOT, ResourceType.IMAGE, ResourceType.CONTAINER
WALKED = {CONTENT, SNAPSHOT, IMAGE, CONTAINER}
PAST = datetime(2020, 1, 1, tzinfo=timezone.utc)
NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)
WALKS = ("ctrd_blobs", "ctrd_snapshots", "ctrd_images", "ctrd_containers")


def use(impl, monkeypatch) -> None:
    """Read and plan with one implementation: its bolt walk, its buckets and its containerd walk."""
    monkeypatch.setattr(reader, "BoltTx", impl.BoltTx)
    monkeypatch.setattr(decode, "EMPTY", impl.BoltBucket())
    for name in WALKS:
        monkeypatch.setattr(native, name, getattr(impl, name))


@pytest.fixture
def walk_impl(impl, monkeypatch):
    use(impl, monkeypatch)
    return impl


# -- roots ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_root(tmp_path_factory):
    base = tmp_path_factory.mktemp("plan")
    d = start_daemon(str(base / "d"))
    try:
        image_archive(str(base / "a.tar"), "example.com/a:1", [layer({"a": b"1"}), layer({"b": b"2"})])
        image_archive(str(base / "b.tar"), "example.com/b:1", [layer({"c": b"3"})])
        d.ctr("images", "import", "--snapshotter", "native", str(base / "a.tar"))
        d.ctr("images", "import", "--snapshotter", "overlayfs", str(base / "b.tar"))
        d.ctr("images", "label", "example.com/b:1", "containerd.io/gc.ref.content.extra=sha256:" + "1" * 64)
        d.ctr("containers", "create", "--snapshotter", "native", "example.com/a:1", "labelled")
        d.ctr("containers", "create", "--snapshotter", "overlayfs", "example.com/b:1", "plain")
        d.ctr("containers", "label", "plain", "io.containerd.image.config.stop-signal=")
        d.ctr("snapshots", "--snapshotter", "native", "prepare", "scratch")
        d.ctr("images", "rm", "example.com/a:1")   # its content stays, held by nothing but the container's snapshot
    finally:
        d.stop()
    return d.root


@pytest.fixture(scope="module")
def gogen_root(tmp_path_factory):
    spec = importlib.util.spec_from_file_location(
        "containerd_anchor", Path(__file__).resolve().parent.parent / "benchmarks" / "containerd_anchor.py")
    anchor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(anchor)
    if anchor.gogen_unavailable() is not None:
        pytest.skip(f"benchmarks/gogen cannot be built: {anchor.gogen_unavailable()}")
    return str(anchor.make_containerd_db(tmp_path_factory.mktemp("gogen") / "root", 40))


@pytest.fixture(scope="module")
def gobolt(tmp_path_factory):
    try:
        return build_gobolt(tmp_path_factory.mktemp("gobolt"))
    except Missing as exc:
        pytest.skip(f"bbolt files cannot be written here: {exc}")


def _blob(labels=None) -> dict:
    out = {b"size": varint(4), b"createdat": gotime(PAST), b"updatedat": gotime(PAST)}
    if labels is not None:
        out[b"labels"] = labels
    return out


def _snapshot(name: bytes, parent=None, labels=None) -> dict:
    out = {b"name": b"default/1/" + name, b"createdat": gotime(PAST), b"updatedat": gotime(PAST)}
    if parent is not None:
        out[b"parent"] = parent
    if labels is not None:
        out[b"labels"] = labels
    return out


def _image(digest=None, labels=None) -> dict:
    target = {b"mediatype": b"application/vnd.oci.image.manifest.v1+json", b"size": varint(4)}
    if digest is not None:
        target[b"digest"] = digest
    out = {b"target": target, b"createdat": gotime(PAST), b"updatedat": gotime(PAST)}
    if labels is not None:
        out[b"labels"] = labels
    return out


def _container(snapshotter=None, key=None, labels=None) -> dict:
    out = {b"runtime": {b"name": b"io.containerd.runc.v2"}, b"createdat": gotime(PAST), b"updatedat": gotime(PAST)}
    if snapshotter is not None:
        out[b"snapshotter"] = snapshotter
    if key is not None:
        out[b"snapshotKey"] = key
    if labels is not None:
        out[b"labels"] = labels
    return out


GC = b"containerd.io/gc."


def zoo_namespace(version: int) -> dict:
    """Objects with every kind of label: none, an empty bucket, only labels no collector reads
    (near misses of the gc. prefix, non-ASCII text), GC references, roots, expiries; enough of
    them that buckets span several pages; garbage among them."""
    d = digest_of
    blobs = {
        d(b"plain"): _blob(),
        d(b"other-labels"): _blob({b"containerd.io/distribution.source.docker.io": b"library/x",
                                   "é".encode(): "ü😀".encode()}),
        d(b"empty-labels"): _blob({}),
        d(b"near-miss"): _blob({b"containerd.io/gc": b"x", b"containerd.io/gcx": b"y", b"Containerd.io/gc.root": b""}),
        d(b"refs"): _blob({GC + b"ref.content.l.0": d(b"child"), GC + b"ref.snapshot.native": b"base"}),
        d(b"child"): _blob(),
        d(b"rooted"): _blob({GC + b"root": b""}),
        d(b"unknown-gc"): _blob({GC + b"whatever": b"1"}),
        d(b"manifest"): _blob({GC + b"ref.content.config": d(b"config"), b"org.example": b"x"}),
        d(b"config"): _blob(),
        d(b"garbage"): _blob(),
        d(b"labelled-garbage"): _blob({b"org.example": b"x"}),
        **{d(b"bulk-%d" % i): _blob({b"n": b"%d" % i} if i % 3 == 0 else None) for i in range(300)},
    }
    native_snaps = {
        b"base": _snapshot(b"base", labels={b"containerd.io/snapshot.ref": b"x"}),
        b"mid": _snapshot(b"mid", parent=b"base"),
        b"top": _snapshot(b"top", parent=b"mid", labels={GC + b"ref.content.extra": d(b"extra")}),
        b"empty-parent": _snapshot(b"empty-parent", parent=b""),
        b"rooted": _snapshot(b"rooted", parent=b"base", labels={GC + b"root": b""}),
        b"orphan": _snapshot(b"orphan", parent=b"mid", labels={b"org.example": b"x"}),
        **{b"c-%03d" % i: _snapshot(b"c-%03d" % i, parent=b"c-%03d" % (i - 1) if i else None,
                                    labels={b"k": b"v"} if i % 7 == 0 else None) for i in range(300)},
    }
    ns = {
        b"labels": {b"owner": b"me"},
        b"content": {b"blob": blobs, b"ingests": {
            b"ing-1": {b"ref": b"default-ing-1", b"expireat": gotime(PAST), b"expected": d(b"expected")},
            b"ing-leased": {b"ref": b"default-ing-2", b"expected": d(b"expected-2")}}},
        b"snapshots": {b"native": native_snaps, b"overlayfs": {
            b"o1": _snapshot(b"o1"), b"o2": _snapshot(b"o2", parent=b"o1", labels={b"k": b"v"})}},
        b"images": {
            b"img:plain": _image(d(b"manifest")),
            b"img:other-labels": _image(d(b"plain"), {b"org.opencontainers.image.title": b"x"}),
            b"img:gc-labels": _image(d(b"child2"), {GC + b"ref.content.extra": d(b"extra2")}),
            b"img:no-digest": _image(),
            b"img:expired": _image(d(b"old"), {GC + b"expire": b"2021-01-01T00:00:00Z"}),
            **{b"img:bulk-%d" % i: _image(d(b"bulk-%d" % i)) for i in range(0, 300, 2)},
        },
        b"containers": {
            b"c-plain": _container(b"native", b"c-299"),
            b"c-labels": _container(b"overlayfs", b"o2", {b"io.containerd.image.config.stop-signal": b""}),
            b"c-gc": _container(b"native", b"rooted", {GC + b"ref.content.x": d(b"held-by-container")}),
            b"c-nosnap": _container(),
            b"c-nokey": _container(b"native"),
        },
        b"leases": {
            b"lease-1": {b"createdat": gotime(PAST), b"content": {d(b"leased"): b""},
                         b"snapshots": {b"native": {b"mid": b""}}, b"ingests": {b"ing-leased": b""}},
            b"flat": {b"createdat": gotime(PAST), b"labels": {GC + b"flat": b""}, b"content": {d(b"flat-held"): b""}},
            b"expired": {b"createdat": gotime(PAST), b"labels": {GC + b"expire": b"2021-01-01T00:00:00Z"},
                         b"content": {d(b"exp-held"): b""}},
        },
    }
    if version >= 4:
        ns[b"sandboxes"] = {b"pod": {b"runtime": {b"name": b"io.containerd.runc.v2"},
                                     b"labels": {GC + b"ref.content": d(b"pod-held")}}}
        ns[b"leases"][b"lease-1"][b"images"] = {b"img:expired": b""}
    return ns


@pytest.fixture(scope="module")
def zoo_roots(gobolt, tmp_path_factory):
    """{db version: meta.db path} of hand-made databases of two namespaces."""
    out = {}
    for version in (3, 4):
        other = zoo_namespace(version)
        other[b"images"] = {b"img:plain": _image(digest_of(b"plain"))}
        tree = {b"v1": {b"version": varint(version), b"default": zoo_namespace(version), b"other": other}}
        out[version] = gobolt.write(tree_spec(tree), tmp_path_factory.mktemp("zoo") / f"zoo-{version}.db")
    return out


@pytest.fixture(params=["real", "gogen", "zoo-3", "zoo-4"])
def any_root(request):
    """(name, path) of each root."""
    if request.param.startswith("zoo"):
        return request.param, request.getfixturevalue("zoo_roots")[int(request.param[-1])]
    return request.param, request.getfixturevalue(f"{request.param}_root")


# -- the fast path against the full decoders ------------------------------------------------------


def reference(host) -> plan.Graph:
    """The host's graph with every blob, snapshot, image and container entry made anew by the index
    entry functions from the objects the full decoders return (the other kinds are not walked)."""
    rules = host.rules
    parse = plan.parse_1x if rules == "1.x" else gclabels.parse
    graph = host.graph()
    out = {key: value for key, value in graph.nodes if key[0] not in WALKED}
    for ns in host.namespaces():
        for info in host.content(ns):
            out[schema.pack_node(CONTENT, ns, info.digest)] = index.content_entry(ns, info.labels, parse)
        for snapshotter in host.snapshotters(ns):
            for record in host.snapshot_records(ns, snapshotter):
                out[schema.pack_node(SNAPSHOT, ns, f"{snapshotter}/{record.key}")] = \
                    index.snapshot_entry(ns, snapshotter, record.parent, record.labels, parse)
        for image in host.images(ns):
            if rules == "1.x":
                target = [schema.pack_node(CONTENT, ns, image.target.digest)] if image.target.digest else []
                entry = index.encode(root=True, hidden=True, refs=parse(ns, image.labels), strong=target)
            else:
                entry = index.image_entry(ns, image.target.digest, image.labels)
            out[schema.pack_node(IMAGE, ns, image.name)] = entry
        for c in host.containers(ns):
            out[schema.pack_node(CONTAINER, ns, c.id)] = \
                index.container_entry(ns, c.snapshotter, c.snapshot_key, c.labels, parse)
    return plan.Graph(list(out.items()), graph.lease_rows)


@pytest.mark.parametrize("rules", ["1.x", "2.x"])
def test_fast_path_equals_the_full_decoders(any_root, rules, walk_impl):
    name, path = any_root
    with ctrd.open_root(path, rules=rules, clock=lambda: NOW) as host:
        assert type(host._v1) is walk_impl.BoltBucket
        graph, full = host.graph(), reference(host)
        assert len(dict(graph.nodes)) == len(graph.nodes)
        assert dict(graph.nodes) == dict(full.nodes)
        removed = plan.unreachable(plan.mark(graph, host.now()))
        assert removed == plan.unreachable(plan.mark(full, host.now()))
        if name == "gogen":   # containerd's benchmark workload: 10 nodes a set, no garbage
            assert len(graph.nodes) == 400 and removed == []
        else:   # garbage, and entries with edges or label references of every walked kind
            assert removed
            labelled = [key for key, value in graph.nodes if value not in (b"\x00", b"\x09", b"\x01")]
            assert WALKED <= {key[0] for key in labelled}


def test_compiled_walk_equals_its_twin(any_root, monkeypatch):
    _, path = any_root
    if "compiled" not in IMPLEMENTATIONS:
        pytest.skip("the compiled core is not built")
    seen = []
    for name in ("compiled", "fallback"):
        with monkeypatch.context() as m:
            use(IMPLEMENTATIONS[name], m)
            for rules in ("1.x", "2.x"):
                with ctrd.open_root(path, rules=rules, clock=lambda: NOW) as host:
                    graph = host.graph()
                    seen.append((rules, graph.nodes, graph.lease_rows, host.unreachable()))
    assert seen[:2] == seen[2:]


# -- which objects are decoded ------------------------------------------------------------------

TRICKY = [b"", b"ascii", "é".encode(), "😀".encode(), b"\xf4\x8f\xbf\xbf", b"\xef\xbf\xbf", b"\xed\x9f\xbf",
          b"\xff", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80",
          b"\xe2\x82", b"\x80", b"a\xc3", b"\xc3\x28", b"\xf0\x9f\x98"]


def _label_sets() -> dict:
    """name -> labels: every byte string above as a key and as a value, GC keys, nested buckets, and
    random mixes of valid and broken UTF-8."""
    rng = random.Random(7)
    pieces = TRICKY + [b"containerd.io/gc.", b"containerd.io/gc", b"x"]
    out = {b"none": None, b"empty": {}, b"nested": {b"k": {b"inner": b"v"}}, b"gc": {GC + b"root": b""},
           b"gc-later": {b"a": b"1", GC + b"ref.content": b"sha256:00"}}
    for i, piece in enumerate(TRICKY):
        out[b"key-%d" % i] = {b"k" + piece: b"v"}
        out[b"value-%d" % i] = {b"k": piece}
    for i in range(200):
        out[b"mix-%d" % i] = {(b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 3))) or b"k"):
                              b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 3)))
                              for _ in range(rng.randint(1, 3))}   # (bbolt keys are never empty)
    return out


def _matters(labels) -> bool:
    """What the walk must decide for an object: True when its labels need the decoding entry functions."""
    if labels is None:
        return False
    for key, value in labels.items():
        if isinstance(value, dict) or key.startswith(GC):
            return True
        try:
            key.decode()
            value.decode()
        except UnicodeDecodeError:
            return True
    return False


@pytest.fixture(scope="module")
def labelled_db(gobolt, tmp_path_factory):
    sets = _label_sets()
    tree = {b"v1": {b"version": varint(3), b"default": {
        b"content": {b"blob": {name: _blob(labels) for name, labels in sets.items()}},
        b"snapshots": {b"native": {name: _snapshot(name, b"p", labels) for name, labels in sets.items()}},
        b"images": {name: _image(b"sha256:00", labels) for name, labels in sets.items()},
        b"containers": {name: _container(b"native", b"k", labels) for name, labels in sets.items()},
    }}}
    return gobolt.write(tree_spec(tree), tmp_path_factory.mktemp("labels") / "labels.db"), sets


def test_only_objects_whose_labels_can_matter_are_decoded(labelled_db, walk_impl):
    """The walk hands exactly the objects with a GC label, a nested bucket or text that is not UTF-8
    (as Python's strict decoder says) to the decoding functions."""
    path, sets = labelled_db
    expected = sorted(name for name, labels in sets.items() if _matters(labels))
    assert 20 < len(expected) < len(sets) - 20
    with ctrd.open_root(path) as host:
        ns = decode.bucket(host._v1, b"default", "test")
        calls = {kind: [] for kind in ("blob", "snapshot", "image", "container")}

        def slow(kind):
            def record(*args):
                calls[kind].append(args[-1])
                return b"slow"
            return record

        out: list = []
        walk_impl.ctrd_blobs(ns.bucket(b"content").bucket(b"blob"), b"B", b"bare", slow("blob"), out)
        walk_impl.ctrd_snapshots(ns.bucket(b"snapshots"), b"S", b"bare", slow("snapshot"), out)
        walk_impl.ctrd_images(ns.bucket(b"images"), b"I", b"C", b"bare", slow("image"), out)
        walk_impl.ctrd_containers(ns.bucket(b"containers"), b"K", b"S", b"bare", slow("container"), out)
        for prefix, kind, parent in ((b"B", "blob", None), (b"Snative/", "snapshot", b"Snative/p"),
                                     (b"I", "image", b"Csha256:00"), (b"K", "container", b"Snative/k")):
            slowed = sorted(key[len(prefix):] for key, value in out if key.startswith(prefix) and value == b"slow")
            assert slowed == expected, kind
            assert len(calls[kind]) == len(expected)
            fast = {value for key, value in out if key.startswith(prefix) and value != b"slow"}
            assert fast == {b"bare" if parent is None else b"bare" + index.strong_edge(parent)}, kind


# -- damaged records: the same error from both walks ----------------------------------------------

@pytest.mark.parametrize("namespace, message", [
    ({b"content": {b"blob": {b"sha256:00": _blob({b"k": {b"nested": b"v"}})}}}, "is a bucket"),
    ({b"content": {b"blob": {b"sha256:00": _blob({b"k": b"\xff"})}}}, "not UTF-8"),
    ({b"images": {b"x": {b"target": b"a value"}}}, "is a value"),
    ({b"images": {b"x": {b"target": b"", b"labels": {}}}}, "is a value"),
    ({b"snapshots": {b"native": {b"s": _snapshot(b"s", b"\xff", {GC + b"root": b""})}}}, "not UTF-8"),
    ({b"containers": {b"c": _container(b"\xfe", b"k", {GC + b"root": b""})}}, "not UTF-8"),
])
def test_damaged_records_fail_alike(gobolt, tmp_path, namespace, message, monkeypatch):
    path = gobolt.write(tree_spec({b"v1": {b"version": varint(3), b"default": namespace}}), tmp_path / "bad.db")
    errors = []
    for impl in IMPLEMENTATIONS.values():
        with monkeypatch.context() as m:
            use(impl, m)
            with ctrd.open_root(path) as host, pytest.raises(Corrupted, match=message) as exc:
                host.unreachable()
            errors.append(str(exc.value))
    assert len(set(errors)) == 1
