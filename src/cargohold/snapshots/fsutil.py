"""Filesystem helpers of the directory snapshotters: copying a tree faithfully
(continuity's ``fs.CopyDir``), measuring one (``fs.DiskUsage``), deleting one,
and flushing what was written into one to disk (`flush_filesystem`).

The walks are iterative, so a deep tree cannot exhaust Python's recursion
limit, and they go through directory descriptors: each directory is opened
relative to its parent's descriptor with O_NOFOLLOW, and each entry is read,
measured, changed or removed relative to its directory's descriptor. Whoever
can write in a tree while it is walked (the container using a snapshot) may
swap a directory for a symlink at any moment: the walk never follows it, so
nothing outside the tree is deleted, chmod'ed, read or measured. One
descriptor is open per level of the directory being walked.
"""

from __future__ import annotations

import errno
import itertools
import os
import shutil
import stat
import sys
from typing import Iterator, Optional, Union

from .._native import list_dir
from ..model import Usage

_IGNORED_XATTR_ERRORS = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES, errno.ENODATA)
_NO_COPY_RANGE = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP)
_NOT_A_DIRECTORY = (errno.ENOTDIR, errno.ELOOP)  # what O_DIRECTORY|O_NOFOLLOW meets in a swapped entry
_CHUNK = 1 << 30
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_HANDLE_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

Listing = list[tuple[str, os.stat_result]]
_TEMP_NAMES = itertools.count(1)


def make_temp_dir(parent: str, prefix: str) -> str:
    """Create a new, empty directory ``<parent>/<prefix><pid>-<n>`` (mode 0700) and return its path.

    `tempfile.mkdtemp` without its random names: the process id and a per-process counter are
    unique among live processes, and a name a dead process left behind is skipped.
    """
    pid = os.getpid()
    while True:
        path = os.path.join(parent, f"{prefix}{pid}-{next(_TEMP_NAMES)}")
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue


def open_dir(name: str, dir_fd: Optional[int] = None) -> int:
    """A descriptor of directory `name` (of `dir_fd`); OSError (ENOTDIR or ELOOP) if it is a symlink."""
    return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def open_dirs(base: str, *names: str) -> int:
    """A descriptor of directory `base`/`names`..., each component opened from the previous one with
    O_NOFOLLOW, so that none of them can be a symlink (OSError naming the component that failed).

    For trees another party can write into: a path would follow a symlinked component anywhere.
    """
    path = base
    fd = open_dir(base)
    try:
        for name in names:
            path = os.path.join(path, name)
            try:
                child = open_dir(name, fd)
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror, path) from None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _proc_path(fd: int, name: str = "") -> Optional[str]:
    """The path of `fd` (or of entry `name` in it) through /proc/self/fd, pinned to its inode; None without /proc."""
    base = f"/proc/self/fd/{fd}"
    if not os.path.isdir(base):
        return None
    return os.path.join(base, name) if name else base


def _walk(top: int, where: str, strict: bool,
          names: Optional[list[str]] = None) -> Iterator[tuple[int, str, Listing]]:
    """Top-down: (descriptor, path below the top, entries with their lstat) of each directory of `top`
    (whose `list_dir` is `names`, if the caller has read it).

    Descends into every entry listed as a directory, after the consumer has
    seen its parent's listing. An entry that is gone, or that is no longer a
    directory, by the time it is stat'ed or opened, is skipped, or, when
    `strict`, raised as an OSError naming it below `where`. `top` stays open.
    """
    stack: list[tuple[int, str, list[str]]] = []
    fd, rel = top, ""
    try:
        while True:
            entries: Listing = []
            for name in list_dir(fd) if names is None else names:
                try:
                    entries.append((name, os.stat(name, dir_fd=fd, follow_symlinks=False)))
                except FileNotFoundError:
                    if strict:
                        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT),
                                                os.path.join(where, rel, name)) from None
            names = None
            yield fd, rel, entries
            stack.append((fd, rel, [name for name, st in entries if stat.S_ISDIR(st.st_mode)]))
            fd = -1
            while stack and fd < 0:
                parent, parent_rel, pending = stack[-1]
                if not pending:
                    stack.pop()
                    if parent != top:
                        os.close(parent)
                    continue
                name = pending.pop()
                try:
                    fd, rel = open_dir(name, parent), os.path.join(parent_rel, name)
                except OSError as exc:
                    if strict or exc.errno not in (errno.ENOENT, *_NOT_A_DIRECTORY):
                        raise OSError(exc.errno, exc.strerror, os.path.join(where, parent_rel, name)) from None
            if fd < 0:
                return
    finally:
        for parent, _, _ in stack:
            if parent != top:
                os.close(parent)
        if fd not in (-1, top):
            os.close(fd)


