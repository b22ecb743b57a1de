# bbolt pages and the transaction cargohold.bolt reads (compiled): twins of BoltTx, BoltBucket,
# bolt_leaf and bolt_branch of _fallback.py (same results, same error messages). A page starts
# with a 16-byte header; its element table follows, 16 bytes an element, each element's pos
# counting from the element to its key (a leaf's value follows its key).
#
# A BoltTx decodes every page a walk reaches into an arena (malloc'd chunks it owns), found by
# page id through a page table of 512-entry blocks made as pages are read (so memory follows
# the pages read, not the file size; an id past the end of the file, which only a damaged
# reference has, goes to a small hash table instead). No Python object is made per page or
# per bucket: a BoltBucket is made when asked for, and points into the arena. Layouts
# (little-endian):
#
#   record   u32 kind, u32 count, u32 overflow, u32 sub-buckets, u64 size (of the record),
#            u64 pgid, u64 joined index, u64 joined count       (BOLT_REC bytes), then
#            a branch: count u64 child page ids;
#            a leaf:   count index entries, then the keys and values they point at.
#   entry    i64 offset of its key from the entry itself, u32 key length, u32 value length,
#            u32 the sub-bucket's ordinal in its bucket (BOLT_NONE for a value), u32 0.
#            A sub-bucket's value is its descriptor: u64 root page, u64 sequence, then the
#            address of its root's record (set by BoltTx.bucket, which visits every bucket)
#            or, for an inline bucket (root 0), u32 count, u32 0, its entries, keys and values.
#
# Offsets are relative to the entry, so a record can be copied whole (a retry reuses the
# records of the previous read). A bucket spanning several leaves gets a joined index (its
# leaves' entries, in order, pointing at their keys) in the arena, noted in its root's record.

cimport cython
from libc.stdint cimport int64_t, intptr_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcmp, memcpy, memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cargohold.errors import Corrupted, InvalidArgument

DEF BOLT_HEADER = 16
DEF BOLT_BUCKET_FLAG = 0x01
DEF BOLT_BRANCH_FLAG = 0x01
DEF BOLT_LEAF_FLAG = 0x02
DEF BOLT_BRANCH = 0     # record kinds, as in _fallback.py
DEF BOLT_LEAF = 1
DEF BOLT_ENTRY = 24
DEF BOLT_NONE = 0xFFFFFFFF
DEF BOLT_REC = 48
DEF BOLT_BUCKET = 16    # a bucket's header in a page: root page id, sequence
DEF BOLT_SUB = 24       # descriptor of a bucket held in pages
DEF BOLT_INLINE = 24    # descriptor head of an inline bucket
DEF BOLT_FIRST_CHUNK = 65536
DEF BOLT_MAX_CHUNK = 4194304


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


cdef inline void _bolt_set32(unsigned char *p, uint32_t v) noexcept nogil:
    memcpy(p, &v, 4)


cdef inline void _bolt_set64(unsigned char *p, uint64_t v) noexcept nogil:
    memcpy(p, &v, 8)


cdef str _bolt_show(bytes key):
    """A key for an error message: its repr, cut after 64 bytes."""
    if len(key) <= 64:
        return repr(key)
    return f"{key[:64]!r}... ({len(key)} bytes)"


cdef inline int _bolt_keycmp(const unsigned char *a, Py_ssize_t alen,
                             const unsigned char *b, Py_ssize_t blen) noexcept nogil:
    cdef Py_ssize_t n = alen if alen < blen else blen, i
    cdef int c
    if n <= 16:     # most keys differ early: no call
        for i in range(n):
            if a[i] != b[i]:
                return <int>a[i] - <int>b[i]
    else:
        c = memcmp(a, b, n)
        if c != 0:
            return c
    return (alen > blen) - (alen < blen)


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


# -- index entries ------------------------------------------------------------------------------------

cdef inline void _bolt_put_entry(unsigned char *entry, const unsigned char *key, uint32_t klen, uint32_t vlen,
                                 uint32_t child) noexcept nogil:
    cdef int64_t rel = <int64_t>(<intptr_t>key - <intptr_t>entry)
    memcpy(entry, &rel, 8)
    memcpy(entry + 8, &klen, 4)
    memcpy(entry + 12, &vlen, 4)
    memcpy(entry + 16, &child, 4)
    memset(entry + 20, 0, 4)


cdef inline const unsigned char *_bolt_entry_key(const unsigned char *entry) noexcept nogil:
    cdef int64_t rel
    memcpy(&rel, entry, 8)
    return <const unsigned char *>(<intptr_t>entry + <intptr_t>rel)


cdef inline uint32_t _bolt_entry_klen(const unsigned char *entry) noexcept nogil:
    return _bolt_u32(entry + 8)


cdef inline uint32_t _bolt_entry_vlen(const unsigned char *entry) noexcept nogil:
    return _bolt_u32(entry + 12)


cdef inline uint32_t _bolt_entry_child(const unsigned char *entry) noexcept nogil:
    return _bolt_u32(entry + 16)


cdef inline const unsigned char *_bolt_entry_value(const unsigned char *entry) noexcept nogil:
    return _bolt_entry_key(entry) + _bolt_entry_klen(entry)


cdef inline bytes _bolt_key_at(const unsigned char *entry):
    return PyBytes_FromStringAndSize(<const char *>_bolt_entry_key(entry), _bolt_entry_klen(entry))


cdef inline object _bolt_value_at(const unsigned char *entry):
    if _bolt_entry_child(entry) != BOLT_NONE:
        return None
    return PyBytes_FromStringAndSize(<const char *>_bolt_entry_value(entry), _bolt_entry_vlen(entry))


# -- leaves and branches: checks and packing ---------------------------------------------------------

