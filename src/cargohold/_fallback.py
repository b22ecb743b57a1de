"""Pure-Python twins of every function of the compiled core (`_ext/`).

Used when the extension is not built or when CARGOHOLD_PUREPYTHON=1; tests
check that both give identical results.
"""

from __future__ import annotations

import mmap
import operator
import struct
from bisect import bisect_left, bisect_right
from itertools import islice

from ._fallback_keys import object_key, pack_node  # noqa: F401 (twins of _ext/keys.pxi)
from ._fallback_records import encode_container, encode_image  # noqa: F401 (twins of _ext/records.pxi)
from .errors import Corrupted, InvalidArgument

MAX_VARINT_LEN = 10
_U64 = (1 << 64) - 1


def encode_varint(value: int) -> bytes:
    """Encode a signed 64-bit integer as Go's binary.PutVarint does."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"varint value must be an integer, not {value!r}")
    if not (-(1 << 63) <= value < (1 << 63)):
        raise InvalidArgument(f"varint value {value} does not fit in 64 signed bits")
    ux = (value << 1) & _U64
    if value < 0:
        ux ^= _U64
    out = bytearray()
    while ux >= 0x80:
        out.append((ux & 0x7F) | 0x80)
        ux >>= 7
    out.append(ux)
    return bytes(out)


def decode_varint(data, offset: int = 0) -> tuple[int, int]:
    """Decode one Go varint from `data` at `offset`; return (value, next_offset)."""
    try:
        view = memoryview(data).cast("B")
    except TypeError:
        raise InvalidArgument(f"varint input must be bytes-like, not {type(data).__name__}") from None
    size = len(view)
    if offset < 0 or offset > size:
        raise InvalidArgument(f"varint offset {offset} outside input of {size} bytes")
    ux = 0
    shift = 0
    i = offset
    while True:
        if i >= size:
            raise InvalidArgument(f"truncated varint at offset {offset}: {bytes(view[offset:])!r}")
        if i - offset == MAX_VARINT_LEN:
            raise InvalidArgument(f"varint at offset {offset} overflows 64 bits")
        b = view[i]
        if b < 0x80:
            if i - offset == MAX_VARINT_LEN - 1 and b > 1:
                raise InvalidArgument(f"varint at offset {offset} overflows 64 bits")
            ux |= b << shift
            break
        ux |= (b & 0x7F) << shift
        shift += 7
        i += 1
    x = ux >> 1
    if ux & 1:
        x = ~x
    return x, i + 1


# -- an LMDB table read from the data file's pages (twin of _ext/lmdbpages.pxi) ------------------

_LM_PAGE_HEADER, _LM_NODE_HEADER, _LM_RECORD, _LM_MAX_DEPTH = 16, 8, 48, 64
_LM_P_BRANCH, _LM_P_LEAF, _LM_P_OVERFLOW, _LM_P_META = 0x01, 0x02, 0x04, 0x08
_LM_F_BIGDATA = 0x01
_LM_MAGIC, _LM_VERSION = 0xBEEFC0DE, 1
_LM_HEADER = struct.Struct("<QHHHH")  # page number, pad, flags, lower, upper
_LM_NODE = struct.Struct("<HHHH")     # data size low, high, flags, key size
_LM_U64 = struct.Struct("<Q")
_LM_U32 = struct.Struct("<I")
_LM_U16 = struct.Struct("<H")


def _lm_known(buf, psize: int, record: bytes) -> bool:
    if psize < 512 or psize > 65536 or len(buf) < 2 * psize or len(record) != _LM_RECORD:
        return False
    if not _LM_U16.unpack_from(buf, 10)[0] & _LM_P_META or _LM_U32.unpack_from(buf, 16)[0] != _LM_MAGIC:
        return False
    return _LM_U32.unpack_from(buf, 20)[0] == _LM_VERSION and _LM_U16.unpack_from(record, 4)[0] == 0


def _lm_damaged(table: str, pgno: int, what: str) -> Corrupted:
    return Corrupted(f"damaged page {pgno} of metadata table {table!r}: {what}")


def _lm_page(buf, psize: int, pgno: int, pages: int, table: str) -> int:
    total = len(buf) // psize
    if pgno < 2 or pgno >= total or pages > total - pgno:
        raise _lm_damaged(table, pgno, "outside the data file")
    if _LM_U64.unpack_from(buf, pgno * psize)[0] != pgno:
        raise _lm_damaged(table, pgno, "it names another page")
    return pgno * psize


def _lm_release(buf) -> None:
    try:
        buf.madvise(mmap.MADV_DONTNEED)
    except (AttributeError, OSError, ValueError):
        pass  # not a mapping, or no madvise here: the pages stay resident


def _lm_rows(buf, psize: int, record: bytes, table: str, release_every: int = 0):
    """(key, value) of every row of the table, in key order (`_lm_known` first)."""
    depth = _LM_U16.unpack_from(record, 6)[0]
    entries, root = struct.unpack_from("<QQ", record, 32)
    if root == (1 << 64) - 1:
        if entries:
            raise _lm_damaged(table, root, f"an empty tree of {entries} rows")
        return
    if not 1 <= depth <= _LM_MAX_DEPTH:
        raise _lm_damaged(table, root, f"a tree of depth {depth}")
    rows = leaves = 0
    stack = [[root, -1, 0]]
    try:
        while stack:
            frame = stack[-1]
            pgno = frame[0]
            at = _lm_page(buf, psize, pgno, 1, table)
            _, _, flags, lower, upper = _LM_HEADER.unpack_from(buf, at)
            if frame[1] == -1:
                if lower < _LM_PAGE_HEADER or lower > upper or upper > psize or (lower - _LM_PAGE_HEADER) % 2:
                    raise _lm_damaged(table, pgno, "bad bounds")
                n = (lower - _LM_PAGE_HEADER) // 2
                if n == 0:
                    raise _lm_damaged(table, pgno, "no rows")
                kind = flags & (_LM_P_BRANCH | _LM_P_LEAF)
                if kind == _LM_P_BRANCH:
                    if len(stack) == depth:
                        raise _lm_damaged(table, pgno, "a branch page at leaf depth")
                elif kind == _LM_P_LEAF:
                    if len(stack) != depth:
                        raise _lm_damaged(table, pgno, "a leaf page above leaf depth")
                else:
                    raise _lm_damaged(table, pgno, f"page flags {flags:#x}")
                frame[1], frame[2] = 0, n
            n = frame[2]
            if flags & _LM_P_BRANCH:
                i = frame[1]
                if i == n:
                    stack.pop()
                    continue
                frame[1] = i + 1
                ptr = _LM_U16.unpack_from(buf, at + _LM_PAGE_HEADER + 2 * i)[0]
                if ptr < _LM_PAGE_HEADER + 2 * n or ptr + _LM_NODE_HEADER > psize:
                    raise _lm_damaged(table, pgno, f"node {i} outside the page")
                lo, hi, high, _ = _LM_NODE.unpack_from(buf, at + ptr)
                stack.append([lo | hi << 16 | high << 32, -1, 0])
                continue
            if rows + n > entries:
                raise _lm_damaged(table, root, f"more rows than the {entries} the table records")
            page = buf[at:at + psize]
            for i, ptr in enumerate(struct.unpack_from(f"<{n}H", page, _LM_PAGE_HEADER)):
                if ptr < _LM_PAGE_HEADER + 2 * n or ptr + _LM_NODE_HEADER > psize:
                    raise _lm_damaged(table, pgno, f"node {i} outside the page")
                lo, hi, nflags, ksize = _LM_NODE.unpack_from(page, ptr)
                vsize = lo | hi << 16
                key_at = ptr + _LM_NODE_HEADER
                if nflags & _LM_F_BIGDATA:
                    if nflags != _LM_F_BIGDATA or ptr + _LM_NODE_HEADER + ksize + 8 > psize:
                        raise _lm_damaged(table, pgno, f"node {i} outside the page")
                    child = _LM_U64.unpack_from(page, key_at + ksize)[0]
                    over = _lm_page(buf, psize, child, (_LM_PAGE_HEADER + vsize + psize - 1) // psize, table)
                    if not _LM_U16.unpack_from(buf, over + 10)[0] & _LM_P_OVERFLOW or \
                            _LM_U32.unpack_from(buf, over + 12)[0] * psize < _LM_PAGE_HEADER + vsize:
                        raise _lm_damaged(table, child, "not the overflow page its row names")
                    value = buf[over + _LM_PAGE_HEADER:over + _LM_PAGE_HEADER + vsize]
                elif nflags:
                    raise _lm_damaged(table, pgno, f"node {i} has flags {nflags:#x}")
                elif ptr + _LM_NODE_HEADER + ksize + vsize > psize:
                    raise _lm_damaged(table, pgno, f"node {i} outside the page")
                else:
                    value = page[key_at + ksize:key_at + ksize + vsize]
                yield page[key_at:key_at + ksize], value
            rows += n
            stack.pop()
            leaves += 1
            if release_every and leaves % release_every == 0:
                _lm_release(buf)
    finally:
        if release_every:
            _lm_release(buf)
    if rows != entries:
        raise _lm_damaged(table, root, f"{rows} rows where the table records {entries}")


# -- the mark phase ---------------------------------------------------------------------------
# Layout of the node table values: see cargohold/gc/index.py. Constants are repeated in
# _ext/mark.pxi (tests check both agree).

F_ROOT, F_EXPIRES, F_FLAT, F_HIDDEN, F_USEDAT = 0x01, 0x02, 0x04, 0x08, 0x10
E_STRONG, E_REF, E_BREF, E_COND, E_LABEL = 1, 2, 3, 4, 5
_LEASE_TYPE, _INGEST_TYPE, _SANDBOX_TYPE = 6, 7, 0x1F
# traversal edge kinds once resolved
_FOLLOW_ALWAYS, _FOLLOW_NORMAL, _FOLLOW_LEASE = 1, 2, 3
_SEEN_NORMAL, _SEEN_FLAT = 1, 2
_PHANTOM = 0x80  # internal flag: referenced, but no entry in the node table


def _cond_holds(op, age, duration):
    return (op == 0x3C and age < duration) or (op == 0x3E and age > duration)


class Marker:
    """Tricolor marking over the node table (pure-Python twin of the compiled Marker).

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

    def __init__(self, collector_labels=()):
        self._labels = [(bytes(s), int(t)) for s, t in collector_labels]
        self._index = {}
        self._keys = []
        self._flags = []
        self._expire = []
        self._usedat = {}
        self._edges = []          # per node: list of (target, kind)
        self._conds = []          # (src, dst, op, duration)
        self._pending = []        # conditional references not live at the last marking
        self._new_edges = []      # (src, dst, kind) added since the last marking
        self._state = None
        self._parent = None
        self._marked_at = 0

    # -- building ------------------------------------------------------------------------
    def _intern(self, key):
        idx = self._index.get(key)
        if idx is None:
            idx = len(self._keys)
            self._index[key] = idx
            self._keys.append(key)
            self._flags.append(_PHANTOM)
            self._expire.append(0)
            self._edges.append([])
        return idx

    def _edge(self, src, dst, kind):
        self._edges[src].append((dst, kind))
        if self._state is not None:
            self._new_edges.append((src, dst, kind))

    def add_nodes(self, entries):
        """Load (packed key, value) pairs of the node table."""
        self._load(entries, False)

    def update_nodes(self, entries):
        """Load entries written since the marking: a node already known takes the new
        flags, expiry and usedat, and gains the new edges (its old ones stay)."""
        self._load(entries, True)

    def add_nodes_mapped(self, buf, page_size, record, table, release_every=0):
        """`add_nodes` of a whole node table read from the data file's pages (`buf`, a read-only
        mapping of it; `record`, the table's entry in LMDB's main database).
        False, with nothing loaded, if the file is in a format this reader does not know. With
        `release_every`, the mapping's pages are given back after every that many leaf pages."""
        if not _lm_known(buf, page_size, record):
            return False
        self._load(_lm_rows(buf, page_size, record, table, release_every), False)
        return True

    def add_lease_resources_mapped(self, buf, page_size, record, table, release_every=0):
        """`add_lease_resources` of a whole lease-resource table, read as `add_nodes_mapped` reads."""
        if not _lm_known(buf, page_size, record):
            return False
        self.add_lease_resources(_lm_rows(buf, page_size, record, table, release_every))
        return True

    def _load(self, entries, replace):
        for key, value in entries:
            key = bytes(key)
            value = bytes(value)
            src = self._intern(key)
            if not self._flags[src] & _PHANTOM:
                if not replace:
                    raise InvalidArgument(f"node {key!r} given twice")
                self._expire[src] = 0
                self._usedat.pop(src, None)
            self._parse(src, key, value)

    def forget_nodes(self, keys):
        """Nodes whose entries were deleted since the marking: no longer reported as existing
        (phantoms, as targets without an entry are); their edges stay."""
        for key in keys:
            idx = self._index.get(bytes(key)) if key else None
            if idx is not None:
                self._flags[idx] = _PHANTOM
                self._expire[idx] = 0
                self._usedat.pop(idx, None)

    def _parse(self, src, key, value):
        try:
            flags = value[0]
            pos = 1
            if flags & F_EXPIRES:
                self._expire[src] = int.from_bytes(value[pos:pos + 8], "little", signed=True)
                pos += 8
            if flags & F_USEDAT:
                count = value[pos]
                pos += 1
                self._usedat[src] = [int.from_bytes(value[pos + 8 * i:pos + 8 * i + 8], "little", signed=True)
                                     for i in range(count)]
                pos += 8 * count
            self._flags[src] = flags & 0x7F
            ns_end = key.index(0, 1)
            while pos < len(value):
                kind = value[pos]
                size = int.from_bytes(value[pos + 1:pos + 3], "little")
                target = value[pos + 3:pos + 3 + size]
                if len(target) != size or pos + 3 > len(value):
                    raise IndexError
                pos += 3 + size
                if kind == E_STRONG:
                    self._edge(src, self._intern(target), _FOLLOW_ALWAYS)
                elif kind == E_REF:
                    self._edge(src, self._intern(target), _FOLLOW_NORMAL)
                elif kind == E_BREF:
                    self._edge(self._intern(target), src, _FOLLOW_NORMAL)
                elif kind == E_COND:
                    if pos + 9 > len(value):
                        raise IndexError
                    op = value[pos]
                    duration = int.from_bytes(value[pos + 1:pos + 9], "little", signed=True)
                    pos += 9
                    self._conds.append((src, self._intern(target), op, duration))
                elif kind == E_LABEL:
                    vsize = int.from_bytes(value[pos:pos + 2], "little")
                    label_value = value[pos + 2:pos + 2 + vsize]
                    if len(label_value) != vsize or pos + 2 > len(value):
                        raise IndexError
                    pos += 2 + vsize
                    for suffix, rtype in self._labels:
                        if target == suffix or (target.startswith(suffix) and target[len(suffix)] in b"./"):
                            dst = bytes((rtype,)) + key[1:ns_end + 1] + label_value
                            self._edge(src, self._intern(dst), _FOLLOW_NORMAL)
                else:
                    raise IndexError
        except (IndexError, ValueError):
            raise Corrupted(f"damaged garbage-collection entry for node {key!r}") from None

    def add_lease_resources(self, rows):
        """Load (key, value) rows of the lease-resource table: <ns>\\0<lease>\\0<type><key>."""
        for key, _ in rows:
            key = bytes(key)
            ns_end = key.find(0)
            lease_end = key.find(0, ns_end + 1)
            if ns_end < 0 or lease_end < 0 or lease_end + 1 >= len(key):
                raise Corrupted(f"damaged lease resource row {key!r}")
            lease = bytes((_LEASE_TYPE,)) + key[:lease_end]
            resource = key[lease_end + 1:lease_end + 2] + key[:ns_end + 1] + key[lease_end + 2:]
            self._edge(self._intern(lease), self._intern(resource), _FOLLOW_LEASE)

    # -- marking --------------------------------------------------------------------------
    def _is_root(self, idx, now):
        flags = self._flags[idx]
        if flags & _PHANTOM or not flags & F_ROOT:
            return False
        return not flags & F_EXPIRES or now <= self._expire[idx]

    def live_leases(self, now):
        """Packed keys of the leases that are roots at `now` (unexpired)."""
        return [key for idx, key in enumerate(self._keys)
                if key[0] == _LEASE_TYPE and self._is_root(idx, now)]

    def _resolve_conds(self, now, then):
        """Turn the conditional references live at `now` or at `then` (the first marking's time)
        into edges; keep the others pending."""
        pending = []
        for cond in self._pending + self._conds:
            src, dst, op, duration = cond
            for used in self._usedat.get(dst, ()):
                if _cond_holds(op, now - used, duration) or _cond_holds(op, then - used, duration):
                    self._edge(src, dst, _FOLLOW_NORMAL)
                    break
            else:
                pending.append(cond)
        self._pending = pending
        self._conds = []

    def _intern_all(self, keys):
        out = []
        for key in keys:
            if not key:
                raise InvalidArgument("empty node key among the extra roots")
            out.append(self._intern(bytes(key)))
        return out

    def _follow(self, kind, bit, dst):
        """The bit an edge of `kind` passes on from a node marked with `bit` (0: not followed)."""
        if kind == _FOLLOW_ALWAYS:
            return bit
        if kind == _FOLLOW_NORMAL:
            return 0 if bit == _SEEN_FLAT else _SEEN_NORMAL
        return _SEEN_NORMAL if self._keys[dst][0] == _INGEST_TYPE else bit  # a lease resource

    def _visit(self, queue, src, dst, tbit):
        """Mark `dst` with `tbit` from `src`; returns 1 if `dst` was not marked before."""
        state = self._state
        if not tbit or state[dst] & tbit:
            return 0
        first = not state[dst]
        if first:
            self._parent[dst] = src
        state[dst] |= tbit
        queue.append((dst, tbit))
        return int(first)

    def _traverse(self, queue):
        """FIFO traversal from the queued nodes; returns how many nodes it reached first."""
        head = newly = 0
        while head < len(queue):
            idx, bit = queue[head]
            head += 1
            for dst, kind in self._edges[idx]:
                newly += self._visit(queue, idx, dst, self._follow(kind, bit, dst))
        return newly

    def mark(self, now, extra_roots=()):
        """Mark everything reachable at time `now` (ns) from the roots and `extra_roots`."""
        self._marked_at = now
        self._resolve_conds(now, now)
        extra = self._intern_all(extra_roots)
        n = len(self._keys)
        state = bytearray(n)
        queue = []
        for idx in range(n):
            if self._is_root(idx, now):
                bit = _SEEN_FLAT if self._flags[idx] & F_FLAT else _SEEN_NORMAL
                if not state[idx] & bit:
                    state[idx] |= bit
                    queue.append((idx, bit))
        for idx in extra:
            if not state[idx] & _SEEN_NORMAL:
                state[idx] |= _SEEN_NORMAL
                queue.append((idx, _SEEN_NORMAL))
        self._state = state
        self._parent = [-1] * n
        self._new_edges = []
        self._traverse(queue)

    def remark(self, now, gray=()):
        """Continue the marking at time `now`: follow every edge added since (from the nodes
        marked), mark the `gray` nodes and everything they reach. A conditional reference is
        followed when it holds at `now` or at the first marking's time, so the continued marking
        keeps what either instant would. Returns how many nodes it reached that were not marked
        before."""
        if self._state is None:
            raise InvalidArgument("mark() has not run")
        self._resolve_conds(now, self._marked_at)
        grays = self._intern_all(gray)
        grow = len(self._keys) - len(self._state)
        self._state.extend(bytes(grow))
        self._parent.extend([-1] * grow)
        state = self._state
        queue = []
        newly = 0
        edges, self._new_edges = self._new_edges, []
        for src, dst, kind in edges:
            for bit in (_SEEN_NORMAL, _SEEN_FLAT):
                if state[src] & bit:
                    newly += self._visit(queue, src, dst, self._follow(kind, bit, dst))
        for idx in grays:
            if not state[idx] & _SEEN_NORMAL:
                newly += not state[idx]
                state[idx] |= _SEEN_NORMAL
                queue.append((idx, _SEEN_NORMAL))
        return newly + self._traverse(queue)

    # -- results ---------------------------------------------------------------------------
    def _require_marked(self):
        if self._state is None:
            raise InvalidArgument("mark() has not run")
        if len(self._state) != len(self._keys):
            raise InvalidArgument("nodes were added since the marking: remark() first")

    def is_reachable(self, key):
        self._require_marked()
        idx = self._index.get(bytes(key))
        return idx is not None and idx < len(self._state) and self._state[idx] != 0

    def unreachable(self):
        """Packed keys of existing, collectible nodes that nothing reaches (table order)."""
        self._require_marked()
        return [key for idx, key in enumerate(self._keys)
                if not self._state[idx] and not self._flags[idx] & (_PHANTOM | F_HIDDEN)]

    def reachable(self):
        """Packed keys of existing nodes that are reached (sandboxes excluded)."""
        self._require_marked()
        return [key for idx, key in enumerate(self._keys)
                if self._state[idx] and not self._flags[idx] & _PHANTOM and key[0] != _SANDBOX_TYPE]

    def chain(self, key):
        """Packed keys from a root down to `key` along the marking, or None if unreached."""
        self._require_marked()
        idx = self._index.get(bytes(key))
        if idx is None or idx >= len(self._state) or not self._state[idx]:
            return None
        path = []
        while idx != -1:
            path.append(self._keys[idx])
            idx = self._parent[idx]
        path.reverse()
        return path

    @property
    def node_count(self):
        return len(self._keys)

    @property
    def edge_count(self):
        return sum(len(e) for e in self._edges)


