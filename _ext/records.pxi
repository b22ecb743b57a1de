# An image as the image store writes it (`cargohold.images`), in one call: `encode_image` checks
# an image of the plain form, builds the stored copy and the bytes of its record and node-table
# entry. Twin: cargohold._fallback_records.encode_image (in _fallback), which says what "plain"
# means; any other image gives None and the store takes its Python path, whose checks name the fault.
# `encode_container` does the same for a container (`cargohold.containers`; twin: encode_container).
#
# The record is the msgpack map schema.pack writes ({"t": {"m", "d", "s", "a"}, "l", "c", "u"},
# msgpack-python's smallest forms, str8 allowed); the entry is gc.index.image_entry's. A container's
# is {"r", "o", "s", "sn", "k", "i", "l", "x", "sb", "c", "u"} (the spec in bin format), its entry
# gc.index.container_entry's.

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.string cimport memchr, memcmp, memcpy
from cpython.object cimport PyObject

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)
    void *PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    object PyObject_GenericGetDict(object o, void *context)
    int PyObject_GenericSetDict(object o, object value, void *context) except -1
    object PyDict_Copy(object d)
    PyObject *PyDict_GetItemWithError(object d, object key) except? NULL

cdef enum:
    REC_MAX_NAME = 255          # validation.MAX_KEY_BYTES
    REC_MAX_LABEL = 4096        # validation.MAX_LABEL_SIZE
    REC_IMAGE_NODE = 5          # ResourceType.IMAGE
    REC_CONTENT_NODE = 1        # ResourceType.CONTENT
    REC_SNAPSHOT_NODE = 2       # ResourceType.SNAPSHOT
    REC_CONTAINER_NODE = 3      # ResourceType.CONTAINER
    REC_MAX_IDENTIFIER = 76     # validation.MAX_IDENTIFIER_LENGTH
    REC_F_ROOT = 0x01           # gc.index.F_ROOT
    REC_F_HIDDEN = 0x08         # gc.index.F_HIDDEN
    REC_E_STRONG = 1            # gc.index.E_STRONG
    REC_GC_PREFIX_LEN = 17

cdef const char *_REC_GC_PREFIX = b"containerd.io/gc."
cdef object _rec_image_cls = None
cdef object _rec_descriptor_cls = None
cdef object _rec_image_entry = None
cdef object _rec_container_cls = None
cdef object _rec_runtime_cls = None
cdef object _rec_aliases = None
cdef object _rec_container_entry = None


cdef inline bint _rec_ascii(object s) noexcept:
    """s is a str (not a subclass) of ASCII text."""
    return type(s) is str and PyUnicode_IS_ASCII(s)


cdef inline Py_ssize_t _rec_str_size(Py_ssize_t n) noexcept:
    if n < 32:
        return 1 + n
    if n < 256:
        return 2 + n
    if n < 65536:
        return 3 + n
    return 5 + n


cdef inline Py_ssize_t _rec_map_size(Py_ssize_t n) noexcept:
    return 1 if n < 16 else (3 if n < 65536 else 5)


cdef inline Py_ssize_t _rec_int_size(long long v) noexcept:
    if v >= 0:
        if v < 128:
            return 1
        if v < 256:
            return 2
        if v < 65536:
            return 3
        return 5 if v < 4294967296 else 9
    if v >= -32:
        return 1
    if v >= -128:
        return 2
    if v >= -32768:
        return 3
    return 5 if v >= -2147483648 else 9


cdef inline unsigned char *_rec_be(unsigned char *p, unsigned long long v, int n) noexcept:
    """v in n big-endian bytes at p (msgpack's order)."""
    if n == 1:
        p[0] = v & 0xFF
    elif n == 2:
        p[0] = (v >> 8) & 0xFF
        p[1] = v & 0xFF
    elif n == 4:
        p[0] = (v >> 24) & 0xFF
        p[1] = (v >> 16) & 0xFF
        p[2] = (v >> 8) & 0xFF
        p[3] = v & 0xFF
    else:
        p[0] = (v >> 56) & 0xFF
        p[1] = (v >> 48) & 0xFF
        p[2] = (v >> 40) & 0xFF
        p[3] = (v >> 32) & 0xFF
        p[4] = (v >> 24) & 0xFF
        p[5] = (v >> 16) & 0xFF
        p[6] = (v >> 8) & 0xFF
        p[7] = v & 0xFF
    return p + n


