"""An image created inside a write transaction (`_ext/records.pxi`'s `encode_image` and its twin
`cargohold._fallback_records`): the compiled and pure-Python encoders agree on every input, accept
only images the validating path accepts, and give what it writes byte for byte; through the store,
every outcome (the stored image, the rows, or the error class and message, with nothing written)
is the one of a creation outside any transaction, which always validates."""

from __future__ import annotations

import pytest
from encodeutil import (NOW, SETTINGS, _core, check_against_validation, create_inside, create_outside, encoders,
                        namespaces, open_pair, rows)
from hypothesis import given
from hypothesis import strategies as st

from cargohold import Descriptor, Image, Resource, errors, schema
from cargohold.model import ResourceType
from cargohold.timeutil import from_ns

ENCODERS = encoders("encode_image")


class Text(str):
    """A str subclass: valid where a string is, never of the plain form."""


class Target(Descriptor):
    pass


class Named(Image):
    pass


_CHARS = st.sampled_from(["a", "Z", "0", "-", "/", ":", ".", " ", "\x00", "\x7f", "\u00e9", "\u4e2d", "\ud800"])
texts = st.one_of(
    st.text(_CHARS, max_size=6),
    st.text(_CHARS, min_size=1, max_size=3).map(lambda s: s * 90),  # past 255 bytes (and 32/256 for msgpack)
    st.builds(Text, st.text("ab", max_size=3)),
    st.sampled_from([None, 7, b"bytes"]),
)
plain_texts = st.text("abcXYZ019-_./:@", min_size=1, max_size=40)
_hex = "0123456789abcdef"
valid_digests = st.sampled_from([("sha256", 64), ("sha384", 96), ("sha512", 128)]).flatmap(
    lambda a: st.text(_hex, min_size=a[1], max_size=a[1]).map(lambda h: f"{a[0]}:{h}"))
digests = st.one_of(
    valid_digests,
    st.sampled_from(["sha256:" + "A" * 64, "sha256:" + "a" * 63, "sha256:" + "a" * 65, "md5:" + "a" * 32,
                     "sha256:" + "g" * 64, "sha256" + "a" * 65, "sha512:" + "a" * 64, "", "sha256:",
                     "sha256:" + "a" * 63 + "\u00e9", Text("sha256:" + "a" * 64), None]),
)
sizes = st.one_of(st.integers(-3, 1 << 70), st.sampled_from([0, 1, 127, 128, 255, 256, 65535, 65536, (1 << 32) - 1,
                                                             1 << 32, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, 1 << 64,
                                                             True, 2.0, None, "5"]))
long_label = st.integers(4080, 4100).map(lambda n: {"k" * 8: "v" * (n - 8)})
maps = st.one_of(
    st.dictionaries(st.one_of(plain_texts, texts), st.one_of(plain_texts, st.just(""), texts), max_size=4),
    st.dictionaries(plain_texts, st.one_of(plain_texts, st.just("")), max_size=20),  # map16 past 15 entries
    st.dictionaries(st.sampled_from(["containerd.io/gc.ref.content", "containerd.io/gc.root",
                                     "containerd.io/gc.expire", "containerd.io/gc.", "containerd.io/gc",
                                     "containerd.io/gc.ref.snapshot.native"]),
                    st.sampled_from(["", "x", "sha256:" + "c" * 64, "2030-01-01T00:00:00Z"]), max_size=3),
    long_label,
    st.none(),
)


plain_maps = st.dictionaries(plain_texts, st.one_of(plain_texts, st.just("")), max_size=4)
PLAIN = {"name": plain_texts, "media_type": plain_texts, "digest": valid_digests, "size": st.integers(1, 1 << 40),
         "annotations": plain_maps, "labels": plain_maps}
ANY = {"name": st.one_of(plain_texts, texts), "media_type": st.one_of(plain_texts, texts), "digest": digests,
       "size": sizes, "annotations": maps, "labels": maps}


