# The mark phase: tricolor marking over the node table (see cargohold/gc/index.py for the
# value layout). Its pure-Python twin is cargohold._fallback.Marker; both give identical
# results, chains included (same interning order, same edge order, same FIFO traversal).
#
# Memory: keys live in one growing byte buffer, located by an open-addressing hash table
# of int32 indexes; edges are int32 pairs turned into a CSR adjacency before marking.
# The CSR and the marking are kept after mark(): remark() continues from them (a concurrent
# collection marks a read snapshot, then what writers changed), following the edges added
# since mark() through per-source linked lists, in insertion order.

from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy, memcmp, memset
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cargohold.errors import Corrupted, InvalidArgument

cdef enum:
    F_ROOT = 0x01
    F_EXPIRES = 0x02
    F_FLAT = 0x04
    F_HIDDEN = 0x08
    F_USEDAT = 0x10
    E_STRONG = 1
    E_REF = 2
    E_BREF = 3
    E_COND = 4
    E_LABEL = 5
    LEASE_TYPE = 6
    INGEST_TYPE = 7
    SANDBOX_TYPE = 0x1F
    FOLLOW_ALWAYS = 1
    FOLLOW_NORMAL = 2
    FOLLOW_LEASE = 3
    SEEN_NORMAL = 1
    SEEN_FLAT = 2
    PHANTOM = 0x80

MARK_FLAGS = {"F_ROOT": F_ROOT, "F_EXPIRES": F_EXPIRES, "F_FLAT": F_FLAT, "F_HIDDEN": F_HIDDEN,
              "F_USEDAT": F_USEDAT, "E_STRONG": E_STRONG, "E_REF": E_REF, "E_BREF": E_BREF,
              "E_COND": E_COND, "E_LABEL": E_LABEL}


cdef inline int64_t _i64(const uint8_t* p) noexcept nogil:
    cdef int64_t v
    memcpy(&v, p, 8)
    return v


cdef inline uint32_t _u16(const uint8_t* p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8)


