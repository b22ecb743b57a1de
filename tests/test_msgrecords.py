"""Records in msgpack (`_ext/msgrecords.pxi` and its twin `cargohold._fallback_msgrecords`): the
compiled `pack_record` gives msgpack-python's bytes and `unpack_record` its value for every record
of the plain form, None for anything else; `schema.pack` and `schema.unpack` give msgpack-python's
bytes and values for every record, and report damage as Corrupted."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cargohold import _fallback, errors, schema

try:
    from cargohold import _core
except ImportError:  # the extension did not build: the twin alone
    _core = None

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_edges = [0, 1, 31, 32, 127, 128, 255, 256, 65535, 65536, (1 << 32) - 1, 1 << 32, (1 << 63) - 1, 1 << 63,
          (1 << 64) - 1, 1 << 64, -1, -32, -33, -128, -129, -32768, -32769, -(1 << 31), -(1 << 31) - 1,
          -(1 << 63), -(1 << 63) - 1]
ints = st.one_of(st.integers(), st.sampled_from(_edges))
texts = st.one_of(st.text(st.sampled_from("ab\x00\x7f"), max_size=3),
                  st.sampled_from([31, 32, 255, 256, 65535, 65536]).map(lambda n: "x" * n),
                  st.text(max_size=4))  # any code point: non-ASCII is not plain
leaves = st.one_of(ints, texts, st.sampled_from([None, True, False, 1.5, b"raw", [1, "a"]]))
values = st.recursive(leaves, lambda inner: st.dictionaries(st.one_of(texts, ints), inner, max_size=5),
                      max_leaves=12)
records = st.one_of(st.dictionaries(st.one_of(texts, st.integers(0, 3)), values, max_size=9),
                    ints, texts)  # a record, or a sequence's value


def _msgpack(record) -> bytes:
    return msgpack.packb(record, use_bin_type=True)


def _value(data: bytes):
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def _plain(value, depth: int = 0) -> bool:
    if type(value) is str:
        return value.isascii()
    if type(value) is int:
        return -(1 << 63) <= value < 1 << 63
    return (type(value) is dict and depth < 4
            and all(type(k) is str and k.isascii() and _plain(v, depth + 1) for k, v in value.items()))


@pytest.mark.skipif(_core is None, reason="the compiled core did not build")
@SETTINGS
@given(records)
def test_compiled_pack_is_msgpacks_for_plain_records_and_none_otherwise(record):
    try:
        expected = _msgpack(record)
    except (TypeError, ValueError, OverflowError):
        expected = None
    got = _core.pack_record(record)
    if _plain(record):
        assert got == expected
    else:
        assert got is None


@pytest.mark.skipif(_core is None, reason="the compiled core did not build")
@SETTINGS
@given(records)
def test_compiled_unpack_is_msgpacks_value(record):
    try:
        data = _msgpack(record)
    except (TypeError, ValueError, OverflowError):
        return
    got = _core.unpack_record(data)
    if got is not None:
        assert got == _value(data)
        assert type(got) is type(_value(data))
        if type(got) is dict:
            assert [type(v) for v in got.values()] == [type(v) for v in _value(data).values()]
    else:  # left to msgpack-python: something not of the plain form (an unsigned 64-bit int is)
        assert not _plain(record)


@pytest.mark.skipif(_core is None, reason="the compiled core did not build")
@SETTINGS
@given(records, st.data())
def test_compiled_unpack_of_damaged_bytes_is_none_or_msgpacks_value(record, data):
    try:
        packed = _msgpack(record)
    except (TypeError, ValueError, OverflowError):
        return
    cut = data.draw(st.integers(0, len(packed)))
    damaged = packed[:cut] + data.draw(st.binary(max_size=3))
    got = _core.unpack_record(damaged)
    if got is not None:
        assert got == _value(damaged)


@SETTINGS
@given(records)
def test_schema_pack_and_unpack_are_msgpacks(record):
    try:
        expected = _msgpack(record)
    except (TypeError, ValueError, OverflowError) as exc:
        with pytest.raises(type(exc)):
            schema.pack(record)
        assert schema.pack({"after": "a failure"}) == _msgpack({"after": "a failure"})
        return
    assert schema.pack(record) == expected
    assert _fallback.pack_record(record) == expected
    assert schema.unpack(expected) == _value(expected)


@pytest.mark.parametrize("damaged", [b"", b"\x81", b"\x81\xa1a", b"\x81\xa1a\x01\x01", b"\x82\xa1a\x01", b"\xc1"])
def test_schema_unpack_reports_damage(damaged):
    with pytest.raises(errors.Corrupted, match="damaged snapshot 'k'"):
        schema.unpack(damaged, "snapshot 'k'")
    assert _fallback.unpack_record(damaged) is None
    if _core is not None:
        assert _core.unpack_record(damaged) is None
