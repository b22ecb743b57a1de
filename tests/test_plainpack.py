"""The compiled msgpack fast paths of `cargohold.schema` (`_ext/plainpack.pxi`) and their twins
(`cargohold._fallback_plain`), which decide alike on every input: `plain_pack` writes
msgpack-python's bytes, byte for byte, for every value of the plain forms and declines (None) every
other one; `plain_unpack` reads what msgpack reads, with the same types, and declines (NOT_PLAIN)
any data it does not read exactly as msgpack does, damaged data included, so that `schema.unpack`
raises msgpack's own errors. Both cores store the same bytes and read the same records."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cargohold import _fallback, errors, schema

try:
    from cargohold import _core
except ImportError:  # the extension did not build: nothing to compare
    _core = None

pytestmark = pytest.mark.skipif(_core is None, reason="the compiled core is not built")
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Text(str):
    pass


class Mapping(dict):
    pass


def _msgpack_pack(value):
    return msgpack.packb(value, use_bin_type=True)


def _msgpack_unpack(data):
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def _typed(value):
    """`value` with the type of every part spelled out (True == 1, but not as a record field)."""
    if isinstance(value, dict):
        return ("dict", [(_typed(k), _typed(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_typed(v) for v in value])
    return (type(value).__name__, value)


_chars = st.sampled_from(["a", "Z", "0", "/", "\x00", "\x7f", "\u00e9", "\u4e2d", "\U0001f600"])
plain_text = st.one_of(st.text(_chars, max_size=8), st.text(_chars, min_size=1, max_size=3).map(lambda s: s * 120))
plain_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(1 << 63), (1 << 64) - 1),
    st.sampled_from([0, 127, 128, 255, 256, 65535, 65536, (1 << 32) - 1, 1 << 32, (1 << 63) - 1, 1 << 63,
                     -1, -32, -33, -128, -129, -32768, -32769, -(1 << 31), -(1 << 31) - 1, -(1 << 63)]),
    plain_text, st.binary(max_size=40), st.binary(min_size=250, max_size=300),
)
plain_values = st.recursive(
    plain_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=18), st.lists(inner, max_size=4).map(tuple),
                            st.dictionaries(st.one_of(plain_text, st.integers(-5, 5)), inner, max_size=18)),
    max_leaves=40,
)
odd_scalars = st.one_of(
    st.floats(allow_nan=False), st.integers(1 << 64, 1 << 70), st.integers(-(1 << 70), -(1 << 63) - 1),
    st.text(st.sampled_from(["a", "\ud800"]), min_size=1, max_size=3), st.builds(Text, plain_text),
    st.builds(bytearray, st.binary(max_size=4)), st.builds(set), st.builds(object),
)
any_values = st.recursive(
    st.one_of(plain_scalars, odd_scalars),
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(plain_text, inner, max_size=5),
                            st.dictionaries(plain_text, inner, max_size=3).map(Mapping)),
    max_leaves=12,
)
# What msgpack can read back (str-keyed maps of any key length, floats, ints of every width).
stored_values = st.recursive(
    st.one_of(plain_scalars, st.floats(allow_nan=False)),
    lambda inner: st.one_of(st.lists(inner, max_size=18),
                            st.dictionaries(st.one_of(plain_text, st.text("k", min_size=300, max_size=301),
                                                      st.integers(-3, 3)), inner, max_size=18)),
    max_leaves=40,
)


def _unpacked(fn, data):
    got = fn(data)
    return "declined" if got is _core.NOT_PLAIN or got is _fallback.NOT_PLAIN else _typed(got)


@SETTINGS
@given(plain_values)
def test_plain_values_pack_as_msgpack_packs_them(value):
    assert _core.plain_pack(value) == _fallback.plain_pack(value) == _msgpack_pack(value)


@SETTINGS
@given(any_values)
def test_other_values_are_left_to_msgpack(value):
    packed = _core.plain_pack(value)
    assert packed == _fallback.plain_pack(value)
    if packed is None:
        return
    assert packed == _msgpack_pack(value)


def test_every_odd_form_is_declined():
    for value in (1.5, 1 << 64, -(1 << 63) - 1, "\ud800", Text("a"), Mapping(a=1), bytearray(b"x"),
                  {"a": [1, {"b": 2.0}]}, [set()], (1 << 64,)):
        assert _core.plain_pack(value) is None and _fallback.plain_pack(value) is None, value
    deep = []
    for _ in range(40):
        deep = [deep]
    assert _core.plain_pack(deep) is None and _fallback.plain_pack(deep) is None  # msgpack's limit decides
    assert schema.pack(deep) == _msgpack_pack(deep)


@SETTINGS
@given(stored_values)
def test_stored_records_unpack_as_msgpack_unpacks_them(value):
    data = _msgpack_pack(value)
    got = _core.plain_unpack(data)
    assert _unpacked(_core.plain_unpack, data) == _unpacked(_fallback.plain_unpack, data)
    if got is _core.NOT_PLAIN:
        return
    assert _typed(got) == _typed(_msgpack_unpack(data))


@SETTINGS
@given(plain_values)
def test_plain_records_are_read_without_msgpack(value):
    data = _msgpack_pack(value)
    got = _core.plain_unpack(data)
    expected = _msgpack_unpack(data)
    if _str_keys(expected):
        assert got is not _core.NOT_PLAIN
    if got is not _core.NOT_PLAIN:
        assert _typed(got) == _typed(expected)


def _str_keys(value) -> bool:
    """Every map keyed by str of at most 255 bytes (the keys `plain_unpack` reads)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and len(k.encode()) <= 255 and _str_keys(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_str_keys(v) for v in value)
    return True