cdef inline unsigned char *_rec_str(unsigned char *p, object s) noexcept:
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(s)
    if n < 32:
        p[0] = 0xA0 | n
        p += 1
    elif n < 256:
        p[0] = 0xD9
        p = _rec_be(p + 1, n, 1)
    elif n < 65536:
        p[0] = 0xDA
        p = _rec_be(p + 1, n, 2)
    else:
        p[0] = 0xDB
        p = _rec_be(p + 1, n, 4)
    memcpy(p, PyUnicode_DATA(s), n)
    return p + n


cdef inline unsigned char *_rec_key(unsigned char *p, char key) noexcept:
    p[0] = 0xA1
    p[1] = key
    return p + 2


cdef inline unsigned char *_rec_map(unsigned char *p, Py_ssize_t n) noexcept:
    if n < 16:
        p[0] = 0x80 | n
        return p + 1
    if n < 65536:
        p[0] = 0xDE
        return _rec_be(p + 1, n, 2)
    p[0] = 0xDF
    return _rec_be(p + 1, n, 4)


cdef inline unsigned char *_rec_int(unsigned char *p, long long v) noexcept:
    if v >= 0:
        if v < 128:
            p[0] = v
            return p + 1
        if v < 256:
            p[0] = 0xCC
            return _rec_be(p + 1, v, 1)
        if v < 65536:
            p[0] = 0xCD
            return _rec_be(p + 1, v, 2)
        if v < 4294967296:
            p[0] = 0xCE
            return _rec_be(p + 1, v, 4)
        p[0] = 0xCF
        return _rec_be(p + 1, v, 8)
    if v >= -32:
        p[0] = <unsigned char>(v & 0xFF)
        return p + 1
    if v >= -128:
        p[0] = 0xD0
        return _rec_be(p + 1, <unsigned long long>v, 1)
    if v >= -32768:
        p[0] = 0xD1
        return _rec_be(p + 1, <unsigned long long>v, 2)
    if v >= -2147483648:
        p[0] = 0xD2
        return _rec_be(p + 1, <unsigned long long>v, 4)
    p[0] = 0xD3
    return _rec_be(p + 1, <unsigned long long>v, 8)


cdef inline bint _rec_int64(object v, long long *out):
    """v is an int (not a bool or subclass) in the int64 range; its value in *out."""
    if type(v) is not int:
        return False
    try:
        out[0] = v
    except OverflowError:
        return False
    return True


cdef bint _rec_digest(object digest) noexcept:
    """A valid digest (validation.validate_digest): sha256, sha384 or sha512 and lowercase hex."""
    cdef Py_ssize_t n, i, want
    cdef const char *p
    cdef char c
    if not _rec_ascii(digest):
        return False
    n = PyUnicode_GET_LENGTH(digest)
    p = <const char *>PyUnicode_DATA(digest)
    if n < 7 or memcmp(p, b"sha", 3) != 0 or p[6] != b':':
        return False
    if memcmp(p + 3, b"256", 3) == 0:
        want = 64
    elif memcmp(p + 3, b"384", 3) == 0:
        want = 96
    elif memcmp(p + 3, b"512", 3) == 0:
        want = 128
    else:
        return False
    if n != 7 + want:
        return False
    for i in range(7, n):
        c = p[i]
        if not ((b'0' <= c <= b'9') or (b'a' <= c <= b'f')):
            return False
    return True


cdef inline object _rec_field(dict state, str name) noexcept:
    """An attribute of a data class instance read from its state (None when it has none)."""
    cdef PyObject *value = PyDict_GetItemWithError(state, name)
    return None if value == NULL else <object>value


cdef extern from *:
    """
    /* object.__new__(cls), called from C: an instance without its __init__ run. */
    static PyObject *rec_bare_instance(PyObject *cls) {
        static PyObject *no_args = NULL;
        if (no_args == NULL && (no_args = PyTuple_New(0)) == NULL)
            return NULL;
        return PyBaseObject_Type.tp_new((PyTypeObject *)cls, no_args, NULL);
    }
    """
    object rec_bare_instance(object cls)


