# The mark phase: tricolor marking over the node table (see cargohold/gc/index.py for the
# value layout). Its pure-Python twin is cargohold._fallback.Marker; both give identical
# results, chains included (same interning order, same edge order, same FIFO traversal).
#
# Memory: keys live in one growing byte buffer, located by an open-addressing hash table
# of int32 indexes; edges are int32 pairs turned into a CSR adjacency before marking.

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
    cdef uint64_t h = 1469598103934665603ULL
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ p[i]) * 1099511628211ULL
    return h ^ (h >> 29)


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


cdef class Marker:
    """Tricolor marking over the node table (compiled).

    Feed it every node-table entry (`add_nodes`) and lease-resource row
    (`add_lease_resources`), then `mark(now, extra_roots)`. Nodes are packed
    node keys (bytes). Targets that have no entry become *phantom* nodes:
    reachable through, never reported as existing.
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
    # edges, then their CSR form
    cdef int32_t* esrc
    cdef int32_t* edst
    cdef uint8_t* ekind
    cdef Py_ssize_t ne, ecap
    cdef list _conds
    # marking
    cdef uint8_t* state
    cdef int32_t* parent
    cdef bint marked

    def __cinit__(self, collector_labels=()):
        self._labels = [(bytes(s), int(t)) for s, t in collector_labels]
        self._usedat = {}
        self._conds = []
        self.tcap = 1024
        self.table = <int32_t*>malloc(self.tcap * sizeof(int32_t))
        if self.table == NULL:
            raise MemoryError()
        memset(self.table, 0xFF, self.tcap * sizeof(int32_t))

    def __dealloc__(self):
        free(self.keybuf); free(self.koff); free(self.flags); free(self.expire); free(self.table)
        free(self.esrc); free(self.edst); free(self.ekind); free(self.state); free(self.parent)

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
        cdef bytes k, v
        cdef Py_ssize_t src
        for key, value in entries:
            k = _as_bytes(key)
            v = _as_bytes(value)
            src = self._intern(<const uint8_t*>PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k))
            if not self.flags[src] & PHANTOM:
                raise InvalidArgument(f"node {k!r} given twice")
            if not self._parse(src, <const uint8_t*>PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k),
                               <const uint8_t*>PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v)):
                raise Corrupted(f"damaged garbage-collection entry for node {k!r}")

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
        cdef Py_ssize_t size, ns_end, lease_end, lease, res
        cdef bytes raw, lease_key, res_key
        cdef const uint8_t* k
        for key, _ in rows:
            raw = _as_bytes(key)
            k = <const uint8_t*>PyBytes_AS_STRING(raw)
            size = PyBytes_GET_SIZE(raw)
            ns_end = 0
            while ns_end < size and k[ns_end] != 0:
                ns_end += 1
            lease_end = ns_end + 1
            while lease_end < size and k[lease_end] != 0:
                lease_end += 1
            if lease_end + 1 >= size:
                raise Corrupted(f"damaged lease resource row {raw!r}")
            lease_key = bytes((LEASE_TYPE,)) + raw[:lease_end]
            res_key = raw[lease_end + 1:lease_end + 2] + raw[:ns_end + 1] + raw[lease_end + 2:]
            lease = self._intern(lease_key, len(lease_key))
            res = self._intern(res_key, len(res_key))
            self._edge(lease, res, FOLLOW_LEASE)

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

    def mark(self, int64_t now, extra_roots=()):
        """Mark everything reachable at time `now` (ns) from the roots and `extra_roots`."""
        cdef Py_ssize_t i, j, e, head, tail, n, idx, dst
        cdef int32_t* start
        cdef int32_t* adj
        cdef uint8_t* akind
        cdef int32_t* queue
        cdef uint8_t* qbit
        cdef uint8_t bit, tbit, kind
        cdef bytes kb
        for src, cdst, op, duration in self._conds:
            for used in self._usedat.get(cdst, ()):
                age = now - used
                if (op == 0x3C and age < duration) or (op == 0x3E and age > duration):
                    self._edge(src, cdst, FOLLOW_NORMAL)
                    break
        self._conds = []
        extra = []
        for key in extra_roots:
            kb = _as_bytes(key)
            if not kb:
                raise InvalidArgument("empty node key among the extra roots")
            extra.append(self._intern(<const uint8_t*>PyBytes_AS_STRING(kb), PyBytes_GET_SIZE(kb)))
        n = self.n
        free(self.state); free(self.parent)
        self.state = <uint8_t*>malloc(n + 1)
        self.parent = <int32_t*>malloc((n + 1) * sizeof(int32_t))
        start = <int32_t*>malloc((n + 1) * sizeof(int32_t))
        adj = <int32_t*>malloc((self.ne + 1) * sizeof(int32_t))
        akind = <uint8_t*>malloc(self.ne + 1)
        queue = <int32_t*>malloc((2 * n + 1) * sizeof(int32_t))
        qbit = <uint8_t*>malloc(2 * n + 1)
        try:
            if (self.state == NULL or self.parent == NULL or start == NULL or adj == NULL
                    or akind == NULL or queue == NULL or qbit == NULL):
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
                adj[j] = self.edst[e]
                akind[j] = self.ekind[e]
                start[self.esrc[e]] += 1
            for i in range(n - 1, 0, -1):
                start[i] = start[i - 1]
            if n:
                start[0] = 0
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
            head = 0
            with nogil:
                while head < tail:
                    idx = queue[head]
                    bit = qbit[head]
                    head += 1
                    for e in range(start[idx], start[idx + 1]):
                        dst = adj[e]
                        kind = akind[e]
                        if kind == FOLLOW_ALWAYS:
                            tbit = bit
                        elif kind == FOLLOW_NORMAL:
                            if bit == SEEN_FLAT:
                                continue
                            tbit = SEEN_NORMAL
                        elif self.keybuf[self.koff[dst]] == INGEST_TYPE:
                            tbit = SEEN_NORMAL
                        else:
                            tbit = bit
                        if self.state[dst] & tbit:
                            continue
                        if not self.state[dst]:
                            self.parent[dst] = <int32_t>idx
                        self.state[dst] |= tbit
                        queue[tail] = <int32_t>dst
                        qbit[tail] = tbit
                        tail += 1
            self.marked = True
        finally:
            free(start); free(adj); free(akind); free(queue); free(qbit)

    # -- results -----------------------------------------------------------------------------------
    cdef void _require_marked(self) except *:
        if not self.marked:
            raise InvalidArgument("mark() has not run")

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
