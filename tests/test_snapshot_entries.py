"""The node-table entry of a snapshot without labels (`gc.index.snapshot_entry`'s direct form, which
every prepare and commit of an unlabelled snapshot takes): byte for byte what the general encoding
of its references writes, and the same error for a reference too long to encode."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cargohold import errors, schema
from cargohold.containerd.plan import parse_1x
from cargohold.gc import index
from cargohold.gc import labels as gclabels
from cargohold.model import ResourceType

_text = st.one_of(st.text(st.sampled_from(["a", "/", "-", "\u00e9", "\u4e2d"]), max_size=12),
                  st.integers(65520, 65540).map(lambda n: "b" * n))


def _general(ns, snapshotter, parent, labels, parse):
    refs = parse(ns, labels)
    refs.conds = []
    strong = [schema.pack_node(ResourceType.SNAPSHOT, ns, f"{snapshotter}/{parent}")] if parent else []
    return index.encode(root=refs.root, usedat=refs.usedat, strong=strong, refs=refs)


def _outcome(fn, *args):
    try:
        return fn(*args)
    except errors.Error as exc:
        return type(exc), str(exc)


@settings(max_examples=200, deadline=None)
@given(_text, st.sampled_from(["native", "overlayfs", "native@host-1"]), _text, st.sampled_from([None, {}]),
       st.sampled_from([gclabels.parse, parse_1x]))
def test_unlabelled_entry_is_the_general_encoding(ns, snapshotter, parent, labels, parse):
    assert _outcome(index.snapshot_entry, ns, snapshotter, parent, labels, parse) == \
        _outcome(_general, ns, snapshotter, parent, labels, parse)


def test_labelled_entries_still_carry_their_references():
    labels = {"containerd.io/gc.root": "x", "containerd.io/gc.ref.content.l": "sha256:" + "a" * 64}
    entry = index.decode(index.snapshot_entry("ns", "native", "base", labels))
    assert entry.flags & index.F_ROOT
    assert [kind for kind, _, _ in entry.edges] == [index.E_STRONG, index.E_REF]