# -- bbolt pages (cargohold.bolt) ----------------------------------------------------------------
# A page starts with a 16-byte header; its element table follows, 16 bytes an element, each
# element's `pos` counting from the element itself to its key (a leaf's value follows its key).

_BOLT_HEADER = 16
_BOLT_LEAF_ELEMENT = struct.Struct("<IIII")     # flags, pos, ksize, vsize
_BOLT_BRANCH_ELEMENT = struct.Struct("<IIQ")    # pos, ksize, child pgid
_BOLT_BUCKET_FLAG = 0x01


def _bolt_show(key: bytes) -> str:
    """A key for an error message: its repr, cut after 64 bytes."""
    if len(key) <= 64:
        return repr(key)
    return f"{key[:64]!r}... ({len(key)} bytes)"


def bolt_leaf(buf: bytes, start: int, end: int, count: int) -> tuple[list, list, list]:
    """Decode the `count` elements of the bbolt leaf page held in buf[start:end].

    Returns (keys, values, buckets): values[i] is None for a sub-bucket, whose
    element index and value offsets in `buf` are appended to `buckets` as
    (index, value_start, value_end) triples, flattened. Keys must increase.
    """
    if start < 0 or end > len(buf) or start > end:
        raise Corrupted(f"page bounds {start}..{end} outside a buffer of {len(buf)} bytes")
    table = start + _BOLT_HEADER
    data = table + 16 * count
    if data > end:
        raise Corrupted(f"{count} leaf elements do not fit in {end - start} bytes")
    keys: list = []
    values: list = []
    buckets: list = []
    key_add = keys.append
    value_add = values.append
    elem = table
    for i, (flags, pos, ksize, vsize) in enumerate(_BOLT_LEAF_ELEMENT.iter_unpack(buf[table:data])):
        k = elem + pos
        v = k + ksize
        e = v + vsize
        if e > end or k < data:
            raise Corrupted(f"leaf element {i} (key of {ksize} bytes at {k - start}, value of {vsize} bytes) "
                            f"lies outside the data of the page's {end - start} bytes")
        key_add(buf[k:v])
        if flags & _BOLT_BUCKET_FLAG:
            value_add(None)
            buckets += (i, v, e)
        else:
            value_add(buf[v:e])
        elem += 16
    if count > 1 and not all(map(operator.lt, keys, islice(keys, 1, None))):
        i = next(i for i in range(1, count) if not keys[i - 1] < keys[i])
        raise Corrupted(f"leaf element {i}: key {_bolt_show(keys[i])} does not sort after the previous key")
    return keys, values, buckets


