# bbolt page decoding for cargohold.bolt: twins of bolt_leaf / bolt_branch in _fallback.py
# (same results, same error messages). A page starts with a 16-byte header; its element
# table follows, 16 bytes an element, each element's pos counting from the element to its key.

cimport cython
from libc.stdint cimport uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF
from cargohold.errors import Corrupted, InvalidArgument

DEF BOLT_HEADER = 16
DEF BOLT_BUCKET_FLAG = 0x01
DEF BOLT_BRANCH_FLAG = 0x01
DEF BOLT_LEAF_FLAG = 0x02
DEF BOLT_BRANCH = 0     # record kinds, as in _fallback.py
DEF BOLT_LEAF = 1


cdef inline uint32_t _bolt_u32(const unsigned char *p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)   # the format is little-endian, as every platform cargohold builds on
    return v


cdef inline uint64_t _bolt_u64(const unsigned char *p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v


cdef inline uint16_t _bolt_u16(const unsigned char *p) noexcept nogil:
    cdef uint16_t v
    memcpy(&v, p, 2)
    return v


cdef str _bolt_show(bytes key):
    """A key for an error message: its repr, cut after 64 bytes."""
    if len(key) <= 64:
        return repr(key)
    return f"{key[:64]!r}... ({len(key)} bytes)"


cdef inline int _bolt_keycmp(const unsigned char *a, Py_ssize_t alen,
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
    if start < 0 or end > buf.shape[0] or start > end:
        raise Corrupted(f"page bounds {start}..{end} outside a buffer of {buf.shape[0]} bytes")
    return _bolt_leaf(&buf[0], start, end, count)


cdef tuple _bolt_leaf(const unsigned char *base, Py_ssize_t start, Py_ssize_t end, Py_ssize_t count):
    cdef Py_ssize_t table = start + BOLT_HEADER
    cdef Py_ssize_t data = table + 16 * count
    cdef Py_ssize_t i, elem, k, v, e, prev_k = 0, prev_len = 0, unsorted = -1
    cdef uint32_t pos, ksize, vsize
    cdef list keys, values, buckets = []
    cdef object item
    if data > end:
        raise Corrupted(f"{count} leaf elements do not fit in {end - start} bytes")
    # first every bound and the order, then the objects (lists of their exact size)
    for i in range(count):
        elem = table + 16 * i
        pos = _bolt_u32(base + elem + 4)
        ksize = _bolt_u32(base + elem + 8)
        vsize = _bolt_u32(base + elem + 12)
        k = elem + <Py_ssize_t>pos
        e = k + <Py_ssize_t>ksize + <Py_ssize_t>vsize
        if e > end or k < data:
            raise Corrupted(f"leaf element {i} (key of {ksize} bytes at {k - start}, value of {vsize} bytes) "
                            f"lies outside the data of the page's {end - start} bytes")
        if unsorted < 0 and i > 0 and _bolt_keycmp(base + prev_k, prev_len, base + k, ksize) >= 0:
            unsorted = i
        prev_k = k
        prev_len = ksize
    if unsorted >= 0:   # reported after the bounds of every element, as the fallback does
        elem = table + 16 * unsorted
        k = elem + <Py_ssize_t>_bolt_u32(base + elem + 4)
        item = PyBytes_FromStringAndSize(<const char*>base + k, _bolt_u32(base + elem + 8))
        raise Corrupted(f"leaf element {unsorted}: key {_bolt_show(item)} does not sort after the previous key")
    keys = PyList_New(count)
    values = PyList_New(count)
    for i in range(count):
        elem = table + 16 * i
        k = elem + <Py_ssize_t>_bolt_u32(base + elem + 4)
        ksize = _bolt_u32(base + elem + 8)
        v = k + <Py_ssize_t>ksize
        item = PyBytes_FromStringAndSize(<const char*>base + k, ksize)
        Py_INCREF(item)
        PyList_SET_ITEM(keys, i, item)   # steals the reference just taken
        if _bolt_u32(base + elem) & BOLT_BUCKET_FLAG:
            item = None
            buckets += (i, v, v + <Py_ssize_t>_bolt_u32(base + elem + 12))
        else:
            item = PyBytes_FromStringAndSize(<const char*>base + v, _bolt_u32(base + elem + 12))
        Py_INCREF(item)
        PyList_SET_ITEM(values, i, item)
    return keys, values, buckets


def bolt_branch(const unsigned char[::1] buf, Py_ssize_t start, Py_ssize_t end, Py_ssize_t count):
    """Child page ids of the `count` elements of the bbolt branch page in buf[start:end]."""
    if start < 0 or end > buf.shape[0] or start > end:
        raise Corrupted(f"page bounds {start}..{end} outside a buffer of {buf.shape[0]} bytes")
    return _bolt_branch(&buf[0], start, end, count)


cdef list _bolt_branch(const unsigned char *base, Py_ssize_t start, Py_ssize_t end, Py_ssize_t count):
    cdef Py_ssize_t table = start + BOLT_HEADER
    cdef Py_ssize_t data = table + 16 * count
    cdef Py_ssize_t i, elem, k
    cdef uint32_t pos, ksize
    cdef list children = []
    if data > end:
        raise Corrupted(f"{count} branch elements do not fit in {end - start} bytes")
    for i in range(count):
        elem = table + 16 * i
        pos = _bolt_u32(base + elem)
        ksize = _bolt_u32(base + elem + 4)
        k = elem + <Py_ssize_t>pos
        if k + <Py_ssize_t>ksize > end or k < data:
            raise Corrupted(f"branch element {i} (key of {ksize} bytes at {k - start}) "
                            f"lies outside the data of the page's {end - start} bytes")
        children.append(_bolt_u64(base + elem + 8))
    return children


# -- page records (layout described in _fallback.py) ----------------------------------------------

cdef str _bolt_page_type(unsigned int flags):
    if flags == 0x01:
        return "branch"
    if flags == 0x02:
        return "leaf"
    if flags == 0x04:
        return "meta"
    if flags == 0x10:
        return "freelist"
    return f"unknown ({flags:#06x})"


def bolt_page_type(flags):
    """bbolt's name for a page's type flags."""
    return _bolt_page_type(flags)


cdef BoltBucket _bolt_inline(const unsigned char *base, Py_ssize_t start, Py_ssize_t end, bytes name,
                             BoltBucket bucket):
    cdef uint16_t flags, count
    if end - start < BOLT_HEADER:
        raise Corrupted(f"inline bucket {_bolt_show(name)}: {end - start} bytes cannot hold a page header")
    flags = _bolt_u16(base + start + 8)
    count = _bolt_u16(base + start + 10)
    if flags != BOLT_LEAF_FLAG:
        raise Corrupted(f"inline bucket {_bolt_show(name)}: holds a {_bolt_page_type(flags)} page, not a leaf page")
    try:
        keys, values, buckets = _bolt_leaf(base, start, end, count)
    except Corrupted as exc:
        raise Corrupted(f"inline bucket {_bolt_show(name)}: {exc}") from None
    if buckets:
        raise Corrupted(f"inline bucket {_bolt_show(name)}: holds a sub-bucket (bbolt never inlines those)")
    bucket._keys = keys
    bucket._values = values
    return bucket


cdef dict _bolt_subs(const unsigned char *base, list keys, list buckets):
    cdef dict subs = {}
    cdef Py_ssize_t n, index, start, end
    cdef uint64_t root
    cdef BoltBucket bucket
    for n in range(0, len(buckets), 3):
        index = buckets[n]
        start = buckets[n + 1]
        end = buckets[n + 2]
        name = keys[index]
        if end - start < 16:
            raise Corrupted(f"bucket {_bolt_show(name)}: a value of {end - start} bytes is no bucket header")
        bucket = BoltBucket.__new__(BoltBucket)
        bucket.sequence = _bolt_u64(base + start + 8)
        root = _bolt_u64(base + start)
        if root == 0:
            _bolt_inline(base, start + 16, end, name, bucket)
        else:
            bucket._root = root
        subs[name] = bucket
    return subs


cdef tuple _bolt_page(const unsigned char *base, Py_ssize_t start, Py_ssize_t end, object pgid):
    cdef uint64_t page_id = _bolt_u64(base + start)
    cdef uint16_t flags = _bolt_u16(base + start + 8)
    cdef uint16_t count = _bolt_u16(base + start + 10)
    cdef uint32_t overflow = _bolt_u32(base + start + 12)
    if page_id != <uint64_t>pgid:
        raise Corrupted(pgid, f"its header names page {page_id}")
    if flags != BOLT_BRANCH_FLAG and flags != BOLT_LEAF_FLAG:
        raise Corrupted(pgid, f"is a {_bolt_page_type(flags)} page where a branch or leaf page belongs")
    try:
        if flags == BOLT_BRANCH_FLAG:
            return (BOLT_BRANCH, overflow, pgid, _bolt_branch(base, start, end, count))
        keys, values, buckets = _bolt_leaf(base, start, end, count)
        return (BOLT_LEAF, overflow, pgid, keys, values, _bolt_subs(base, keys, buckets) if buckets else None)
    except Corrupted as exc:
        raise Corrupted(pgid, f"{_bolt_page_type(flags)} page: {exc}") from None


def bolt_page(const unsigned char[::1] buf, Py_ssize_t start, Py_ssize_t end, pgid):
    """The record of page `pgid`, held whole (overflow included) in buf[start:end]."""
    if start < 0 or end > buf.shape[0] or start + BOLT_HEADER > end:
        raise Corrupted(pgid, f"page bounds {start}..{end} outside a buffer of {buf.shape[0]} bytes")
    return _bolt_page(&buf[0], start, end, pgid)


def bolt_referenced(tuple record):
    """The page ids a record references: a branch's children, a leaf's sub-buckets' roots."""
    cdef BoltBucket bucket
    if record[0] == BOLT_BRANCH:
        return list(record[3])
    out = []
    if record[5] is not None:
        for bucket in (<dict>record[5]).values():
            if bucket._root:
                out.append(bucket._root)
    return out


def bolt_pages(const unsigned char[::1] run, first, Py_ssize_t page_size, list ids, Py_ssize_t lo,
               Py_ssize_t hi, dict records, list following):
    """Decode the single pages ids[lo:hi], read as one run starting at page `first`, into `records`.

    Appends (child pgid, parent pgid) for every page they reference to `following`;
    returns the pgids of pages with overflow, which need a longer read.
    """
    cdef list overflowing = []
    cdef Py_ssize_t n, start
    cdef uint64_t first_id = first
    cdef uint16_t flags
    cdef const unsigned char *base
    cdef tuple record
    cdef BoltBucket bucket
    if run.shape[0] == 0:
        raise Corrupted(first, "an empty read")
    base = &run[0]
    for n in range(lo, hi):
        pgid = ids[n]
        start = (<Py_ssize_t>(<uint64_t>pgid - first_id)) * page_size
        if start < 0 or start + page_size > run.shape[0]:
            raise Corrupted(pgid, f"page bounds {start}..{start + page_size} outside a buffer of "
                                  f"{run.shape[0]} bytes")
        flags = _bolt_u16(base + start + 8)
        if (_bolt_u32(base + start + 12) and _bolt_u64(base + start) == <uint64_t>pgid
                and (flags == BOLT_BRANCH_FLAG or flags == BOLT_LEAF_FLAG)):
            overflowing.append(pgid)
            continue
        record = _bolt_page(base, start, start + page_size, pgid)
        records[pgid] = record
        if record[0] == BOLT_BRANCH:
            for child in <list>record[3]:
                following.append((child, pgid))
        elif record[5] is not None:
            for bucket in (<dict>record[5]).values():
                if bucket._root:
                    following.append((bucket._root, pgid))
    return overflowing


def bolt_assemble(dict records, root, sequence):
    """The bucket rooted at page `root` and every bucket under it, from the records of a walk."""
    cdef BoltBucket top = BoltBucket.__new__(BoltBucket), bucket, child
    cdef list todo, leaves, keys, values
    cdef dict subs
    cdef tuple leaf
    top.sequence = sequence
    top._root = root
    todo = [top]
    while todo:
        bucket = todo.pop()
        leaves = _bolt_leaves(records, bucket._root)
        if len(leaves) == 1:
            leaf = leaves[0]
            keys = leaf[3]
            values = leaf[4]
            subs = leaf[5]
        else:
            keys = []
            values = []
            subs = None
            for leaf in leaves:
                if keys and leaf[3] and not keys[len(keys) - 1] < leaf[3][0]:
                    raise Corrupted(leaf[2], f"leaf key {_bolt_show(leaf[3][0])} does not sort after the previous "
                                             f"page's last key {_bolt_show(keys[len(keys) - 1])}")
                keys += leaf[3]
                values += leaf[4]
                if leaf[5] is not None:
                    if subs is None:
                        subs = {}
                    subs.update(leaf[5])
        bucket._keys = keys
        bucket._values = values
        if subs is None:
            bucket._subs = _BOLT_NO_SUBS
        else:
            bucket._subs = subs
            for child in subs.values():
                if child._root:
                    todo.append(child)
    return top


cdef list _bolt_leaves(dict records, pgid):
    cdef tuple record = records[pgid]
    if record[0] != BOLT_BRANCH:
        return [record]
    cdef list out = [], todo = [pgid]
    while todo:
        record = records[todo.pop()]
        if record[0] == BOLT_BRANCH:
            todo.extend(reversed(record[3]))
        else:
            out.append(record)
    return out


# -- buckets ----------------------------------------------------------------------------------------

cdef dict _BOLT_NO_SUBS = {}   # shared by every bucket without sub-buckets; never written
cdef list _BOLT_NO_KEYS = []   # likewise for a bucket not filled yet


cdef inline bytes _bolt_key(key):
    if type(key) is bytes:
        return <bytes>key
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key)
    raise InvalidArgument(f"a bbolt key is bytes, not {type(key).__name__}: {key!r}")


@cython.no_gc    # holds only lists of bytes and a dict of buckets: no cycle can pass through it
@cython.final
cdef class BoltBucket:
    """One bucket of the transaction a `bolt.File` read; immutable, served from memory.

    Keys are in bbolt's order (bytewise). A key naming a sub-bucket has no
    value: `get` and `items` give None for it, `bucket` gives the sub-bucket.
    """

    cdef readonly object sequence
    cdef readonly object _root    # the root page of a bucket held in pages, 0 for an inline one
    cdef list _keys
    cdef list _values
    cdef dict _subs

    def __cinit__(self):
        self.sequence = 0
        self._root = 0
        self._keys = _BOLT_NO_KEYS
        self._values = _BOLT_NO_KEYS
        self._subs = _BOLT_NO_SUBS

    def __init__(self, sequence=0):
        self.sequence = sequence

    cdef Py_ssize_t _lower(self, bytes key):
        """Index of the first key not below `key` (bisect_left)."""
        cdef Py_ssize_t lo = 0, hi = len(self._keys), mid
        cdef const unsigned char *k = <const unsigned char *>PyBytes_AS_STRING(key)
        cdef Py_ssize_t klen = PyBytes_GET_SIZE(key)
        cdef bytes probe
        while lo < hi:
            mid = (lo + hi) >> 1
            probe = <bytes>self._keys[mid]
            if _bolt_keycmp(<const unsigned char *>PyBytes_AS_STRING(probe), PyBytes_GET_SIZE(probe), k, klen) < 0:
                lo = mid + 1
            else:
                hi = mid
        return lo

    cdef bint _at(self, Py_ssize_t i, bytes key):
        if i >= len(self._keys):
            return False
        cdef bytes probe = <bytes>self._keys[i]
        return PyBytes_GET_SIZE(probe) == PyBytes_GET_SIZE(key) and _bolt_keycmp(
            <const unsigned char *>PyBytes_AS_STRING(probe), PyBytes_GET_SIZE(probe),
            <const unsigned char *>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key)) == 0

    def get(self, key):
        """The value of `key`; None for a missing key or a sub-bucket (as bbolt's Get)."""
        cdef bytes k = _bolt_key(key)
        cdef Py_ssize_t i = self._lower(k)
        if self._at(i, k):
            return self._values[i]
        return None

    def bucket(self, key):
        """The sub-bucket named `key`, or None."""
        return self._subs.get(_bolt_key(key))

    cdef tuple _range(self, prefix):
        cdef bytes p = _bolt_key(prefix)
        cdef Py_ssize_t lo = self._lower(p), i, n = len(self._keys), plen = PyBytes_GET_SIZE(p)
        cdef bytes probe
        i = lo
        while i < n:
            probe = <bytes>self._keys[i]
            if PyBytes_GET_SIZE(probe) < plen or memcmp(PyBytes_AS_STRING(probe), PyBytes_AS_STRING(p), plen) != 0:
                break
            i += 1
        return lo, i

    def items(self, prefix=None):
        """(key, value) pairs in key order, value None for a sub-bucket (bbolt's ForEach)."""
        if prefix is None:
            return zip(self._keys, self._values)
        lo, hi = self._range(prefix)
        return zip(self._keys[lo:hi], self._values[lo:hi])

    def keys(self, prefix=None):
        """Keys in order (sub-bucket names included), all or those starting with `prefix`."""
        if prefix is None:
            return iter(self._keys)
        lo, hi = self._range(prefix)
        return iter(self._keys[lo:hi])

    def buckets(self):
        """(name, sub-bucket) pairs in key order."""
        return iter(self._subs.items())

    def __len__(self):
        return len(self._keys)

    def __contains__(self, key):
        cdef bytes k = _bolt_key(key)
        return self._at(self._lower(k), k)

    def __iter__(self):
        return iter(self._keys)

    def __repr__(self):
        return f"<bolt.Bucket: {len(self._keys)} keys, {len(self._subs)} sub-buckets>"