def copy_tree(src: str, dst: str, *, src_fd: Optional[int] = None) -> int:
    """Copy the contents of directory `src` into the existing empty directory `dst`.

    Keeps regular files, directories, symlinks, hard links (within the tree),
    fifos and device nodes, with modes, timestamps, and — where the process
    and the filesystem allow — ownership and extended attributes. Sockets are
    skipped, as they cannot be copied. `dst` itself takes `src`'s attributes.
    `src` is read through descriptors (see the module docstring); an entry
    that disappears or stops being a directory meanwhile fails the copy
    (OSError). `dst` is a new directory nobody else writes in: it is written by path.
    With `src_fd`, the tree is that directory descriptor's (left open; `src` only names it in
    messages), e.g. one `open_dirs` opened. Returns how many entries were copied.
    """
    copied = 0
    linked: dict[tuple[int, int], str] = {}
    finish: list[tuple[str, os.stat_result, list]] = []
    top = open_dir(src) if src_fd is None else os.dup(src_fd)
    try:
        names = list_dir(top)
        if not names:  # an empty tree (every snapshot's first parent is): its own attributes alone
            _set_attributes(dst, os.fstat(top), _read_xattrs(top))
            return 0
        walk = _walk(top, src, strict=True, names=names)
        try:
            for fd, rel, entries in walk:
                target_dir = os.path.join(dst, rel) if rel else dst
                finish.append((target_dir, os.fstat(fd), _read_xattrs(fd)))
                for name, st in entries:
                    _copy_entry(fd, name, st, os.path.join(src, rel, name), os.path.join(target_dir, name), linked)
                copied += len(entries)
        finally:
            walk.close()
    finally:
        os.close(top)
    # Deepest directories first: filling a directory changes its mtime.
    for target, st, xattrs in reversed(finish):
        _set_attributes(target, st, xattrs)
    return copied


def _copy_entry(fd: int, name: str, st: os.stat_result, source: str, target: str,
                linked: dict[tuple[int, int], str]) -> None:
    """Copy entry `name` of directory `fd` (lstat `st`; `source` is its path, for messages) to `target`."""
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        os.mkdir(target, 0o700)  # writable until its own contents are in
        return
    if stat.S_ISREG(mode) and st.st_nlink > 1:
        first = linked.get((st.st_dev, st.st_ino))
        if first is not None:
            os.link(first, target)
            return
        linked[(st.st_dev, st.st_ino)] = target
    if stat.S_ISREG(mode):
        xattrs = copy_file(name, target, dir_fd=fd)
    else:
        if stat.S_ISLNK(mode):
            os.symlink(os.readlink(name, dir_fd=fd), target)
        elif stat.S_ISFIFO(mode):
            os.mkfifo(target, 0o600)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            os.mknod(target, mode, st.st_rdev)
        else:
            return
        xattrs = _read_xattrs(_proc_path(fd, name) or source)
    _set_attributes(target, st, xattrs)


def copy_file(source: str, target: str, *, dir_fd: Optional[int] = None) -> list[tuple[str, bytes]]:
    """Copy one regular file's bytes into a new file (in the kernel where it can); return its xattrs.

    `source` (relative to `dir_fd`) is never followed if it is a symlink, and
    must still be a regular file when opened (else OSError).
    """
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(src).st_mode):  # swapped for a fifo or device since it was listed
            raise OSError(errno.EINVAL, "not a regular file any more", source)
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                while os.copy_file_range(src, dst, _CHUNK):
                    pass
            except OSError as exc:
                if exc.errno not in _NO_COPY_RANGE:
                    raise
                os.lseek(src, 0, os.SEEK_SET)
                os.lseek(dst, 0, os.SEEK_SET)
                os.ftruncate(dst, 0)
                with open(src, "rb", closefd=False) as fin, open(dst, "wb", closefd=False) as fout:
                    shutil.copyfileobj(fin, fout)
        finally:
            os.close(dst)
        return _read_xattrs(src)
    finally:
        os.close(src)


def _set_attributes(target: str, st: os.stat_result, xattrs: list[tuple[str, bytes]]) -> None:
    """Give `target` the ownership, xattrs, mode and timestamps of a source with stat `st`."""
    current = os.lstat(target)
    chowned = False
    if (st.st_uid, st.st_gid) != (current.st_uid, current.st_gid):
        try:
            os.lchown(target, st.st_uid, st.st_gid)
            chowned = True
        except PermissionError:
            pass  # an unprivileged process keeps its own ownership
    for name, value in xattrs:
        try:
            os.setxattr(target, name, value, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in _IGNORED_XATTR_ERRORS:
                raise
    is_link = stat.S_ISLNK(st.st_mode)
    mode = stat.S_IMODE(st.st_mode)
    if not is_link and (chowned or mode != stat.S_IMODE(current.st_mode)):
        os.chmod(target, mode)  # after chown, which clears set-id bits
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=not is_link)


def _read_xattrs(source: Union[int, str]) -> list[tuple[str, bytes]]:
    """The extended attributes of a descriptor, or of a path not to follow; those we may not read are left out."""
    options = {} if isinstance(source, int) else {"follow_symlinks": False}
    try:
        names = os.listxattr(source, **options)
    except OSError as exc:
        if exc.errno in _IGNORED_XATTR_ERRORS:
            return []
        raise
    found = []
    for name in names:
        try:
            found.append((name, os.getxattr(source, name, **options)))
        except OSError as exc:
            if exc.errno not in _IGNORED_XATTR_ERRORS:
                raise
    return found


