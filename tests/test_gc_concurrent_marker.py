"""Continuing a marking (`Marker.update_nodes`, `forget_nodes`, `remark`): what a concurrent
collection does with the entries writers changed after its snapshot. The compiled core and
the pure-Python twin agree on every output, and a continued marking keeps at least what a
fresh marking of the changed graph (with the changed nodes as extra roots) keeps."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from cargohold import errors, schema
from cargohold.gc import index
from cargohold.gc.labels import LabelRefs
from cargohold.model import ResourceType as RT
from conftest import IMPLEMENTATIONS
from test_mark import NOW, _outputs, graphs

node = schema.pack_node


@st.composite
def changes(draw, graph):
    """Entries rewritten or created, entries deleted, lease rows added, gray nodes, a later now."""
    entries, rows, extra, targets = graph
    keys = [k for k, _ in entries]
    fresh = [node(RT.CONTENT, "a", f"new{i}") for i in range(3)]
    written = {}
    for key in draw(st.lists(st.sampled_from(keys + fresh), max_size=5, unique=True)):
        refs = LabelRefs()
        strong = []
        for _ in range(draw(st.integers(0, 3))):
            kind = draw(st.sampled_from([index.E_STRONG, index.E_REF, index.E_BREF, index.E_COND]))
            target = draw(st.sampled_from(targets + fresh))
            if kind == index.E_STRONG:
                strong.append(target)
            elif kind == index.E_REF:
                refs.refs.append(target)
            elif kind == index.E_BREF:
                refs.brefs.append(target)
            else:
                refs.conds.append((target, draw(st.sampled_from("<>")), draw(st.integers(0, 10**6))))
        written[key] = index.encode(root=draw(st.booleans()), flat=draw(st.booleans()),
                                    usedat=draw(st.lists(st.integers(NOW - 2 * 10**6, NOW), max_size=2)),
                                    strong=strong, refs=refs)
    some = (lambda n: st.lists(st.sampled_from(keys), max_size=n, unique=True)) if keys else (lambda n: st.just([]))
    deleted = draw(some(3))
    deleted = [k for k in deleted if k not in written]
    leases = [k for k in keys if k[0] == RT.LEASE]
    more_rows = []
    if leases:
        for _ in range(draw(st.integers(0, 3))):
            lease = schema.unpack_node(draw(st.sampled_from(leases)))
            target = schema.unpack_node(draw(st.sampled_from(keys + fresh)))
            if target.type in (RT.CONTENT, RT.SNAPSHOT, RT.IMAGE, RT.INGEST):
                more_rows.append((schema.lease_resource_key(lease.namespace, lease.key, target.type, target.key), b""))
    gray = list(written) + draw(some(2))
    later = NOW + draw(st.integers(0, 2 * 10**6))
    return sorted(written.items()), deleted, more_rows, gray, later


def _continued(impl, graph, change):
    entries, rows, extra, _ = graph
    written, deleted, more_rows, gray, later = change
    marker = impl.Marker([(b"x", 9)])
    marker.add_nodes(entries)
    marker.add_lease_resources(rows)
    marker.mark(NOW, extra)
    marker.update_nodes(written)
    marker.forget_nodes(deleted)
    marker.add_lease_resources(more_rows)
    newly = marker.remark(later, gray)
    return marker, newly


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_implementations_agree_after_remark(data):
    graph = data.draw(graphs())
    change = data.draw(changes(graph))
    keys = graph[3] + [k for k, _ in change[0]]
    results = []
    for impl in IMPLEMENTATIONS.values():
        marker, newly = _continued(impl, graph, change)
        results.append((newly, _outputs(marker, marker.live_leases(change[4]), keys)))
    assert all(r == results[0] for r in results)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_remark_keeps_what_a_fresh_marking_of_the_changed_graph_keeps(data):
    """Safety: whatever is reachable in the graph as it is now, or from a changed node, stays marked."""
    graph = data.draw(graphs())
    change = data.draw(changes(graph))
    entries, rows, extra, _ = graph
    written, deleted, more_rows, gray, later = change
    now_entries = dict(entries)
    now_entries.update(written)
    for key in deleted:
        now_entries.pop(key)
    for impl in IMPLEMENTATIONS.values():
        marker, _ = _continued(impl, graph, change)
        fresh = impl.Marker([(b"x", 9)])
        fresh.add_nodes(sorted(now_entries.items()))
        fresh.add_lease_resources(sorted(set(rows) | set(more_rows)))
        fresh.mark(NOW, extra + gray)  # the old time: expiries and conditions as the snapshot saw them
        assert set(fresh.reachable()) <= set(marker.reachable())
        assert set(marker.unreachable()) <= set(fresh.unreachable())
        assert not set(deleted) & (set(marker.reachable()) | set(marker.unreachable()))


@pytest.fixture
def mod(impl):
    return impl


def test_remark_follows_new_edges_from_marked_nodes(mod):
    img = node(RT.IMAGE, "ns", "img")
    c1, c2, c3 = (node(RT.CONTENT, "ns", f"sha256:{i}") for i in range(3))
    marker = mod.Marker()
    marker.add_nodes([(img, index.encode(root=True, strong=[c1])), (c1, index.encode()),
                      (c2, index.encode()), (c3, index.encode())])
    marker.mark(NOW)
    assert set(marker.unreachable()) == {c2, c3}
    # c1 now references c2 (a relabel), c3 names c1 with a back reference
    marker.update_nodes([(c1, index.encode(refs=LabelRefs(refs=[c2]))),
                         (c3, index.encode(refs=LabelRefs(brefs=[c1])))])
    assert marker.remark(NOW) == 2
    assert marker.unreachable() == []
    assert marker.chain(c3) == [img, c1, c3]


def test_a_condition_added_after_the_marking_holds_at_the_marking_time(mod):
    """A reference written during the mark whose condition held when the marking began but
    no longer at the remark (hypothesis found it: usedat<1ns on a snapshot used at NOW) is
    followed: the continued marking keeps what a marking at either instant keeps."""
    c1 = node(RT.CONTENT, "ns", "sha256:1")
    sn = node(RT.SNAPSHOT, "ns", "native/s")
    marker = mod.Marker()
    marker.add_nodes([(c1, index.encode()), (sn, index.encode(usedat=[NOW]))])
    marker.mark(NOW)
    marker.update_nodes([(c1, index.encode(refs=LabelRefs(conds=[(sn, "<", 1)])))])
    marker.remark(NOW + 1, [c1])
    assert sn in marker.reachable()


def test_remark_marks_gray_nodes_and_what_they_reach(mod):
    c1, c2 = node(RT.CONTENT, "ns", "sha256:1"), node(RT.CONTENT, "ns", "sha256:2")
    new = node(RT.CONTENT, "ns", "sha256:new")
    marker = mod.Marker()
    marker.add_nodes([(c1, index.encode()), (c2, index.encode())])
    marker.mark(NOW)
    marker.update_nodes([(new, index.encode(refs=LabelRefs(refs=[c2])))])
    with pytest.raises(errors.InvalidArgument, match="remark"):
        marker.unreachable()  # a node was added: the marking is not current
    assert marker.remark(NOW, [new]) == 2
    assert marker.unreachable() == [c1]
    assert marker.chain(c2) == [new, c2]


def test_forgotten_nodes_are_not_reported(mod):
    c1, c2 = node(RT.CONTENT, "ns", "sha256:1"), node(RT.CONTENT, "ns", "sha256:2")
    marker = mod.Marker()
    marker.add_nodes([(c1, index.encode()), (c2, index.encode())])
    marker.mark(NOW)
    marker.forget_nodes([c1, node(RT.CONTENT, "ns", "sha256:unknown"), b""])
    assert marker.remark(NOW) == 0
    assert marker.unreachable() == [c2]


def test_a_later_time_fires_pending_conditions(mod):
    """A reference live only once a snapshot has been unused long enough (op '>') counts at the
    time of the continued marking."""
    img = node(RT.IMAGE, "ns", "img")
    snap = node(RT.SNAPSHOT, "ns", "native/s")
    refs = LabelRefs(conds=[(snap, ">", 100)])
    marker = mod.Marker()
    marker.add_nodes([(img, index.encode(root=True, refs=refs)), (snap, index.encode(usedat=[NOW - 50]))])
    marker.mark(NOW)
    assert marker.unreachable() == [snap]
    assert marker.remark(NOW + 100) == 1
    assert marker.unreachable() == []


def test_remark_needs_a_marking(mod):
    with pytest.raises(errors.InvalidArgument, match="mark"):
        mod.Marker().remark(NOW)
    marker = mod.Marker()
    marker.mark(NOW)
    with pytest.raises(errors.InvalidArgument):
        marker.remark(NOW, [b""])
    marker.add_nodes([(node(RT.CONTENT, "ns", "sha256:1"), index.encode())])
    with pytest.raises(errors.InvalidArgument, match="given twice"):
        marker.add_nodes([(node(RT.CONTENT, "ns", "sha256:1"), index.encode())])