def bolt_branch(buf: bytes, start: int, end: int, count: int) -> list:
    """Child page ids of the `count` elements of the bbolt branch page in buf[start:end]."""
    if start < 0 or end > len(buf) or start > end:
        raise Corrupted(f"page bounds {start}..{end} outside a buffer of {len(buf)} bytes")
    table = start + _BOLT_HEADER
    data = table + 16 * count
    if data > end:
        raise Corrupted(f"{count} branch elements do not fit in {end - start} bytes")
    children = []
    child_add = children.append
    elem = table
    for i, (pos, ksize, child) in enumerate(_BOLT_BRANCH_ELEMENT.iter_unpack(buf[table:data])):
        k = elem + pos
        if k + ksize > end or k < data:
            raise Corrupted(f"branch element {i} (key of {ksize} bytes at {k - start}) "
                            f"lies outside the data of the page's {end - start} bytes")
        child_add(child)
        elem += 16
    return children


# A record per page: (BOLT_BRANCH, overflow, pgid, children) or (BOLT_LEAF, overflow, pgid, keys,
# values, subs), subs mapping each sub-bucket's key to its BoltBucket (None when there are none): an
# inline one filled already, one held in pages with its root page id in `_root`, filled by
# _bolt_assemble. Errors name the page: Corrupted(pgid, message), which BoltTx words fully.
# (The compiled core keeps packed records in an arena instead: see bolt.pxi.)
BOLT_BRANCH, BOLT_LEAF = 0, 1
_BOLT_PAGE_HEADER = struct.Struct("<QHHI")   # id, flags, count, overflow
_BOLT_BUCKET_HEADER = struct.Struct("<QQ")   # root pgid, sequence
_BOLT_BRANCH_FLAG, _BOLT_LEAF_FLAG = 0x01, 0x02
_BOLT_PAGE_TYPES = {0x01: "branch", 0x02: "leaf", 0x04: "meta", 0x10: "freelist"}
_BOLT_FIRST_DATA_PAGE = 2                    # pages 0 and 1 are the metas