cdef object _rec_new(object cls, dict state):
    """An instance of data class cls with `state` as its attributes, __init__ not run (model.evolve)."""
    cdef object new = rec_bare_instance(cls)
    PyObject_GenericSetDict(new, state, NULL)
    return new


def encode_image(image, ns, now, now_at):
    """(stored image, record key, record, node key, node-table entry) of a new image created at
    `now` (ns; `now_at` as a datetime) in namespace `ns`, or None unless image is plain
    (see cargohold._fallback_records.encode_image)."""
    global _rec_image_cls, _rec_descriptor_cls, _rec_image_entry
    cdef long long size, stamp
    cdef Py_ssize_t n_name, n_ns, n_digest, total, klen
    cdef dict labels, annotations, state, image_state, target_state
    cdef bint gc_labels = False
    cdef bytes record, key, node, entry, content
    cdef unsigned char *p
    cdef const char *s
    if _rec_image_cls is None:
        from cargohold.model import Descriptor, Image
        _rec_image_cls, _rec_descriptor_cls = Image, Descriptor
    if type(image) is not _rec_image_cls or not _rec_ascii(ns) or not _rec_int64(now, &stamp):
        return None
    image_state = PyObject_GenericGetDict(image, NULL)
    name = _rec_field(image_state, "name")
    if not _rec_ascii(name):
        return None
    n_name = PyUnicode_GET_LENGTH(name)
    if n_name == 0 or n_name > REC_MAX_NAME or memchr(PyUnicode_DATA(name), 0, n_name) != NULL:
        return None
    target = _rec_field(image_state, "target")
    if type(target) is not _rec_descriptor_cls:
        return None
    target_state = PyObject_GenericGetDict(target, NULL)
    digest = _rec_field(target_state, "digest")
    media_type = _rec_field(target_state, "media_type")
    if not _rec_digest(digest) or not _rec_int64(_rec_field(target_state, "size"), &size) or size <= 0:
        return None
    if not _rec_ascii(media_type) or PyUnicode_GET_LENGTH(media_type) == 0:
        return None

    raw = _rec_field(target_state, "annotations")
    if type(raw) is not dict:
        return None
    annotations = {}
    total = 0
    for k, v in (<dict>raw).items():
        if not _rec_ascii(k) or not _rec_ascii(v) or PyUnicode_GET_LENGTH(k) == 0:
            return None
        if PyUnicode_GET_LENGTH(v):
            annotations[k] = v
            total += _rec_str_size(PyUnicode_GET_LENGTH(k)) + _rec_str_size(PyUnicode_GET_LENGTH(v))
    raw = _rec_field(image_state, "labels")
    if type(raw) is not dict:
        return None
    labels = {}
    for k, v in (<dict>raw).items():
        if not _rec_ascii(k) or not _rec_ascii(v):
            return None
        klen = PyUnicode_GET_LENGTH(k)
        s = <const char *>PyUnicode_DATA(k)
        if klen == 0 or klen + PyUnicode_GET_LENGTH(v) > REC_MAX_LABEL or memchr(s, 0, klen) != NULL \
                or memchr(PyUnicode_DATA(v), 0, PyUnicode_GET_LENGTH(v)) != NULL:
            return None
        if PyUnicode_GET_LENGTH(v):
            labels[k] = v
            total += _rec_str_size(klen) + _rec_str_size(PyUnicode_GET_LENGTH(v))
            if klen >= REC_GC_PREFIX_LEN and memcmp(s, _REC_GC_PREFIX, REC_GC_PREFIX_LEN) == 0:
                gc_labels = True

    n_digest = PyUnicode_GET_LENGTH(digest)
    total += (1 + 2 + 1 + 2 + _rec_str_size(PyUnicode_GET_LENGTH(media_type)) + 2 + _rec_str_size(n_digest)
              + 2 + _rec_int_size(size) + 2 + _rec_map_size(len(annotations))
              + 2 + _rec_map_size(len(labels)) + 2 * (2 + _rec_int_size(stamp)))
    record = PyBytes_FromStringAndSize(NULL, total)
    p = <unsigned char *>PyBytes_AS_STRING(record)
    p[0] = 0x84
    p = _rec_key(p + 1, b't')
    p[0] = 0x84
    p = _rec_str(_rec_key(p + 1, b'm'), media_type)
    p = _rec_str(_rec_key(p, b'd'), digest)
    p = _rec_int(_rec_key(p, b's'), size)
    p = _rec_map(_rec_key(p, b'a'), len(annotations))
    for k, v in annotations.items():
        p = _rec_str(_rec_str(p, k), v)
    p = _rec_map(_rec_key(p, b'l'), len(labels))
    for k, v in labels.items():
        p = _rec_str(_rec_str(p, k), v)
    p = _rec_int(_rec_key(p, b'c'), stamp)
    _rec_int(_rec_key(p, b'u'), stamp)

    n_ns = PyUnicode_GET_LENGTH(ns)
    key = PyBytes_FromStringAndSize(NULL, n_ns + 7 + n_name)
    p = <unsigned char *>PyBytes_AS_STRING(key)
    memcpy(p, PyUnicode_DATA(ns), n_ns)
    memcpy(p + n_ns, b"\x00image\x00", 7)
    memcpy(p + n_ns + 7, PyUnicode_DATA(name), n_name)
    node = PyBytes_FromStringAndSize(NULL, 2 + n_ns + n_name)
    p = <unsigned char *>PyBytes_AS_STRING(node)
    p[0] = REC_IMAGE_NODE
    memcpy(p + 1, PyUnicode_DATA(ns), n_ns)
    p[1 + n_ns] = 0
    memcpy(p + 2 + n_ns, PyUnicode_DATA(name), n_name)
    if gc_labels:
        if _rec_image_entry is None:
            from cargohold.gc.index import image_entry
            _rec_image_entry = image_entry
        entry = _rec_image_entry(ns, digest, labels)
    else:
        # Labels the collector does not read: root, one STRONG edge to the target's content node.
        entry = PyBytes_FromStringAndSize(NULL, 6 + n_ns + n_digest)
        p = <unsigned char *>PyBytes_AS_STRING(entry)
        p[0] = REC_F_ROOT
        p[1] = REC_E_STRONG
        p[2] = (2 + n_ns + n_digest) & 0xFF
        p[3] = (2 + n_ns + n_digest) >> 8
        p[4] = REC_CONTENT_NODE
        memcpy(p + 5, PyUnicode_DATA(ns), n_ns)
        p[5 + n_ns] = 0
        memcpy(p + 6 + n_ns, PyUnicode_DATA(digest), n_digest)

    state = PyDict_Copy(target_state)
    state["annotations"] = annotations
    target = _rec_new(_rec_descriptor_cls, state)
    state = PyDict_Copy(image_state)
    state["labels"] = labels
    state["target"] = target
    state["created_at"] = now_at
    state["updated_at"] = now_at
    return (_rec_new(_rec_image_cls, state), key, record, node, entry)


