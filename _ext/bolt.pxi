# bbolt page decoding for cargohold.bolt: twins of the bolt_* functions and BoltBucket of
# _fallback.py (same results, same error messages). A page starts with a 16-byte header; its
# element table follows, 16 bytes an element, each element's pos counting from the element to
# its key (a leaf's value follows its key).
#
# Unlike the fallback, a compiled bucket keeps no Python object per key: one bytes object (a
# "blob") holds an index of 24-byte entries followed by the keys and values themselves. An
# entry is the offset u64 of its key in the blob, the key's length u32, the value's length u32
# (the value follows the key) and, for a sub-bucket, its position u32 in the bucket's list of
# sub-buckets (BOLT_NONE otherwise). Keys and values become bytes objects only when asked for.

cimport cython
from libc.stdint cimport uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cargohold.errors import Corrupted, InvalidArgument

DEF BOLT_HEADER = 16
DEF BOLT_BUCKET_FLAG = 0x01
DEF BOLT_BRANCH_FLAG = 0x01
DEF BOLT_LEAF_FLAG = 0x02
DEF BOLT_BRANCH = 0     # record kinds, as in _fallback.py
DEF BOLT_LEAF = 1
DEF BOLT_ENTRY = 24     # an index entry
DEF BOLT_NONE = 0xFFFFFFFF


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




cdef inline bytes _bolt_new_bytes(Py_ssize_t size):
    return PyBytes_FromStringAndSize(NULL, size)


cdef inline unsigned char *_bolt_ptr(bytes b) noexcept:
    return <unsigned char *>PyBytes_AS_STRING(b)


# -- index entries ------------------------------------------------------------------------------------

cdef inline void _bolt_put_entry(unsigned char *entry, uint64_t offset, uint32_t klen, uint32_t vlen,
                                 uint32_t child) noexcept nogil:
    memcpy(entry, &offset, 8)
    memcpy(entry + 8, &klen, 4)
    memcpy(entry + 12, &vlen, 4)
    memcpy(entry + 16, &child, 4)
    memset(entry + 20, 0, 4)


cdef inline uint64_t _bolt_entry_off(const unsigned char *entry) noexcept nogil:
    return _bolt_u64(entry)


cdef inline uint32_t _bolt_entry_klen(const unsigned char *entry) noexcept nogil:
    return _bolt_u32(entry + 8)


cdef inline uint32_t _bolt_entry_vlen(const unsigned char *entry) noexcept nogil:
    return _bolt_u32(entry + 12)


cdef inline uint32_t _bolt_entry_child(const unsigned char *entry) noexcept nogil:
    return _bolt_u32(entry + 16)


cdef inline bytes _bolt_key_at(const unsigned char *blob, const unsigned char *entry):
    return PyBytes_FromStringAndSize(<const char *>blob + _bolt_entry_off(entry), _bolt_entry_klen(entry))


cdef inline object _bolt_value_at(const unsigned char *blob, const unsigned char *entry):
    if _bolt_entry_child(entry) != BOLT_NONE:
        return None
    return PyBytes_FromStringAndSize(<const char *>blob + _bolt_entry_off(entry) + _bolt_entry_klen(entry),
                                     _bolt_entry_vlen(entry))


# -- leaves -----------------------------------------------------------------------------------------

cdef Py_ssize_t _bolt_check_leaf(const unsigned char *base, Py_ssize_t start, Py_ssize_t end,
                                 Py_ssize_t count) except -1:
    """Check every element's bounds and the key order; return the bytes a blob needs for them."""
    cdef Py_ssize_t table = start + BOLT_HEADER
    cdef Py_ssize_t data = table + 16 * count
    cdef Py_ssize_t i, elem, k, e, prev_k = 0, prev_len = 0, unsorted = -1, size = 0
    cdef uint32_t pos, ksize, vsize
    if data > end:
        raise Corrupted(f"{count} leaf elements do not fit in {end - start} bytes")
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
        size += ksize
        if not _bolt_u32(base + elem) & BOLT_BUCKET_FLAG:
            size += vsize
        prev_k = k
        prev_len = ksize
    if unsorted >= 0:   # reported after the bounds of every element, as the fallback does
        elem = table + 16 * unsorted
        k = elem + <Py_ssize_t>_bolt_u32(base + elem + 4)
        key = PyBytes_FromStringAndSize(<const char*>base + k, _bolt_u32(base + elem + 8))
        raise Corrupted(f"leaf element {unsorted}: key {_bolt_show(key)} does not sort after the previous key")
    return size