@st.composite
def images(draw) -> Image:
    """Images of the plain form, or with one field that may be of any other, or anything."""
    mode = draw(st.sampled_from(["plain", "one", "any"]))
    odd = draw(st.sampled_from(sorted(PLAIN)))
    field = {name: draw(ANY[name] if mode == "any" or (mode == "one" and name == odd) else PLAIN[name])
             for name in sorted(PLAIN)}
    target = Descriptor(field["media_type"], field["digest"], field["size"], field["annotations"])
    if mode != "plain" and draw(st.integers(0, 20)) == 0:
        target = draw(st.sampled_from([Target(target.media_type, target.digest, target.size), None, "target"]))
    cls = Named if mode != "plain" and draw(st.integers(0, 20)) == 0 else Image
    return cls(field["name"], target, field["labels"])



def _shape(stored) -> tuple:
    """The stored image with the types of what it holds (a dict must be a dict, not the input's)."""
    return (stored, type(stored), type(stored.target), type(stored.labels), type(stored.target.annotations))


@pytest.mark.skipif(_core is None, reason="the compiled core did not build")
@SETTINGS
@given(images(), st.one_of(st.sampled_from(["default", "n", "x" * 40]), texts),
       st.one_of(st.integers(-(1 << 64), 1 << 64), st.sampled_from([NOW, -1, 0, 127, -33, -(1 << 63), True])))
def test_compiled_and_pure_encoders_agree(image, ns, now):
    at = from_ns(NOW)
    results = {name: encode(image, ns, now, at) for name, encode in ENCODERS.items()}
    compiled, pure = results["compiled"], results["fallback"]
    assert (compiled is None) == (pure is None)
    if compiled is not None:
        assert compiled[1:] == pure[1:]
        assert _shape(compiled[0]) == _shape(pure[0])
        assert compiled[0].labels is not image.labels and compiled[0].target.annotations is not image.target.annotations


@pytest.fixture(scope="module")
def dbs(tmp_path_factory):
    """Two databases on one fixed clock: creations outside any transaction and inside one."""
    yield from open_pair(tmp_path_factory)



def _create(obj):
    return lambda handle: handle.images.create(obj)


_D = "sha256:" + "ab" * 32
_MT = "application/vnd.oci.image.manifest.v1+json"


def _off(name="img", media_type=_MT, digest=_D, size=10, annotations=None, labels=None, cls=Image, target=None):
    """A plain image but for what is given."""
    return cls(name, target if target is not None else Descriptor(media_type, digest, size, annotations), labels)


EDGES = [  # each rule of the plain form, at and past its edge
    _off(), _off(name="n" * 255), _off(name="n" * 256), _off(name=""), _off(name="a\x00b"), _off(name="\u00e9"),
    _off(name="\ud800"), _off(name=Text("img")), _off(name=5),
    _off(media_type=""), _off(media_type="m" * 40), _off(media_type="\u00e9"), _off(media_type=None),
    _off(digest="sha384:" + "a" * 96), _off(digest="sha512:" + "a" * 128), _off(digest="sha256:" + "A" * 64),
    _off(digest="sha256:" + "a" * 63), _off(digest="sha1:" + "a" * 40), _off(digest="sha256-" + "a" * 64),
    _off(size=0), _off(size=-1), _off(size=True), _off(size=1.5), _off(size=(1 << 63) - 1), _off(size=1 << 63),
    _off(size=1 << 64), _off(size=None),
    _off(labels={"k": "v" * 4095}), _off(labels={"k": "v" * 4096}), _off(labels={"": "v"}), _off(labels={"": ""}),
    _off(labels={"k": "a\x00"}), _off(labels={"k\x00": ""}), _off(labels={"k": 1}), _off(labels={1: "v"}),
    _off(labels={"k": "\u00e9"}), _off(labels={"k": "\udc80"}), _off(labels={"k": ""}),
    _off(labels={f"k{i}": "v" for i in range(16)}), _off(labels={"containerd.io/gc.ref.content": _D}),
    _off(labels={"containerd.io/gc.expire": "2030-01-01T00:00:00Z", "containerd.io/gc.root": ""}),
    _off(labels={"containerd.io/gc.ref.snapshot.native": "s", "x": "y"}),
    _off(annotations={"k": "a\x00"}), _off(annotations={"": "v"}), _off(annotations={"k": ""}),
    _off(annotations={"k": 1}), _off(annotations={"k": "\u00e9"}), _off(annotations={"k" * 300: "v" * 70000}),
    _off(cls=Named), _off(target=Target(_MT, _D, 10)), _off(target="target"),
]


