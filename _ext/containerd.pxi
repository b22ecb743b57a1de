# containerd's object buckets walked for the GC plan (compiled): twins of the ctrd_* functions of
# _fallback.py. Each walks one bucket of objects (v1/<ns>/content/blob, snapshots, images,
# containers) in the arena of the transaction, without a Python object per object, and appends
# (packed node key, node-table entry) to a list. An object whose labels cannot matter to the
# collector gets its entry from the constant `bare` and at most one STRONG edge (the layout of
# cargohold.gc.index); any other object is handed to `slow`, the decoding entry functions.
#
# Labels cannot matter when the object has no labels sub-bucket, or one holding only plain
# values, UTF-8 keys and values (the decoders would refuse anything else), no key of which
# starts with "containerd.io/gc." (the prefix of every label the collectors read).

cdef extern from "Python.h":
    void PyObject_GC_UnTrack(void *op)

DEF CTRD_E_STRONG = 1     # cargohold.gc.index.E_STRONG
DEF CTRD_MAX_TARGET = 0xFFFF
DEF CTRD_GC_PREFIX_LEN = 17
DEF CTRD_AHEAD = 8        # objects whose records are loaded ahead of the one decoded

cdef const unsigned char *_CTRD_GC_PREFIX = <const unsigned char *>b"containerd.io/gc."


cdef bint _ctrd_utf8(const unsigned char *p, Py_ssize_t n) noexcept nogil:
    """True for well-formed UTF-8 as Python's strict decoder takes it (no surrogates, none above U+10FFFF)."""
    cdef Py_ssize_t i = 0
    cdef unsigned char c, d
    while i < n:
        c = p[i]
        if c < 0x80:
            i += 1
            continue
        if c < 0xC2 or c > 0xF4:
            return False
        if c < 0xE0:
            if i + 1 >= n or p[i + 1] & 0xC0 != 0x80:
                return False
            i += 2
            continue
        if i + 1 >= n:
            return False
        d = p[i + 1]
        if c < 0xF0:
            if d & 0xC0 != 0x80 or (c == 0xE0 and d < 0xA0) or (c == 0xED and d > 0x9F):
                return False
            if i + 2 >= n or p[i + 2] & 0xC0 != 0x80:
                return False
            i += 3
            continue
        if d & 0xC0 != 0x80 or (c == 0xF0 and d < 0x90) or (c == 0xF4 and d > 0x8F):
            return False
        if i + 3 >= n or p[i + 2] & 0xC0 != 0x80 or p[i + 3] & 0xC0 != 0x80:
            return False
        i += 4
    return True


cdef bint _ctrd_plain(const _BoltView *obj) noexcept:
    """True when the object's labels cannot matter to the collector (see above)."""
    cdef const unsigned char *entry = _bolt_find(obj, <const unsigned char *>b"labels", 6)
    cdef _BoltView labels
    cdef Py_ssize_t i
    cdef const unsigned char *key
    cdef uint32_t klen
    if entry == NULL or _bolt_entry_child(entry) == BOLT_NONE:
        return True
    _bolt_sub_view(entry, &labels)
    entry = labels.index
    for i in range(labels.count):
        if _bolt_entry_child(entry) != BOLT_NONE:
            return False
        key = _bolt_entry_key(entry)
        klen = _bolt_entry_klen(entry)
        if klen >= CTRD_GC_PREFIX_LEN and memcmp(key, _CTRD_GC_PREFIX, CTRD_GC_PREFIX_LEN) == 0:
            return False
        if not _ctrd_utf8(key, klen) or not _ctrd_utf8(key + klen, _bolt_entry_vlen(entry)):
            return False
        entry += BOLT_ENTRY
    return True