cdef inline bint _rec_alnum(char c) noexcept:
    return (b'a' <= c <= b'z') or (b'A' <= c <= b'Z') or (b'0' <= c <= b'9')


cdef bint _rec_identifier(object s) noexcept:
    """An ASCII str that is a valid identifier (validation.validate_identifier): letters and digits,
    one of . _ - only between two of them, 1 to 76 characters."""
    cdef Py_ssize_t n, i
    cdef const char *p
    if not _rec_ascii(s):
        return False
    n = PyUnicode_GET_LENGTH(s)
    p = <const char *>PyUnicode_DATA(s)
    if n == 0 or n > REC_MAX_IDENTIFIER or not _rec_alnum(p[0]) or not _rec_alnum(p[n - 1]):
        return False
    for i in range(1, n - 1):
        if not _rec_alnum(p[i]) and (p[i] not in b"._-" or not _rec_alnum(p[i + 1])):
            return False
    return True


cdef inline Py_ssize_t _rec_bin_size(Py_ssize_t n) noexcept:
    return (2 if n < 256 else (3 if n < 65536 else 5)) + n


cdef inline unsigned char *_rec_bin(unsigned char *p, bytes b) noexcept:
    cdef Py_ssize_t n = len(b)
    if n < 256:
        p[0] = 0xC4
        p = _rec_be(p + 1, n, 1)
    elif n < 65536:
        p[0] = 0xC5
        p = _rec_be(p + 1, n, 2)
    else:
        p[0] = 0xC6
        p = _rec_be(p + 1, n, 4)
    memcpy(p, PyBytes_AS_STRING(b), n)
    return p + n


