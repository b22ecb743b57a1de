"""A container created inside a write transaction (`_ext/records.pxi`'s `encode_container` and its
twin in `cargohold._fallback_records`): the compiled and pure-Python encoders agree on every input,
accept only containers the validating path accepts, and give what it writes byte for byte; through
the store, every outcome (the stored container, the rows, or the error class and message, with
nothing written) is the one of a creation outside any transaction, which always validates."""

from __future__ import annotations

import pytest
from encodeutil import (NOW, SETTINGS, _core, check_against_validation, create_inside, create_outside, encoders,
                        namespaces, open_pair, outcome)
from hypothesis import given
from hypothesis import strategies as st

from cargohold import Container, RuntimeInfo, schema
from cargohold.model import ResourceType
from cargohold.timeutil import from_ns

ENCODERS = encoders("encode_container")


class Text(str):
    """A str subclass: valid where a string is, never of the plain form."""


class Runtime(RuntimeInfo):
    pass


class Box(Container):
    pass


_CHARS = st.sampled_from(["a", "Z", "0", "-", "_", ".", "/", ":", " ", "\x00", "\u00e9", "\ud800"])
texts = st.one_of(
    st.text(_CHARS, max_size=6),
    st.text(_CHARS, min_size=1, max_size=3).map(lambda s: s * 90),  # past 76 and 255 (and msgpack's 32/256)
    st.builds(Text, st.text("ab", max_size=3)),
    st.sampled_from([None, 7, b"bytes", "overlay", "overlayfs", "a..b", "-a", "a-", "a" * 76, "a" * 77]),
)
identifiers = st.from_regex(r"[A-Za-z0-9]{1,5}([._-][A-Za-z0-9]{1,5}){0,3}", fullmatch=True)
plain_texts = st.text("abcXYZ019-_./:@", min_size=1, max_size=40)
plain_maps = st.dictionaries(plain_texts, st.one_of(plain_texts, st.just("")), max_size=4)
maps = st.one_of(
    st.dictionaries(st.one_of(plain_texts, texts), st.one_of(plain_texts, st.just(""), texts), max_size=4),
    st.dictionaries(plain_texts, st.one_of(plain_texts, st.just("")), max_size=20),  # map16 past 15 entries
    st.dictionaries(st.sampled_from(["containerd.io/gc.ref.content", "containerd.io/gc.root",
                                     "containerd.io/gc.ref.snapshot.native", "containerd.io/gc.",
                                     "containerd.io/gc"]),
                    st.sampled_from(["", "x", "sha256:" + "c" * 64]), max_size=3),
    st.integers(4080, 4100).map(lambda n: {"k" * 8: "v" * (n - 8)}),
    st.none(),
)
specs = st.one_of(st.binary(max_size=40), st.sampled_from([b"s" * 255, b"s" * 256, b"s" * 65536, bytearray(b"x"),
                                                          memoryview(b"y"), "spec", None]))
options = st.one_of(st.none(), st.sampled_from([{"a": 1}, [1, 2], b"x", object()]))
extensions = st.one_of(st.just({}), st.none(), st.sampled_from([{"e": b"x"}, {"e": None}, {"": 1}, {1: 2}]))

PLAIN = {"id": identifiers, "runtime": plain_texts, "options": st.none(), "spec": st.binary(max_size=300),
         "snapshotter": st.one_of(st.just(""), identifiers), "snapshot_key": st.one_of(st.just(""), plain_texts),
         "image": st.one_of(st.just(""), plain_texts), "labels": plain_maps, "extensions": st.just({}),
         "sandbox_id": st.one_of(st.just(""), identifiers)}
ANY = {"id": st.one_of(identifiers, texts), "runtime": st.one_of(plain_texts, texts, st.just("")),
       "options": options, "spec": specs, "snapshotter": st.one_of(identifiers, texts, st.just("")),
       "snapshot_key": st.one_of(plain_texts, texts, st.just("")), "image": st.one_of(plain_texts, texts),
       "labels": maps, "extensions": extensions, "sandbox_id": st.one_of(identifiers, texts, st.just(""))}


@st.composite
def containers(draw) -> Container:
    """Containers of the plain form, or with one field that may be of any other, or anything."""
    mode = draw(st.sampled_from(["plain", "one", "any"]))
    odd = draw(st.sampled_from(sorted(PLAIN)))
    f = {name: draw(ANY[name] if mode == "any" or (mode == "one" and name == odd) else PLAIN[name])
         for name in sorted(PLAIN)}
    if f["snapshot_key"] and not f["snapshotter"] and mode == "plain":
        f["snapshotter"] = "native"
    runtime = RuntimeInfo(f["runtime"], f["options"])
    if mode != "plain" and draw(st.integers(0, 20)) == 0:
        runtime = draw(st.sampled_from([Runtime(f["runtime"]), None, "runc"]))
    cls = Box if mode != "plain" and draw(st.integers(0, 20)) == 0 else Container
    return cls(f["id"], runtime, f["spec"], f["snapshotter"], f["snapshot_key"], f["image"], f["labels"],
               f["extensions"], f["sandbox_id"])



def _shape(stored) -> tuple:
    """The stored container with the types of what it holds (a dict must be a dict, not the input's)."""
    return (stored, type(stored), type(stored.runtime), type(stored.spec), type(stored.labels),
            type(stored.extensions))


