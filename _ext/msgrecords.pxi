# Records in msgpack (`cargohold.schema.pack` and `unpack`) for the plain form nearly every record
# has: maps with ASCII str keys whose values are ints in the int64 range, ASCII str, or maps of the
# same form (labels), at most MR_MAX_DEPTH deep; or one such int or str (a sequence's value). `pack_record` gives msgpack-python's bytes
# (``packb(record, use_bin_type=True)``: smallest forms, str8 allowed) and `unpack_record` its
# value (``unpackb(data, raw=False, strict_map_key=False)``); for anything else both give None and
# schema takes msgpack-python's path. Twin: cargohold._fallback_msgrecords (msgpack-python itself).
# Builds on the writers of records.pxi (_rec_str, _rec_int, _rec_map and their sizes).

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.ref cimport Py_INCREF, Py_XDECREF

cdef extern from "Python.h":
    object PyUnicode_DecodeASCII(const char *s, Py_ssize_t size, const char *errors)
    object PyLong_FromLongLong(long long v)
    object PyLong_FromUnsignedLongLong(unsigned long long v)
    object _PyDict_NewPresized(Py_ssize_t minused)

cdef enum:
    MR_MAX_DEPTH = 4
    MR_MAX_STR = 0xFFFFFFFF
    MR_KEY_SLOTS = 256          # a power of two
    MR_KEY_MAX = 24             # longer keys are not remembered


cdef Py_ssize_t _mr_size(object value, int depth) except -2:
    """Bytes of `value` packed, or -1 when it is not of the plain form."""
    cdef long long v
    cdef Py_ssize_t total, part, n
    if type(value) is str:
        n = PyUnicode_GET_LENGTH(value)
        if not PyUnicode_IS_ASCII(value) or n > MR_MAX_STR:
            return -1
        return _rec_str_size(n)
    if type(value) is int:
        if not _rec_int64(value, &v):
            return -1
        return _rec_int_size(v)
    if type(value) is dict:
        if depth >= MR_MAX_DEPTH or len(<dict>value) > MR_MAX_STR:
            return -1
        total = _rec_map_size(len(<dict>value))
        for key, item in (<dict>value).items():
            if type(key) is not str or not PyUnicode_IS_ASCII(key) or PyUnicode_GET_LENGTH(key) > MR_MAX_STR:
                return -1
            part = _mr_size(item, depth + 1)
            if part < 0:
                return -1
            total += _rec_str_size(PyUnicode_GET_LENGTH(key)) + part
        return total
    return -1


cdef unsigned char *_mr_write(unsigned char *p, object value) except NULL:
    """Write `value`, which `_mr_size` measured, at p."""
    if type(value) is str:
        return _rec_str(p, value)
    if type(value) is int:
        return _rec_int(p, <long long>value)
    p = _rec_map(p, len(<dict>value))
    for key, item in (<dict>value).items():
        p = _mr_write(_rec_str(p, key), item)
    return p


def pack_record(record):
    """msgpack-python's bytes of a record (or int, or str) of the plain form (see the top of this
    file), else None."""
    cdef Py_ssize_t size
    cdef bytes out
    cdef unsigned char *end
    size = _mr_size(record, 0)
    if size < 0:
        return None
    out = PyBytes_FromStringAndSize(NULL, size)
    end = _mr_write(<unsigned char *>PyBytes_AS_STRING(out), record)
    if end != <unsigned char *>PyBytes_AS_STRING(out) + size:
        raise SystemError("pack_record: the record changed while it was packed")
    return out


cdef PyObject *_mr_keys[MR_KEY_SLOTS]
"""Map keys decoded before, by a hash of their bytes: records share a few short keys, and a key
found here needs no new str (nor hashing it again) for the dict it goes into."""


cdef object _mr_key(const unsigned char *s, Py_ssize_t n):
    """The str of ASCII bytes s[:n], from `_mr_keys` when it holds it."""
    cdef unsigned int h = <unsigned int>n
    cdef Py_ssize_t i
    cdef PyObject *hit
    if n > MR_KEY_MAX:
        return PyUnicode_DecodeASCII(<const char *>s, n, NULL)
    for i in range(n):
        h = h * 31 + s[i]
    h &= MR_KEY_SLOTS - 1
    hit = _mr_keys[h]
    if hit != NULL and PyUnicode_GET_LENGTH(<object>hit) == n and memcmp(PyUnicode_DATA(<object>hit), s, n) == 0:
        return <object>hit
    key = PyUnicode_DecodeASCII(<const char *>s, n, NULL)
    hash(key)  # kept in the str: every dict it goes into uses it
    Py_XDECREF(hit)
    Py_INCREF(key)
    _mr_keys[h] = <PyObject *>key
    return key