cdef inline uint64_t _hash(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    """A word at a time (node keys are 40 to 100 bytes), then murmur's finaliser."""
    cdef uint64_t h = 0x9E3779B97F4A7C15ULL ^ <uint64_t>n
    cdef uint64_t w
    while n >= 8:
        memcpy(&w, p, 8)
        h = (h ^ w) * 0xFF51AFD7ED558CCDULL
        h ^= h >> 32
        p += 8
        n -= 8
    if n:
        w = 0
        memcpy(&w, p, n)
        h = (h ^ w) * 0xFF51AFD7ED558CCDULL
    h ^= h >> 33
    h *= 0xC4CEB9FE1A85EC53ULL
    return h ^ (h >> 33)


cdef void* _grow(void* ptr, Py_ssize_t* cap, Py_ssize_t need, Py_ssize_t item) except NULL:
    cdef Py_ssize_t new_cap = cap[0] if cap[0] > 0 else 64
    cdef void* out
    if need <= cap[0] and ptr != NULL:
        return ptr
    while new_cap < need:
        new_cap *= 2
    out = realloc(ptr, new_cap * item)
    if out == NULL:
        raise MemoryError()
    cap[0] = new_cap
    return out


cdef void* _realloc(void* ptr, Py_ssize_t size) except NULL:
    cdef void* out = realloc(ptr, size)
    if out == NULL:
        raise MemoryError()
    return out


cdef inline bytes _as_bytes(obj):
    return obj if type(obj) is bytes else bytes(obj)


cdef inline bint _cond_holds(int op, object age, object duration):  # ages may pass int64 (saturated usedat)
    return (op == 0x3C and age < duration) or (op == 0x3E and age > duration)


cdef class Marker:
    """Tricolor marking over the node table (compiled).

    Feed it every node-table entry (`add_nodes`) and lease-resource row
    (`add_lease_resources`), then `mark(now, extra_roots)`. Nodes are packed
    node keys (bytes). Targets that have no entry become *phantom* nodes:
    reachable through, never reported as existing.

    After a marking, `update_nodes` (entries written since), `forget_nodes`
    (entries deleted since) and more lease rows may be given, then
    `remark(now, gray)` continues the marking: it follows every edge added
    since, from whatever is marked, and marks the `gray` nodes and all they
    reach. Edges are never taken away (an updated node keeps its old edges
    too): a continued marking only ever keeps more.
    """

    cdef list _labels
    # nodes
    cdef uint8_t* keybuf
    cdef Py_ssize_t keybuf_len, keybuf_cap
    cdef int64_t* koff
    cdef uint8_t* flags
    cdef int64_t* expire
    cdef Py_ssize_t n, ncap
    cdef int32_t* table
    cdef Py_ssize_t tcap
    cdef dict _usedat
    cdef int64_t marked_at
    # edges, then their CSR form
    cdef int32_t* esrc
    cdef int32_t* edst
    cdef uint8_t* ekind
    cdef Py_ssize_t ne, ecap
    cdef list _conds
    cdef list _pending
    # marking
    cdef uint8_t* state
    cdef int32_t* parent
    cdef bint marked
    cdef Py_ssize_t nmarked
    # the CSR of the edges mark() saw (kept for remark)
    cdef int32_t* bstart
    cdef int32_t* badj
    cdef uint8_t* bkind
    cdef Py_ssize_t nbase
    # edges added since mark(): per-source lists, linked up to edge index nlinked
    cdef int32_t* dhead
    cdef int32_t* dtail
    cdef int32_t* dnext
    cdef Py_ssize_t dncap, decap, nlinked

    def __cinit__(self, collector_labels=()):
        self._labels = [(bytes(s), int(t)) for s, t in collector_labels]
        self._usedat = {}
        self._conds = []
        self._pending = []
        self.tcap = 1024
        self.table = <int32_t*>malloc(self.tcap * sizeof(int32_t))
        if self.table == NULL:
            raise MemoryError()
        memset(self.table, 0xFF, self.tcap * sizeof(int32_t))

    def __dealloc__(self):
        free(self.keybuf); free(self.koff); free(self.flags); free(self.expire); free(self.table)
        free(self.esrc); free(self.edst); free(self.ekind); free(self.state); free(self.parent)
        free(self.bstart); free(self.badj); free(self.bkind)
        free(self.dhead); free(self.dtail); free(self.dnext)

    # -- building ----------------------------------------------------------------------------
    cdef void _rehash(self) except *:
        cdef Py_ssize_t cap = self.tcap * 2, i, slot
        cdef int32_t* table = <int32_t*>malloc(cap * sizeof(int32_t))
        if table == NULL:
            raise MemoryError()
        memset(table, 0xFF, cap * sizeof(int32_t))
        for i in range(self.n):
            slot = _hash(self.keybuf + self.koff[i], self.koff[i + 1] - self.koff[i]) & (cap - 1)
            while table[slot] != -1:
                slot = (slot + 1) & (cap - 1)
            table[slot] = <int32_t>i
        free(self.table)
        self.table = table
        self.tcap = cap

    cdef Py_ssize_t _find(self, const uint8_t* key, Py_ssize_t size) noexcept:
        """Index of key, or -(slot + 1) where it would be inserted."""
        cdef Py_ssize_t slot = _hash(key, size) & (self.tcap - 1)
        cdef int32_t idx
        while True:
            idx = self.table[slot]
            if idx == -1:
                return -(slot + 1)
            if (self.koff[idx + 1] - self.koff[idx] == size
                    and memcmp(self.keybuf + self.koff[idx], key, size) == 0):
                return idx
            slot = (slot + 1) & (self.tcap - 1)

    cdef Py_ssize_t _intern(self, const uint8_t* key, Py_ssize_t size) except -1:
        cdef Py_ssize_t found = self._find(key, size), idx, old_cap = self.ncap
        if found >= 0:
            return found
        if (self.n + 1) * 2 > self.tcap:
            self._rehash()
            found = self._find(key, size)
        idx = self.n
        self.koff = <int64_t*>_grow(self.koff, &self.ncap, idx + 2, sizeof(int64_t))
        if self.ncap != old_cap:
            self.flags = <uint8_t*>_realloc(self.flags, self.ncap)
            self.expire = <int64_t*>_realloc(self.expire, self.ncap * sizeof(int64_t))
        self.keybuf = <uint8_t*>_grow(self.keybuf, &self.keybuf_cap, self.keybuf_len + size, 1)
        memcpy(self.keybuf + self.keybuf_len, key, size)
        if idx == 0:
            self.koff[0] = 0
        self.keybuf_len += size
        self.koff[idx + 1] = self.keybuf_len
        self.flags[idx] = PHANTOM
        self.expire[idx] = 0
        self.table[-found - 1] = <int32_t>idx
        self.n += 1
        return idx

    cdef int _edge(self, Py_ssize_t src, Py_ssize_t dst, uint8_t kind) except -1:
        cdef Py_ssize_t old_cap = self.ecap
        self.esrc = <int32_t*>_grow(self.esrc, &self.ecap, self.ne + 1, sizeof(int32_t))
        if self.ecap != old_cap:
            self.edst = <int32_t*>_realloc(self.edst, self.ecap * sizeof(int32_t))
            self.ekind = <uint8_t*>_realloc(self.ekind, self.ecap)
        self.esrc[self.ne] = <int32_t>src
        self.edst[self.ne] = <int32_t>dst
        self.ekind[self.ne] = kind
        self.ne += 1
        return 0

    cdef bytes _key(self, Py_ssize_t idx):
        return (<char*>self.keybuf)[self.koff[idx]:self.koff[idx + 1]]

    def add_nodes(self, entries):
        """Load (packed key, value) pairs of the node table."""
        self._load(entries, False)

    def update_nodes(self, entries):
        """Load entries written since the marking: a node already known takes the new
        flags, expiry and usedat, and gains the new edges (its old ones stay)."""
        self._load(entries, True)

    cdef _load(self, entries, bint replace):
        cdef bytes k, v
        for key, value in entries:
            k = _as_bytes(key)
            v = _as_bytes(value)
            self._load_one(<const uint8_t*>PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k),
                           <const uint8_t*>PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v), replace)

    cdef int _load_one(self, const uint8_t* key, Py_ssize_t ksize, const uint8_t* value, Py_ssize_t vsize,
                       bint replace) except -1:
        cdef Py_ssize_t src = self._intern(key, ksize)
        if not self.flags[src] & PHANTOM:
            if not replace:
                raise InvalidArgument(f"node {(<char*>key)[:ksize]!r} given twice")
            self.expire[src] = 0
            self._usedat.pop(src, None)
        if not self._parse(src, key, ksize, value, vsize):
            raise Corrupted(f"damaged garbage-collection entry for node {(<char*>key)[:ksize]!r}")
        return 0

    cdef void _reserve(self, Py_ssize_t nodes) except *:
        """Room for `nodes` more nodes without growing the arrays or the hash table."""
        cdef Py_ssize_t need = self.n + nodes, old_cap = self.ncap
        while (need + 1) * 2 > self.tcap:
            self._rehash()
        self.koff = <int64_t*>_grow(self.koff, &self.ncap, need + 2, sizeof(int64_t))
        if self.ncap != old_cap:
            self.flags = <uint8_t*>_realloc(self.flags, self.ncap)
            self.expire = <int64_t*>_realloc(self.expire, self.ncap * sizeof(int64_t))

    def add_nodes_mapped(self, buf, Py_ssize_t page_size, bytes record, str table, Py_ssize_t release_every=0):
        """`add_nodes` of a whole node table read from the data file's pages (`buf`, a read-only
        mapping of it; `record`, the table's entry in LMDB's main database); see lmdbpages.pxi.
        False, with nothing loaded, if the file is in a format this reader does not know. With
        `release_every`, the mapping's pages are given back after every that many leaf pages."""
        cdef const uint8_t[::1] view = buf
        cdef const uint8_t* base = &view[0] if view.shape[0] else NULL
        if base == NULL or not lm_known(base, view.shape[0], page_size, record):
            return False
        self._reserve(_lm_u64(<const uint8_t*>PyBytes_AS_STRING(record) + 32))
        lm_walk(base, view.shape[0], page_size, record, table, release_every, _marker_node_row, <void*>self)
        return True

    def add_lease_resources_mapped(self, buf, Py_ssize_t page_size, bytes record, str table,
                                   Py_ssize_t release_every=0):
        """`add_lease_resources` of a whole lease-resource table, read as `add_nodes_mapped` reads."""
        cdef const uint8_t[::1] view = buf
        cdef const uint8_t* base = &view[0] if view.shape[0] else NULL
        if base == NULL or not lm_known(base, view.shape[0], page_size, record):
            return False
        lm_walk(base, view.shape[0], page_size, record, table, release_every, _marker_lease_row, <void*>self)
        return True

    def forget_nodes(self, keys):
        """Nodes whose entries were deleted since the marking: no longer reported as existing
        (phantoms, as targets without an entry are); their edges stay."""
        cdef Py_ssize_t idx
        for key in keys:
            idx = self._lookup(key)
            if idx >= 0:
                self.flags[idx] = PHANTOM
                self.expire[idx] = 0
                self._usedat.pop(idx, None)

    cdef bint _parse(self, Py_ssize_t src, const uint8_t* key, Py_ssize_t ksize,
                     const uint8_t* val, Py_ssize_t size) except -1:
        cdef Py_ssize_t pos = 1, tsize, vsize, ns_end, count, i, dst
        cdef uint8_t flags, kind
        cdef const uint8_t* target
        cdef bytes suffix, label_value, built
        cdef int rtype
        cdef const uint8_t* sp
        if size < 1:
            return False
        flags = val[0]
        if flags & F_EXPIRES:
            if pos + 8 > size:
                return False
            self.expire[src] = _i64(val + pos)
            pos += 8
        if flags & F_USEDAT:
            if pos + 1 > size:
                return False
            count = val[pos]
            pos += 1
            if pos + 8 * count > size:
                return False
            self._usedat[src] = [_i64(val + pos + 8 * i) for i in range(count)]
            pos += 8 * count
        self.flags[src] = flags & 0x7F
        ns_end = 1
        while ns_end < ksize and key[ns_end] != 0:
            ns_end += 1
        if ns_end >= ksize:
            return False
        while pos < size:
            if pos + 3 > size:
                return False
            kind = val[pos]
            tsize = _u16(val + pos + 1)
            if pos + 3 + tsize > size:
                return False
            target = val + pos + 3
            pos += 3 + tsize
            if kind == E_STRONG:
                dst = self._intern(target, tsize)
                self._edge(src, dst, FOLLOW_ALWAYS)
            elif kind == E_REF:
                dst = self._intern(target, tsize)
                self._edge(src, dst, FOLLOW_NORMAL)
            elif kind == E_BREF:
                dst = self._intern(target, tsize)
                self._edge(dst, src, FOLLOW_NORMAL)
            elif kind == E_COND:
                if pos + 9 > size:
                    return False
                dst = self._intern(target, tsize)
                self._conds.append((src, dst, val[pos], _i64(val + pos + 1)))
                pos += 9
            elif kind == E_LABEL:
                if pos + 2 > size:
                    return False
                vsize = _u16(val + pos)
                if pos + 2 + vsize > size:
                    return False
                if self._labels:
                    suffix = (<char*>target)[:tsize]
                    label_value = (<char*>val)[pos + 2:pos + 2 + vsize]
                    for rsuffix, rtype in self._labels:
                        if suffix == rsuffix or (suffix.startswith(rsuffix) and suffix[len(rsuffix)] in b"./"):
                            built = bytes((rtype,)) + (<char*>key)[1:ns_end + 1] + label_value
                            sp = built
                            dst = self._intern(sp, len(built))
                            self._edge(src, dst, FOLLOW_NORMAL)
                pos += 2 + vsize
            else:
                return False
        return True

    def add_lease_resources(self, rows):
        """Load (key, value) rows of the lease-resource table: <ns>\\0<lease>\\0<type><key>."""
        cdef bytes raw
        for key, _ in rows:
            raw = _as_bytes(key)
            self._lease_row(<const uint8_t*>PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw))

    cdef int _lease_row(self, const uint8_t* k, Py_ssize_t size) except -1:
        cdef Py_ssize_t ns_end, lease_end, lease, res
        cdef bytes raw, lease_key, res_key
        ns_end = 0
        while ns_end < size and k[ns_end] != 0:
            ns_end += 1
        lease_end = ns_end + 1
        while lease_end < size and k[lease_end] != 0:
            lease_end += 1
        raw = (<char*>k)[:size]
        if lease_end + 1 >= size:
            raise Corrupted(f"damaged lease resource row {raw!r}")
        lease_key = bytes((LEASE_TYPE,)) + raw[:lease_end]
        res_key = raw[lease_end + 1:lease_end + 2] + raw[:ns_end + 1] + raw[lease_end + 2:]
        lease = self._intern(lease_key, len(lease_key))
        res = self._intern(res_key, len(res_key))
        self._edge(lease, res, FOLLOW_LEASE)
        return 0

    # -- marking --------------------------------------------------------------------------------
    cdef inline bint _is_root(self, Py_ssize_t idx, int64_t now) noexcept:
        cdef uint8_t flags = self.flags[idx]
        if flags & PHANTOM or not flags & F_ROOT:
            return False
        return not flags & F_EXPIRES or now <= self.expire[idx]

    def live_leases(self, int64_t now):
        """Packed keys of the leases that are roots at `now` (unexpired)."""
        cdef Py_ssize_t i
        return [self._key(i) for i in range(self.n)
                if self.keybuf[self.koff[i]] == LEASE_TYPE and self._is_root(i, now)]

    cdef _resolve_conds(self, int64_t now, int64_t then):
        """Turn the conditional references live at `now` or at `then` (the first marking's time)
        into edges; keep the others pending."""
        cdef list pending = []
        for cond in self._pending + self._conds:
            src, cdst, op, duration = cond
            for used in self._usedat.get(cdst, ()):
                if _cond_holds(op, now - used, duration) or _cond_holds(op, then - used, duration):
                    self._edge(src, cdst, FOLLOW_NORMAL)
                    break
            else:
                pending.append(cond)
        self._pending = pending
        self._conds = []

    cdef list _intern_all(self, keys):
        cdef bytes kb
        out = []
        for key in keys:
            kb = _as_bytes(key)
            if not kb:
                raise InvalidArgument("empty node key among the extra roots")
            out.append(self._intern(<const uint8_t*>PyBytes_AS_STRING(kb), PyBytes_GET_SIZE(kb)))
        return out

    cdef inline uint8_t _follow(self, uint8_t kind, uint8_t bit, Py_ssize_t dst) noexcept nogil:
        """The bit an edge of `kind` passes on from a node marked with `bit` (0: not followed)."""
        if kind == FOLLOW_ALWAYS:
            return bit
        if kind == FOLLOW_NORMAL:
            return 0 if bit == SEEN_FLAT else SEEN_NORMAL
        if self.keybuf[self.koff[dst]] == INGEST_TYPE:
            return SEEN_NORMAL
        return bit

    cdef inline Py_ssize_t _visit(self, int32_t* queue, uint8_t* qbit, Py_ssize_t tail, Py_ssize_t src,
                                  Py_ssize_t dst, uint8_t tbit, Py_ssize_t* newly) noexcept nogil:
        if tbit == 0 or self.state[dst] & tbit:
            return tail
        if not self.state[dst]:
            self.parent[dst] = <int32_t>src
            newly[0] += 1
        self.state[dst] |= tbit
        queue[tail] = <int32_t>dst
        qbit[tail] = tbit
        return tail + 1

    cdef Py_ssize_t _traverse(self, int32_t* queue, uint8_t* qbit, Py_ssize_t tail) noexcept nogil:
        """FIFO traversal from the queued nodes; returns how many nodes it reached first."""
        cdef Py_ssize_t head = 0, e, idx, dst
        cdef Py_ssize_t newly = 0
        cdef uint8_t bit
        while head < tail:
            idx = queue[head]
            bit = qbit[head]
            head += 1
            if idx < self.nbase:
                for e in range(self.bstart[idx], self.bstart[idx + 1]):
                    dst = self.badj[e]
                    tail = self._visit(queue, qbit, tail, idx, dst, self._follow(self.bkind[e], bit, dst), &newly)
            if idx < self.dncap:
                e = self.dhead[idx]
                while e != -1:
                    dst = self.edst[e]
                    tail = self._visit(queue, qbit, tail, idx, dst, self._follow(self.ekind[e], bit, dst), &newly)
                    e = self.dnext[e]
        return newly

    def mark(self, int64_t now, extra_roots=()):
        """Mark everything reachable at time `now` (ns) from the roots and `extra_roots`."""
        cdef Py_ssize_t i, j, e, tail, n, idx
        cdef int32_t* start
        cdef int32_t* queue
        cdef uint8_t* qbit
        cdef uint8_t bit
        self.marked_at = now
        self._resolve_conds(now, now)
        extra = self._intern_all(extra_roots)
        n = self.n
        free(self.state); free(self.parent); free(self.bstart); free(self.badj); free(self.bkind)
        free(self.dhead); free(self.dtail); free(self.dnext)
        self.bstart = self.badj = self.dhead = self.dtail = self.dnext = NULL
        self.bkind = NULL
        self.nbase = self.dncap = self.decap = 0
        self.marked = False
        self.state = <uint8_t*>malloc(n + 1)
        self.parent = <int32_t*>malloc((n + 1) * sizeof(int32_t))
        self.bstart = start = <int32_t*>malloc((n + 1) * sizeof(int32_t))
        self.badj = <int32_t*>malloc((self.ne + 1) * sizeof(int32_t))
        self.bkind = <uint8_t*>malloc(self.ne + 1)
        queue = <int32_t*>malloc((2 * n + 1) * sizeof(int32_t))
        qbit = <uint8_t*>malloc(2 * n + 1)
        try:
            if (self.state == NULL or self.parent == NULL or start == NULL or self.badj == NULL
                    or self.bkind == NULL or queue == NULL or qbit == NULL):
                raise MemoryError()
            memset(self.state, 0, n + 1)
            memset(start, 0, (n + 1) * sizeof(int32_t))
            for i in range(n):
                self.parent[i] = -1
            # CSR, stable: edges of one source keep their insertion order
            for e in range(self.ne):
                start[self.esrc[e] + 1] += 1
            for i in range(n):
                start[i + 1] += start[i]
            for e in range(self.ne):
                j = start[self.esrc[e]]
                self.badj[j] = self.edst[e]
                self.bkind[j] = self.ekind[e]
                start[self.esrc[e]] += 1
            for i in range(n - 1, 0, -1):
                start[i] = start[i - 1]
            if n:
                start[0] = 0
            self.nbase = n
            self.nlinked = self.ne
            tail = 0
            for i in range(n):
                if self._is_root(i, now):
                    bit = SEEN_FLAT if self.flags[i] & F_FLAT else SEEN_NORMAL
                    if not self.state[i] & bit:
                        self.state[i] |= bit
                        queue[tail] = <int32_t>i
                        qbit[tail] = bit
                        tail += 1
            for idx in extra:
                if not self.state[idx] & SEEN_NORMAL:
                    self.state[idx] |= SEEN_NORMAL
                    queue[tail] = <int32_t>idx
                    qbit[tail] = SEEN_NORMAL
                    tail += 1
            with nogil:
                self._traverse(queue, qbit, tail)
            self.nmarked = n
            self.marked = True
        finally:
            free(queue); free(qbit)

    cdef void _grow_marking(self, Py_ssize_t n) except *:
        """Room in the marking and the edge lists for nodes and edges added since."""
        cdef Py_ssize_t i, cap
        if n > self.nmarked:
            self.state = <uint8_t*>_realloc(self.state, n + 1)
            self.parent = <int32_t*>_realloc(self.parent, (n + 1) * sizeof(int32_t))
            memset(self.state + self.nmarked, 0, n + 1 - self.nmarked)
            for i in range(self.nmarked, n + 1):
                self.parent[i] = -1
        if n > self.dncap or self.dhead == NULL:
            cap = self.dncap if self.dncap > 0 else 64
            while cap < n:
                cap *= 2
            self.dhead = <int32_t*>_realloc(self.dhead, cap * sizeof(int32_t))
            self.dtail = <int32_t*>_realloc(self.dtail, cap * sizeof(int32_t))
            for i in range(self.dncap, cap):
                self.dhead[i] = -1
                self.dtail[i] = -1
            self.dncap = cap
        if self.ne > self.decap:
            self.dnext = <int32_t*>_grow(self.dnext, &self.decap, self.ne, sizeof(int32_t))

    def remark(self, int64_t now, gray=()):
        """Continue the marking at time `now`: follow every edge added since (from the nodes
        marked), mark the `gray` nodes and everything they reach. A conditional reference is
        followed when it holds at `now` or at the first marking's time, so the continued marking
        keeps what either instant would. Returns how many nodes it reached that were not marked
        before."""
        cdef Py_ssize_t e, n, idx, src, dst, first, tail = 0
        cdef Py_ssize_t newly = 0
        cdef int32_t* queue
        cdef uint8_t* qbit
        if not self.marked:
            raise InvalidArgument("mark() has not run")
        self._resolve_conds(now, self.marked_at)
        grays = self._intern_all(gray)
        n = self.n
        self._grow_marking(n)
        first = self.nlinked
        for e in range(first, self.ne):
            src = self.esrc[e]
            self.dnext[e] = -1
            if self.dtail[src] == -1:
                self.dhead[src] = <int32_t>e
            else:
                self.dnext[self.dtail[src]] = <int32_t>e
            self.dtail[src] = <int32_t>e
        self.nlinked = self.ne
        queue = <int32_t*>malloc((2 * n + 1) * sizeof(int32_t))
        qbit = <uint8_t*>malloc(2 * n + 1)
        try:
            if queue == NULL or qbit == NULL:
                raise MemoryError()
            for e in range(first, self.ne):
                src = self.esrc[e]
                dst = self.edst[e]
                if self.state[src] & SEEN_NORMAL:
                    tail = self._visit(queue, qbit, tail, src, dst,
                                       self._follow(self.ekind[e], SEEN_NORMAL, dst), &newly)
                if self.state[src] & SEEN_FLAT:
                    tail = self._visit(queue, qbit, tail, src, dst,
                                       self._follow(self.ekind[e], SEEN_FLAT, dst), &newly)
            for idx in grays:
                if not self.state[idx] & SEEN_NORMAL:
                    if not self.state[idx]:
                        newly += 1
                    self.state[idx] |= SEEN_NORMAL
                    queue[tail] = <int32_t>idx
                    qbit[tail] = SEEN_NORMAL
                    tail += 1
            with nogil:
                newly += self._traverse(queue, qbit, tail)
            self.nmarked = n
        finally:
            free(queue); free(qbit)
        return newly

    # -- results -----------------------------------------------------------------------------------
    cdef void _require_marked(self) except *:
        if not self.marked:
            raise InvalidArgument("mark() has not run")
        if self.nmarked != self.n:
            raise InvalidArgument("nodes were added since the marking: remark() first")

    cdef Py_ssize_t _lookup(self, key) except -2:
        cdef bytes k = _as_bytes(key)
        cdef Py_ssize_t idx
        if not k:
            return -1
        idx = self._find(<const uint8_t*>PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k))
        return idx if idx >= 0 and idx < self.n else -1

    def is_reachable(self, key):
        self._require_marked()
        cdef Py_ssize_t idx = self._lookup(key)
        return idx >= 0 and self.state[idx] != 0

    def unreachable(self):
        """Packed keys of existing, collectible nodes that nothing reaches (table order)."""
        self._require_marked()
        cdef Py_ssize_t i
        return [self._key(i) for i in range(self.n)
                if not self.state[i] and not self.flags[i] & (PHANTOM | F_HIDDEN)]

    def reachable(self):
        """Packed keys of existing nodes that are reached (sandboxes excluded)."""
        self._require_marked()
        cdef Py_ssize_t i
        return [self._key(i) for i in range(self.n)
                if self.state[i] and not self.flags[i] & PHANTOM
                and self.keybuf[self.koff[i]] != SANDBOX_TYPE]

    def chain(self, key):
        """Packed keys from a root down to `key` along the marking, or None if unreached."""
        self._require_marked()
        cdef Py_ssize_t idx = self._lookup(key)
        if idx < 0 or not self.state[idx]:
            return None
        path = []
        while idx != -1:
            path.append(self._key(idx))
            idx = self.parent[idx]
        path.reverse()
        return path

    @property
    def node_count(self):
        return self.n

    @property
    def edge_count(self):
        return self.ne


cdef int _marker_node_row(void* ctx, const uint8_t* key, Py_ssize_t ksize,
                          const uint8_t* value, Py_ssize_t vsize) except -1:
    return (<Marker>ctx)._load_one(key, ksize, value, vsize, False)


cdef int _marker_lease_row(void* ctx, const uint8_t* key, Py_ssize_t ksize,
                           const uint8_t* value, Py_ssize_t vsize) except -1:
    return (<Marker>ctx)._lease_row(key, ksize)
