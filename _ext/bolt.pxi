# bbolt page decoding for cargohold.bolt: twins of bolt_leaf / bolt_branch in _fallback.py
# (same results, same error messages). A page starts with a 16-byte header; its element
# table follows, 16 bytes an element, each element's pos counting from the element to its key.

from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcmp, memcpy
from cpython.bytes cimport PyBytes_FromStringAndSize
from cargohold.errors import Corrupted

DEF BOLT_HEADER = 16
DEF BOLT_BUCKET_FLAG = 0x01


cdef inline uint32_t _u32(const unsigned char *p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)   # the format is little-endian, as every platform cargohold builds on
    return v


cdef inline uint64_t _u64(const unsigned char *p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v


cdef inline int _keycmp(const unsigned char *a, Py_ssize_t alen,
                        const unsigned char *b, Py_ssize_t blen) noexcept nogil:
    cdef int c = memcmp(a, b, alen if alen < blen else blen)
    if c != 0:
        return c
    return (alen > blen) - (alen < blen)


def bolt_leaf(const unsigned char[::1] buf, Py_ssize_t start, Py_ssize_t end, Py_ssize_t count):
    """Decode the `count` elements of the bbolt leaf page held in buf[start:end].

    Returns (keys, values, buckets): values[i] is None for a sub-bucket, whose
    element index and value offsets in `buf` are appended to `buckets` as
    (index, value_start, value_end) triples, flattened. Keys must increase.
    """
    cdef Py_ssize_t table = start + BOLT_HEADER
    cdef Py_ssize_t data = table + 16 * count
    cdef Py_ssize_t i, elem, k, v, e, prev_k = 0, prev_len = 0, unsorted = -1
    cdef uint32_t flags, pos, ksize, vsize
    cdef const unsigned char *base
    cdef list keys = [], values = [], buckets = []
    if start < 0 or end > buf.shape[0] or start > end:
        raise Corrupted(f"page bounds {start}..{end} outside a buffer of {buf.shape[0]} bytes")
    if data > end:
        raise Corrupted(f"{count} leaf elements do not fit in {end - start} bytes")
    base = &buf[0]
    for i in range(count):
        elem = table + 16 * i
        flags = _u32(base + elem)
        pos = _u32(base + elem + 4)
        ksize = _u32(base + elem + 8)
        vsize = _u32(base + elem + 12)
        k = elem + <Py_ssize_t>pos
        v = k + <Py_ssize_t>ksize
        e = v + <Py_ssize_t>vsize
        if e > end or k < data:
            raise Corrupted(f"leaf element {i} (key of {ksize} bytes at {k - start}, value of {vsize} bytes) "
                            f"lies outside the data of the page's {end - start} bytes")
        if unsorted < 0 and i > 0 and _keycmp(base + prev_k, prev_len, base + k, ksize) >= 0:
            unsorted = i
        keys.append(PyBytes_FromStringAndSize(<const char*>base + k, ksize))
        if flags & BOLT_BUCKET_FLAG:
            values.append(None)
            buckets += (i, v, e)
        else:
            values.append(PyBytes_FromStringAndSize(<const char*>base + v, vsize))
        prev_k = k
        prev_len = ksize
    if unsorted >= 0:   # reported after the bounds of every element, as the fallback does
        raise Corrupted(f"leaf element {unsorted}: key {keys[unsorted]!r} does not sort after the previous key")
    return keys, values, buckets


def bolt_branch(const unsigned char[::1] buf, Py_ssize_t start, Py_ssize_t end, Py_ssize_t count):
    """Child page ids of the `count` elements of the bbolt branch page in buf[start:end]."""
    cdef Py_ssize_t table = start + BOLT_HEADER
    cdef Py_ssize_t data = table + 16 * count
    cdef Py_ssize_t i, elem, k
    cdef uint32_t pos, ksize
    cdef const unsigned char *base
    cdef list children = []
    if start < 0 or end > buf.shape[0] or start > end:
        raise Corrupted(f"page bounds {start}..{end} outside a buffer of {buf.shape[0]} bytes")
    if data > end:
        raise Corrupted(f"{count} branch elements do not fit in {end - start} bytes")
    base = &buf[0]
    for i in range(count):
        elem = table + 16 * i
        pos = _u32(base + elem)
        ksize = _u32(base + elem + 4)
        k = elem + <Py_ssize_t>pos
        if k + <Py_ssize_t>ksize > end or k < data:
            raise Corrupted(f"branch element {i} (key of {ksize} bytes at {k - start}) "
                            f"lies outside the data of the page's {end - start} bytes")
        children.append(_u64(base + elem + 8))
    return children