cdef bytes _bolt_pack(const unsigned char *base, Py_ssize_t start, Py_ssize_t count, Py_ssize_t size,
                      list buckets):
    """The blob of a checked leaf; each sub-bucket's (index, value start, value end) goes to `buckets`."""
    cdef bytes blob = _bolt_new_bytes(count * BOLT_ENTRY + size)
    cdef unsigned char *out = _bolt_ptr(blob)
    cdef Py_ssize_t i, elem, k, table = start + BOLT_HEADER, at = count * BOLT_ENTRY
    cdef uint32_t ksize, vsize, child = 0
    for i in range(count):
        elem = table + 16 * i
        k = elem + <Py_ssize_t>_bolt_u32(base + elem + 4)
        ksize = _bolt_u32(base + elem + 8)
        vsize = _bolt_u32(base + elem + 12)
        memcpy(out + at, base + k, ksize)
        if _bolt_u32(base + elem) & BOLT_BUCKET_FLAG:
            buckets += (i, k + ksize, k + ksize + vsize)
            _bolt_put_entry(out + i * BOLT_ENTRY, at, ksize, 0, child)
            child += 1
            at += ksize
        else:
            memcpy(out + at + ksize, base + k + ksize, vsize)
            _bolt_put_entry(out + i * BOLT_ENTRY, at, ksize, vsize, BOLT_NONE)
            at += ksize + vsize
    return blob


def bolt_leaf(const unsigned char[::1] buf, Py_ssize_t start, Py_ssize_t end, Py_ssize_t count):
    """Decode the `count` elements of the bbolt leaf page held in buf[start:end].

    Returns (keys, values, buckets): values[i] is None for a sub-bucket, whose
    element index and value offsets in `buf` are appended to `buckets` as
    (index, value_start, value_end) triples, flattened. Keys must increase.
    """
    cdef Py_ssize_t i, size
    cdef list keys = [], values = [], buckets = []
    cdef bytes blob
    if start < 0 or end > buf.shape[0] or start > end:
        raise Corrupted(f"page bounds {start}..{end} outside a buffer of {buf.shape[0]} bytes")
    size = _bolt_check_leaf(&buf[0], start, end, count)
    blob = _bolt_pack(&buf[0], start, count, size, buckets)
    for i in range(count):
        keys.append(_bolt_key_at(_bolt_ptr(blob), _bolt_ptr(blob) + i * BOLT_ENTRY))
        values.append(_bolt_value_at(_bolt_ptr(blob), _bolt_ptr(blob) + i * BOLT_ENTRY))
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



# -- page records (layout described in _fallback.py; a compiled leaf record is
# (BOLT_LEAF, overflow, pgid, blob, count, sub-buckets in key order or None)) --------------------

cdef BoltBucket _bolt_inline(const unsigned char *base, Py_ssize_t start, Py_ssize_t end, bytes name,
                             BoltBucket bucket):
    """Fill `bucket` from the inline page held in base[start:end]."""
    cdef uint16_t flags, count
    cdef Py_ssize_t size
    cdef list buckets = []
    if end - start < BOLT_HEADER:
        raise Corrupted(f"inline bucket {_bolt_show(name)}: {end - start} bytes cannot hold a page header")
    flags = _bolt_u16(base + start + 8)
    count = _bolt_u16(base + start + 10)
    if flags != BOLT_LEAF_FLAG:
        raise Corrupted(f"inline bucket {_bolt_show(name)}: holds a {_bolt_page_type(flags)} page, not a leaf page")
    try:
        size = _bolt_check_leaf(base, start, end, count)
    except Corrupted as exc:
        raise Corrupted(f"inline bucket {_bolt_show(name)}: {exc}") from None
    blob = _bolt_pack(base, start, count, size, buckets)
    if buckets:
        raise Corrupted(f"inline bucket {_bolt_show(name)}: holds a sub-bucket (bbolt never inlines those)")
    bucket._fill(blob, count, None)
    return bucket


