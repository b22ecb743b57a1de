# fsck's pass over the records: the compiled twin of cargohold._fallback.TableCheck (same
# problems, in the same order). The common record (ASCII text, no containerd.io/gc. label) is
# read straight from its msgpack bytes and its node-table entry built and compared in C; any
# other record goes through entry_of, as in the twin. The msgpack reader here only recognises
# well-formed records: whatever it does not recognise goes to the Python path, which decides.

from libc.string cimport memchr
from libc.stdio cimport snprintf

cdef enum:
    V_ABSENT = 0
    V_INT = 1
    V_STR = 2
    V_MAP = 3
    V_OTHER = 4
    MP_DEPTH = 32
    ENTRY_MAX = 1024
    # fields a fast record may have
    F_S = 0
    F_I = 1
    F_PI = 2
    F_K = 3
    F_C = 4
    F_U = 5
    F_B = 6
    F_P = 7
    F_SN = 8
    F_R = 9
    F_SB = 10
    F_SX = 11
    F_L = 12
    F_T = 13
    F_COUNT = 14
    # record kinds with a fast path
    R_BLOB = 1
    R_SNAPSHOT = 2
    R_IMAGE = 3
    R_CONTAINER = 4
    R_SANDBOX = 5
    # flags of a backend snapshot's item
    REFERENCED = 1
    HAS_DIR = 2

cdef struct MpVal:
    int kind
    int64_t ival
    Py_ssize_t start
    Py_ssize_t length

cdef inline uint32_t _be16(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 8) | p[1]