@pytest.mark.parametrize("image", EDGES)
def test_each_rule_of_the_plain_form_at_its_edge(dbs, image):
    test_encoders_accept_only_valid_images_and_write_what_validation_writes.hypothesis.inner_test(dbs, image)
    test_a_creation_inside_a_transaction_ends_as_one_outside.hypothesis.inner_test(dbs, image)
    if _core is not None:
        test_compiled_and_pure_encoders_agree.hypothesis.inner_test(image, "ns", NOW)


@SETTINGS
@given(images())
def test_encoders_accept_only_valid_images_and_write_what_validation_writes(dbs, image):
    outside, _ = dbs
    ns = f"n{next(namespaces)}"
    check_against_validation(outside, ns, image, _create(image), _shape, ENCODERS,
                             lambda: (schema.object_key(ns, schema.K_IMAGE, image.name),
                                      schema.pack_node(ResourceType.IMAGE, ns, image.name)))


@SETTINGS
@given(images())
def test_a_creation_inside_a_transaction_ends_as_one_outside(dbs, image):
    outside, inside = dbs
    ns = f"m{next(namespaces)}"
    assert create_inside(inside, ns, _create(image), _shape) == create_outside(outside, ns, _create(image), _shape)


def _plain(name: str = "img") -> Image:
    return Image(name, Descriptor("application/vnd.oci.image.manifest.v1+json", "sha256:" + "ab" * 32, 10),
                 {"k": "v", "empty": ""})


def test_an_existing_image_inside_a_transaction_is_already_exists_and_changes_nothing(dbs):
    outside, inside = dbs
    ns = f"e{next(namespaces)}"
    first = create_inside(inside, ns, _create(_plain()), _shape)
    assert first == create_outside(outside, ns, _create(_plain()), _shape)
    again = create_inside(inside, ns, _create(_plain()), _shape)
    assert again == create_outside(outside, ns, _create(_plain()), _shape)
    assert again[0] == ("AlreadyExists", f"image 'img' already exists in namespace '{ns}'")
    assert again[1] == first[1]


def test_a_leased_creation_inside_a_transaction_joins_the_lease_or_fails_without_it(dbs):
    _, db = dbs
    ns = f"l{next(namespaces)}"
    with db.update():
        with pytest.raises(errors.NotFound, match="lease 'gone' does not exist"):
            db.namespace(ns).with_lease("gone").images.create(_plain())
        assert db.namespace(ns).images.list() == []
    lease = db.namespace(ns).leases.create("kept")
    with db.update():
        db.namespace(ns).with_lease(lease.id).images.create(_plain())
    assert db.namespace(ns).leases.list_resources(lease.id) == [Resource("img", "images")]


def test_a_creation_in_a_read_transaction_or_another_databases_fails_as_before(dbs):
    outside, inside = dbs
    ns = f"r{next(namespaces)}"
    with inside.view():
        with pytest.raises(errors.FailedPrecondition, match="cannot write inside a read transaction"):
            inside.namespace(ns).images.create(_plain())
    with outside.update() as foreign:
        with pytest.raises(errors.InvalidArgument, match="tx must be a transaction of this database"):
            inside.namespace(ns).images.create(_plain(), tx=foreign)
    with inside.view() as tx:
        assert rows(tx, ns) == ([], [], None)