cdef Py_ssize_t _bolt_check_leaf(const unsigned char *base, Py_ssize_t start, Py_ssize_t end,
                                 Py_ssize_t count, Py_ssize_t *subs) except -1:
    """Check every element's bounds and the key order; return the bytes of its keys and plain values
    (sub-buckets' values not counted) and set `subs` to the number of sub-buckets."""
    cdef Py_ssize_t table = start + BOLT_HEADER
    cdef Py_ssize_t data = table + 16 * count
    cdef Py_ssize_t i, elem, k, e, prev_k = 0, prev_len = 0, unsorted = -1, size = 0, n = 0
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
        if _bolt_u32(base + elem) & BOLT_BUCKET_FLAG:
            n += 1
        else:
            size += vsize
        prev_k = k
        prev_len = ksize
    if unsorted >= 0:   # reported after the bounds of every element, as the fallback does
        elem = table + 16 * unsorted
        k = elem + <Py_ssize_t>_bolt_u32(base + elem + 4)
        key = PyBytes_FromStringAndSize(<const char*>base + k, _bolt_u32(base + elem + 8))
        raise Corrupted(f"leaf element {unsorted}: key {_bolt_show(key)} does not sort after the previous key")
    subs[0] = n
    return size


cdef inline bytes _bolt_elem_key(const unsigned char *base, Py_ssize_t elem):
    return PyBytes_FromStringAndSize(<const char *>base + elem + _bolt_u32(base + elem + 4), _bolt_u32(base + elem + 8))


cdef Py_ssize_t _bolt_check_subs(const unsigned char *base, Py_ssize_t start, Py_ssize_t count) except -1:
    """Check the sub-buckets of a checked leaf; return the bytes of their descriptors."""
    cdef Py_ssize_t table = start + BOLT_HEADER, i, elem, v, e, size = 0, inner, isize
    cdef uint16_t flags, icount
    for i in range(count):
        elem = table + 16 * i
        if not _bolt_u32(base + elem) & BOLT_BUCKET_FLAG:
            continue
        v = elem + <Py_ssize_t>_bolt_u32(base + elem + 4) + <Py_ssize_t>_bolt_u32(base + elem + 8)
        e = v + <Py_ssize_t>_bolt_u32(base + elem + 12)
        if e - v < BOLT_BUCKET:
            raise Corrupted(f"bucket {_bolt_show(_bolt_elem_key(base, elem))}: a value of {e - v} bytes "
                            f"is no bucket header")
        if _bolt_u64(base + v) != 0:
            size += BOLT_SUB
            continue
        v += BOLT_BUCKET
        if e - v < BOLT_HEADER:
            raise Corrupted(f"inline bucket {_bolt_show(_bolt_elem_key(base, elem))}: {e - v} bytes cannot "
                            f"hold a page header")
        flags = _bolt_u16(base + v + 8)
        icount = _bolt_u16(base + v + 10)
        if flags != BOLT_LEAF_FLAG:
            raise Corrupted(f"inline bucket {_bolt_show(_bolt_elem_key(base, elem))}: holds a "
                            f"{_bolt_page_type(flags)} page, not a leaf page")
        try:
            isize = _bolt_check_leaf(base, v, e, icount, &inner)
        except Corrupted as exc:
            raise Corrupted(f"inline bucket {_bolt_show(_bolt_elem_key(base, elem))}: {exc}") from None
        if inner:
            raise Corrupted(f"inline bucket {_bolt_show(_bolt_elem_key(base, elem))}: holds a sub-bucket "
                            f"(bbolt never inlines those)")
        size += BOLT_INLINE + icount * BOLT_ENTRY + isize
    return size


cdef Py_ssize_t _bolt_pack(const unsigned char *base, Py_ssize_t start, Py_ssize_t count,
                           unsigned char *out) noexcept:
    """Write the entries of a checked leaf at `out`, its keys and values after them; the bytes written."""
    cdef Py_ssize_t i, elem, k, table = start + BOLT_HEADER, at = count * BOLT_ENTRY
    cdef uint32_t ksize, vsize, child = 0, icount
    cdef const unsigned char *value
    cdef unsigned char *desc
    for i in range(count):
        elem = table + 16 * i
        k = elem + <Py_ssize_t>_bolt_u32(base + elem + 4)
        ksize = _bolt_u32(base + elem + 8)
        vsize = _bolt_u32(base + elem + 12)
        memcpy(out + at, base + k, ksize)
        if not _bolt_u32(base + elem) & BOLT_BUCKET_FLAG:
            memcpy(out + at + ksize, base + k + ksize, vsize)
            _bolt_put_entry(out + i * BOLT_ENTRY, out + at, ksize, vsize, BOLT_NONE)
            at += ksize + vsize
            continue
        value = base + k + ksize
        desc = out + at + ksize
        memcpy(desc, value, BOLT_BUCKET)
        if _bolt_u64(value) != 0:
            _bolt_set64(desc + 16, 0)   # its root's record, noted by BoltTx.bucket
            vsize = BOLT_SUB
        else:
            icount = _bolt_u16(value + BOLT_BUCKET + 10)
            _bolt_set32(desc + 16, icount)
            _bolt_set32(desc + 20, 0)
            vsize = BOLT_INLINE + <uint32_t>_bolt_pack(value, BOLT_BUCKET, icount, desc + BOLT_INLINE)
        _bolt_put_entry(out + i * BOLT_ENTRY, out + at, ksize, vsize, child)
        child += 1
        at += ksize + vsize
    return at


cdef int _bolt_check_branch(const unsigned char *base, Py_ssize_t start, Py_ssize_t end,
                            Py_ssize_t count) except -1:
    cdef Py_ssize_t table = start + BOLT_HEADER
    cdef Py_ssize_t data = table + 16 * count
    cdef Py_ssize_t i, elem, k
    cdef uint32_t ksize
    if data > end:
        raise Corrupted(f"{count} branch elements do not fit in {end - start} bytes")
    for i in range(count):
        elem = table + 16 * i
        ksize = _bolt_u32(base + elem + 4)
        k = elem + <Py_ssize_t>_bolt_u32(base + elem)
        if k + <Py_ssize_t>ksize > end or k < data:
            raise Corrupted(f"branch element {i} (key of {ksize} bytes at {k - start}) "
                            f"lies outside the data of the page's {end - start} bytes")
    return 0