cdef list _bolt_subs(const unsigned char *base, bytes blob, list buckets):
    """The sub-buckets of a leaf, in key order, from their values in the page (`base`)."""
    cdef list subs = []
    cdef Py_ssize_t n, start, end
    cdef uint64_t root
    cdef BoltBucket bucket
    for n in range(0, len(buckets), 3):
        start = buckets[n + 1]
        end = buckets[n + 2]
        if end - start < 16:
            name = _bolt_key_at(_bolt_ptr(blob), _bolt_ptr(blob) + <Py_ssize_t>buckets[n] * BOLT_ENTRY)
            raise Corrupted(f"bucket {_bolt_show(name)}: a value of {end - start} bytes is no bucket header")
        bucket = BoltBucket.__new__(BoltBucket)
        bucket.sequence = _bolt_u64(base + start + 8)
        root = _bolt_u64(base + start)
        if root == 0:
            name = _bolt_key_at(_bolt_ptr(blob), _bolt_ptr(blob) + <Py_ssize_t>buckets[n] * BOLT_ENTRY)
            _bolt_inline(base, start + 16, end, name, bucket)
        else:
            bucket._root = root
        subs.append(bucket)
    return subs


cdef tuple _bolt_page(const unsigned char *base, Py_ssize_t start, Py_ssize_t end, object pgid):
    cdef uint64_t page_id = _bolt_u64(base + start)
    cdef uint16_t flags = _bolt_u16(base + start + 8)
    cdef uint16_t count = _bolt_u16(base + start + 10)
    cdef uint32_t overflow = _bolt_u32(base + start + 12)
    cdef Py_ssize_t size
    cdef list buckets = []
    cdef bytes blob
    if page_id != <uint64_t>pgid:
        raise Corrupted(pgid, f"its header names page {page_id}")
    if flags != BOLT_BRANCH_FLAG and flags != BOLT_LEAF_FLAG:
        raise Corrupted(pgid, f"is a {_bolt_page_type(flags)} page where a branch or leaf page belongs")
    try:
        if flags == BOLT_BRANCH_FLAG:
            return (BOLT_BRANCH, overflow, pgid, _bolt_branch(base, start, end, count))
        size = _bolt_check_leaf(base, start, end, count)
        blob = _bolt_pack(base, start, count, size, buckets)
        return (BOLT_LEAF, overflow, pgid, blob, count, _bolt_subs(base, blob, buckets) if buckets else None)
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
        for bucket in <list>record[5]:
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
            for bucket in <list>record[5]:
                if bucket._root:
                    following.append((bucket._root, pgid))
    return overflowing


def bolt_assemble(dict records, root, sequence):
    """The bucket rooted at page `root` and every bucket under it, from the records of a walk."""
    cdef BoltBucket top = BoltBucket.__new__(BoltBucket), bucket, child
    cdef list todo, leaves, subs
    cdef tuple leaf
    top.sequence = sequence
    top._root = root
    todo = [top]
    while todo:
        bucket = todo.pop()
        leaves = _bolt_leaves(records, bucket._root)
        if len(leaves) == 1:
            leaf = leaves[0]
            subs = leaf[5]
            bucket._fill(leaf[3], leaf[4], subs)
        else:
            subs = _bolt_join(bucket, leaves, records)
        if subs is not None:
            for child in subs:
                if child._root:
                    todo.append(child)
    return top


