"""Varint encoding: byte-compatible with Go's binary.PutVarint, in both implementations."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from cargohold.errors import InvalidArgument

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

# Bytes written by Go's binary.PutVarint for these values.
GO_VECTORS = [
    (0, "00"),
    (1, "02"),
    (-1, "01"),
    (2, "04"),
    (-2, "03"),
    (63, "7e"),
    (-64, "7f"),
    (64, "8001"),
    (-65, "8101"),
    (300, "d804"),
    (3, "06"),
    (1 << 31, "8080808010"),
    (INT64_MAX, "feffffffffffffffff01"),
    (INT64_MIN, "ffffffffffffffffff01"),
]


@pytest.mark.parametrize("value,hexed", GO_VECTORS)
def test_matches_go(impl, value, hexed):
    assert impl.encode_varint(value).hex() == hexed
    assert impl.decode_varint(bytes.fromhex(hexed)) == (value, len(hexed) // 2)


def test_decode_at_offset(impl):
    data = b"xx" + impl.encode_varint(-300) + impl.encode_varint(7)
    value, end = impl.decode_varint(data, 2)
    assert value == -300
    assert impl.decode_varint(data, end) == (7, len(data))


@pytest.mark.parametrize("data", [
    b"",                          # nothing
    b"\x80",                      # continuation with no next byte
    b"\xff\xff",                  # truncated
    b"\xff" * 9 + b"\x02",        # tenth byte above 1: overflows 64 bits
    b"\xff" * 10 + b"\x01",       # eleven bytes
    b"\x80" * 10,                 # never ends within 10 bytes
])
def test_malformed_rejected(impl, data):
    with pytest.raises(InvalidArgument):
        impl.decode_varint(data)


@pytest.mark.parametrize("bad", [1 << 63, INT64_MIN - 1, 1.5, "1", None, True])
def test_encode_rejects(impl, bad):
    with pytest.raises(InvalidArgument):
        impl.encode_varint(bad)


def test_decode_rejects_non_bytes_and_bad_offset(impl):
    with pytest.raises(InvalidArgument):
        impl.decode_varint("00")
    with pytest.raises(InvalidArgument):
        impl.decode_varint(b"\x00", 5)
    with pytest.raises(InvalidArgument):
        impl.decode_varint(b"\x00", -1)


@given(st.integers(min_value=INT64_MIN, max_value=INT64_MAX))
def test_implementations_agree(value):
    from conftest import IMPLEMENTATIONS

    encoded = {name: mod.encode_varint(value) for name, mod in IMPLEMENTATIONS.items()}
    assert len(set(encoded.values())) == 1
    data = next(iter(encoded.values()))
    for mod in IMPLEMENTATIONS.values():
        assert mod.decode_varint(data) == (value, len(data))


@given(st.binary(max_size=12))
def test_implementations_agree_on_any_input(data):
    from conftest import IMPLEMENTATIONS

    results = []
    for mod in IMPLEMENTATIONS.values():
        try:
            results.append(mod.decode_varint(data))
        except InvalidArgument:
            results.append("invalid")
    assert len(set(results)) == 1