cdef inline const unsigned char *_ctrd_value(const _BoltView *obj, const char *name, Py_ssize_t size,
                                             Py_ssize_t *length) noexcept:
    """The value of field `name` (NULL when absent or a bucket, as Bucket.get gives None)."""
    cdef const unsigned char *entry = _bolt_find(obj, <const unsigned char *>name, size)
    if entry == NULL or _bolt_entry_child(entry) != BOLT_NONE:
        return NULL
    length[0] = _bolt_entry_vlen(entry)
    return _bolt_entry_value(entry)


cdef inline tuple _ctrd_pair(bytes key, bytes entry):
    """(key, entry), untracked by the cycle collector: a tuple of two bytes is never part of a cycle
    (CPython untracks such tuples itself, but only once a collection has walked them all)."""
    cdef tuple pair = (key, entry)
    PyObject_GC_UnTrack(<void *>pair)
    return pair


cdef bytes _ctrd_cat(bytes head, const unsigned char *tail, Py_ssize_t size):
    """head + tail."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(head)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n + size)
    cdef char *p = PyBytes_AS_STRING(out)
    memcpy(p, PyBytes_AS_STRING(head), n)
    memcpy(p + n, tail, size)
    return out


cdef bytes _ctrd_strong(bytes bare, bytes head, const unsigned char *tail, Py_ssize_t size):
    """`bare` followed by one STRONG edge to head + tail (as gc.index.strong_edge writes it)."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(bare), h = PyBytes_GET_SIZE(head)
    cdef Py_ssize_t target = h + size
    cdef bytes out
    cdef unsigned char *p
    if target > CTRD_MAX_TARGET:
        raise InvalidArgument(f"reference of {target} bytes is too long")
    out = PyBytes_FromStringAndSize(NULL, n + 3 + target)
    p = <unsigned char *>PyBytes_AS_STRING(out)
    memcpy(p, PyBytes_AS_STRING(bare), n)
    p[n] = CTRD_E_STRONG
    p[n + 1] = target & 0xFF
    p[n + 2] = target >> 8
    memcpy(p + n + 3, PyBytes_AS_STRING(head), h)
    if size:
        memcpy(p + n + 3 + h, tail, size)
    return out


def ctrd_blobs(BoltBucket blobs, bytes prefix, bytes bare, slow, list out):
    """Append (prefix + digest, entry) for every blob of a ``content/blob`` bucket: `bare` when its
    labels cannot matter, else slow(blob)."""
    cdef Py_ssize_t i
    cdef const unsigned char *entry
    cdef _BoltView obj
    for i in range(blobs._v.count):
        entry = blobs._entry(i)
        if i + CTRD_AHEAD < blobs._v.count:
            _bolt_prefetch(blobs._entry(i + CTRD_AHEAD))
        if _bolt_entry_child(entry) == BOLT_NONE:
            continue
        _bolt_sub_view(entry, &obj)
        key = _ctrd_cat(prefix, _bolt_entry_key(entry), _bolt_entry_klen(entry))
        out.append(_ctrd_pair(key, bare if _ctrd_plain(&obj) else slow(blobs._child(entry))))


def ctrd_snapshots(BoltBucket snapshots, bytes prefix, bytes bare, slow, list out):
    """Append (prefix + snapshotter/key, entry) for every snapshot of a ``snapshots`` bucket: `bare`,
    plus a STRONG edge to its parent if it has one, when its labels cannot matter, else
    slow(snapshotter name, snapshot)."""
    cdef Py_ssize_t i, j, plen = 0
    cdef const unsigned char *entry
    cdef const unsigned char *sub
    cdef const unsigned char *parent
    cdef BoltBucket keys
    cdef _BoltView obj
    cdef bytes head
    for i in range(snapshots._v.count):
        entry = snapshots._entry(i)
        if _bolt_entry_child(entry) == BOLT_NONE:
            continue
        keys = snapshots._child(entry)
        name = _bolt_key_at(entry)
        head = prefix + name + b"/"
        for j in range(keys._v.count):
            sub = keys._entry(j)
            if j + CTRD_AHEAD < keys._v.count:
                _bolt_prefetch(keys._entry(j + CTRD_AHEAD))
            if _bolt_entry_child(sub) == BOLT_NONE:
                continue
            _bolt_sub_view(sub, &obj)
            key = _ctrd_cat(head, _bolt_entry_key(sub), _bolt_entry_klen(sub))
            if not _ctrd_plain(&obj):
                out.append(_ctrd_pair(key, slow(name, keys._child(sub))))
                continue
            parent = _ctrd_value(&obj, b"parent", 6, &plen)
            if parent != NULL and plen:
                out.append(_ctrd_pair(key, _ctrd_strong(bare, head, parent, plen)))
            else:
                out.append(_ctrd_pair(key, bare))