def bolt_leaf(const unsigned char[::1] buf, Py_ssize_t start, Py_ssize_t end, Py_ssize_t count):
    """Decode the `count` elements of the bbolt leaf page held in buf[start:end].

    Returns (keys, values, buckets): values[i] is None for a sub-bucket, whose
    element index and value offsets in `buf` are appended to `buckets` as
    (index, value_start, value_end) triples, flattened. Keys must increase.
    """
    cdef Py_ssize_t i, elem, k, subs
    cdef uint32_t ksize, vsize
    cdef list keys = [], values = [], buckets = []
    cdef const unsigned char *base
    if start < 0 or end > buf.shape[0] or start > end:
        raise Corrupted(f"page bounds {start}..{end} outside a buffer of {buf.shape[0]} bytes")
    base = &buf[0] if buf.shape[0] else <const unsigned char *>b""
    _bolt_check_leaf(base, start, end, count, &subs)
    for i in range(count):
        elem = start + BOLT_HEADER + 16 * i
        k = elem + <Py_ssize_t>_bolt_u32(base + elem + 4)
        ksize = _bolt_u32(base + elem + 8)
        vsize = _bolt_u32(base + elem + 12)
        keys.append(PyBytes_FromStringAndSize(<const char *>base + k, ksize))
        if _bolt_u32(base + elem) & BOLT_BUCKET_FLAG:
            values.append(None)
            buckets += (i, k + ksize, k + ksize + vsize)
        else:
            values.append(PyBytes_FromStringAndSize(<const char *>base + k + ksize, vsize))
    return keys, values, buckets


def bolt_branch(const unsigned char[::1] buf, Py_ssize_t start, Py_ssize_t end, Py_ssize_t count):
    """Child page ids of the `count` elements of the bbolt branch page in buf[start:end]."""
    cdef Py_ssize_t i
    cdef const unsigned char *base
    if start < 0 or end > buf.shape[0] or start > end:
        raise Corrupted(f"page bounds {start}..{end} outside a buffer of {buf.shape[0]} bytes")
    base = &buf[0] if buf.shape[0] else <const unsigned char *>b""
    _bolt_check_branch(base, start, end, count)
    return [_bolt_u64(base + start + BOLT_HEADER + 16 * i + 8) for i in range(count)]


# -- records --------------------------------------------------------------------------------------

cdef inline uint32_t _rec_kind(const unsigned char *rec) noexcept nogil:
    return _bolt_u32(rec)


cdef inline uint32_t _rec_count(const unsigned char *rec) noexcept nogil:
    return _bolt_u32(rec + 4)


cdef inline uint32_t _rec_overflow(const unsigned char *rec) noexcept nogil:
    return _bolt_u32(rec + 8)


cdef inline uint32_t _rec_subs(const unsigned char *rec) noexcept nogil:
    return _bolt_u32(rec + 12)


cdef inline uint64_t _rec_size(const unsigned char *rec) noexcept nogil:
    return _bolt_u64(rec + 16)


cdef inline uint64_t _rec_pgid(const unsigned char *rec) noexcept nogil:
    return _bolt_u64(rec + 24)


cdef inline const unsigned char *_rec_joined(const unsigned char *rec) noexcept nogil:
    return <const unsigned char *><intptr_t>_bolt_u64(rec + 32)


cdef inline uint64_t _rec_joined_count(const unsigned char *rec) noexcept nogil:
    return _bolt_u64(rec + 40)


cdef inline uint64_t _rec_child(const unsigned char *rec, Py_ssize_t i) noexcept nogil:
    return _bolt_u64(rec + BOLT_REC + 8 * i)


cdef inline uint64_t _desc_root(const unsigned char *entry) noexcept nogil:
    """The root page of the sub-bucket an entry names (0 for an inline one)."""
    return _bolt_u64(_bolt_entry_value(entry))


cdef struct _BoltView:
    const unsigned char *index
    Py_ssize_t count
    Py_ssize_t subs


cdef inline void _rec_view(const unsigned char *rec, _BoltView *out) noexcept nogil:
    """The entries of the bucket whose root page is `rec` (its joined index if it has several leaves)."""
    if _rec_kind(rec) == BOLT_LEAF:
        out.index = rec + BOLT_REC
        out.count = _rec_count(rec)
    else:
        out.index = _rec_joined(rec)
        out.count = <Py_ssize_t>_rec_joined_count(rec)
    out.subs = _rec_subs(rec)


cdef struct _BoltRef:
    uint64_t pgid
    int64_t parent     # the referencing page, -1 for the meta's root; a span: its overflow


cdef struct _BoltRefs:
    _BoltRef *items
    Py_ssize_t n
    Py_ssize_t cap


cdef int _refs_push(_BoltRefs *v, uint64_t pgid, int64_t parent) except -1:
    cdef Py_ssize_t cap
    cdef _BoltRef *items
    if v.n == v.cap:
        cap = v.cap * 2 if v.cap else 256
        items = <_BoltRef *>realloc(v.items, cap * sizeof(_BoltRef))
        if items == NULL:
            raise MemoryError()
        v.items = items
        v.cap = cap
    v.items[v.n].pgid = pgid
    v.items[v.n].parent = parent
    v.n += 1
    return 0


cdef int _refs_sort(_BoltRefs *v) except -1:
    """Sort by page id: least significant byte first, skipping the bytes every id shares."""
    cdef Py_ssize_t n = v.n, i, shift
    cdef Py_ssize_t counts[256]
    cdef Py_ssize_t total, c
    cdef _BoltRef *tmp
    cdef _BoltRef *a
    cdef _BoltRef *b
    cdef _BoltRef *t
    cdef _BoltRef item
    cdef uint64_t all_or = 0, all_and = 0xFFFFFFFFFFFFFFFFULL
    if n < 32:
        for i in range(1, n):
            item = v.items[i]
            c = i - 1
            while c >= 0 and v.items[c].pgid > item.pgid:
                v.items[c + 1] = v.items[c]
                c -= 1
            v.items[c + 1] = item
        return 0
    for i in range(n):
        all_or |= v.items[i].pgid
        all_and &= v.items[i].pgid
    tmp = <_BoltRef *>malloc(n * sizeof(_BoltRef))
    if tmp == NULL:
        raise MemoryError()
    a = v.items
    b = tmp
    for shift in range(0, 64, 8):
        if not ((all_or ^ all_and) >> shift) & 0xFF:
            continue    # every id has the same byte here
        memset(counts, 0, sizeof(counts))
        for i in range(n):
            counts[(a[i].pgid >> shift) & 0xFF] += 1
        total = 0
        for i in range(256):
            c = counts[i]
            counts[i] = total
            total += c
        for i in range(n):
            c = (a[i].pgid >> shift) & 0xFF
            b[counts[c]] = a[i]
            counts[c] += 1
        t = a
        a = b
        b = t
    if a != v.items:
        memcpy(v.items, a, n * sizeof(_BoltRef))
    free(tmp)
    return 0