def remove_tree(path: str, *, dir_fd: Optional[int] = None) -> None:
    """Delete `path` (relative to `dir_fd`) and everything under it, however deep; a missing path
    (or part) is fine.

    Deleting only unlinks and removes directories, so it needs no free space.
    A directory its owner may not read, search or write in is given ``u+rwx``
    first. An entry swapped for a symlink meanwhile is unlinked, not followed.
    """
    try:
        st = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        _gone_is_fine(os.unlink, path, dir_fd)
        return
    top = _enter(path, dir_fd)
    if top is None:
        return
    stack: list[tuple[int, str, list[str]]] = [(top, path, [])]  # (descriptor, name in its parent, to enter)
    try:
        while stack:
            fd, name, pending = stack[-1]
            if pending:
                subdir = pending.pop()
                child = _enter(subdir, fd)
                if child is not None:
                    stack.append((child, subdir, []))
                continue
            # Listed first, and listed again once its subdirectories are gone.
            subdirs = []
            for entry in list(os.scandir(fd)):
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(entry.name)
                else:
                    _gone_is_fine(os.unlink, entry.name, fd)
            if subdirs:
                pending.extend(subdirs)
                continue
            stack.pop()
            os.close(fd)
            _gone_is_fine(os.rmdir, name, stack[-1][0] if stack else dir_fd)
    finally:
        for fd, _, _ in stack:
            os.close(fd)


def _enter(name: str, dir_fd: Optional[int]) -> Optional[int]:
    """A descriptor of directory `name` to empty, made traversable; None if it is gone or was not
    a directory any more (then it is unlinked)."""
    try:
        return _open_traversable(name, dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno not in _NOT_A_DIRECTORY:
            raise
    _gone_is_fine(os.unlink, name, dir_fd)
    return None


def _open_traversable(name: str, dir_fd: Optional[int]) -> int:
    """Open directory `name` (never through a symlink) after giving its owner rwx on it if it lacked any.

    The mode is changed on the very inode opened: through the descriptor, or,
    for a directory that cannot be opened for reading, through an O_PATH
    handle's /proc/self/fd entry (without /proc, such a directory's
    PermissionError is raised).
    """
    try:
        fd = open_dir(name, dir_fd)
    except PermissionError:
        handle = os.open(name, _HANDLE_FLAGS, dir_fd=dir_fd)
        try:
            proc = _proc_path(handle)
            if proc is None:
                raise
            os.chmod(proc, stat.S_IMODE(os.fstat(handle).st_mode) | 0o700)
            return open_dir(".", handle)
        finally:
            os.close(handle)
    try:
        mode = os.fstat(fd).st_mode
        if mode & 0o700 != 0o700:
            os.fchmod(fd, stat.S_IMODE(mode) | 0o700)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _gone_is_fine(remove, name: str, dir_fd: Optional[int]) -> None:
    """Remove one entry; one that another remover deleted first is fine."""
    try:
        remove(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def disk_usage(root: str) -> Usage:
    """Bytes allocated (512-byte blocks) and inodes of the tree at `root`, each inode once.

    Measured through descriptors (see the module docstring); what disappears
    meanwhile is not counted.
    """
    st = os.lstat(root)
    seen = {(st.st_dev, st.st_ino)}
    size = st.st_blocks * 512
    if not stat.S_ISDIR(st.st_mode):
        return Usage(size=size, inodes=1)
    try:
        top = open_dir(root)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, *_NOT_A_DIRECTORY):
            raise
        return Usage(size=size, inodes=1)  # replaced since the lstat
    try:
        names = list_dir(top)
        if not names:
            return Usage(size=size, inodes=1)
        walk = _walk(top, root, strict=False, names=names)
        try:
            for _, _, entries in walk:
                for _, st in entries:
                    inode = (st.st_dev, st.st_ino)
                    if inode not in seen:
                        seen.add(inode)
                        size += st.st_blocks * 512
        finally:
            walk.close()
    finally:
        os.close(top)
    return Usage(size=size, inodes=len(seen))


def _libc_syncfs():
    """libc's syncfs, or None where there is none to call (not Linux, no ctypes)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (ImportError, OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int,)
    fn.restype = ctypes.c_int
    return fn


_syncfs = _libc_syncfs()


def flush_filesystem(directory: str) -> None:
    """Put everything written on the filesystem holding `directory` on disk (syncfs(2)).

    One call flushes a whole tree, however many files a layer wrote: on a
    50 MiB layer of 2000 files it cost a thirtieth of an fsync of each file and
    directory (one file: about the same). Where there is no syncfs, every
    filesystem is synced (sync(2)). OSError if the filesystem reports a write error.
    """
    fd = open_dir(directory)
    try:
        if _syncfs is None:
            os.sync()
        elif _syncfs(fd) != 0:
            import ctypes

            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), directory)
    finally:
        os.close(fd)