def bolt_page_type(flags: int) -> str:
    """bbolt's name for a page's type flags."""
    return _BOLT_PAGE_TYPES.get(flags, f"unknown ({flags:#06x})")


def _bolt_inline(buf, start: int, end: int, name: bytes, bucket: "BoltBucket") -> "BoltBucket":
    if end - start < _BOLT_HEADER:
        raise Corrupted(f"inline bucket {_bolt_show(name)}: {end - start} bytes cannot hold a page header")
    _, flags, count, _ = _BOLT_PAGE_HEADER.unpack_from(buf, start)
    if flags != _BOLT_LEAF_FLAG:
        raise Corrupted(f"inline bucket {_bolt_show(name)}: holds a {bolt_page_type(flags)} page, not a leaf page")
    try:
        keys, values, buckets = bolt_leaf(buf, start, end, count)
    except Corrupted as exc:
        raise Corrupted(f"inline bucket {_bolt_show(name)}: {exc}") from None
    if buckets:
        raise Corrupted(f"inline bucket {_bolt_show(name)}: holds a sub-bucket (bbolt never inlines those)")
    bucket._keys = keys
    bucket._values = values
    return bucket


def _bolt_subs(buf, keys: list, buckets: list) -> dict:
    subs = {}
    for n in range(0, len(buckets), 3):
        index, start, end = buckets[n], buckets[n + 1], buckets[n + 2]
        name = keys[index]
        if end - start < 16:
            raise Corrupted(f"bucket {_bolt_show(name)}: a value of {end - start} bytes is no bucket header")
        root, sequence = _BOLT_BUCKET_HEADER.unpack_from(buf, start)
        bucket = BoltBucket(sequence)
        if root == 0:
            _bolt_inline(buf, start + 16, end, name, bucket)
        else:
            bucket._root = root
        subs[name] = bucket
    return subs


