# Records in msgpack, the common forms in one C pass (`cargohold.schema.pack` / `unpack`):
# `plain_pack` writes what msgpack-python's ``packb(value, use_bin_type=True)`` writes, byte for
# byte, for a value built only of exact dict, list, tuple, str, bytes, int (64-bit), bool and None;
# anything else gives None and schema.pack asks msgpack. `plain_unpack` reads what
# ``unpackb(data, raw=False, strict_map_key=False)`` reads for data of those forms (maps keyed by
# str), returning NOT_PLAIN for any other data, damaged data included, which schema.unpack then
# hands to msgpack (so its errors are msgpack's). Relies on records.pxi's writers (_rec_*).
# The pure-Python core has no twin: it calls msgpack for every record.

from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint64_t

cdef extern from "Python.h":
    const char *PyUnicode_AsUTF8AndSize(object o, Py_ssize_t *size) except NULL
    void PyUnicode_InternInPlace(PyObject **p)
    object PyLong_FromUnsignedLongLong(unsigned long long v)
    object PyLong_FromLongLong(long long v)
    long long PyLong_AsLongLongAndOverflow(object o, int *overflow) except? -1
    unsigned long long PyLong_AsUnsignedLongLong(object o) except? <unsigned long long>-1
    int PyDict_Next(object d, Py_ssize_t *pos, PyObject **key, PyObject **value)
    int PyDict_SetItem(object d, object key, object value) except -1
    void Py_INCREF(PyObject *o)
    void Py_DECREF(PyObject *o)

NOT_PLAIN = object()
"""What `plain_unpack` returns for data that msgpack must read."""

cdef enum:
    PP_DEPTH = 32               # deeper values go to msgpack (whose own limit is 511)
    PP_KEYS = 64                # slots of the map-key cache

cdef list _pp_keys = [None] * PP_KEYS
cdef Py_ssize_t _PP_U32 = 0xFFFFFFFF


cdef Py_ssize_t _pp_size(object v, int depth) except -2:
    """Bytes `v` packs to, or -1 unless it is plain."""
    cdef Py_ssize_t n, total, part, pos = 0
    cdef PyObject *k
    cdef PyObject *x
    cdef long long ll
    cdef int overflow
    t = type(v)
    if v is None or t is bool:
        return 1
    if t is int:
        ll = PyLong_AsLongLongAndOverflow(v, &overflow)
        if overflow == 0:
            return _rec_int_size(ll)
        if overflow < 0:
            return -1
        try:
            PyLong_AsUnsignedLongLong(v)  # above int64: msgpack writes uint64 (0xcf)
            return 9
        except OverflowError:
            return -1
    if t is str:
        try:
            PyUnicode_AsUTF8AndSize(v, &n)
        except UnicodeEncodeError:
            return -1
        return -1 if n > _PP_U32 else _rec_str_size(n)
    if t is bytes:
        n = len(<bytes>v)
        if n > _PP_U32:
            return -1
        return n + (2 if n < 256 else (3 if n < 65536 else 5))
    if depth >= PP_DEPTH:
        return -1
    if t is dict:
        n = len(<dict>v)
        total = _rec_map_size(n)
        while PyDict_Next(v, &pos, &k, &x):
            part = _pp_size(<object>k, depth + 1)
            if part < 0:
                return -1
            total += part
            part = _pp_size(<object>x, depth + 1)
            if part < 0:
                return -1
            total += part
        return total
    if t is list or t is tuple:
        n = len(v)
        total = 1 if n < 16 else (3 if n < 65536 else 5)
        for item in v:
            part = _pp_size(item, depth + 1)
            if part < 0:
                return -1
            total += part
        return total
    return -1