cdef object _MR_NONE = object()
"""What `_mr_read` returns for anything it leaves to msgpack-python (damage included)."""


cdef inline unsigned long long _mr_be(const unsigned char *p, int n) noexcept:
    cdef unsigned long long v = 0
    cdef int i
    for i in range(n):
        v = (v << 8) | p[i]
    return v


cdef object _mr_read(const unsigned char *p, Py_ssize_t n, Py_ssize_t *pos, int depth, bint is_key=False):
    """The value at p[pos[0]:], pos moved past it; _MR_NONE when not of the plain form."""
    cdef Py_ssize_t at = pos[0], size, i, j
    cdef unsigned char c
    cdef int width
    if at >= n:
        return _MR_NONE
    c = p[at]
    at += 1
    if c <= 0x7F:
        pos[0] = at
        return PyLong_FromLongLong(c)
    if c >= 0xE0:
        pos[0] = at
        return PyLong_FromLongLong(<signed char>c)
    if 0xA0 <= c <= 0xBF or 0xD9 <= c <= 0xDB:
        if c <= 0xBF:
            size = c & 0x1F
        else:
            width = 1 if c == 0xD9 else (2 if c == 0xDA else 4)
            if at + width > n:
                return _MR_NONE
            size = <Py_ssize_t>_mr_be(p + at, width)
            at += width
        if size > n - at:
            return _MR_NONE
        for j in range(at, at + size):
            if p[j] >= 0x80:
                return _MR_NONE
        pos[0] = at + size
        if is_key:
            return _mr_key(p + at, size)
        return PyUnicode_DecodeASCII(<const char *>(p + at), size, NULL)
    if 0xCC <= c <= 0xD3:
        width = 1 << ((c - 0xCC) & 3)
        if at + width > n:
            return _MR_NONE
        pos[0] = at + width
        if c <= 0xCF:
            return PyLong_FromUnsignedLongLong(_mr_be(p + at, width))
        if width == 1:
            return PyLong_FromLongLong(<signed char>_mr_be(p + at, 1))
        if width == 2:
            return PyLong_FromLongLong(<short>_mr_be(p + at, 2))
        if width == 4:
            return PyLong_FromLongLong(<int>_mr_be(p + at, 4))
        return PyLong_FromLongLong(<long long>_mr_be(p + at, 8))
    if 0x80 <= c <= 0x8F or c == 0xDE or c == 0xDF:
        if depth >= MR_MAX_DEPTH:
            return _MR_NONE
        if c <= 0x8F:
            size = c & 0x0F
        else:
            width = 2 if c == 0xDE else 4
            if at + width > n:
                return _MR_NONE
            size = <Py_ssize_t>_mr_be(p + at, width)
            at += width
        if size > (n - at) // 2:  # every entry takes two bytes at least
            return _MR_NONE
        found = _PyDict_NewPresized(size)
        for i in range(size):
            key = _mr_read(p, n, &at, MR_MAX_DEPTH, True)  # a key is a str: no map at any depth
            if type(key) is not str:
                return _MR_NONE
            value = _mr_read(p, n, &at, depth + 1)
            if value is _MR_NONE:
                return _MR_NONE
            found[key] = value
        pos[0] = at
        return found
    return _MR_NONE


def unpack_record(data):
    """msgpack-python's value of the bytes of a record (or int, or str) of the plain form (see the
    top of this file), else None (the caller then asks msgpack-python, which also reports damage)."""
    cdef Py_ssize_t pos = 0, n
    if type(data) is not bytes:
        return None
    n = PyBytes_GET_SIZE(data)
    value = _mr_read(<const unsigned char *>PyBytes_AS_STRING(data), n, &pos, 0)
    if value is _MR_NONE or pos != n:
        return None
    return value