def _bolt_page(buf, start: int, end: int, pgid: int) -> tuple:
    """The record of page `pgid`, held whole (overflow included) in buf[start:end]."""
    page_id, flags, count, overflow = _BOLT_PAGE_HEADER.unpack_from(buf, start)
    if page_id != pgid:
        raise Corrupted(pgid, f"its header names page {page_id}")
    if flags != _BOLT_BRANCH_FLAG and flags != _BOLT_LEAF_FLAG:
        raise Corrupted(pgid, f"is a {bolt_page_type(flags)} page where a branch or leaf page belongs")
    try:
        if flags == _BOLT_BRANCH_FLAG:
            return (BOLT_BRANCH, overflow, pgid, bolt_branch(buf, start, end, count))
        keys, values, buckets = bolt_leaf(buf, start, end, count)
        return (BOLT_LEAF, overflow, pgid, keys, values, _bolt_subs(buf, keys, buckets) if buckets else None)
    except Corrupted as exc:
        raise Corrupted(pgid, f"{bolt_page_type(flags)} page: {exc}") from None


def _bolt_referenced(record: tuple) -> list:
    """The page ids a record references: a branch's children, a leaf's sub-buckets' roots."""
    if record[0] == BOLT_BRANCH:
        return list(record[3])
    if record[5] is None:
        return []
    return [bucket._root for bucket in record[5].values() if bucket._root]


