# Go's binary.PutVarint / binary.Varint: zig-zag, then base-128 little-endian
# groups with a continuation bit; at most 10 bytes for an int64.

from libc.stdint cimport int64_t, uint64_t
from cargohold.errors import InvalidArgument

DEF MAX_VARINT_LEN = 10


def encode_varint(value):
    """Encode a signed 64-bit integer as Go's binary.PutVarint does."""
    cdef unsigned char buf[MAX_VARINT_LEN]
    cdef int n = 0
    cdef int64_t x
    cdef uint64_t ux
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"varint value must be an integer, not {value!r}")
    if not (-(1 << 63) <= value < (1 << 63)):
        raise InvalidArgument(f"varint value {value} does not fit in 64 signed bits")
    x = value
    ux = (<uint64_t>x) << 1
    if x < 0:
        ux = ~ux
    while ux >= 0x80:
        buf[n] = <unsigned char>(ux & 0x7F) | 0x80
        ux >>= 7
        n += 1
    buf[n] = <unsigned char>ux
    return (<char*>buf)[:n + 1]


def decode_varint(data, Py_ssize_t offset=0):
    """Decode one Go varint from `data` at `offset`; return (value, next_offset)."""
    cdef const unsigned char[:] view
    cdef uint64_t ux = 0
    cdef unsigned int shift = 0
    cdef Py_ssize_t i, size
    cdef unsigned char b
    cdef int64_t x
    try:
        view = data
    except (TypeError, ValueError):
        raise InvalidArgument(f"varint input must be bytes-like, not {type(data).__name__}") from None
    size = view.shape[0]
    if offset < 0 or offset > size:
        raise InvalidArgument(f"varint offset {offset} outside input of {size} bytes")
    i = offset
    while True:
        if i >= size:
            raise InvalidArgument(f"truncated varint at offset {offset}: {bytes(data[offset:])!r}")
        if i - offset == MAX_VARINT_LEN:
            raise InvalidArgument(f"varint at offset {offset} overflows 64 bits")
        b = view[i]
        if b < 0x80:
            if i - offset == MAX_VARINT_LEN - 1 and b > 1:
                raise InvalidArgument(f"varint at offset {offset} overflows 64 bits")
            ux |= (<uint64_t>b) << shift
            break
        ux |= (<uint64_t>(b & 0x7F)) << shift
        shift += 7
        i += 1
    x = <int64_t>(ux >> 1)
    if ux & 1:
        x = ~x
    return x, i + 1