cdef list _bolt_join(BoltBucket bucket, list leaves, dict records):
    """Fill `bucket` from several leaves: their blobs joined; keys must keep increasing.

    The leaves' records leave `records` once copied (a retry just reads them again), so
    a big bucket's bytes are not held twice.
    """
    cdef Py_ssize_t size = 0, entries = 0, at, n, count, head, child_base = 0
    cdef tuple leaf
    cdef list subs = None
    cdef bytes blob, leaf_blob
    cdef unsigned char *out
    cdef unsigned char *x
    cdef const unsigned char *src
    cdef const unsigned char *last = NULL
    cdef const unsigned char *first
    cdef uint32_t last_len = 0, child
    for leaf in leaves:
        count = leaf[4]
        entries += count
        size += PyBytes_GET_SIZE(<bytes>leaf[3]) - count * BOLT_ENTRY
    blob = _bolt_new_bytes(entries * BOLT_ENTRY + size)
    out = _bolt_ptr(blob)
    x = out
    at = entries * BOLT_ENTRY
    for leaf in leaves:
        leaf_blob = <bytes>leaf[3]
        count = leaf[4]
        head = count * BOLT_ENTRY
        src = _bolt_ptr(leaf_blob)
        if count:
            first = src + _bolt_entry_off(src)
            if last != NULL and _bolt_keycmp(last, last_len, first, _bolt_entry_klen(src)) >= 0:
                raise Corrupted(leaf[2], f"leaf key {_bolt_show(_bolt_key_at(src, src))} does not "
                                         f"sort after the previous page's last key "
                                         f"{_bolt_show(PyBytes_FromStringAndSize(<const char *>last, last_len))}")
        memcpy(out + at, src + head, PyBytes_GET_SIZE(leaf_blob) - head)
        for n in range(count):
            child = _bolt_entry_child(src)
            if child != BOLT_NONE:
                child += child_base
            _bolt_put_entry(x, _bolt_entry_off(src) - head + at, _bolt_entry_klen(src), _bolt_entry_vlen(src),
                            child)
            last = out + _bolt_entry_off(x)
            last_len = _bolt_entry_klen(src)
            x += BOLT_ENTRY
            src += BOLT_ENTRY
        at += PyBytes_GET_SIZE(leaf_blob) - head
        records.pop(leaf[2], None)
        if leaf[5] is not None:
            if subs is None:
                subs = []
            subs += <list>leaf[5]
            child_base += len(<list>leaf[5])
    bucket._fill(blob, entries, subs)
    return subs


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

cdef bytes _BOLT_EMPTY = b""


cdef inline bytes _bolt_key(key):
    if type(key) is bytes:
        return <bytes>key
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key)
    raise InvalidArgument(f"a bbolt key is bytes, not {type(key).__name__}: {key!r}")