def ctrd_images(BoltBucket images, bytes prefix, bytes content_prefix, bytes bare, slow, list out):
    """Append (prefix + name, entry) for every image of an ``images`` bucket: `bare`, plus a STRONG
    edge to its target's content if it names one, when its labels cannot matter and its target
    is a bucket (or absent), else slow(image)."""
    cdef Py_ssize_t i, dlen = 0
    cdef const unsigned char *entry
    cdef const unsigned char *target
    cdef const unsigned char *digest
    cdef _BoltView obj, inner
    for i in range(images._v.count):
        entry = images._entry(i)
        if i + CTRD_AHEAD < images._v.count:
            _bolt_prefetch(images._entry(i + CTRD_AHEAD))
        if _bolt_entry_child(entry) == BOLT_NONE:
            continue
        _bolt_sub_view(entry, &obj)
        key = _ctrd_cat(prefix, _bolt_entry_key(entry), _bolt_entry_klen(entry))
        target = _bolt_find(&obj, <const unsigned char *>b"target", 6)
        if (target != NULL and _bolt_entry_child(target) == BOLT_NONE) or not _ctrd_plain(&obj):
            out.append(_ctrd_pair(key, slow(images._child(entry))))
            continue
        digest = NULL
        if target != NULL:
            _bolt_sub_view(target, &inner)
            digest = _ctrd_value(&inner, b"digest", 6, &dlen)
        if digest != NULL and dlen:
            out.append(_ctrd_pair(key, _ctrd_strong(bare, content_prefix, digest, dlen)))
        else:
            out.append(_ctrd_pair(key, bare))


def ctrd_containers(BoltBucket containers, bytes prefix, bytes snap_prefix, bytes bare, slow, list out):
    """Append (prefix + id, entry) for every container of a ``containers`` bucket: `bare`, plus a
    STRONG edge to snapshot <snapshotter>/<snapshotKey> if it names a snapshotter, when its labels
    cannot matter, else slow(container)."""
    cdef Py_ssize_t i, slen = 0, klen = 0
    cdef const unsigned char *entry
    cdef const unsigned char *snapshotter
    cdef const unsigned char *snapshot_key
    cdef _BoltView obj
    cdef bytes head
    for i in range(containers._v.count):
        entry = containers._entry(i)
        if i + CTRD_AHEAD < containers._v.count:
            _bolt_prefetch(containers._entry(i + CTRD_AHEAD))
        if _bolt_entry_child(entry) == BOLT_NONE:
            continue
        _bolt_sub_view(entry, &obj)
        key = _ctrd_cat(prefix, _bolt_entry_key(entry), _bolt_entry_klen(entry))
        if not _ctrd_plain(&obj):
            out.append(_ctrd_pair(key, slow(containers._child(entry))))
            continue
        snapshotter = _ctrd_value(&obj, b"snapshotter", 11, &slen)
        if snapshotter == NULL or not slen:
            out.append(_ctrd_pair(key, bare))
            continue
        snapshot_key = _ctrd_value(&obj, b"snapshotKey", 11, &klen)
        if snapshot_key == NULL:
            klen = 0
        head = _ctrd_cat(snap_prefix, snapshotter, slen) + b"/"
        out.append(_ctrd_pair(key, _ctrd_strong(bare, head, snapshot_key, klen)))
