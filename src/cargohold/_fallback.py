"""Pure-Python twins of every function of the compiled core (`_ext/`).

Used when the extension is not built or when CARGOHOLD_PUREPYTHON=1; tests
check that both give identical results.
"""

from __future__ import annotations

from .errors import InvalidArgument

MAX_VARINT_LEN = 10
_U64 = (1 << 64) - 1


def encode_varint(value: int) -> bytes:
    """Encode a signed 64-bit integer as Go's binary.PutVarint does."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"varint value must be an integer, not {value!r}")
    if not (-(1 << 63) <= value < (1 << 63)):
        raise InvalidArgument(f"varint value {value} does not fit in 64 signed bits")
    ux = (value << 1) & _U64
    if value < 0:
        ux ^= _U64
    out = bytearray()
    while ux >= 0x80:
        out.append((ux & 0x7F) | 0x80)
        ux >>= 7
    out.append(ux)
    return bytes(out)


def decode_varint(data, offset: int = 0) -> tuple[int, int]:
    """Decode one Go varint from `data` at `offset`; return (value, next_offset)."""
    try:
        view = memoryview(data).cast("B")
    except TypeError:
        raise InvalidArgument(f"varint input must be bytes-like, not {type(data).__name__}") from None
    size = len(view)
    if offset < 0 or offset > size:
        raise InvalidArgument(f"varint offset {offset} outside input of {size} bytes")
    ux = 0
    shift = 0
    i = offset
    while True:
        if i >= size:
            raise InvalidArgument(f"truncated varint at offset {offset}: {bytes(view[offset:])!r}")
        if i - offset == MAX_VARINT_LEN:
            raise InvalidArgument(f"varint at offset {offset} overflows 64 bits")
        b = view[i]
        if b < 0x80:
            if i - offset == MAX_VARINT_LEN - 1 and b > 1:
                raise InvalidArgument(f"varint at offset {offset} overflows 64 bits")
            ux |= b << shift
            break
        ux |= (b & 0x7F) << shift
        shift += 7
        i += 1
    x = ux >> 1
    if ux & 1:
        x = ~x
    return x, i + 1