cdef inline uint32_t _be32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline bint _ascii(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if p[i] >= 0x80:
            return False
    return True


cdef int _mp_str(const uint8_t* p, Py_ssize_t* pos, Py_ssize_t end, Py_ssize_t* start, Py_ssize_t* length) noexcept nogil:
    """An ASCII string at pos: 1 (read), 0 (not a string), -1 (damaged or not ASCII)."""
    cdef Py_ssize_t at = pos[0], n, head
    cdef uint8_t b
    if at >= end:
        return -1
    b = p[at]
    if 0xa0 <= b <= 0xbf:
        n, head = b & 0x1f, 1
    elif b == 0xd9:
        if at + 2 > end:
            return -1
        n, head = p[at + 1], 2
    elif b == 0xda:
        if at + 3 > end:
            return -1
        n, head = _be16(p + at + 1), 3
    elif b == 0xdb:
        if at + 5 > end:
            return -1
        n, head = _be32(p + at + 1), 5
    else:
        return 0
    if at + head + n > end or not _ascii(p + at + head, n):
        return -1
    start[0] = at + head
    length[0] = n
    pos[0] = at + head + n
    return 1


cdef int _mp_int(const uint8_t* p, Py_ssize_t* pos, Py_ssize_t end, int64_t* out) noexcept nogil:
    """An integer at pos that fits int64: 1 (read), 0 (not an integer), -1 (damaged or too large)."""
    cdef Py_ssize_t at = pos[0], size
    cdef uint8_t b
    cdef uint64_t u
    cdef int64_t v
    cdef int i
    if at >= end:
        return -1
    b = p[at]
    if b <= 0x7f:
        out[0] = b
        pos[0] = at + 1
        return 1
    if b >= 0xe0:
        out[0] = <int64_t>b - 256
        pos[0] = at + 1
        return 1
    if 0xcc <= b <= 0xcf:
        size = 1 << (b - 0xcc)
        if at + 1 + size > end:
            return -1
        u = 0
        for i in range(size):
            u = (u << 8) | p[at + 1 + i]
        if u > <uint64_t>0x7FFFFFFFFFFFFFFF:
            return -1
        out[0] = <int64_t>u
        pos[0] = at + 1 + size
        return 1
    if 0xd0 <= b <= 0xd3:
        size = 1 << (b - 0xd0)
        if at + 1 + size > end:
            return -1
        u = 0
        for i in range(size):
            u = (u << 8) | p[at + 1 + i]
        if size < 8 and u >> (8 * size - 1):
            u |= ~((<uint64_t>1 << (8 * size)) - 1)  # sign-extend
        out[0] = <int64_t>u
        pos[0] = at + 1 + size
        return 1
    return 0


cdef Py_ssize_t _mp_map(const uint8_t* p, Py_ssize_t* pos, Py_ssize_t end) noexcept nogil:
    """The entry count of a map at pos (pos moves past its header), or -1."""
    cdef Py_ssize_t at = pos[0]
    cdef uint8_t b
    if at >= end:
        return -1
    b = p[at]
    if 0x80 <= b <= 0x8f:
        pos[0] = at + 1
        return b & 0x0f
    if b == 0xde and at + 3 <= end:
        pos[0] = at + 3
        return _be16(p + at + 1)
    if b == 0xdf and at + 5 <= end:
        pos[0] = at + 5
        return _be32(p + at + 1)
    return -1


cdef int _mp_skip(const uint8_t* p, Py_ssize_t* pos, Py_ssize_t end, int depth) noexcept nogil:
    """Step over one value of any type: 0, or -1 (damaged, too deep, or text that is not ASCII)."""
    cdef Py_ssize_t at = pos[0], n = 0, i, start, length, size
    cdef uint8_t b
    cdef int64_t ignored
    cdef int rc
    if at >= end or depth > MP_DEPTH:
        return -1
    rc = _mp_str(p, pos, end, &start, &length)
    if rc:
        return 0 if rc > 0 else -1
    rc = _mp_int(p, pos, end, &ignored)
    if rc:
        return 0 if rc > 0 else -1
    b = p[at]
    if b == 0xc0 or b == 0xc2 or b == 0xc3:
        pos[0] = at + 1
        return 0
    if 0x80 <= b <= 0x8f or b == 0xde or b == 0xdf:
        n = _mp_map(p, pos, end)
        if n < 0:
            return -1
        for i in range(2 * n):
            if _mp_skip(p, pos, end, depth + 1) < 0:
                return -1
        return 0
    if 0x90 <= b <= 0x9f or b == 0xdc or b == 0xdd:
        if b <= 0x9f:
            n, at = b & 0x0f, at + 1
        elif b == 0xdc and at + 3 <= end:
            n, at = _be16(p + at + 1), at + 3
        elif b == 0xdd and at + 5 <= end:
            n, at = _be32(p + at + 1), at + 5
        else:
            return -1
        pos[0] = at
        for i in range(n):
            if _mp_skip(p, pos, end, depth + 1) < 0:
                return -1
        return 0
    if b == 0xc4 or b == 0xc5 or b == 0xc6:  # bin
        if b == 0xc4 and at + 2 <= end:
            size, at = p[at + 1], at + 2
        elif b == 0xc5 and at + 3 <= end:
            size, at = _be16(p + at + 1), at + 3
        elif b == 0xc6 and at + 5 <= end:
            size, at = _be32(p + at + 1), at + 5
        else:
            return -1
        if at + size > end:
            return -1
        pos[0] = at + size
        return 0
    if b == 0xca or b == 0xcb:  # float
        size = 5 if b == 0xca else 9
        if at + size > end:
            return -1
        pos[0] = at + size
        return 0
    return -1  # ext types and reserved bytes: the Python path decides


cdef int _field_of(const uint8_t* k, Py_ssize_t n) noexcept nogil:
    if n == 1:
        if k[0] == b's': return F_S
        if k[0] == b'i': return F_I
        if k[0] == b'k': return F_K
        if k[0] == b'c': return F_C
        if k[0] == b'u': return F_U
        if k[0] == b'b': return F_B
        if k[0] == b'p': return F_P
        if k[0] == b'r': return F_R
        if k[0] == b'l': return F_L
        if k[0] == b't': return F_T
    elif n == 2:
        if k[0] == b'p' and k[1] == b'i': return F_PI
        if k[0] == b's' and k[1] == b'n': return F_SN
        if k[0] == b's' and k[1] == b'b': return F_SB
        if k[0] == b's' and k[1] == b'x': return F_SX
    return -1


cdef int _read_record(const uint8_t* p, Py_ssize_t end, MpVal* vals) noexcept nogil:
    """The fields of a top-level record map into vals: 0, or -1 (the Python path decides)."""
    cdef Py_ssize_t pos = 0, n, i, kstart, klen, vstart
    cdef int field, rc
    cdef int64_t iv
    for i in range(F_COUNT):
        vals[i].kind = V_ABSENT
    n = _mp_map(p, &pos, end)
    if n < 0:
        return -1
    for i in range(n):
        if _mp_str(p, &pos, end, &kstart, &klen) <= 0:
            return -1  # a key that is not ASCII text
        field = _field_of(p + kstart, klen)
        vstart = pos
        if field < 0:
            if _mp_skip(p, &pos, end, 1) < 0:
                return -1
            continue
        if vals[field].kind != V_ABSENT:
            return -1  # a field given twice
        rc = _mp_int(p, &pos, end, &iv)
        if rc > 0:
            vals[field].kind = V_INT
            vals[field].ival = iv
            continue
        if rc < 0:
            return -1
        rc = _mp_str(p, &pos, end, &vals[field].start, &vals[field].length)
        if rc > 0:
            vals[field].kind = V_STR
            continue
        if rc < 0:
            return -1
        vals[field].kind = V_MAP if (0x80 <= p[pos] <= 0x8f or p[pos] == 0xde or p[pos] == 0xdf) else V_OTHER
        vals[field].start = vstart
        if _mp_skip(p, &pos, end, 1) < 0:
            return -1
    return 0 if pos == end else -1


cdef int _plain_labels(const uint8_t* p, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
    """1 if the labels map at start holds text only and no containerd.io/gc. key, else 0."""
    cdef Py_ssize_t pos = start, n, i, kstart, klen, vstart, vlen
    cdef const char* prefix = b"containerd.io/gc."
    n = _mp_map(p, &pos, end)
    if n < 0:
        return 0
    for i in range(n):
        if _mp_str(p, &pos, end, &kstart, &klen) <= 0 or _mp_str(p, &pos, end, &vstart, &vlen) <= 0:
            return 0
        if klen >= 17 and memcmp(p + kstart, prefix, 17) == 0:
            return 0
    return 1


cdef int _target_digest(const uint8_t* p, Py_ssize_t start, Py_ssize_t end, Py_ssize_t* dstart,
                        Py_ssize_t* dlen) noexcept nogil:
    """1 if the image target map at start has exactly one ``d`` text field (found), else 0."""
    cdef Py_ssize_t pos = start, n, i, kstart, klen
    cdef int found = 0, rc
    n = _mp_map(p, &pos, end)
    if n < 0:
        return 0
    for i in range(n):
        if _mp_str(p, &pos, end, &kstart, &klen) <= 0:
            return 0
        if klen == 1 and p[kstart] == b'd':
            if found:
                return 0
            rc = _mp_str(p, &pos, end, dstart, dlen)
            if rc <= 0:
                return 0
            found = 1
        elif _mp_skip(p, &pos, end, 1) < 0:
            return 0
    return found


cdef inline bint _has(MpVal* vals, int field, int kind) noexcept nogil:
    return vals[field].kind == kind


cdef int _read_backend(const uint8_t* p, Py_ssize_t end, int64_t* sid, int64_t* kind, Py_ssize_t* pstart,
                       Py_ssize_t* plen) noexcept nogil:
    """``id``, ``kind`` and ``parent`` of a backend snapshot's record: 0, or -1 (the Python path decides)."""
    cdef Py_ssize_t pos = 0, n, i, kstart, klen
    cdef int seen = 0, bit
    n = _mp_map(p, &pos, end)
    if n < 0:
        return -1
    for i in range(n):
        if _mp_str(p, &pos, end, &kstart, &klen) <= 0:
            return -1
        bit = 0
        if klen == 2 and memcmp(p + kstart, b"id", 2) == 0:
            bit = 1
            if seen & bit or _mp_int(p, &pos, end, sid) <= 0:
                return -1
        elif klen == 4 and memcmp(p + kstart, b"kind", 4) == 0:
            bit = 2
            if seen & bit or _mp_int(p, &pos, end, kind) <= 0:
                return -1
        elif klen == 6 and memcmp(p + kstart, b"parent", 6) == 0:
            bit = 4
            if seen & bit or _mp_str(p, &pos, end, pstart, plen) <= 0:
                return -1
        elif _mp_skip(p, &pos, end, 1) < 0:
            return -1
        seen |= bit
    return 0 if seen == 7 and pos == end else -1


cdef struct Item:
    uint64_t hash
    Py_ssize_t key_off
    Py_ssize_t key_len
    int64_t a
    int64_t b
    int64_t c
    Py_ssize_t x_off
    Py_ssize_t x_len
    Py_ssize_t y_off
    Py_ssize_t y_len
    uint8_t flag


cdef class _Spans:
    """Byte strings kept in one arena and found through an open-addressing hash table, an `Item`
    each (in insertion order): the compiled twin's dicts and sets."""

    cdef uint8_t* arena
    cdef Py_ssize_t alen, acap
    cdef Item* items
    cdef Py_ssize_t n, ncap
    cdef int32_t* slots
    cdef Py_ssize_t scap

    def __cinit__(self):
        self.scap = 64
        self.slots = <int32_t*>malloc(self.scap * sizeof(int32_t))
        if self.slots == NULL:
            raise MemoryError()
        memset(self.slots, 0xFF, self.scap * sizeof(int32_t))

    def __dealloc__(self):
        free(self.arena); free(self.items); free(self.slots)

    cdef Py_ssize_t store(self, const uint8_t* p, Py_ssize_t size) except -1:
        """Copy bytes into the arena; their offset."""
        cdef Py_ssize_t at = self.alen
        self.arena = <uint8_t*>_grow(self.arena, &self.acap, self.alen + size + 1, 1)
        if size:
            memcpy(self.arena + at, p, size)
        self.alen += size
        return at

    cdef Py_ssize_t _slot(self, const uint8_t* key, Py_ssize_t size, uint64_t h) noexcept:
        """The slot holding `key`, or the empty slot where it would go."""
        cdef Py_ssize_t slot = h & (self.scap - 1)
        cdef int32_t idx
        cdef Item* item
        while True:
            idx = self.slots[slot]
            if idx == -1:
                return slot
            item = &self.items[idx]
            if item.hash == h and item.key_len == size and memcmp(self.arena + item.key_off, key, size) == 0:
                return slot
            slot = (slot + 1) & (self.scap - 1)

    cdef Py_ssize_t find(self, const uint8_t* key, Py_ssize_t size) noexcept:
        """The item of `key`, or -1."""
        return self.slots[self._slot(key, size, _hash(key, size))]

    cdef void _rehash(self) except *:
        cdef Py_ssize_t cap = self.scap * 2, i, slot
        cdef int32_t* slots = <int32_t*>malloc(cap * sizeof(int32_t))
        if slots == NULL:
            raise MemoryError()
        memset(slots, 0xFF, cap * sizeof(int32_t))
        for i in range(self.n):
            slot = self.items[i].hash & (cap - 1)
            while slots[slot] != -1:
                slot = (slot + 1) & (cap - 1)
            slots[slot] = <int32_t>i
        free(self.slots)
        self.slots = slots
        self.scap = cap

    cdef Py_ssize_t add(self, const uint8_t* key, Py_ssize_t size) except -2:
        """A new item for `key` (its index), or -1 if the key has one already. `key` must not
        point into this table's arena."""
        cdef uint64_t h = _hash(key, size)
        cdef Py_ssize_t slot, off
        if (self.n + 1) * 2 > self.scap:
            self._rehash()
        slot = self._slot(key, size, h)
        if self.slots[slot] != -1:
            return -1
        self.items = <Item*>_grow(self.items, &self.ncap, self.n + 1, sizeof(Item))
        off = self.store(key, size)
        memset(&self.items[self.n], 0, sizeof(Item))
        self.items[self.n].hash = h
        self.items[self.n].key_off = off
        self.items[self.n].key_len = size
        self.slots[slot] = <int32_t>self.n
        self.n += 1
        return self.n - 1

    cdef bytes key(self, Py_ssize_t idx):
        return (<char*>self.arena)[self.items[idx].key_off:self.items[idx].key_off + self.items[idx].key_len]

    cdef bytes x(self, Py_ssize_t idx):
        return (<char*>self.arena)[self.items[idx].x_off:self.items[idx].x_off + self.items[idx].x_len]

    cdef bytes y(self, Py_ssize_t idx):
        return (<char*>self.arena)[self.items[idx].y_off:self.items[idx].y_off + self.items[idx].y_len]


cdef inline bint _same(_Spans a, Py_ssize_t aoff, Py_ssize_t alen, _Spans b, Py_ssize_t boff, Py_ssize_t blen) noexcept:
    return alen == blen and memcmp(a.arena + aoff, b.arena + boff, alen) == 0


cdef inline bint _prefixed(bytes key, bytes prefix) noexcept:
    cdef Py_ssize_t n = PyBytes_GET_SIZE(prefix)
    return PyBytes_GET_SIZE(key) >= n and memcmp(PyBytes_AS_STRING(key), PyBytes_AS_STRING(prefix), n) == 0


cdef class TableCheck:
    """fsck's pass over the objects table against the node table (compiled; see the twin in
    cargohold._fallback for the contract)."""

    cdef object _entry_of
    cdef object _backend_of
    cdef public list problems
    cdef public list blobs
    cdef public list others
    cdef public dict max_ids
    cdef public Py_ssize_t records
    cdef public Py_ssize_t matched
    cdef object _rows
    cdef bytes _rprefix
    cdef bytes _rkey
    cdef bytes _rval
    cdef dict _backends
    cdef dict _missing
    cdef uint8_t _ebuf[ENTRY_MAX]

    def __cinit__(self, entry_of, backend_of, problems):
        self._entry_of = entry_of
        self._backend_of = backend_of
        self.problems = problems
        self.blobs = []
        self.others = []
        self.max_ids = {}
        self.records = 0
        self.matched = 0
        self._rows = iter(())
        self._rprefix = b""
        self._rkey = None
        self._rval = None
        self._backends = {}
        self._missing = {}

    # -- backends ---------------------------------------------------------------------------

    def backend(self, name, rows, dirs):
        """Register snapshotter `name`'s backend (see the twin)."""
        cdef _Spans table = _Spans(), ids = _Spans()
        cdef bytes key, raw
        cdef int64_t sid, kind, value
        cdef Py_ssize_t pstart, plen, idx
        cdef const uint8_t* p
        for row in rows:
            key = _as_bytes(row[0])
            raw = _as_bytes(row[1])
            p = <const uint8_t*>PyBytes_AS_STRING(raw)
            if _read_backend(p, PyBytes_GET_SIZE(raw), &sid, &kind, &pstart, &plen) == 0:
                parent = None
            else:
                try:
                    sid, kind, parent = self._backend_of(raw)
                except Corrupted as exc:
                    self.problems.append(("damaged-backend-record", name, key, str(exc)))
                    continue
            idx = table.add(<const uint8_t*>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key))
            if idx < 0:
                continue
            table.items[idx].a = sid
            table.items[idx].b = kind
            if parent is None:
                table.items[idx].x_off = table.store(p + pstart, plen)
                table.items[idx].x_len = plen
            else:
                table.items[idx].x_off = table.store(<const uint8_t*>PyBytes_AS_STRING(parent), PyBytes_GET_SIZE(parent))
                table.items[idx].x_len = PyBytes_GET_SIZE(parent)
        for d in dirs:
            value = d
            ids.add(<const uint8_t*>&value, 8)
        for idx in range(table.n):  # whether each one's directory exists, looked up once here
            value = table.items[idx].a
            if ids.find(<const uint8_t*>&value, 8) >= 0:
                table.items[idx].flag = HAS_DIR
        self._backends[name] = (table, ids)
        self._missing[name] = set()

    def unreferenced(self, name):
        """(backend key, id) of each backend snapshot of `name` no record named, in key order."""
        cdef _Spans table = self._backends[name][0]
        cdef Py_ssize_t i
        return [(table.key(i), table.items[i].a) for i in range(table.n) if not table.items[i].flag & REFERENCED]

    def backend_ids(self, name):
        """The ids of every backend snapshot of `name`."""
        cdef _Spans table = self._backends[name][0]
        cdef Py_ssize_t i
        return {table.items[i].a for i in range(table.n)}

    def is_referenced(self, name, bytes key):
        """Whether some record of the groups seen names backend key `key` of `name`."""
        cdef _Spans table
        cdef Py_ssize_t idx
        if name in self._backends:
            table = self._backends[name][0]
            idx = table.find(<const uint8_t*>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key))
            if idx >= 0 and table.items[idx].flag & REFERENCED:
                return True
        return key in self._missing.get(name, ())

    # -- the node-table rows ---------------------------------------------------------------

    cdef void _next_row(self) except *:
        row = next(self._rows, None)
        if row is not None:
            self._rkey = _as_bytes(row[0])
            if _prefixed(self._rkey, self._rprefix):
                self._rval = _as_bytes(row[1])
                return
        self._rows = iter(())
        self._rkey = None
        self._rval = None

    def begin_type(self, bytes prefix, rows):
        """The node-table rows of the next node type (keys starting with `prefix`), in key order."""
        self._rows = iter(rows)
        self._rprefix = prefix
        self._next_row()

    def end_type(self):
        """What is left of the node type's rows had no record: orphans."""
        while self._rkey is not None:
            self.problems.append(("orphan-node", self._rkey, self._rval))
            self._next_row()

    cdef int _cmp(self, const uint8_t* head, Py_ssize_t hlen, const uint8_t* ident, Py_ssize_t ilen) noexcept:
        """The current row's key against head + ident: <0, 0, >0."""
        cdef const uint8_t* k = <const uint8_t*>PyBytes_AS_STRING(self._rkey)
        cdef Py_ssize_t klen = PyBytes_GET_SIZE(self._rkey), n
        cdef int c
        n = hlen if klen > hlen else klen
        c = memcmp(k, head, n)
        if c or klen < hlen:
            return c if c else -1
        k += hlen
        klen -= hlen
        n = ilen if klen > ilen else klen
        c = memcmp(k, ident, n)
        if c:
            return c
        return (klen > ilen) - (klen < ilen)

    cdef void _match(self, bytes head, const uint8_t* ident, Py_ssize_t ilen, bytes okey, object expected,
                     const uint8_t* ebuf, Py_ssize_t esize) except *:
        """Match the record's node (head + ident) with the rows: `expected` (bytes or None), or, when
        `ebuf` is set, the expected entry in a C buffer."""
        cdef const uint8_t* h = <const uint8_t*>PyBytes_AS_STRING(head)
        cdef Py_ssize_t hlen = PyBytes_GET_SIZE(head)
        cdef int c = 1
        cdef bytes value
        while self._rkey is not None:
            c = self._cmp(h, hlen, ident, ilen)
            if c >= 0:
                break
            self.problems.append(("orphan-node", self._rkey, self._rval))
            self._next_row()
        if self._rkey is not None and c == 0:
            self.matched += 1
            value = self._rval
            if ebuf != NULL:
                if PyBytes_GET_SIZE(value) != esize or memcmp(PyBytes_AS_STRING(value), ebuf, esize) != 0:
                    self.problems.append(("wrong-node", head + (<char*>ident)[:ilen], okey,
                                          (<char*>ebuf)[:esize], value))
            elif expected is not None and value != expected:
                self.problems.append(("wrong-node", head + (<char*>ident)[:ilen], okey, expected, value))
            self._next_row()
        elif ebuf != NULL:
            self.problems.append(("missing-node", head + (<char*>ident)[:ilen], okey, (<char*>ebuf)[:esize]))
        elif expected is not None:
            self.problems.append(("missing-node", head + (<char*>ident)[:ilen], okey, expected))

    # -- entries built here ------------------------------------------------------------------

    cdef Py_ssize_t _strong(self, Py_ssize_t at, int rtype, const uint8_t* ns, Py_ssize_t nslen,
                            const uint8_t* a, Py_ssize_t alen, const uint8_t* b, Py_ssize_t blen) noexcept:
        """Append a STRONG edge to node rtype/ns/a[/b] at `at` of the entry buffer; -1 if too long."""
        cdef Py_ssize_t tlen = 1 + nslen + 1 + alen + (1 + blen if b != NULL else 0)
        if at + 3 + tlen > ENTRY_MAX:
            return -1
        self._ebuf[at] = E_STRONG
        self._ebuf[at + 1] = tlen & 0xFF
        self._ebuf[at + 2] = (tlen >> 8) & 0xFF
        at += 3
        self._ebuf[at] = rtype
        memcpy(self._ebuf + at + 1, ns, nslen)
        at += 1 + nslen
        self._ebuf[at] = 0
        memcpy(self._ebuf + at + 1, a, alen)
        at += 1 + alen
        if b != NULL:
            self._ebuf[at] = b'/'
            memcpy(self._ebuf + at + 1, b, blen)
            at += 1 + blen
        return at

    cdef Py_ssize_t _fast_entry(self, int rkind, const uint8_t* p, Py_ssize_t size, const uint8_t* ns,
                                Py_ssize_t nslen, const uint8_t* sn, Py_ssize_t snlen, MpVal* vals) noexcept:
        """The entry of a common record in the entry buffer (its size), or -1: the Python path decides."""
        cdef Py_ssize_t dstart, dlen
        if _read_record(p, size, vals) < 0:
            return -1
        if not (_has(vals, F_L, V_MAP) and _has(vals, F_C, V_INT) and _has(vals, F_U, V_INT)):
            return -1
        if not _plain_labels(p, vals[F_L].start, size):
            return -1
        if rkind == R_BLOB:
            if not _has(vals, F_S, V_INT):
                return -1
            self._ebuf[0] = 0
            return 1
        if rkind == R_SNAPSHOT:
            if not (_has(vals, F_I, V_INT) and _has(vals, F_B, V_STR) and _has(vals, F_P, V_STR)
                    and _has(vals, F_PI, V_INT) and _has(vals, F_K, V_INT)):
                return -1
            self._ebuf[0] = 0
            if vals[F_P].length == 0:
                return 1
            return self._strong(1, 2, ns, nslen, sn, snlen, p + vals[F_P].start, vals[F_P].length)
        if rkind == R_IMAGE:
            if not _has(vals, F_T, V_MAP) or not _target_digest(p, vals[F_T].start, size, &dstart, &dlen):
                return -1
            self._ebuf[0] = F_ROOT
            if dlen == 0:
                return 1
            return self._strong(1, 1, ns, nslen, p + dstart, dlen, NULL, 0)
        if rkind == R_CONTAINER:
            if not (_has(vals, F_R, V_STR) and _has(vals, F_SN, V_STR) and _has(vals, F_K, V_STR)
                    and _has(vals, F_I, V_STR) and _has(vals, F_SB, V_STR)):
                return -1
            self._ebuf[0] = F_ROOT | F_HIDDEN
            if vals[F_K].length == 0 or vals[F_SN].length == 0:
                return 1
            return self._strong(1, 2, ns, nslen, p + vals[F_SN].start, vals[F_SN].length,
                                p + vals[F_K].start, vals[F_K].length)
        if rkind == R_SANDBOX:
            if not (_has(vals, F_R, V_STR) and _has(vals, F_SX, V_STR)):
                return -1
            self._ebuf[0] = F_ROOT | F_HIDDEN
            return 1
        return -1

    # -- groups ----------------------------------------------------------------------------------

    def _record(self, kind, ns, okey, ident, raw):
        self.records += 1
        try:
            return self._entry_of(kind, ns, [ident.decode("utf-8")], raw)
        except UnicodeDecodeError:
            self.problems.append(("damaged-record", okey, "its key is not UTF-8 text"))
        except Corrupted as exc:
            self.problems.append(("damaged-record", okey, str(exc)))
        return None

    def rows(self, bytes kind, int rtype, str ns, rows):
        """One group: the records of `kind` (not snapshots) of namespace `ns`."""
        cdef bytes nsb = ns.encode()
        cdef bytes prefix = nsb + b"\x00" + kind + b"\x00"
        cdef bytes head = bytes((rtype,)) + nsb + b"\x00"
        cdef Py_ssize_t prefix_len = PyBytes_GET_SIZE(prefix), klen, ilen, esize
        cdef bytes okey, raw, ident
        cdef const uint8_t* ip
        cdef MpVal vals[F_COUNT]
        cdef int rkind = (R_BLOB if kind == b"blob" else R_IMAGE if kind == b"image" else
                          R_CONTAINER if kind == b"container" else R_SANDBOX if kind == b"sandbox" else 0)
        for row in rows:
            okey = _as_bytes(row[0])
            if not _prefixed(okey, prefix):
                break
            raw = _as_bytes(row[1])
            ip = <const uint8_t*>PyBytes_AS_STRING(okey) + prefix_len
            ilen = PyBytes_GET_SIZE(okey) - prefix_len
            if memchr(ip, 0, ilen) != NULL:
                self.records += 1
                self.problems.append(("damaged-record", okey, "its key has too many parts"))
                continue
            if rkind and _ascii(ip, ilen):
                esize = self._fast_entry(rkind, <const uint8_t*>PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw),
                                         <const uint8_t*>PyBytes_AS_STRING(nsb), PyBytes_GET_SIZE(nsb), NULL, 0, vals)
                if esize >= 0:
                    self.records += 1
                    self._match(head, ip, ilen, okey, None, self._ebuf, esize)
                    if rkind == R_BLOB:
                        self.blobs.append((ns, (<char*>ip)[:ilen].decode("ascii"), vals[F_S].ival))
                    continue
            ident = (<char*>ip)[:ilen]
            found = self._record(kind, ns, okey, ident, raw)
            if found is None:
                self._match(head, ip, ilen, okey, None, NULL, 0)
                continue
            expected, record = found
            self._match(head, ip, ilen, okey, expected, NULL, 0)
            if rkind == R_BLOB:
                self.blobs.append((ns, ident.decode(), record["s"]))
            elif kind == b"ingest" or kind == b"lease":
                self.others.append((kind.decode(), ns, ident.decode(), record))

    def snapshots(self, str ns, str snapshotter, links, rows):
        """The snapshot records of one snapshotter in one namespace (see the twin)."""
        cdef bytes nsb = ns.encode(), snb = snapshotter.encode()
        cdef bytes link_prefix = nsb + b"\x00snapchild\x00" + snb + b"\x00"
        cdef bytes prefix = nsb + b"\x00snapshot\x00" + snb + b"\x00"
        cdef bytes head = b"\x02" + nsb + b"\x00" + snb + b"/"
        cdef Py_ssize_t lp = PyBytes_GET_SIZE(link_prefix), prefix_len = PyBytes_GET_SIZE(prefix)
        cdef Py_ssize_t ilen, esize, idx, i, pidx, bidx, n
        cdef bytes okey, raw, ident
        cdef const uint8_t* ip
        cdef const uint8_t* p
        cdef MpVal vals[F_COUNT]
        cdef _Spans pending = _Spans(), records = _Spans()
        cdef _Spans table = None, dirs = None
        cdef set damaged = set()
        cdef set missing
        cdef int64_t highest = self.max_ids.get(snapshotter, 0), sid, pid, kind, bid
        cdef Item* item
        cdef Item* parent
        cdef Item* found
        cdef char lbuf[32]
        cdef uint8_t* link
        for key in links:
            okey = _as_bytes(key)
            if not _prefixed(okey, link_prefix):
                break
            pending.add(<const uint8_t*>PyBytes_AS_STRING(okey) + lp, PyBytes_GET_SIZE(okey) - lp)
        for row in rows:
            okey = _as_bytes(row[0])
            if not _prefixed(okey, prefix):
                break
            raw = _as_bytes(row[1])
            ip = <const uint8_t*>PyBytes_AS_STRING(okey) + prefix_len
            ilen = PyBytes_GET_SIZE(okey) - prefix_len
            self.records += 1
            if memchr(ip, 0, ilen) != NULL:
                self.problems.append(("damaged-record", okey, "its key has too many parts"))
                continue
            if _ascii(ip, ilen):
                p = <const uint8_t*>PyBytes_AS_STRING(raw)
                esize = self._fast_entry(R_SNAPSHOT, p, PyBytes_GET_SIZE(raw), <const uint8_t*>PyBytes_AS_STRING(nsb),
                                         PyBytes_GET_SIZE(nsb), <const uint8_t*>PyBytes_AS_STRING(snb),
                                         PyBytes_GET_SIZE(snb), vals)
                if esize >= 0:
                    self._match(head, ip, ilen, okey, None, self._ebuf, esize)
                    idx = records.add(ip, ilen)
                    item = &records.items[idx]
                    item.a, item.b, item.c = vals[F_I].ival, vals[F_PI].ival, vals[F_K].ival
                    item.x_off = records.store(p + vals[F_P].start, vals[F_P].length)
                    records.items[idx].x_len = vals[F_P].length
                    records.items[idx].y_off = records.store(p + vals[F_B].start, vals[F_B].length)
                    records.items[idx].y_len = vals[F_B].length
                    if vals[F_I].ival > highest:
                        highest = vals[F_I].ival
                    continue
            ident = (<char*>ip)[:ilen]
            try:
                key = ident.decode("utf-8")
                expected, record = self._entry_of(b"snapshot", ns, [snapshotter, key], raw)
            except UnicodeDecodeError:
                self.problems.append(("damaged-record", okey, "its key is not UTF-8 text"))
                damaged.add(ident)
                self._match(head, ip, ilen, okey, None, NULL, 0)
                continue
            except Corrupted as exc:
                self.problems.append(("damaged-record", okey, str(exc)))
                damaged.add(ident)
                self._match(head, ip, ilen, okey, None, NULL, 0)
                continue
            self._match(head, ip, ilen, okey, expected, NULL, 0)
            pkey, bkey = record["p"].encode(), record["b"].encode()
            idx = records.add(ip, ilen)
            records.items[idx].a, records.items[idx].b, records.items[idx].c = record["i"], record["pi"], record["k"]
            records.items[idx].x_off = records.store(<const uint8_t*>PyBytes_AS_STRING(pkey), len(pkey))
            records.items[idx].x_len = len(pkey)
            records.items[idx].y_off = records.store(<const uint8_t*>PyBytes_AS_STRING(bkey), len(bkey))
            records.items[idx].y_len = len(bkey)
            if record["i"] > highest:
                highest = record["i"]
        if highest > self.max_ids.get(snapshotter, 0):
            self.max_ids[snapshotter] = highest
        found_backend = self._backends.get(snapshotter)
        if found_backend is not None:
            table, dirs = found_backend
        missing = self._missing.setdefault(snapshotter, set())
        link = <uint8_t*>malloc(32 + 1024)
        if link == NULL:
            raise MemoryError()
        try:
            for i in range(records.n):
                item = &records.items[i]
                pidx = -1
                if item.x_len:
                    pidx = records.find(records.arena + item.x_off, item.x_len)
                    if pidx < 0:
                        if records.x(i) not in damaged:
                            self.problems.append(("missing-parent", ns, snapshotter, records.key(i).decode(),
                                                  records.x(i).decode()))
                    elif records.items[pidx].c != 3:
                        self.problems.append(("parent-not-committed", ns, snapshotter, records.key(i).decode(),
                                              records.x(i).decode()))
                    elif records.items[pidx].a != item.b:
                        self.problems.append(("wrong-parent-id", ns, snapshotter, records.key(i).decode(), item.b,
                                              records.items[pidx].a))
                    n = snprintf(lbuf, 32, "%lld", <long long>item.b)
                    if item.key_len <= 1024:
                        memcpy(link, lbuf, n)
                        link[n] = 0
                        memcpy(link + n + 1, records.arena + item.key_off, item.key_len)
                        idx = pending.find(link, n + 1 + item.key_len)
                    else:
                        key = b"%d\x00%b" % (item.b, records.key(i))
                        idx = pending.find(<const uint8_t*>PyBytes_AS_STRING(key), len(key))
                    if idx < 0 or pending.items[idx].flag:
                        self.problems.append(("missing-child-link", ns, snapshotter, records.key(i).decode(), item.b))
                    else:
                        pending.items[idx].flag = 1
                if table is None:
                    missing.add(records.y(i))
                    self.problems.append(("no-backend", ns, snapshotter, records.key(i).decode()))
                    continue
                bidx = table.find(records.arena + item.y_off, item.y_len)
                if bidx < 0:
                    missing.add(records.y(i))
                    self.problems.append(("missing-backend-snapshot", ns, snapshotter, records.key(i).decode(),
                                          records.y(i).decode()))
                    continue
                found = &table.items[bidx]
                found.flag |= REFERENCED
                if found.b != item.c:
                    self.problems.append(("backend-kind", ns, snapshotter, records.key(i).decode(), records.y(i).decode(),
                                          item.c, found.b))
                if pidx >= 0 or not item.x_len:
                    parent = &records.items[pidx] if pidx >= 0 else NULL
                    if parent != NULL:
                        same = (found.x_len == parent.y_len and
                                memcmp(table.arena + found.x_off, records.arena + parent.y_off, found.x_len) == 0)
                    else:
                        same = found.x_len == 0
                    if not same:
                        self.problems.append(("backend-parent", ns, snapshotter, records.key(i).decode(),
                                              records.y(i).decode(), records.y(pidx).decode() if pidx >= 0 else "",
                                              table.x(bidx).decode("utf-8", "replace")))
                if not found.flag & HAS_DIR:
                    self.problems.append(("missing-snapshot-dir", ns, snapshotter, records.key(i).decode(),
                                          records.y(i).decode(), found.a))
        finally:
            free(link)
        for i in range(pending.n):
            if not pending.items[i].flag:
                self.problems.append(("orphan-child-link", link_prefix + pending.key(i)))