cdef inline unsigned char *_rec_key2(unsigned char *p, const char *key) noexcept:
    p[0] = 0xA2
    p[1] = key[0]
    p[2] = key[1]
    return p + 3


def encode_container(container, ns, now, now_at):
    """(stored container, record key, record, node key, node-table entry) of a new container created at
    `now` (ns; `now_at` as a datetime) in namespace `ns`, or None unless it is plain
    (see cargohold._fallback_records.encode_container)."""
    global _rec_container_cls, _rec_runtime_cls, _rec_aliases, _rec_container_entry
    cdef long long stamp
    cdef Py_ssize_t n_ns, n_id, n_sn, n_key, total, klen, n_target
    cdef dict labels, state
    cdef bint gc_labels = False
    cdef bytes record, key, node, entry, spec_bytes
    cdef unsigned char *p
    cdef const char *s
    if _rec_container_cls is None:
        from cargohold.model import SNAPSHOTTER_ALIASES, Container, RuntimeInfo
        _rec_container_cls, _rec_runtime_cls, _rec_aliases = Container, RuntimeInfo, SNAPSHOTTER_ALIASES
    if type(container) is not _rec_container_cls or not _rec_ascii(ns) or not _rec_int64(now, &stamp):
        return None
    state = PyObject_GenericGetDict(container, NULL)
    ident = _rec_field(state, "id")
    runtime = _rec_field(state, "runtime")
    spec = _rec_field(state, "spec")
    image = _rec_field(state, "image")
    if not _rec_identifier(ident) or type(runtime) is not _rec_runtime_cls or type(spec) is not bytes \
            or not _rec_ascii(image):
        return None
    runtime_state = PyObject_GenericGetDict(runtime, NULL)
    runtime_name = _rec_field(runtime_state, "name")
    if not _rec_ascii(runtime_name) or PyUnicode_GET_LENGTH(runtime_name) == 0 \
            or _rec_field(runtime_state, "options") is not None:
        return None
    snapshotter = _rec_field(state, "snapshotter")
    if not _rec_ascii(snapshotter):
        return None
    n_sn = PyUnicode_GET_LENGTH(snapshotter)
    if n_sn and (not _rec_identifier(snapshotter) or snapshotter in _rec_aliases):
        return None
    snapshot_key = _rec_field(state, "snapshot_key")
    if not _rec_ascii(snapshot_key):
        return None
    n_key = PyUnicode_GET_LENGTH(snapshot_key)
    if n_key and (n_sn == 0 or n_key > REC_MAX_NAME or memchr(PyUnicode_DATA(snapshot_key), 0, n_key) != NULL):
        return None
    sandbox = _rec_field(state, "sandbox_id")
    if not _rec_ascii(sandbox) or (PyUnicode_GET_LENGTH(sandbox) and not _rec_identifier(sandbox)):
        return None
    raw = _rec_field(state, "extensions")
    if type(raw) is not dict or len(<dict>raw):
        return None

    raw = _rec_field(state, "labels")
    if type(raw) is not dict:
        return None
    labels = {}
    total = 0
    for k, v in (<dict>raw).items():
        if not _rec_ascii(k) or not _rec_ascii(v):
            return None
        klen = PyUnicode_GET_LENGTH(k)
        s = <const char *>PyUnicode_DATA(k)
        if klen == 0 or klen + PyUnicode_GET_LENGTH(v) > REC_MAX_LABEL or memchr(s, 0, klen) != NULL \
                or memchr(PyUnicode_DATA(v), 0, PyUnicode_GET_LENGTH(v)) != NULL:
            return None
        if PyUnicode_GET_LENGTH(v):
            labels[k] = v
            total += _rec_str_size(klen) + _rec_str_size(PyUnicode_GET_LENGTH(v))
            if klen >= REC_GC_PREFIX_LEN and memcmp(s, _REC_GC_PREFIX, REC_GC_PREFIX_LEN) == 0:
                gc_labels = True

    spec_bytes = <bytes>spec
    total += (1 + 2 + _rec_str_size(PyUnicode_GET_LENGTH(runtime_name)) + 2 + 1 + 2 + _rec_bin_size(len(spec_bytes))
              + 3 + _rec_str_size(n_sn) + 2 + _rec_str_size(n_key) + 2 + _rec_str_size(PyUnicode_GET_LENGTH(image))
              + 2 + _rec_map_size(len(labels)) + 2 + 1 + 3 + _rec_str_size(PyUnicode_GET_LENGTH(sandbox))
              + 2 * (2 + _rec_int_size(stamp)))
    record = PyBytes_FromStringAndSize(NULL, total)
    p = <unsigned char *>PyBytes_AS_STRING(record)
    p[0] = 0x8B
    p = _rec_str(_rec_key(p + 1, b'r'), runtime_name)
    p = _rec_key(p, b'o')
    p[0] = 0xC0
    p = _rec_bin(_rec_key(p + 1, b's'), spec_bytes)
    p = _rec_str(_rec_key2(p, b"sn"), snapshotter)
    p = _rec_str(_rec_key(p, b'k'), snapshot_key)
    p = _rec_str(_rec_key(p, b'i'), image)
    p = _rec_map(_rec_key(p, b'l'), len(labels))
    for k, v in labels.items():
        p = _rec_str(_rec_str(p, k), v)
    p = _rec_key(p, b'x')
    p[0] = 0x80
    p = _rec_str(_rec_key2(p + 1, b"sb"), sandbox)
    p = _rec_int(_rec_key(p, b'c'), stamp)
    _rec_int(_rec_key(p, b'u'), stamp)

    n_ns = PyUnicode_GET_LENGTH(ns)
    n_id = PyUnicode_GET_LENGTH(ident)
    key = PyBytes_FromStringAndSize(NULL, n_ns + 11 + n_id)
    p = <unsigned char *>PyBytes_AS_STRING(key)
    memcpy(p, PyUnicode_DATA(ns), n_ns)
    memcpy(p + n_ns, b"\x00container\x00", 11)
    memcpy(p + n_ns + 11, PyUnicode_DATA(ident), n_id)
    node = PyBytes_FromStringAndSize(NULL, 2 + n_ns + n_id)
    p = <unsigned char *>PyBytes_AS_STRING(node)
    p[0] = REC_CONTAINER_NODE
    memcpy(p + 1, PyUnicode_DATA(ns), n_ns)
    p[1 + n_ns] = 0
    memcpy(p + 2 + n_ns, PyUnicode_DATA(ident), n_id)
    n_target = 3 + n_ns + n_sn + n_key  # the snapshot's node: type, ns, NUL, "<snapshotter>/<key>"
    if gc_labels or n_target > 0xFFFF:
        if _rec_container_entry is None:
            from cargohold.gc.index import container_entry
            _rec_container_entry = container_entry
        entry = _rec_container_entry(ns, snapshotter if n_key else "", snapshot_key, labels)
    elif n_key == 0:
        entry = PyBytes_FromStringAndSize(NULL, 1)
        (<unsigned char *>PyBytes_AS_STRING(entry))[0] = REC_F_ROOT | REC_F_HIDDEN
    else:
        # Labels the collector does not read: root, hidden, one STRONG edge to the snapshot's node.
        entry = PyBytes_FromStringAndSize(NULL, 4 + n_target)
        p = <unsigned char *>PyBytes_AS_STRING(entry)
        p[0] = REC_F_ROOT | REC_F_HIDDEN
        p[1] = REC_E_STRONG
        p[2] = n_target & 0xFF
        p[3] = n_target >> 8
        p[4] = REC_SNAPSHOT_NODE
        memcpy(p + 5, PyUnicode_DATA(ns), n_ns)
        p[5 + n_ns] = 0
        memcpy(p + 6 + n_ns, PyUnicode_DATA(snapshotter), n_sn)
        p[6 + n_ns + n_sn] = b'/'
        memcpy(p + 7 + n_ns + n_sn, PyUnicode_DATA(snapshot_key), n_key)

    state = PyDict_Copy(state)
    state["labels"] = labels
    state["extensions"] = {}
    state["created_at"] = now_at
    state["updated_at"] = now_at
    return (_rec_new(_rec_container_cls, state), key, record, node, entry)