class BoltTx:
    """The pages of one read of a bbolt file, decoded into memory (pure Python).

    `walk(root)` reads every page reachable from page `root` through `src`
    (`cargohold.bolt.reader.Source`), level by level, runs of adjacent page ids
    at once, checking each page; `bucket(root, sequence)` checks the order of
    keys across the leaves of each bucket and returns the root bucket. A
    `previous` BoltTx (of the transaction just before) lends the pages it
    holds. Errors name the file and the page: Corrupted; a read that fails:
    Unavailable.
    """

    def __init__(self, src, page_size: int, high_water: int, file_size: int, previous: "BoltTx | None" = None,
                 stats=None, max_run_bytes: int = 4 << 20) -> None:
        self._src = src
        self._path = getattr(src, "path", None)
        self._stats = stats
        self._page_size = page_size if page_size > 0 else 1
        self._max_run = max(1, max_run_bytes // self._page_size)
        self._high_water = high_water
        self._file_size = file_size
        self._cache = previous.records if previous is not None else {}
        self.records: dict = {}        # pgid -> record
        self._spans: list = []         # (first, last) page ids of multi-page records

    def add_page(self, buf, start: int, end: int, pgid: int) -> tuple:
        """Decode the page `pgid` held whole in buf[start:end] into this transaction (one step of a walk).

        Returns (kind, overflow, the page ids it references); Corrupted(pgid, message).
        """
        if start < 0 or end > len(buf) or start + _BOLT_HEADER > end:
            raise Corrupted(pgid, f"page bounds {start}..{end} outside a buffer of {len(buf)} bytes")
        record = _bolt_page(buf, start, end, pgid)
        self.records[pgid] = record
        return record[0], record[1], _bolt_referenced(record)

    def bucket(self, root: int, sequence: int) -> "BoltBucket":
        """The bucket rooted at page `root`, after checking the key order across the leaves of every
        bucket under it (Corrupted(pgid, message) names the leaf)."""
        return _bolt_assemble(self.records, root, sequence)

    # -- the walk ----------------------------------------------------------------------------

    def walk(self, root: int) -> None:
        """Read and decode every page reachable from page `root` (a bucket's root page)."""
        frontier = [(root, -1)]
        records = self.records
        cache = self._cache
        reused = 0
        try:
            while frontier:
                wanted: dict = {}
                following: list = []
                for pgid, parent in frontier:
                    if pgid in records or pgid in wanted:
                        raise self._bad(pgid, parent, "reached twice (a cycle or a shared page)")
                    record = cache.get(pgid)
                    if record is None:
                        wanted[pgid] = parent
                    else:
                        reused += 1
                        self._add(record, following)
                if wanted:
                    self._fetch(wanted, following)
                frontier = following
            self._check_spans()
        finally:
            if self._stats is not None:
                self._stats.pages_reused += reused
            self._cache = self._src = self._stats = None

    def _add(self, record: tuple, following: list) -> None:
        pgid = record[2]
        self.records[pgid] = record
        if record[1]:
            self._spans.append((pgid, pgid + record[1]))
        following += [(child, pgid) for child in _bolt_referenced(record)]

    def _bad(self, pgid: int, parent: int, message: str) -> Corrupted:
        where = "the meta's root bucket" if parent < 0 else f"page {parent}"
        return Corrupted(f"{self._path}: page {pgid} (referenced by {where}): {message}")

    def _named(self, exc: Corrupted, pgid: int, parent: int) -> Corrupted:
        """A decoder's Corrupted(pgid, message), worded with the file and the referencing page."""
        return self._bad(pgid, parent, exc.args[1] if len(exc.args) == 2 else str(exc))

    def _check_range(self, pgid: int, parent: int, overflow: int) -> None:
        high_water = self._high_water
        if pgid < _BOLT_FIRST_DATA_PAGE:
            raise self._bad(pgid, parent, "is a meta page id")
        if pgid + overflow >= high_water:
            span = f"pages {pgid}-{pgid + overflow}" if overflow else "the page"
            raise self._bad(pgid, parent, f"{span} beyond the high-water mark {high_water}")
        end = (pgid + overflow + 1) * self._page_size
        if end > self._file_size:
            raise self._bad(pgid, parent, f"truncated: the page ends at byte {end}, the file has {self._file_size}")

    def _read(self, pgid: int, parent: int, pages: int, scratch: bool = False):
        size = pages * self._page_size
        read = self._src.read_scratch if scratch else self._src.read
        data = read(pgid * self._page_size, size)
        if self._stats is not None:
            self._stats.pages_read += pages
            self._stats.bytes_read += len(data)
        if len(data) != size:
            raise self._bad(pgid, parent, f"truncated: read {len(data)} of {size} bytes")
        return data

    def _fetch(self, wanted: dict, following: list) -> None:
        """Read and decode the wanted pages, runs of adjacent ids at once."""
        ps = self._page_size
        ids = sorted(wanted)
        if ids[0] < _BOLT_FIRST_DATA_PAGE or ids[-1] >= self._high_water or (ids[-1] + 1) * ps > self._file_size:
            for pgid in ids:
                self._check_range(pgid, wanted[pgid], 0)
        n = len(ids)
        i = 0
        while i < n:
            first = ids[i]
            j = i + 1
            while j < n and ids[j] == ids[j - 1] + 1 and ids[j] - first < self._max_run:
                j += 1
            run = bytes(self._read(first, wanted[first], ids[j - 1] - first + 1, scratch=True))
            overflowing = []
            for pgid in ids[i:j]:
                start = (pgid - first) * ps
                page_id, flags, _, overflow = _BOLT_PAGE_HEADER.unpack_from(run, start)
                if overflow and page_id == pgid and (flags == _BOLT_BRANCH_FLAG or flags == _BOLT_LEAF_FLAG):
                    overflowing.append((pgid, overflow))
                    continue
                try:
                    record = _bolt_page(run, start, start + ps, pgid)
                except Corrupted as exc:
                    raise self._named(exc, pgid, wanted[pgid]) from None
                self._add(record, following)
            for pgid, overflow in overflowing:   # a page spanning overflow + 1 pages: read whole
                parent = wanted[pgid]
                self._check_range(pgid, parent, overflow)
                data = self._read(pgid, parent, overflow + 1)
                try:
                    record = _bolt_page(data, 0, len(data), pgid)
                except Corrupted as exc:
                    raise self._named(exc, pgid, parent) from None
                self._add(record, following)
            i = j

    def _check_spans(self) -> None:
        """No two records may share a page: a multi-page record must not cover another's id."""
        if not self._spans:
            return
        ids = sorted(self.records)
        for first, last in self._spans:
            i = bisect_right(ids, first)
            if i < len(ids) and ids[i] <= last:
                raise Corrupted(f"{self._path}: page {ids[i]} lies inside the {last - first + 1} pages "
                                f"of page {first}")


def _bolt_assemble(records: dict, root: int, sequence: int) -> "BoltBucket":
    """The bucket rooted at page `root` and every bucket under it, from the records of a walk."""
    top = BoltBucket(sequence)
    top._root = root
    todo = [top]
    while todo:
        bucket = todo.pop()
        leaves = _bolt_leaves(records, bucket._root)
        if len(leaves) == 1:
            keys, values, subs = leaves[0][3], leaves[0][4], leaves[0][5]
        else:
            keys, values, subs = [], [], None
            for leaf in leaves:
                if keys and leaf[3] and not keys[-1] < leaf[3][0]:
                    raise Corrupted(leaf[2], f"leaf key {_bolt_show(leaf[3][0])} does not sort after the previous "
                                             f"page's last key {_bolt_show(keys[-1])}")
                keys += leaf[3]
                values += leaf[4]
                if leaf[5] is not None:
                    subs = subs or {}
                    subs.update(leaf[5])
        bucket._keys = keys
        bucket._values = values
        if subs is None:
            bucket._subs = _BOLT_NO_SUBS
        else:
            bucket._subs = subs
            todo += [child for child in subs.values() if child._root]
    return top


def _bolt_leaves(records: dict, pgid: int) -> list:
    record = records[pgid]
    if record[0] != BOLT_BRANCH:
        return [record]
    out = []
    todo = [pgid]
    while todo:
        record = records[todo.pop()]
        if record[0] == BOLT_BRANCH:
            todo.extend(reversed(record[3]))
        else:
            out.append(record)
    return out


_BOLT_NO_SUBS: dict = {}   # shared by every bucket without sub-buckets; never written
_BOLT_NO_KEYS: list = []   # likewise for a bucket not filled yet


def _bolt_key(key) -> bytes:
    if type(key) is bytes:
        return key
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key)
    raise InvalidArgument(f"a bbolt key is bytes, not {type(key).__name__}: {key!r}")


class BoltBucket:
    """One bucket of the transaction a `bolt.File` read; immutable, served from memory.

    Keys are in bbolt's order (bytewise). A key naming a sub-bucket has no
    value: `get` and `items` give None for it, `bucket` gives the sub-bucket.
    """

    __slots__ = ("sequence", "_root", "_keys", "_values", "_subs")

    def __init__(self, sequence: int = 0) -> None:
        self.sequence = sequence   # the bucket's NextSequence counter
        self._root = 0             # the root page of a bucket held in pages, 0 for an inline one
        self._keys: list = _BOLT_NO_KEYS
        self._values: list = _BOLT_NO_KEYS
        self._subs: dict = _BOLT_NO_SUBS

    def get(self, key):
        """The value of `key`; None for a missing key or a sub-bucket (as bbolt's Get)."""
        key = _bolt_key(key)
        keys = self._keys
        i = bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            return self._values[i]
        return None

    def bucket(self, key):
        """The sub-bucket named `key`, or None."""
        return self._subs.get(_bolt_key(key))

    def _range(self, prefix) -> tuple:
        prefix = _bolt_key(prefix)
        keys = self._keys
        lo = i = bisect_left(keys, prefix)
        n = len(keys)
        while i < n and keys[i].startswith(prefix):
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

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key) -> bool:
        key = _bolt_key(key)
        keys = self._keys
        i = bisect_left(keys, key)
        return i < len(keys) and keys[i] == key

    def __iter__(self):
        return iter(self._keys)

    def __repr__(self) -> str:
        return f"<bolt.Bucket: {len(self._keys)} keys, {len(self._subs)} sub-buckets>"


