# A whole LMDB table read straight from the data file's pages (LMDB 0.9's on-disk format), so
# that the collector loads its node table without one Python object per row. Its pure-Python
# twin is cargohold._fallback.lmdb_rows: same rows, same order (the tree's, which is key order),
# same checks.
#
# A read transaction's tree is immutable while it is open (LMDB reuses no page a reader may
# still see), and committed pages are in the file (LMDB writes them before the meta page), so a
# read-only mapping of the file shows exactly that snapshot. Every page is checked (its own page
# number, its type, its bounds) and the rows counted against the table's record: a page that
# does not check out is Corrupted. A format this reader does not know (another magic or
# version, a table flag it does not handle) is reported as such before any row is read.

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy
from cpython.bytes cimport PyBytes_AS_STRING
from cargohold.errors import Corrupted

cdef extern from "<sys/mman.h>" nogil:
    int madvise(void* addr, size_t length, int advice)
    enum: MADV_DONTNEED

cdef enum:
    LM_PAGE_HEADER = 16
    LM_NODE_HEADER = 8
    LM_RECORD = 48
    LM_MAX_DEPTH = 64
    LM_P_BRANCH = 0x01
    LM_P_LEAF = 0x02
    LM_P_OVERFLOW = 0x04
    LM_P_META = 0x08
    LM_F_BIGDATA = 0x01
    LM_MAGIC = 0xBEEFC0DE
    LM_VERSION = 1

ctypedef int (*lm_row_fn)(void* ctx, const uint8_t* key, Py_ssize_t ksize,
                          const uint8_t* value, Py_ssize_t vsize) except -1

cdef struct LmFrame:
    uint64_t pgno
    Py_ssize_t next
    Py_ssize_t count

cdef inline uint16_t _lm_u16(const uint8_t* p) noexcept nogil:
    return p[0] | (<uint16_t>p[1] << 8)