cdef unsigned char *_pp_write(unsigned char *p, object v) except NULL:
    """Write plain `v` (sized by `_pp_size`) at p; returns the end."""
    cdef Py_ssize_t n, pos = 0
    cdef PyObject *k
    cdef PyObject *x
    cdef const char *s
    cdef long long ll
    cdef int overflow
    t = type(v)
    if v is None:
        p[0] = 0xC0
        return p + 1
    if t is bool:
        p[0] = 0xC3 if v else 0xC2
        return p + 1
    if t is int:
        ll = PyLong_AsLongLongAndOverflow(v, &overflow)
        if overflow == 0:
            return _rec_int(p, ll)
        p[0] = 0xCF
        return _rec_be(p + 1, PyLong_AsUnsignedLongLong(v), 8)
    if t is str:
        s = PyUnicode_AsUTF8AndSize(v, &n)
        if n < 32:
            p[0] = 0xA0 | n
            p += 1
        elif n < 256:
            p[0] = 0xD9
            p = _rec_be(p + 1, n, 1)
        elif n < 65536:
            p[0] = 0xDA
            p = _rec_be(p + 1, n, 2)
        else:
            p[0] = 0xDB
            p = _rec_be(p + 1, n, 4)
        memcpy(p, s, n)
        return p + n
    if t is bytes:
        n = len(<bytes>v)
        if n < 256:
            p[0] = 0xC4
            p = _rec_be(p + 1, n, 1)
        elif n < 65536:
            p[0] = 0xC5
            p = _rec_be(p + 1, n, 2)
        else:
            p[0] = 0xC6
            p = _rec_be(p + 1, n, 4)
        memcpy(p, PyBytes_AS_STRING(v), n)
        return p + n
    if t is dict:
        p = _rec_map(p, len(<dict>v))
        while PyDict_Next(v, &pos, &k, &x):
            p = _pp_write(p, <object>k)
            p = _pp_write(p, <object>x)
        return p
    n = len(v)
    if n < 16:
        p[0] = 0x90 | n
        p += 1
    elif n < 65536:
        p[0] = 0xDC
        p = _rec_be(p + 1, n, 2)
    else:
        p[0] = 0xDD
        p = _rec_be(p + 1, n, 4)
    for item in v:
        p = _pp_write(p, item)
    return p


def plain_pack(value):
    """msgpack-python's ``packb(value, use_bin_type=True)`` for a plain value, else None."""
    cdef Py_ssize_t size = _pp_size(value, 0)
    cdef bytes out
    cdef unsigned char *end
    if size < 0:
        return None
    out = PyBytes_FromStringAndSize(NULL, size)
    end = _pp_write(<unsigned char *>PyBytes_AS_STRING(out), value)
    if end - <unsigned char *>PyBytes_AS_STRING(out) != size:
        raise AssertionError("plain_pack: size mismatch")
    return out


cdef inline uint64_t _pp_be(const unsigned char *p, int n) noexcept:
    cdef uint64_t v = 0
    cdef int i
    for i in range(n):
        v = (v << 8) | p[i]
    return v


cdef object _pp_key(const unsigned char *p, Py_ssize_t n):
    """A map key as msgpack makes it (decoded, interned), from a cache for short ASCII keys."""
    cdef Py_ssize_t i
    cdef unsigned int h = <unsigned int>n
    cdef bint ascii = n <= 16
    cdef PyObject *o
    if ascii:
        for i in range(n):
            if p[i] >= 0x80:
                ascii = False
                break
            h = h * 31 + p[i]
    if ascii:
        h %= PP_KEYS
        cached = _pp_keys[h]
        if cached is not None and PyUnicode_GET_LENGTH(cached) == n and memcmp(PyUnicode_DATA(cached), p, n) == 0:
            return cached
    key = PyUnicode_DecodeUTF8(<char *>p, n, NULL)
    o = <PyObject *>key
    Py_INCREF(o)
    PyUnicode_InternInPlace(&o)
    key = <object>o
    Py_DECREF(o)
    if ascii:
        _pp_keys[h] = key
    return key