# -- fsck's pass over the records (cargohold.integrity.tables) ---------------------------------

_COMMITTED = 3
"""`Kind.COMMITTED`."""


def _bounded(rows, prefix):
    """The rows of an iterator positioned at `prefix`, up to the first key outside it."""
    for row in rows:
        key = row[0] if isinstance(row, tuple) else row
        if not bytes(key).startswith(prefix):
            return
        yield row


class TableCheck:
    """fsck's pass over the objects table against the node table (pure-Python twin).

    Records come group by group (every record of one kind in one namespace, or of one
    snapshotter in one namespace for snapshots), in key order; the node-table rows of the
    group's node type come through `begin_type`, in key order too, and are matched against
    the records as they come: the two orders agree group by group, so no table is held in
    memory. Every iterator given starts at its prefix and is read only up to the first key
    outside it. ``entry_of(kind, ns, parts, raw)`` returns the entry a record's node must have
    and the decoded record, ``backend_of(raw)`` the (id, kind, parent key bytes) of a backend
    snapshot's record; both raise Corrupted for a damaged one. Problems are appended to
    `problems` as tuples whose first item names them (`cargohold.integrity.check` reads them).
    """

    def __init__(self, entry_of, backend_of, problems):
        self._entry_of = entry_of
        self._backend_of = backend_of
        self.problems = problems
        self.blobs = []
        """(namespace, digest, recorded size) of every content record."""
        self.others = []
        """(kind, namespace, id, record) of every ingest and lease record."""
        self.max_ids = {}
        """The largest snapshot id the records of each snapshotter use."""
        self.records = 0
        self.matched = 0
        self._rows = iter(())
        self._row = None
        self._backends = {}
        self._referenced = {}

    # -- backends ---------------------------------------------------------------------------

    def backend(self, name, rows, dirs):
        """Register snapshotter `name`'s backend: its metastore's (backend key, raw record) rows and the
        ids that have a directory. A record that cannot be read is a ``damaged-backend-record``."""
        table = {}
        for key, raw in rows:
            key = bytes(key)
            try:
                table[key] = self._backend_of(bytes(raw))
            except Corrupted as exc:
                self.problems.append(("damaged-backend-record", name, key, str(exc)))
        self._backends[name] = (table, set(dirs))
        self._referenced[name] = set()

    def unreferenced(self, name):
        """(backend key, id) of each backend snapshot of `name` no record named, in key order."""
        table, _ = self._backends[name]
        referenced = self._referenced[name]
        return [(key, found[0]) for key, found in table.items() if key not in referenced]

    def backend_ids(self, name):
        """The ids of every backend snapshot of `name`."""
        return {found[0] for found in self._backends[name][0].values()}

    def is_referenced(self, name, key):
        """Whether some record of the groups seen names backend key `key` (bytes) of `name`."""
        return key in self._referenced.get(name, ())

    # -- the node-table rows ------------------------------------------------------------------

    def begin_type(self, prefix, rows):
        """The node-table rows of the next node type (keys starting with `prefix`), in key order."""
        self._rows = _bounded(rows, prefix)
        self._row = next(self._rows, None)

    def end_type(self):
        """What is left of the node type's rows had no record: orphans."""
        self._orphans_below(None)

    def _orphans_below(self, node):
        row = self._row
        while row is not None and (node is None or row[0] < node):
            self.problems.append(("orphan-node", bytes(row[0]), bytes(row[1])))
            row = next(self._rows, None)
        self._row = row

    def _match(self, node, okey, expected):
        self._orphans_below(node)
        row = self._row
        if row is not None and row[0] == node:
            self.matched += 1
            if expected is not None and row[1] != expected:
                self.problems.append(("wrong-node", node, okey, expected, bytes(row[1])))
            self._row = next(self._rows, None)
        elif expected is not None:
            self.problems.append(("missing-node", node, okey, expected))

    # -- groups ---------------------------------------------------------------------------------

    def _record(self, kind, ns, okey, ident, raw):
        """(expected entry, record) of one record, or None when it is damaged (reported)."""
        self.records += 1
        try:
            return self._entry_of(kind, ns, [ident.decode("utf-8")], raw)
        except UnicodeDecodeError:
            self.problems.append(("damaged-record", okey, "its key is not UTF-8 text"))
        except Corrupted as exc:
            self.problems.append(("damaged-record", okey, str(exc)))
        return None

    def rows(self, kind, rtype, ns, rows):
        """One group: the records of `kind` (not snapshots) of namespace `ns` (str)."""
        prefix = ns.encode() + b"\x00" + kind + b"\x00"
        head = bytes((rtype,)) + ns.encode() + b"\x00"
        for okey, raw in _bounded(rows, prefix):
            okey = bytes(okey)
            ident = okey[len(prefix):]
            if b"\x00" in ident:
                self.records += 1
                self.problems.append(("damaged-record", okey, "its key has too many parts"))
                continue
            node = head + ident
            found = self._record(kind, ns, okey, ident, bytes(raw))
            if found is None:
                self._match(node, okey, None)
                continue
            expected, record = found
            self._match(node, okey, expected)
            if kind == b"blob":
                self.blobs.append((ns, ident.decode(), record["s"]))
            elif kind in (b"ingest", b"lease"):
                self.others.append((kind.decode(), ns, ident.decode(), record))

    def snapshots(self, ns, snapshotter, links, rows):
        """The snapshot records of one snapshotter in one namespace: `links` the keys of the
        ``snapchild`` rows of that snapshotter (the parents' links to their children), `rows` the
        records; each checked against its parent, its link and its backend snapshot (`backend`)."""
        nsb, snb = ns.encode(), snapshotter.encode()
        link_prefix = nsb + b"\x00snapchild\x00" + snb + b"\x00"
        pending = {}
        for okey in _bounded(links, link_prefix):
            okey = bytes(okey)
            pending[okey[len(link_prefix):]] = okey
        prefix = nsb + b"\x00snapshot\x00" + snb + b"\x00"
        head = b"\x02" + nsb + b"\x00" + snb + b"/"
        records = {}
        damaged = set()
        for okey, raw in _bounded(rows, prefix):
            okey = bytes(okey)
            ident = okey[len(prefix):]
            if b"\x00" in ident:
                self.records += 1
                self.problems.append(("damaged-record", okey, "its key has too many parts"))
                continue
            node = head + ident
            self.records += 1
            try:
                key = ident.decode("utf-8")
                expected, record = self._entry_of(b"snapshot", ns, [snapshotter, key], bytes(raw))
            except UnicodeDecodeError:
                self.problems.append(("damaged-record", okey, "its key is not UTF-8 text"))
                damaged.add(ident)
                self._match(node, okey, None)
                continue
            except Corrupted as exc:
                self.problems.append(("damaged-record", okey, str(exc)))
                damaged.add(ident)
                self._match(node, okey, None)
                continue
            self._match(node, okey, expected)
            records[key] = (record["i"], record["pi"], record["p"], record["k"], record["b"].encode())
            if record["i"] > self.max_ids.get(snapshotter, 0):
                self.max_ids[snapshotter] = record["i"]
        found_backend = self._backends.get(snapshotter)
        referenced = self._referenced.setdefault(snapshotter, set())
        for key, (sid, pid, parent, kind, bkey) in records.items():
            parent_record = records.get(parent) if parent else None
            if parent:
                if parent_record is None:
                    if parent.encode() not in damaged:
                        self.problems.append(("missing-parent", ns, snapshotter, key, parent))
                elif parent_record[3] != _COMMITTED:
                    self.problems.append(("parent-not-committed", ns, snapshotter, key, parent))
                elif parent_record[0] != pid:
                    self.problems.append(("wrong-parent-id", ns, snapshotter, key, pid, parent_record[0]))
                link = str(pid).encode() + b"\x00" + key.encode()
                if pending.pop(link, None) is None:
                    self.problems.append(("missing-child-link", ns, snapshotter, key, pid))
            referenced.add(bkey)
            if found_backend is None:
                self.problems.append(("no-backend", ns, snapshotter, key))
                continue
            table, dirs = found_backend
            found = table.get(bkey)
            if found is None:
                self.problems.append(("missing-backend-snapshot", ns, snapshotter, key, bkey.decode()))
                continue
            bid, bkind, bparent = found
            if bkind != kind:
                self.problems.append(("backend-kind", ns, snapshotter, key, bkey.decode(), kind, bkind))
            want = parent_record[4] if parent_record is not None else (None if parent else b"")
            if want is not None and bparent != want:
                self.problems.append(("backend-parent", ns, snapshotter, key, bkey.decode(), want.decode(),
                                      bparent.decode("utf-8", "replace")))
            if bid not in dirs:
                self.problems.append(("missing-snapshot-dir", ns, snapshotter, key, bkey.decode(), bid))
        for okey in pending.values():
            self.problems.append(("orphan-child-link", okey))