cdef inline uint32_t _lm_u32(const uint8_t* p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v

cdef inline uint64_t _lm_u64(const uint8_t* p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v


cdef bint lm_known(const uint8_t* base, Py_ssize_t size, Py_ssize_t psize, bytes record) noexcept:
    """Whether the file and the table's record are in the format this reader knows."""
    if psize < 512 or psize > 65536 or size < 2 * psize or len(record) != LM_RECORD:
        return False
    if not _lm_u16(base + 10) & LM_P_META or _lm_u32(base + LM_PAGE_HEADER) != LM_MAGIC:
        return False
    if _lm_u32(base + LM_PAGE_HEADER + 4) != LM_VERSION:
        return False
    return _lm_u16(<const uint8_t*>PyBytes_AS_STRING(record) + 4) == 0  # no dupsort, integer or reverse keys


cdef object _lm_damaged(str table, uint64_t pgno, str what):
    return Corrupted(f"damaged page {pgno} of metadata table {table!r}: {what}")


cdef const uint8_t* _lm_page(const uint8_t* base, Py_ssize_t size, Py_ssize_t psize, uint64_t pgno,
                             Py_ssize_t pages, str table) except NULL:
    if pgno < 2 or pgno >= <uint64_t>(size // psize) or pages > size // psize - <Py_ssize_t>pgno:
        raise _lm_damaged(table, pgno, "outside the data file")
    cdef const uint8_t* page = base + <Py_ssize_t>pgno * psize
    if _lm_u64(page) != pgno:
        raise _lm_damaged(table, pgno, "it names another page")
    return page


cdef Py_ssize_t lm_walk(const uint8_t* base, Py_ssize_t size, Py_ssize_t psize, bytes record, str table,
                        Py_ssize_t release_every, lm_row_fn fn, void* ctx) except -1:
    """Call fn for every row of the table, in key order; returns how many. lm_known() first."""
    cdef const uint8_t* rec = <const uint8_t*>PyBytes_AS_STRING(record)
    cdef Py_ssize_t depth = _lm_u16(rec + 6), top = 0, rows = 0, leaves = 0, i, n, ptr, ksize, vsize
    cdef uint64_t entries = _lm_u64(rec + 32), root = _lm_u64(rec + 40), pgno, child
    cdef LmFrame stack[LM_MAX_DEPTH]
    cdef const uint8_t* page
    cdef const uint8_t* node
    cdef const uint8_t* value
    cdef const uint8_t* over
    cdef uint16_t flags, lower, upper, nflags
    if root == <uint64_t>-1:
        if entries:
            raise _lm_damaged(table, root, f"an empty tree of {entries} rows")
        return 0
    if depth < 1 or depth > LM_MAX_DEPTH:
        raise _lm_damaged(table, root, f"a tree of depth {depth}")
    stack[0].pgno = root
    stack[0].next = -1
    try:
        while top >= 0:
            pgno = stack[top].pgno
            page = _lm_page(base, size, psize, pgno, 1, table)
            flags = _lm_u16(page + 10)
            if stack[top].next == -1:
                lower = _lm_u16(page + 12)
                upper = _lm_u16(page + 14)
                if lower < LM_PAGE_HEADER or lower > upper or upper > psize or (lower - LM_PAGE_HEADER) % 2:
                    raise _lm_damaged(table, pgno, "bad bounds")
                n = (lower - LM_PAGE_HEADER) // 2
                if n == 0:
                    raise _lm_damaged(table, pgno, "no rows")
                if flags & (LM_P_BRANCH | LM_P_LEAF) == LM_P_BRANCH:
                    if top == depth - 1:
                        raise _lm_damaged(table, pgno, "a branch page at leaf depth")
                elif flags & (LM_P_BRANCH | LM_P_LEAF) == LM_P_LEAF:
                    if top != depth - 1:
                        raise _lm_damaged(table, pgno, "a leaf page above leaf depth")
                else:
                    raise _lm_damaged(table, pgno, f"page flags {flags:#x}")
                stack[top].next = 0
                stack[top].count = n
            n = stack[top].count
            if flags & LM_P_BRANCH:
                i = stack[top].next
                if i == n:
                    top -= 1
                    continue
                stack[top].next = i + 1
                ptr = _lm_u16(page + LM_PAGE_HEADER + 2 * i)
                if ptr < LM_PAGE_HEADER + 2 * n or ptr + LM_NODE_HEADER > psize:
                    raise _lm_damaged(table, pgno, f"node {i} outside the page")
                node = page + ptr
                child = _lm_u16(node) | (<uint64_t>_lm_u16(node + 2) << 16) | (<uint64_t>_lm_u16(node + 4) << 32)
                top += 1
                stack[top].pgno = child
                stack[top].next = -1
                continue
            if <uint64_t>(rows + n) > entries:
                raise _lm_damaged(table, root, f"more rows than the {entries} the table records")
            for i in range(n):
                ptr = _lm_u16(page + LM_PAGE_HEADER + 2 * i)
                if ptr < LM_PAGE_HEADER + 2 * n or ptr + LM_NODE_HEADER > psize:
                    raise _lm_damaged(table, pgno, f"node {i} outside the page")
                node = page + ptr
                vsize = _lm_u16(node) | (<Py_ssize_t>_lm_u16(node + 2) << 16)
                nflags = _lm_u16(node + 4)
                ksize = _lm_u16(node + 6)
                if nflags & LM_F_BIGDATA:
                    if nflags != LM_F_BIGDATA or ptr + LM_NODE_HEADER + ksize + 8 > psize:
                        raise _lm_damaged(table, pgno, f"node {i} outside the page")
                    child = _lm_u64(node + LM_NODE_HEADER + ksize)
                    over = _lm_page(base, size, psize, child, (LM_PAGE_HEADER + vsize + psize - 1) // psize, table)
                    if not _lm_u16(over + 10) & LM_P_OVERFLOW or \
                            <Py_ssize_t>_lm_u32(over + 12) * psize < LM_PAGE_HEADER + vsize:
                        raise _lm_damaged(table, child, "not the overflow page its row names")
                    value = over + LM_PAGE_HEADER
                elif nflags:
                    raise _lm_damaged(table, pgno, f"node {i} has flags {nflags:#x}")
                elif ptr + LM_NODE_HEADER + ksize + vsize > psize:
                    raise _lm_damaged(table, pgno, f"node {i} outside the page")
                else:
                    value = node + LM_NODE_HEADER + ksize
                fn(ctx, node + LM_NODE_HEADER, ksize, value, vsize)
                rows += 1
            top -= 1
            leaves += 1
            if release_every and leaves % release_every == 0:
                madvise(<void*>base, size, MADV_DONTNEED)
    finally:
        if release_every:
            madvise(<void*>base, size, MADV_DONTNEED)
    if <uint64_t>rows != entries:
        raise _lm_damaged(table, root, f"{rows} rows where the table records {entries}")
    return rows
