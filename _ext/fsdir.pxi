# Directory listings of the snapshot trees (`cargohold.snapshots.fsutil`): `list_dir(fd)` reads the
# names in directory descriptor fd from getdents64(2), from the start, on fd itself; os.listdir and
# os.scandir of a descriptor first duplicate it (and fcntl it three times) for every listing.
# Twin: cargohold._fallback_fsdir.list_dir (os.listdir of the descriptor): the same names, in the
# same order, decoded the same way (the filesystem encoding, surrogateescape).

cdef extern from "<unistd.h>" nogil:
    long syscall(long number, ...)
    long lseek(int fd, long offset, int whence)

cdef extern from "<sys/syscall.h>":
    long SYS_getdents64

cdef extern from "Python.h":
    object PyUnicode_DecodeFSDefault(const char *s)
    object PyErr_SetFromErrno(object exc_type)

cdef enum:
    FS_BUFFER = 32768
    FS_RECLEN = 16              # struct linux_dirent64: d_ino (8), d_off (8), d_reclen (2),
    FS_NAME = 19                # d_type (1), d_name (NUL-terminated)


def list_dir(int fd):
    """The names in directory descriptor fd (without "." and ".."), read from its start."""
    cdef char buf[FS_BUFFER]
    cdef long n, pos
    cdef const char *name
    names = []
    if lseek(fd, 0, 0) < 0:
        PyErr_SetFromErrno(OSError)
    while True:
        with nogil:
            n = syscall(SYS_getdents64, fd, buf, <long>FS_BUFFER)
        if n < 0:
            PyErr_SetFromErrno(OSError)
        if n == 0:
            return names
        pos = 0
        while pos < n:
            name = buf + pos + FS_NAME
            if not (name[0] == b'.' and (name[1] == 0 or (name[1] == b'.' and name[2] == 0))):
                names.append(PyUnicode_DecodeFSDefault(name))
            pos += (<unsigned short *>(buf + pos + FS_RECLEN))[0]