# -- containerd's object buckets, walked for the GC plan (cargohold.containerd.plan) ---------------
# Each function walks one bucket of objects and appends (packed node key, node-table entry) to
# `out`. An object whose labels cannot matter to the collector gets `bare` and at most one STRONG
# edge; any other object is handed to `slow`, the decoding entry functions. Labels cannot matter
# when the object has no labels sub-bucket, or one holding only plain values, UTF-8 keys and
# values (the decoders would refuse anything else), no key of which starts with
# "containerd.io/gc." (the prefix of every label the collectors read).

_CTRD_GC_PREFIX = b"containerd.io/gc."


def _ctrd_plain(obj) -> bool:
    labels = obj.bucket(b"labels")
    if labels is None:
        return True
    for key, value in labels.items():
        if value is None or key.startswith(_CTRD_GC_PREFIX):
            return False
        try:
            key.decode()
            value.decode()
        except UnicodeDecodeError:
            return False
    return True


def ctrd_blobs(blobs, prefix: bytes, bare: bytes, slow, out: list) -> None:
    """Append (prefix + digest, entry) for every blob of a ``content/blob`` bucket: `bare` when its
    labels cannot matter, else slow(blob)."""
    for digest, blob in blobs.buckets():
        out.append((prefix + digest, bare if _ctrd_plain(blob) else slow(blob)))


def ctrd_snapshots(snapshots, prefix: bytes, bare: bytes, slow, out: list) -> None:
    """Append (prefix + snapshotter/key, entry) for every snapshot of a ``snapshots`` bucket: `bare`,
    plus a STRONG edge to its parent if it has one, when its labels cannot matter, else
    slow(snapshotter name, snapshot)."""
    from .gc.index import strong_edge

    for name, keys in snapshots.buckets():
        head = prefix + name + b"/"
        for key, snap in keys.buckets():
            if not _ctrd_plain(snap):
                out.append((head + key, slow(name, snap)))
                continue
            parent = snap.get(b"parent")
            out.append((head + key, bare + strong_edge(head + parent) if parent else bare))


def ctrd_images(images, prefix: bytes, content_prefix: bytes, bare: bytes, slow, out: list) -> None:
    """Append (prefix + name, entry) for every image of an ``images`` bucket: `bare`, plus a STRONG
    edge to its target's content if it names one, when its labels cannot matter and its target
    is a bucket (or absent), else slow(image)."""
    from .gc.index import strong_edge

    for name, image in images.buckets():
        target = image.bucket(b"target")
        if (target is None and image.get(b"target") is not None) or not _ctrd_plain(image):
            out.append((prefix + name, slow(image)))
            continue
        digest = target.get(b"digest") if target is not None else None
        out.append((prefix + name, bare + strong_edge(content_prefix + digest) if digest else bare))


def ctrd_containers(containers, prefix: bytes, snap_prefix: bytes, bare: bytes, slow, out: list) -> None:
    """Append (prefix + id, entry) for every container of a ``containers`` bucket: `bare`, plus a
    STRONG edge to snapshot <snapshotter>/<snapshotKey> if it names a snapshotter, when its labels
    cannot matter, else slow(container)."""
    from .gc.index import strong_edge

    for cid, ctr in containers.buckets():
        if not _ctrd_plain(ctr):
            out.append((prefix + cid, slow(ctr)))
            continue
        snapshotter = ctr.get(b"snapshotter")
        if not snapshotter:
            out.append((prefix + cid, bare))
            continue
        target = snap_prefix + snapshotter + b"/" + (ctr.get(b"snapshotKey") or b"")
        out.append((prefix + cid, bare + strong_edge(target)))