cdef object _pp_read(const unsigned char *p, Py_ssize_t end, Py_ssize_t *pos, int depth):
    """The value at p[*pos], *pos moved past it; NOT_PLAIN for data msgpack must read."""
    cdef Py_ssize_t i = pos[0], n, j
    cdef unsigned char c
    cdef int w
    cdef dict d
    cdef list l
    if i >= end:
        return NOT_PLAIN
    c = p[i]
    i += 1
    if c < 0x80:
        pos[0] = i
        return PyLong_FromLongLong(c)
    if c >= 0xE0:
        pos[0] = i
        return PyLong_FromLongLong(<signed char>c)
    if 0xA0 <= c <= 0xBF or 0xD9 <= c <= 0xDB:
        if c <= 0xBF:
            n = c & 0x1F
        else:
            w = 1 << (c - 0xD9)
            if i + w > end:
                return NOT_PLAIN
            n = <Py_ssize_t>_pp_be(p + i, w)
            i += w
        if n > end - i:
            return NOT_PLAIN
        try:
            value = PyUnicode_DecodeUTF8(<char *>p + i, n, NULL)
        except UnicodeDecodeError:
            return NOT_PLAIN
        pos[0] = i + n
        return value
    if 0xCC <= c <= 0xD3:
        w = 1 << ((c - 0xCC) & 3)
        if i + w > end:
            return NOT_PLAIN
        pos[0] = i + w
        if c <= 0xCF:
            return PyLong_FromUnsignedLongLong(_pp_be(p + i, w))
        if w == 1:
            return PyLong_FromLongLong(<signed char>p[i])
        if w == 2:
            return PyLong_FromLongLong(<short>_pp_be(p + i, 2))
        if w == 4:
            return PyLong_FromLongLong(<int>_pp_be(p + i, 4))
        return PyLong_FromLongLong(<int64_t>_pp_be(p + i, 8))
    if c == 0xC0:
        pos[0] = i
        return None
    if c == 0xC2 or c == 0xC3:
        pos[0] = i
        return c == 0xC3
    if 0xC4 <= c <= 0xC6:
        w = 1 << (c - 0xC4)
        if i + w > end:
            return NOT_PLAIN
        n = <Py_ssize_t>_pp_be(p + i, w)
        i += w
        if n > end - i:
            return NOT_PLAIN
        pos[0] = i + n
        return PyBytes_FromStringAndSize(<const char *>p + i, n)
    if depth >= PP_DEPTH:
        return NOT_PLAIN
    if c <= 0x8F or c == 0xDE or c == 0xDF:
        if c <= 0x8F:
            n = c & 0x0F
        else:
            w = 2 if c == 0xDE else 4
            if i + w > end:
                return NOT_PLAIN
            n = <Py_ssize_t>_pp_be(p + i, w)
            i += w
        if n > end - i:  # every entry takes at least two bytes
            return NOT_PLAIN
        d = {}
        for j in range(n):
            if i >= end:
                return NOT_PLAIN
            c = p[i]
            if 0xA0 <= c <= 0xBF:
                i += 1
                w = c & 0x1F
            elif c == 0xD9 and i + 1 < end:
                w = p[i + 1]
                i += 2
            else:
                return NOT_PLAIN  # a longer or non-str key: msgpack's
            if w > end - i:
                return NOT_PLAIN
            try:
                key = _pp_key(p + i, w)
            except UnicodeDecodeError:
                return NOT_PLAIN
            i += w
            pos[0] = i
            value = _pp_read(p, end, pos, depth + 1)
            if value is NOT_PLAIN:
                return NOT_PLAIN
            i = pos[0]
            PyDict_SetItem(d, key, value)
        pos[0] = i
        return d
    if 0x90 <= c <= 0x9F or c == 0xDC or c == 0xDD:
        if c <= 0x9F:
            n = c & 0x0F
        else:
            w = 2 if c == 0xDC else 4
            if i + w > end:
                return NOT_PLAIN
            n = <Py_ssize_t>_pp_be(p + i, w)
            i += w
        if n > end - i:
            return NOT_PLAIN
        l = []
        pos[0] = i
        for j in range(n):
            value = _pp_read(p, end, pos, depth + 1)
            if value is NOT_PLAIN:
                return NOT_PLAIN
            l.append(value)
        return l
    return NOT_PLAIN  # floats, ext types, 0xC1


def plain_unpack(data):
    """msgpack-python's ``unpackb(data, raw=False, strict_map_key=False)`` for data of the plain
    forms (bytes holding exactly one value), else NOT_PLAIN."""
    cdef Py_ssize_t pos = 0, n
    if type(data) is not bytes:
        return NOT_PLAIN
    n = len(<bytes>data)
    value = _pp_read(<const unsigned char *>PyBytes_AS_STRING(data), n, &pos, 0)
    if pos != n:
        return NOT_PLAIN
    return value