@cython.no_gc    # holds bytes and a list of buckets: no cycle can pass through it
@cython.final
cdef class BoltBucket:
    """One bucket of the transaction a `bolt.File` read; immutable, served from memory.

    Keys are in bbolt's order (bytewise). A key naming a sub-bucket has no
    value: `get` and `items` give None for it, `bucket` gives the sub-bucket.
    """

    cdef readonly object sequence
    cdef readonly object _root    # the root page of a bucket held in pages, 0 for an inline one
    cdef bytes _blob
    cdef Py_ssize_t _count
    cdef list _subs               # the sub-buckets in key order, or None

    def __cinit__(self):
        self.sequence = 0
        self._root = 0
        self._blob = _BOLT_EMPTY
        self._count = 0
        self._subs = None

    def __init__(self, sequence=0):
        self.sequence = sequence

    cdef void _fill(self, bytes blob, Py_ssize_t count, list subs) noexcept:
        self._blob = blob
        self._count = count
        self._subs = subs

    cdef inline const unsigned char *_entry(self, Py_ssize_t i) noexcept:
        return _bolt_ptr(self._blob) + i * BOLT_ENTRY

    cdef Py_ssize_t _lower(self, bytes key) noexcept:
        """Index of the first key not below `key` (bisect_left)."""
        cdef Py_ssize_t lo = 0, hi = self._count, mid
        cdef const unsigned char *k = _bolt_ptr(key)
        cdef Py_ssize_t klen = PyBytes_GET_SIZE(key)
        cdef const unsigned char *blob = _bolt_ptr(self._blob)
        cdef const unsigned char *entry
        while lo < hi:
            mid = (lo + hi) >> 1
            entry = blob + mid * BOLT_ENTRY
            if _bolt_keycmp(blob + _bolt_entry_off(entry), _bolt_entry_klen(entry), k, klen) < 0:
                lo = mid + 1
            else:
                hi = mid
        return lo

    cdef const unsigned char *_find(self, bytes key) noexcept:
        """The entry of `key`, or NULL."""
        cdef Py_ssize_t i = self._lower(key)
        cdef const unsigned char *entry
        if i >= self._count:
            return NULL
        entry = self._entry(i)
        if _bolt_keycmp(_bolt_ptr(self._blob) + _bolt_entry_off(entry), _bolt_entry_klen(entry),
                        _bolt_ptr(key), PyBytes_GET_SIZE(key)) != 0:
            return NULL
        return entry

    def get(self, key):
        """The value of `key`; None for a missing key or a sub-bucket (as bbolt's Get)."""
        cdef const unsigned char *entry = self._find(_bolt_key(key))
        if entry == NULL:
            return None
        return _bolt_value_at(_bolt_ptr(self._blob), entry)

    def bucket(self, key):
        """The sub-bucket named `key`, or None."""
        cdef const unsigned char *entry = self._find(_bolt_key(key))
        if entry == NULL or _bolt_entry_child(entry) == BOLT_NONE:
            return None
        return self._subs[_bolt_entry_child(entry)]

    cdef Py_ssize_t _prefix_end(self, Py_ssize_t i, bytes prefix) noexcept:
        cdef Py_ssize_t plen = PyBytes_GET_SIZE(prefix)
        cdef const unsigned char *blob = _bolt_ptr(self._blob)
        cdef const unsigned char *entry
        while i < self._count:
            entry = self._entry(i)
            if _bolt_entry_klen(entry) < plen or memcmp(blob + _bolt_entry_off(entry), _bolt_ptr(prefix), plen) != 0:
                break
            i += 1
        return i

    def items(self, prefix=None):
        """(key, value) pairs in key order, value None for a sub-bucket (bbolt's ForEach)."""
        return self._iter(prefix, 2)

    def keys(self, prefix=None):
        """Keys in order (sub-bucket names included), all or those starting with `prefix`."""
        return self._iter(prefix, 0)

    cdef _BoltIter _iter(self, prefix, int what):
        cdef _BoltIter it = _BoltIter.__new__(_BoltIter)
        cdef bytes p
        it.bucket = self
        it.what = what
        if prefix is None:
            it.i = 0
            it.stop = self._count
        else:
            p = _bolt_key(prefix)
            it.i = self._lower(p)
            it.stop = self._prefix_end(it.i, p)
        return it

    def buckets(self):
        """(name, sub-bucket) pairs in key order."""
        cdef list out = []
        cdef Py_ssize_t i
        cdef const unsigned char *blob = _bolt_ptr(self._blob)
        cdef const unsigned char *entry
        if self._subs is None:
            return iter(out)
        for i in range(self._count):
            entry = blob + i * BOLT_ENTRY
            if _bolt_entry_child(entry) != BOLT_NONE:
                out.append((_bolt_key_at(blob, entry), self._subs[_bolt_entry_child(entry)]))
        return iter(out)

    def __len__(self):
        return self._count

    def __contains__(self, key):
        return self._find(_bolt_key(key)) != NULL

    def __iter__(self):
        return self._iter(None, 0)

    def __repr__(self):
        return f"<bolt.Bucket: {self._count} keys, {0 if self._subs is None else len(self._subs)} sub-buckets>"


@cython.final
cdef class _BoltIter:
    """Keys, or (key, value) pairs, of a compiled bucket, made as they are asked for."""

    cdef BoltBucket bucket
    cdef Py_ssize_t i
    cdef Py_ssize_t stop
    cdef int what

    def __iter__(self):
        return self

    def __next__(self):
        cdef const unsigned char *entry
        cdef const unsigned char *blob
        if self.i >= self.stop:
            raise StopIteration
        entry = self.bucket._entry(self.i)
        blob = _bolt_ptr(self.bucket._blob)
        self.i += 1
        if self.what == 0:
            return _bolt_key_at(blob, entry)
        return (_bolt_key_at(blob, entry), _bolt_value_at(blob, entry))

    def __length_hint__(self):
        return self.stop - self.i
