"""The mark phase: compiled Marker and its pure-Python twin agree, on every output."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from cargohold import _fallback, errors, schema
from cargohold.gc import index
from cargohold.gc.labels import LabelRefs
from cargohold.model import ResourceType as RT
from conftest import IMPLEMENTATIONS

core = IMPLEMENTATIONS.get("compiled")
node = schema.pack_node
NOW = 1_000_000_000_000


def test_constants_agree():
    if core is None:
        pytest.skip("compiled core not built")
    for name, value in core.MARK_FLAGS.items():
        assert getattr(index, name) == value == getattr(_fallback, name), name


def _run(impl, entries, rows, now=NOW, extra=(), labels=()):
    marker = impl.Marker(labels)
    marker.add_nodes(entries)
    marker.add_lease_resources(rows)
    leases = marker.live_leases(now)
    marker.mark(now, extra)
    return marker, leases


def _outputs(marker, leases, keys):
    return (
        leases,
        marker.unreachable(),
        marker.reachable(),
        {k: marker.chain(k) for k in keys},
        {k: marker.is_reachable(k) for k in keys},
        marker.node_count,
        marker.edge_count,
    )


TYPES = [RT.CONTENT, RT.SNAPSHOT, RT.IMAGE, RT.LEASE, RT.INGEST, RT.CONTAINER, index.SANDBOX, 9]


@st.composite
def graphs(draw):
    count = draw(st.integers(1, 30))
    names = [(draw(st.sampled_from(TYPES)), draw(st.sampled_from(["a", "b"])), f"k{i}") for i in range(count)]
    keys = [node(t, ns, k) for t, ns, k in names]
    phantoms = [node(RT.CONTENT, "a", "ghost"), node(RT.SNAPSHOT, "b", "ghost")]
    targets = keys + phantoms
    entries = {}
    for (t, ns, k), key in zip(names, keys):
        if t == 9:
            continue  # collector resources have no table entry
        edges = []
        for _ in range(draw(st.integers(0, 4))):
            kind = draw(st.sampled_from([index.E_STRONG, index.E_REF, index.E_BREF, index.E_COND, index.E_LABEL]))
            target = draw(st.sampled_from(targets))
            edges.append((kind, target))
        refs = LabelRefs()
        strong = []
        for kind, target in edges:
            if kind == index.E_STRONG:
                strong.append(target)
            elif kind == index.E_REF:
                refs.refs.append(target)
            elif kind == index.E_BREF:
                refs.brefs.append(target)
            elif kind == index.E_COND:
                refs.conds.append((target, draw(st.sampled_from("<>")), draw(st.integers(0, 10**6))))
            else:
                refs.collector.append((draw(st.sampled_from(["x", "x.y", "x/z", "xy", "w"])), f"k{draw(st.integers(0, count))}"))
        expire = draw(st.one_of(st.none(), st.integers(NOW - 10**6, NOW + 10**6)))
        usedat = draw(st.lists(st.integers(NOW - 2 * 10**6, NOW), max_size=2))
        entries[key] = index.encode(root=draw(st.booleans()), expire=expire, flat=draw(st.booleans()),
                                    hidden=t in (RT.CONTAINER, index.SANDBOX), usedat=usedat,
                                    strong=strong, refs=refs)
    rows = []
    leases = [(ns, k) for t, ns, k in names if t == RT.LEASE] + [("a", "gone")]
    for _ in range(draw(st.integers(0, 6))):
        ns, lease = draw(st.sampled_from(leases))
        t, _, k = draw(st.sampled_from(names))
        if t in (RT.CONTENT, RT.SNAPSHOT, RT.IMAGE, RT.INGEST):
            rows.append((schema.lease_resource_key(ns, lease, t, k), b""))
    extra = draw(st.lists(st.sampled_from(targets), max_size=3))
    return sorted(entries.items()), sorted(set(rows)), extra, targets


@settings(max_examples=300, deadline=None)
@given(graphs())
def test_implementations_agree(graph):
    entries, rows, extra, keys = graph
    results = []
    for impl in IMPLEMENTATIONS.values():
        marker, leases = _run(impl, entries, rows, extra=extra, labels=[(b"x", 9)])
        results.append(_outputs(marker, leases, keys))
    assert all(r == results[0] for r in results)


@pytest.fixture
def mod(impl):
    return impl


def test_roots_edges_and_flatness(mod):
    c1, c2, c3 = (node(RT.CONTENT, "ns", f"sha256:{i}") for i in range(3))
    s1, s2 = node(RT.SNAPSHOT, "ns", "native/base"), node(RT.SNAPSHOT, "ns", "native/top")
    img = node(RT.IMAGE, "ns", "img")
    lease = node(RT.LEASE, "ns", "flat")

    entries = {
        c1: index.encode(refs=LabelRefs(refs=[c2])),
        c2: index.encode(refs=LabelRefs(refs=[s2])),
        c3: index.encode(),
        s1: index.encode(),
        s2: index.encode(strong=[s1], refs=LabelRefs(refs=[c3])),
        img: index.encode(root=True, expire=NOW - 1, strong=[c1]),  # expired
        lease: index.encode(root=True, flat=True),
    }
    rows = [(schema.lease_resource_key("ns", "flat", RT.SNAPSHOT, "native/top"), b""),
            (schema.lease_resource_key("ns", "flat", RT.CONTENT, "sha256:0"), b"")]
    marker, leases = _run(mod, sorted(entries.items()), rows)
    assert leases == [lease]
    # the flat lease keeps its direct resources and the snapshot's parent, not label references
    assert set(marker.reachable()) == {lease, s2, s1, c1}
    assert set(marker.unreachable()) == {c2, c3, img}
    assert marker.chain(s1) == [lease, s2, s1]
    assert marker.chain(c3) is None


def test_damaged_entry_is_corrupted(mod):
    marker = mod.Marker()
    with pytest.raises(errors.Corrupted):
        marker.add_nodes([(node(RT.CONTENT, "ns", "x"), b"\x00\x01\x05\x00ab")])
    with pytest.raises(errors.Corrupted):
        mod.Marker().add_lease_resources([(b"ns\x00lease", b"")])


def test_results_need_mark(mod):
    marker = mod.Marker()
    with pytest.raises(errors.InvalidArgument):
        marker.unreachable()
    with pytest.raises(errors.InvalidArgument):
        marker.mark(0, [b""])