@pytest.mark.skipif(_core is None, reason="the compiled core did not build")
@SETTINGS
@given(containers(), st.one_of(st.sampled_from(["default", "n", "x" * 40]), texts),
       st.one_of(st.integers(-(1 << 64), 1 << 64), st.sampled_from([NOW, -1, 0, 127, -33, -(1 << 63), True])))
def test_compiled_and_pure_encoders_agree(container, ns, now):
    at = from_ns(NOW)
    results = {name: outcome(lambda: encode(container, ns, now, at)) for name, encode in ENCODERS.items()}
    compiled, pure = results["compiled"], results["fallback"]
    assert compiled[0] == pure[0] and (compiled[1] is None) == (pure[1] is None), (compiled, pure)
    if compiled[0] == "ok" and compiled[1] is not None:
        assert compiled[1][1:] == pure[1][1:]
        assert _shape(compiled[1][0]) == _shape(pure[1][0])
        assert compiled[1][0].labels is not container.labels


@pytest.fixture(scope="module")
def dbs(tmp_path_factory):
    """Two databases on one fixed clock: creations outside any transaction and inside one."""
    yield from open_pair(tmp_path_factory)



def _create(obj):
    return lambda handle: handle.containers.create(obj)


@SETTINGS
@given(containers())
def test_encoders_accept_only_valid_containers_and_write_what_validation_writes(dbs, container):
    outside, _ = dbs
    ns = f"n{next(namespaces)}"
    check_against_validation(outside, ns, container, _create(container), _shape, ENCODERS,
                             lambda: (schema.object_key(ns, schema.K_CONTAINER, container.id),
                                      schema.pack_node(ResourceType.CONTAINER, ns, container.id)))


@SETTINGS
@given(containers())
def test_a_creation_inside_a_transaction_ends_as_one_outside(dbs, container):
    outside, inside = dbs
    ns = f"m{next(namespaces)}"
    assert create_inside(inside, ns, _create(container), _shape) == create_outside(outside, ns, _create(container), _shape)


def _off(cid="c1", runtime="runc", options=None, spec=b"", snapshotter="native", snapshot_key="s1", image="",
         labels=None, extensions=None, sandbox_id="", cls=Container, runtime_cls=RuntimeInfo):
    """A plain container but for what is given."""
    return cls(cid, runtime_cls(runtime, options), spec, snapshotter, snapshot_key, image, labels, extensions,
               sandbox_id)


EDGES = [  # each rule of the plain form, at and past its edge
    _off(), _off(cid="a" * 76), _off(cid="a" * 77), _off(cid=""), _off(cid="a.b-c_d"), _off(cid="a..b"),
    _off(cid="-a"), _off(cid="a-"), _off(cid="a/b"), _off(cid="\u00e9"), _off(cid=Text("c1")), _off(cid=5),
    _off(runtime=""), _off(runtime="\u00e9"), _off(runtime=None), _off(options={"a": 1}), _off(options=object()),
    _off(spec=b"x" * 255), _off(spec=b"x" * 256), _off(spec=b"x" * 65536), _off(spec=bytearray(b"x")),
    _off(spec="spec"), _off(snapshotter=""), _off(snapshotter="", snapshot_key=""), _off(snapshotter="overlay"),
    _off(snapshotter="overlayfs"), _off(snapshotter="a" * 77), _off(snapshotter="a/b"),
    _off(snapshot_key=""), _off(snapshot_key="k" * 255), _off(snapshot_key="k" * 256), _off(snapshot_key="a\x00"),
    _off(snapshot_key="\u00e9"), _off(image="\u00e9"), _off(image=None), _off(image="docker.io/x:1"),
    _off(sandbox_id="sb"), _off(sandbox_id="s b"), _off(sandbox_id=None),
    _off(labels={"k": "v" * 4095}), _off(labels={"k": "v" * 4096}), _off(labels={"": "v"}), _off(labels={"k": ""}),
    _off(labels={"k": "a\x00"}), _off(labels={"k": 1}), _off(labels={f"k{i}": "v" for i in range(16)}),
    _off(labels={"containerd.io/gc.ref.content": "sha256:" + "ab" * 32}), _off(labels={"containerd.io/gc.root": "x"}),
    _off(labels={"containerd.io/gc.ref.snapshot.native": "s", "x": "y"}, snapshot_key=""),
    _off(extensions={"e": b"x"}), _off(extensions={"e": None}), _off(cls=Box), _off(runtime_cls=Runtime),
]


@pytest.mark.parametrize("container", EDGES)
def test_each_rule_of_the_plain_form_at_its_edge(dbs, container):
    test_encoders_accept_only_valid_containers_and_write_what_validation_writes.hypothesis.inner_test(dbs, container)
    test_a_creation_inside_a_transaction_ends_as_one_outside.hypothesis.inner_test(dbs, container)
    if _core is not None:
        test_compiled_and_pure_encoders_agree.hypothesis.inner_test(container, "ns", NOW)


def test_a_plain_container_inside_a_transaction_takes_the_one_step_path(dbs):
    """The store writes a plain container from the encoder's output, without validating it again."""
    _, db = dbs
    ns = f"p{next(namespaces)}"
    container = _off(labels={"k": "v", "empty": ""})
    with db.update() as tx:
        assert ENCODERS["fallback"](container, ns, tx.now, tx.now_at) is not None
        stored = db.namespace(ns).containers.create(container)
    assert stored.labels == {"k": "v"} and stored.created_at == stored.updated_at
    assert db.namespace(ns).containers.get("c1") == stored