cdef struct _BoltSlot:
    uint64_t pgid
    unsigned char *rec


DEF BOLT_BLOCK_BITS = 9   # the page table: blocks of 512 record pointers, made as pages are read
DEF BOLT_BLOCK = 512

cdef unsigned char *_BOLT_WANTED = <unsigned char *>1   # a page to be read in this level of the walk


@cython.final
cdef class BoltTx:
    """The pages of one read of a bbolt file, decoded into memory (compiled).

    `walk(root)` reads every page reachable from page `root` through `src`
    (`cargohold.bolt.reader.Source`), level by level, runs of adjacent page ids
    at once, checking each page; `bucket(root, sequence)` checks the order of
    keys across the leaves of each bucket and returns the root bucket. A
    `previous` BoltTx (of the transaction just before) lends the pages it
    holds. Errors name the file and the page: Corrupted; a read that fails:
    Unavailable.
    """

    cdef object _src
    cdef object _stats
    cdef object _path
    cdef Py_ssize_t _page_size
    cdef Py_ssize_t _max_run
    cdef uint64_t _high_water
    cdef uint64_t _file_size
    cdef BoltTx _prev
    cdef uint64_t _limit          # no page at or past this id can be valid: those go to the hash
    cdef unsigned char ***_blocks
    cdef Py_ssize_t _nblocks
    cdef _BoltSlot *_slots
    cdef Py_ssize_t _cap
    cdef Py_ssize_t _used
    cdef unsigned char **_chunks
    cdef Py_ssize_t _nchunks
    cdef Py_ssize_t _chunks_cap
    cdef unsigned char *_cur
    cdef Py_ssize_t _cur_used
    cdef Py_ssize_t _cur_cap
    cdef Py_ssize_t _chunk_size
    cdef _BoltRefs _spans

    def __cinit__(self, src, Py_ssize_t page_size, high_water, file_size, BoltTx previous=None, stats=None,
                  Py_ssize_t max_run_bytes=4 << 20):
        self._src = src
        self._path = getattr(src, "path", None)
        self._stats = stats
        self._page_size = page_size if page_size > 0 else 1
        self._max_run = max(1, max_run_bytes // self._page_size)
        self._high_water = min(high_water, 0xFFFFFFFFFFFFFFFF)
        self._file_size = min(file_size, 0xFFFFFFFFFFFFFFFF)
        self._prev = previous
        self._limit = min(self._high_water, self._file_size // <uint64_t>self._page_size)
        self._chunk_size = BOLT_FIRST_CHUNK

    def __dealloc__(self):
        cdef Py_ssize_t i
        for i in range(self._nchunks):
            free(self._chunks[i])
        free(self._chunks)
        for i in range(self._nblocks):
            free(self._blocks[i])
        free(self._blocks)
        free(self._slots)
        free(self._spans.items)

    # -- memory ----------------------------------------------------------------------------

    cdef unsigned char *_alloc(self, Py_ssize_t size) except NULL:
        """`size` bytes of the arena, 8-aligned."""
        cdef unsigned char *chunk
        cdef unsigned char **chunks
        cdef Py_ssize_t cap
        size = (size + 7) & ~7
        if self._cur != NULL and self._cur_used + size <= self._cur_cap:
            chunk = self._cur + self._cur_used
            self._cur_used += size
            return chunk
        if self._nchunks == self._chunks_cap:
            cap = self._chunks_cap * 2 if self._chunks_cap else 16
            chunks = <unsigned char **>realloc(self._chunks, cap * sizeof(unsigned char *))
            if chunks == NULL:
                raise MemoryError()
            self._chunks = chunks
            self._chunks_cap = cap
        if size > self._chunk_size // 4:   # a big record gets a chunk of its own
            chunk = <unsigned char *>malloc(size)
            if chunk == NULL:
                raise MemoryError()
            self._chunks[self._nchunks] = chunk
            self._nchunks += 1
            return chunk
        chunk = <unsigned char *>malloc(self._chunk_size)
        if chunk == NULL:
            raise MemoryError()
        self._chunks[self._nchunks] = chunk
        self._nchunks += 1
        self._cur = chunk
        self._cur_cap = self._chunk_size
        self._cur_used = size
        if self._chunk_size < BOLT_MAX_CHUNK:
            self._chunk_size *= 2
        return chunk

    cdef inline unsigned char *_raw(self, uint64_t pgid) noexcept nogil:
        """The record of page `pgid`, _BOLT_WANTED, or NULL."""
        cdef unsigned char **block
        cdef Py_ssize_t i
        cdef uint64_t h
        if pgid < self._limit:
            if <Py_ssize_t>(pgid >> BOLT_BLOCK_BITS) >= self._nblocks:
                return NULL
            block = self._blocks[pgid >> BOLT_BLOCK_BITS]
            return NULL if block == NULL else block[pgid & (BOLT_BLOCK - 1)]
        if self._cap == 0:
            return NULL
        h = pgid * 0x9E3779B97F4A7C15ULL
        i = <Py_ssize_t>((h ^ (h >> 31)) & <uint64_t>(self._cap - 1))
        while self._slots[i].rec != NULL:
            if self._slots[i].pgid == pgid:
                return self._slots[i].rec
            i = (i + 1) & (self._cap - 1)
        return NULL

    cdef inline unsigned char *_get(self, uint64_t pgid) noexcept nogil:
        """The record of page `pgid`, or NULL."""
        cdef unsigned char *rec = self._raw(pgid)
        return NULL if rec == _BOLT_WANTED else rec

    cdef int _put(self, uint64_t pgid, unsigned char *rec) except -1:
        cdef Py_ssize_t b = <Py_ssize_t>(pgid >> BOLT_BLOCK_BITS), n
        cdef unsigned char ***blocks
        if pgid < self._limit:
            if b >= self._nblocks:
                n = max(b + 1, self._nblocks * 2)
                blocks = <unsigned char ***>realloc(self._blocks, n * sizeof(unsigned char **))
                if blocks == NULL:
                    raise MemoryError()
                memset(blocks + self._nblocks, 0, (n - self._nblocks) * sizeof(unsigned char **))
                self._blocks = blocks
                self._nblocks = n
            if self._blocks[b] == NULL:
                self._blocks[b] = <unsigned char **>calloc(BOLT_BLOCK, sizeof(unsigned char *))
                if self._blocks[b] == NULL:
                    raise MemoryError()
            self._blocks[b][pgid & (BOLT_BLOCK - 1)] = rec
            return 0
        return self._hash_put(pgid, rec)

    cdef int _hash_put(self, uint64_t pgid, unsigned char *rec) except -1:
        """Note a page id no valid page has (a damaged reference, or a page given to add_page)."""
        cdef Py_ssize_t i, j, old_cap = self._cap
        cdef _BoltSlot *old = self._slots
        cdef uint64_t h
        if (self._used + 1) * 2 > self._cap:
            self._cap = old_cap * 2 if old_cap else 64
            self._slots = <_BoltSlot *>calloc(self._cap, sizeof(_BoltSlot))
            if self._slots == NULL:
                self._slots = old
                self._cap = old_cap
                raise MemoryError()
            self._used = 0
            for j in range(old_cap):
                if old[j].rec != NULL:
                    self._hash_put(old[j].pgid, old[j].rec)
            free(old)
        h = pgid * 0x9E3779B97F4A7C15ULL
        i = <Py_ssize_t>((h ^ (h >> 31)) & <uint64_t>(self._cap - 1))
        while self._slots[i].rec != NULL and self._slots[i].pgid != pgid:
            i = (i + 1) & (self._cap - 1)
        if self._slots[i].rec == NULL:
            self._used += 1
        self._slots[i].pgid = pgid
        self._slots[i].rec = rec
        return 0

    # -- decoding one page -----------------------------------------------------------------

    cdef unsigned char *_decode(self, const unsigned char *base, Py_ssize_t start, Py_ssize_t end,
                                uint64_t pgid) except NULL:
        """The record of page `pgid`, held whole in base[start:end]; Corrupted(pgid, message)."""
        cdef uint64_t page_id = _bolt_u64(base + start)
        cdef uint16_t flags = _bolt_u16(base + start + 8)
        cdef uint16_t count = _bolt_u16(base + start + 10)
        cdef uint32_t overflow = _bolt_u32(base + start + 12)
        cdef Py_ssize_t size, subs, i
        cdef unsigned char *rec
        if page_id != pgid:
            raise Corrupted(pgid, f"its header names page {page_id}")
        if flags != BOLT_BRANCH_FLAG and flags != BOLT_LEAF_FLAG:
            raise Corrupted(pgid, f"is a {_bolt_page_type(flags)} page where a branch or leaf page belongs")
        try:
            if flags == BOLT_BRANCH_FLAG:
                _bolt_check_branch(base, start, end, count)
                size = BOLT_REC + 8 * count
                rec = self._alloc(size)
                for i in range(count):
                    memcpy(rec + BOLT_REC + 8 * i, base + start + BOLT_HEADER + 16 * i + 8, 8)
                subs = 0
            else:
                size = _bolt_check_leaf(base, start, end, count, &subs)
                if subs:
                    size += _bolt_check_subs(base, start, count)
                size += BOLT_REC + count * BOLT_ENTRY
                rec = self._alloc(size)
                _bolt_pack(base, start, count, rec + BOLT_REC)
        except Corrupted as exc:
            raise Corrupted(pgid, f"{_bolt_page_type(flags)} page: {exc}") from None
        _bolt_set32(rec, BOLT_BRANCH if flags == BOLT_BRANCH_FLAG else BOLT_LEAF)
        _bolt_set32(rec + 4, count)
        _bolt_set32(rec + 8, overflow)
        _bolt_set32(rec + 12, <uint32_t>subs)
        _bolt_set64(rec + 16, <uint64_t>size)
        _bolt_set64(rec + 24, pgid)
        _bolt_set64(rec + 32, 0)
        _bolt_set64(rec + 40, 0)
        return rec

    cdef unsigned char *_copy(self, const unsigned char *rec) except NULL:
        """A record of another BoltTx, copied into this one (its joined index is not)."""
        cdef Py_ssize_t size = <Py_ssize_t>_rec_size(rec)
        cdef unsigned char *out = self._alloc(size)
        memcpy(out, rec, size)
        _bolt_set64(out + 32, 0)
        _bolt_set64(out + 40, 0)
        return out

    cdef int _referenced(self, uint64_t pgid, const unsigned char *rec, _BoltRefs *out) except -1:
        """Append (page, `pgid`) for every page the record references, in order."""
        cdef Py_ssize_t i, count = _rec_count(rec)
        cdef const unsigned char *entry
        cdef uint64_t root
        if _rec_kind(rec) == BOLT_BRANCH:
            for i in range(count):
                _refs_push(out, _rec_child(rec, i), <int64_t>pgid)
        elif _rec_subs(rec):
            entry = rec + BOLT_REC
            for i in range(count):
                if _bolt_entry_child(entry) != BOLT_NONE:
                    root = _desc_root(entry)
                    if root:
                        _refs_push(out, root, <int64_t>pgid)
                entry += BOLT_ENTRY
        return 0

    def add_page(self, const unsigned char[::1] buf, Py_ssize_t start, Py_ssize_t end, pgid):
        """Decode the page `pgid` held whole in buf[start:end] into this transaction (one step of a walk).

        Returns (kind, overflow, the page ids it references); Corrupted(pgid, message).
        """
        cdef unsigned char *rec
        cdef _BoltRefs refs
        if start < 0 or end > buf.shape[0] or start + BOLT_HEADER > end:
            raise Corrupted(pgid, f"page bounds {start}..{end} outside a buffer of {buf.shape[0]} bytes")
        rec = self._decode(&buf[0], start, end, pgid)
        self._put(pgid, rec)
        refs.items = NULL
        refs.n = refs.cap = 0
        try:
            self._referenced(pgid, rec, &refs)
            return (<int>_rec_kind(rec), _rec_overflow(rec), [refs.items[i].pgid for i in range(refs.n)])
        finally:
            free(refs.items)

    # -- the walk --------------------------------------------------------------------------

    cdef object _bad(self, uint64_t pgid, int64_t parent, message):
        where = "the meta's root bucket" if parent < 0 else f"page {parent}"
        return Corrupted(f"{self._path}: page {pgid} (referenced by {where}): {message}")

    cdef int _check_range(self, uint64_t pgid, int64_t parent, uint32_t overflow) except -1:
        if pgid < 2:
            raise self._bad(pgid, parent, "is a meta page id")
        high_water = self._high_water
        if <object>pgid + overflow >= high_water:
            span = f"pages {pgid}-{<object>pgid + overflow}" if overflow else "the page"
            raise self._bad(pgid, parent, f"{span} beyond the high-water mark {high_water}")
        end = (<object>pgid + overflow + 1) * self._page_size
        if end > self._file_size:
            raise self._bad(pgid, parent, f"truncated: the page ends at byte {end}, the file has {self._file_size}")
        return 0

    cdef object _read(self, uint64_t pgid, int64_t parent, Py_ssize_t pages, bint scratch):
        cdef Py_ssize_t size = pages * self._page_size
        offset = <object>pgid * self._page_size
        data = self._src.read_scratch(offset, size) if scratch else self._src.read(offset, size)
        if self._stats is not None:
            self._stats.pages_read += pages
            self._stats.bytes_read += len(data)
        if len(data) != size:
            raise self._bad(pgid, parent, f"truncated: read {len(data)} of {size} bytes")
        return data

    cdef unsigned char *_decode_named(self, const unsigned char *base, Py_ssize_t start, Py_ssize_t end,
                                      uint64_t pgid, int64_t parent) except NULL:
        try:
            return self._decode(base, start, end, pgid)
        except Corrupted as exc:
            raise self._bad(pgid, parent, exc.args[1] if len(exc.args) == 2 else str(exc)) from None

    cdef int _add(self, uint64_t pgid, unsigned char *rec, _BoltRefs *following) except -1:
        self._put(pgid, rec)
        if _rec_overflow(rec):
            _refs_push(&self._spans, pgid, _rec_overflow(rec))
        self._referenced(pgid, rec, following)
        return 0

    def walk(self, root):
        """Read and decode every page reachable from page `root` (a bucket's root page)."""
        cdef _BoltRefs level, following, wanted
        cdef _BoltRefs *a
        cdef _BoltRefs *b
        cdef _BoltRefs *t
        cdef Py_ssize_t i, reused = 0
        cdef uint64_t pgid
        cdef int64_t parent
        cdef unsigned char *rec
        level.items = following.items = wanted.items = NULL
        level.n = level.cap = following.n = following.cap = wanted.n = wanted.cap = 0
        a = &level
        b = &following
        try:
            _refs_push(a, root, -1)
            while a.n:
                b.n = 0
                wanted.n = 0
                for i in range(a.n):
                    pgid = a.items[i].pgid
                    parent = a.items[i].parent
                    if self._raw(pgid) != NULL:
                        raise self._bad(pgid, parent, "reached twice (a cycle or a shared page)")
                    rec = self._prev._get(pgid) if self._prev is not None else NULL
                    if rec != NULL:
                        reused += 1
                        self._add(pgid, self._copy(rec), b)
                    else:
                        self._put(pgid, _BOLT_WANTED)
                        _refs_push(&wanted, pgid, parent)
                if wanted.n:
                    self._fetch(&wanted, b)
                t = a
                a = b
                b = t
            self._check_spans()
        finally:
            free(level.items)
            free(following.items)
            free(wanted.items)
            if self._stats is not None:
                self._stats.pages_reused += reused
            self._prev = self._src = self._stats = None   # what the buckets keep alive is the arena alone

    cdef int _fetch(self, _BoltRefs *wanted, _BoltRefs *following) except -1:
        """Read and decode the wanted pages, runs of adjacent ids at once."""
        cdef Py_ssize_t n = wanted.n, i, j, k, at, start, ps = self._page_size
        cdef uint32_t overflow
        cdef _BoltRef *ids = wanted.items
        cdef uint64_t first, pgid
        cdef const unsigned char[::1] run
        cdef const unsigned char[::1] whole
        cdef const unsigned char *base
        cdef uint16_t flags
        cdef _BoltRefs overflowing
        cdef unsigned char *rec
        _refs_sort(wanted)
        if (ids[0].pgid < 2 or ids[n - 1].pgid >= self._high_water
                or ids[n - 1].pgid >= self._file_size // <uint64_t>ps):
            for i in range(n):
                self._check_range(ids[i].pgid, ids[i].parent, 0)
        overflowing.items = NULL
        overflowing.n = overflowing.cap = 0
        try:
            i = 0
            while i < n:
                first = ids[i].pgid
                j = i + 1
                while j < n and ids[j].pgid == ids[j - 1].pgid + 1 and ids[j].pgid - first < <uint64_t>self._max_run:
                    j += 1
                run = self._read(first, ids[i].parent, <Py_ssize_t>(ids[j - 1].pgid - first + 1), True)
                base = &run[0]
                overflowing.n = 0
                for k in range(i, j):
                    pgid = ids[k].pgid
                    start = <Py_ssize_t>(pgid - first) * ps
                    flags = _bolt_u16(base + start + 8)
                    if (_bolt_u32(base + start + 12) and _bolt_u64(base + start) == pgid
                            and (flags == BOLT_BRANCH_FLAG or flags == BOLT_LEAF_FLAG)):
                        _refs_push(&overflowing, k, _bolt_u32(base + start + 12))
                        continue
                    self._add(pgid, self._decode_named(base, start, start + ps, pgid, ids[k].parent), following)
                for k in range(overflowing.n):   # a page spanning overflow + 1 pages: read whole
                    at = <Py_ssize_t>overflowing.items[k].pgid     # (its index in ids, its overflow)
                    pgid = ids[at].pgid
                    overflow = <uint32_t>overflowing.items[k].parent
                    self._check_range(pgid, ids[at].parent, overflow)
                    whole = self._read(pgid, ids[at].parent, <Py_ssize_t>overflow + 1, False)
                    rec = self._decode_named(&whole[0], 0, whole.shape[0], pgid, ids[at].parent)
                    self._add(pgid, rec, following)
                i = j
        finally:
            free(overflowing.items)
        return 0

    cdef int _check_spans(self) except -1:
        """No two records may share a page: a multi-page record must not cover another's id."""
        cdef Py_ssize_t i
        cdef uint64_t first, other
        for i in range(self._spans.n):
            first = self._spans.items[i].pgid
            for other in range(first + 1, first + <uint64_t>self._spans.items[i].parent + 1):
                if self._get(other) != NULL:
                    raise Corrupted(f"{self._path}: page {other} lies inside the "
                                    f"{self._spans.items[i].parent + 1} pages of page {first}")
        return 0

    # -- buckets ---------------------------------------------------------------------------

    cdef unsigned char *_record(self, uint64_t pgid) except NULL:
        cdef unsigned char *rec = self._get(pgid)
        if rec == NULL:
            raise KeyError(pgid)
        return rec

    cdef int _join(self, unsigned char *rec) except -1:
        """Give the bucket rooted at branch record `rec` its joined index; keys must keep increasing."""
        cdef _BoltRefs todo
        cdef list leaves = []
        cdef Py_ssize_t total = 0, n, count, child_base = 0, p
        cdef const unsigned char *leaf
        cdef const unsigned char *src
        cdef const unsigned char *last = NULL
        cdef const unsigned char *key
        cdef unsigned char *index
        cdef unsigned char *x
        cdef uint32_t last_len = 0, child
        cdef uint64_t pgid
        todo.items = NULL
        todo.n = todo.cap = 0
        try:
            _refs_push(&todo, _rec_pgid(rec), 0)
            while todo.n:
                todo.n -= 1
                pgid = todo.items[todo.n].pgid
                leaf = self._record(pgid)
                if _rec_kind(leaf) == BOLT_BRANCH:
                    for n in range(<Py_ssize_t>_rec_count(leaf) - 1, -1, -1):
                        _refs_push(&todo, _rec_child(leaf, n), 0)
                else:
                    leaves.append(<intptr_t>leaf)
                    total += _rec_count(leaf)
        finally:
            free(todo.items)
        index = self._alloc(total * BOLT_ENTRY if total else 8)
        x = index
        for p in leaves:
            leaf = <const unsigned char *><intptr_t>p
            count = _rec_count(leaf)
            src = leaf + BOLT_REC
            if count:
                key = _bolt_entry_key(src)
                if last != NULL and _bolt_keycmp(last, last_len, key, _bolt_entry_klen(src)) >= 0:
                    raise Corrupted(_rec_pgid(leaf), f"leaf key {_bolt_show(_bolt_key_at(src))} does not sort "
                                                     f"after the previous page's last key "
                                                     f"{_bolt_show(PyBytes_FromStringAndSize(<const char *>last, last_len))}")
            for n in range(count):
                child = _bolt_entry_child(src)
                if child != BOLT_NONE:
                    child += <uint32_t>child_base
                key = _bolt_entry_key(src)
                _bolt_put_entry(x, key, _bolt_entry_klen(src), _bolt_entry_vlen(src), child)
                last = key
                last_len = _bolt_entry_klen(src)
                x += BOLT_ENTRY
                src += BOLT_ENTRY
            child_base += _rec_subs(leaf)
        _bolt_set64(rec + 32, <uint64_t><intptr_t>index)
        _bolt_set64(rec + 40, <uint64_t>total)
        _bolt_set32(rec + 12, <uint32_t>child_base)
        return 0

    def bucket(self, root, sequence):
        """The bucket rooted at page `root`, after checking the key order across the leaves of every
        bucket under it (Corrupted(pgid, message) names the leaf)."""
        cdef _BoltRefs todo
        cdef unsigned char *rec
        cdef _BoltView view
        cdef Py_ssize_t i
        cdef const unsigned char *entry
        cdef uint64_t sub
        todo.items = NULL
        todo.n = todo.cap = 0
        try:
            _refs_push(&todo, root, 0)
            while todo.n:
                todo.n -= 1
                rec = self._record(todo.items[todo.n].pgid)
                if _rec_kind(rec) == BOLT_BRANCH:
                    self._join(rec)
                _rec_view(rec, &view)
                if not view.subs:
                    continue
                entry = view.index
                for i in range(view.count):
                    if _bolt_entry_child(entry) != BOLT_NONE:
                        sub = _desc_root(entry)
                        if sub:
                            _bolt_set64(<unsigned char *>_bolt_entry_value(entry) + 16,
                                        <uint64_t><intptr_t>self._record(sub))
                            _refs_push(&todo, sub, 0)
                    entry += BOLT_ENTRY
        finally:
            free(todo.items)
        return _bolt_bucket(self, root, sequence, self._record(root), NULL)


cdef BoltBucket _bolt_bucket(BoltTx tx, object root, object sequence, const unsigned char *rec,
                             const unsigned char *inline):
    """A bucket of `tx`: rooted at page `root` whose record is `rec`, or inline with its descriptor at `inline`."""
    cdef BoltBucket bucket = BoltBucket.__new__(BoltBucket)
    bucket._tx = tx
    bucket.sequence = sequence
    bucket._root = root
    if rec != NULL:
        _rec_view(rec, &bucket._v)
    else:
        bucket._v.index = inline + BOLT_INLINE
        bucket._v.count = _bolt_u32(inline + 16)
        bucket._v.subs = 0
    return bucket


cdef inline const unsigned char *_bolt_sub_record(const unsigned char *entry) noexcept nogil:
    """The root record of the sub-bucket an entry names, NULL for an inline one."""
    cdef const unsigned char *desc = _bolt_entry_value(entry)
    if _bolt_u64(desc) == 0:
        return NULL
    return <const unsigned char *><intptr_t>_bolt_u64(desc + 16)


cdef inline void _bolt_sub_view(const unsigned char *entry, _BoltView *out) noexcept nogil:
    """The entries of the sub-bucket an entry names."""
    cdef const unsigned char *desc = _bolt_entry_value(entry)
    if _bolt_u64(desc):
        _rec_view(<const unsigned char *><intptr_t>_bolt_u64(desc + 16), out)
    else:
        out.index = desc + BOLT_INLINE
        out.count = _bolt_u32(desc + 16)
        out.subs = 0


cdef extern from *:
    void __builtin_prefetch(const void *addr) nogil


cdef inline void _bolt_prefetch(const unsigned char *entry) noexcept:
    """Start loading the head of the sub-bucket an entry names: its keys are read next."""
    cdef const unsigned char *rec
    cdef int i
    if _bolt_entry_child(entry) == BOLT_NONE:
        return
    rec = _bolt_sub_record(entry)
    if rec != NULL:
        for i in range(0, 512, 64):
            __builtin_prefetch(rec + i)


cdef const unsigned char *_bolt_find(const _BoltView *v, const unsigned char *key, Py_ssize_t klen) noexcept:
    """The entry of `key` in a view, or NULL."""
    cdef Py_ssize_t lo = 0, hi = v.count, mid
    cdef const unsigned char *entry
    cdef int c
    while lo < hi:
        mid = (lo + hi) >> 1
        entry = v.index + mid * BOLT_ENTRY
        c = _bolt_keycmp(_bolt_entry_key(entry), _bolt_entry_klen(entry), key, klen)
        if c < 0:
            lo = mid + 1
        elif c > 0:
            hi = mid
        else:
            return entry
    return NULL


# -- buckets ----------------------------------------------------------------------------------------

cdef inline bytes _bolt_key(key):
    if type(key) is bytes:
        return <bytes>key
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key)
    raise InvalidArgument(f"a bbolt key is bytes, not {type(key).__name__}: {key!r}")


@cython.no_gc    # holds its transaction and its sub-buckets: no cycle can pass through it
@cython.final
cdef class BoltBucket:
    """One bucket of the transaction a `bolt.File` read; immutable, served from memory.

    Keys are in bbolt's order (bytewise). A key naming a sub-bucket has no
    value: `get` and `items` give None for it, `bucket` gives the sub-bucket
    (the same object each time).
    """

    cdef readonly object sequence
    cdef readonly object _root    # the root page of a bucket held in pages, 0 for an inline one
    cdef BoltTx _tx               # owns the memory the entries lie in (None: an empty bucket)
    cdef _BoltView _v
    cdef list _subs               # the sub-buckets made so far, by ordinal

    def __cinit__(self):
        self.sequence = 0
        self._root = 0

    def __init__(self, sequence=0):
        self.sequence = sequence

    cdef inline const unsigned char *_entry(self, Py_ssize_t i) noexcept:
        return self._v.index + i * BOLT_ENTRY

    cdef Py_ssize_t _lower(self, bytes key) noexcept:
        """Index of the first key not below `key` (bisect_left)."""
        cdef Py_ssize_t lo = 0, hi = self._v.count, mid
        cdef const unsigned char *k = <const unsigned char *>PyBytes_AS_STRING(key)
        cdef Py_ssize_t klen = PyBytes_GET_SIZE(key)
        cdef const unsigned char *entry
        while lo < hi:
            mid = (lo + hi) >> 1
            entry = self._entry(mid)
            if _bolt_keycmp(_bolt_entry_key(entry), _bolt_entry_klen(entry), k, klen) < 0:
                lo = mid + 1
            else:
                hi = mid
        return lo

    cdef const unsigned char *_find(self, bytes key) noexcept:
        """The entry of `key`, or NULL."""
        return _bolt_find(&self._v, <const unsigned char *>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key))

    cdef BoltBucket _child(self, const unsigned char *entry):
        """The sub-bucket an entry of this bucket names, made once."""
        cdef uint32_t ordinal = _bolt_entry_child(entry)
        cdef const unsigned char *desc
        cdef BoltBucket child
        if self._subs is None:
            self._subs = [None] * self._v.subs
        found = self._subs[ordinal]
        if found is not None:
            return <BoltBucket>found
        desc = _bolt_entry_value(entry)
        child = _bolt_bucket(self._tx, _bolt_u64(desc), _bolt_u64(desc + 8), _bolt_sub_record(entry), desc)
        self._subs[ordinal] = child
        return child

    def get(self, key):
        """The value of `key`; None for a missing key or a sub-bucket (as bbolt's Get)."""
        cdef const unsigned char *entry = self._find(_bolt_key(key))
        if entry == NULL:
            return None
        return _bolt_value_at(entry)

    def bucket(self, key):
        """The sub-bucket named `key`, or None."""
        cdef const unsigned char *entry = self._find(_bolt_key(key))
        if entry == NULL or _bolt_entry_child(entry) == BOLT_NONE:
            return None
        return self._child(entry)

    cdef Py_ssize_t _prefix_end(self, Py_ssize_t i, bytes prefix) noexcept:
        cdef Py_ssize_t plen = PyBytes_GET_SIZE(prefix)
        cdef const unsigned char *entry
        while i < self._v.count:
            entry = self._entry(i)
            if _bolt_entry_klen(entry) < plen or memcmp(_bolt_entry_key(entry), PyBytes_AS_STRING(prefix), plen) != 0:
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
            it.stop = self._v.count
        else:
            p = _bolt_key(prefix)
            it.i = self._lower(p)
            it.stop = self._prefix_end(it.i, p)
        return it

    def buckets(self):
        """(name, sub-bucket) pairs in key order."""
        cdef list out = []
        cdef Py_ssize_t i
        cdef const unsigned char *entry
        if not self._v.subs:
            return iter(out)
        for i in range(self._v.count):
            entry = self._entry(i)
            if _bolt_entry_child(entry) != BOLT_NONE:
                out.append((_bolt_key_at(entry), self._child(entry)))
        return iter(out)

    def __len__(self):
        return self._v.count

    def __contains__(self, key):
        return self._find(_bolt_key(key)) != NULL

    def __iter__(self):
        return self._iter(None, 0)

    def __repr__(self):
        return f"<bolt.Bucket: {self._v.count} keys, {self._v.subs} sub-buckets>"


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
        if self.i >= self.stop:
            raise StopIteration
        entry = self.bucket._entry(self.i)
        self.i += 1
        if self.what == 0:
            return _bolt_key_at(entry)
        return (_bolt_key_at(entry), _bolt_value_at(entry))

    def __length_hint__(self):
        return self.stop - self.i
