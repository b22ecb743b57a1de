"""The keys of the metadata tables (`_ext/keys.pxi` and its twin `cargohold._fallback_keys`):
both give the same bytes, and the same errors, for every input."""

from __future__ import annotations

import pytest
from conftest import IMPLEMENTATIONS

from cargohold import schema
from cargohold.errors import InvalidArgument

CASES = [
    ("ns", b"image", ("docker.io/library/busybox:latest",)),
    ("default", b"snapshot", ("native", "sha256:" + "ab" * 32)),
    ("n\u00e9", b"snapchild", ("native", "12", "k\u4e2d\U0001f600")),
    ("ns", b"container", ()),
    ("", b"", ("",)),
]


@pytest.mark.parametrize("ns,kind,parts", CASES)
def test_object_keys_agree(ns, kind, parts):
    expected = b"\x00".join([ns.encode(), kind, *(p.encode() for p in parts)])
    assert {name: impl.object_key(ns, kind, *parts) for name, impl in IMPLEMENTATIONS.items()} == \
        {name: expected for name in IMPLEMENTATIONS}
    assert schema.object_key(ns, kind, *parts) == expected


@pytest.mark.parametrize("rtype,ns,key", [(1, "ns", "sha256:" + "cd" * 32), (0, "", ""), (255, "n\u00e9", "s/\u4e2d")])
def test_node_keys_agree(rtype, ns, key):
    expected = bytes((rtype,)) + ns.encode() + b"\x00" + key.encode()
    for impl in IMPLEMENTATIONS.values():
        assert impl.pack_node(rtype, ns, key) == expected
    assert schema.pack_node(rtype, ns, key) == expected


def _outcome(fn):
    try:
        return ("ok", fn())
    except Exception as exc:  # the class and message are what must agree
        return (type(exc).__name__, str(exc))


@pytest.mark.parametrize("call", [
    lambda impl: impl.object_key("\ud800", b"image", "x"),
    lambda impl: impl.object_key("ns", b"image", "x\udfff"),
    lambda impl: impl.object_key("ns", b"image", 7),
    lambda impl: impl.object_key("ns", "image", "x"),
    lambda impl: impl.pack_node(256, "ns", "k"),
    lambda impl: impl.pack_node(-1, "ns", "k"),
    lambda impl: impl.pack_node(1, "ns", "\udc80"),
    lambda impl: impl.pack_node(1, None, "k"),
])
def test_bad_parts_fail_alike(call):
    outcomes = {name: _outcome(lambda: call(impl)) for name, impl in IMPLEMENTATIONS.items()}
    assert len(set(outcomes.values())) == 1, outcomes
    assert next(iter(outcomes.values()))[0] != "ok"


def test_text_without_utf8_is_invalid_argument():
    for impl in IMPLEMENTATIONS.values():
        with pytest.raises(InvalidArgument, match="not valid Unicode text"):
            impl.object_key("ns", b"image", "bad\ud800")