def _damaged(data: bytes, cut: int, flip: int, bit: int) -> list[bytes]:
    out = [data[:cut], data + b"\x00", data[:cut] + data[cut + 1:]]
    if data:
        i = flip % len(data)
        out.append(data[:i] + bytes((data[i] ^ (1 << bit),)) + data[i + 1:])
    return out


@SETTINGS
@given(stored_values, st.integers(0, 400), st.integers(0, 400), st.integers(0, 7))
def test_damaged_data_is_read_as_msgpack_reads_it(value, cut, flip, bit):
    for data in _damaged(_msgpack_pack(value), cut, flip, bit):
        got = _core.plain_unpack(data)
        assert _unpacked(_core.plain_unpack, data) == _unpacked(_fallback.plain_unpack, data)
        if got is _core.NOT_PLAIN:
            continue
        assert _typed(got) == _typed(_msgpack_unpack(data))


@SETTINGS
@given(st.binary(max_size=60))
def test_arbitrary_bytes_are_read_as_msgpack_reads_them(data):
    got = _core.plain_unpack(data)
    assert _unpacked(_core.plain_unpack, data) == _unpacked(_fallback.plain_unpack, data)
    if got is not _core.NOT_PLAIN:
        assert _typed(got) == _typed(_msgpack_unpack(data))


def test_schema_unpack_raises_msgpacks_errors():
    for data in (b"", b"\x88\xa1i", b"\x81\xa1a\x01\x02", b"\xc1", b"\xa2\xff\xfe", b"\x81\xa2\xff\xfea\x01"):
        with pytest.raises(Exception) as direct:
            _msgpack_unpack(data)
        with pytest.raises(errors.Corrupted) as ours:
            schema.unpack(data, "test record")
        assert str(ours.value) == f"damaged test record in the metadata database: {direct.value}"
    assert _core.plain_unpack(bytearray(b"\x01")) is _core.NOT_PLAIN
    assert schema.unpack(bytearray(b"\x01")) == 1


def test_keys_come_interned_as_msgpack_makes_them():
    record = _core.plain_unpack(_msgpack_pack({"labels": {"containerd.io/gc.root": "x"}, "\u00e9t\u00e9": 1}))
    for key in (*record, *record["labels"]):
        assert key is next(iter(msgpack.unpackb(_msgpack_pack({key: 0}), raw=False)))
