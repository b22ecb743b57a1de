"""Filesystem helpers of the directory snapshotters: copying a tree faithfully
(continuity's ``fs.CopyDir``) and measuring one (``fs.DiskUsage``).

Both walk iteratively, so a deep tree cannot exhaust Python's recursion limit.
"""

from __future__ import annotations

import errno
import itertools
import os
import shutil
import stat

from ..model import Usage

_IGNORED_XATTR_ERRORS = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES, errno.ENODATA)
_NO_COPY_RANGE = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP)
_CHUNK = 1 << 30
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


def copy_tree(src: str, dst: str) -> None:
    """Copy the contents of directory `src` into the existing empty directory `dst`.

    Keeps regular files, directories, symlinks, hard links (within the tree),
    fifos and device nodes, with modes, timestamps, and — where the process
    and the filesystem allow — ownership and extended attributes. Sockets are
    skipped, as they cannot be copied. `dst` itself takes `src`'s attributes.
    """
    linked: dict[tuple[int, int], str] = {}
    finish: list[tuple[str, str, os.stat_result]] = []
    pending = [(src, dst)]
    while pending:
        source_dir, target_dir = pending.pop()
        with os.scandir(source_dir) as entries:
            for entry in entries:
                source, target = entry.path, os.path.join(target_dir, entry.name)
                st = entry.stat(follow_symlinks=False)
                mode = st.st_mode
                if stat.S_ISDIR(mode):
                    os.mkdir(target, 0o700)  # writable until its own contents are in
                    pending.append((source, target))
                    finish.append((source, target, st))
                    continue
                if stat.S_ISREG(mode) and st.st_nlink > 1:
                    first = linked.get((st.st_dev, st.st_ino))
                    if first is not None:
                        os.link(first, target)
                        continue
                    linked[(st.st_dev, st.st_ino)] = target
                if stat.S_ISREG(mode):
                    copy_file(source, target)
                elif stat.S_ISLNK(mode):
                    os.symlink(os.readlink(source), target)
                elif stat.S_ISFIFO(mode):
                    os.mkfifo(target, 0o600)
                elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                    os.mknod(target, mode, st.st_rdev)
                else:
                    continue
                copy_attributes(source, target, st)
    # Deepest directories first: filling a directory changes its mtime.
    for source, target, st in reversed(finish):
        copy_attributes(source, target, st)
    copy_attributes(src, dst, os.lstat(src))


def copy_file(source: str, target: str) -> None:
    """Copy one regular file's bytes into a new file (in the kernel where it can)."""
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
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
    finally:
        os.close(src)


def copy_attributes(source: str, target: str, st: os.stat_result) -> None:
    """Give `target` the ownership, xattrs, mode and timestamps of `source` (stat `st`)."""
    current = os.lstat(target)
    chowned = False
    if (st.st_uid, st.st_gid) != (current.st_uid, current.st_gid):
        try:
            os.lchown(target, st.st_uid, st.st_gid)
            chowned = True
        except PermissionError:
            pass  # an unprivileged process keeps its own ownership
    _copy_xattrs(source, target)
    is_link = stat.S_ISLNK(st.st_mode)
    mode = stat.S_IMODE(st.st_mode)
    if not is_link and (chowned or mode != stat.S_IMODE(current.st_mode)):
        os.chmod(target, mode)  # after chown, which clears set-id bits
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=not is_link)


def _copy_xattrs(source: str, target: str) -> None:
    try:
        names = os.listxattr(source, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _IGNORED_XATTR_ERRORS:
            return
        raise
    for name in names:
        try:
            value = os.getxattr(source, name, follow_symlinks=False)
            os.setxattr(target, name, value, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in _IGNORED_XATTR_ERRORS:
                raise


def remove_tree(path: str) -> None:
    """Delete `path` and everything under it, however deep; a missing path (or part) is fine.

    Deleting only unlinks and removes directories, so it needs no free space.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    pending = [path]
    while pending:
        current = pending[-1]
        try:
            _make_traversable(current)
            entries = list(os.scandir(current))
        except FileNotFoundError:
            pending.pop()
            continue
        subdirs = [entry.path for entry in entries if entry.is_dir(follow_symlinks=False)]
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                _gone_is_fine(os.unlink, entry.path)
        if subdirs:
            pending.extend(subdirs)  # `current` is emptied when we come back to it
        else:
            _gone_is_fine(os.rmdir, current)
            pending.pop()


def _gone_is_fine(remove, path: str) -> None:
    """Remove one entry; one that another remover deleted first is fine."""
    try:
        remove(path)
    except FileNotFoundError:
        pass


def _make_traversable(directory: str) -> None:
    mode = os.lstat(directory).st_mode
    if mode & 0o700 != 0o700:
        os.chmod(directory, stat.S_IMODE(mode) | 0o700)


def disk_usage(root: str) -> Usage:
    """Bytes allocated (512-byte blocks) and inodes of the tree at `root`, each inode once."""
    seen: set[tuple[int, int]] = set()
    size = 0
    st = os.lstat(root)
    seen.add((st.st_dev, st.st_ino))
    size += st.st_blocks * 512
    pending = [root] if stat.S_ISDIR(st.st_mode) else []
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except FileNotFoundError:
            continue  # removed while we walked
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            inode = (st.st_dev, st.st_ino)
            if inode not in seen:
                seen.add(inode)
                size += st.st_blocks * 512
            if stat.S_ISDIR(st.st_mode):
                pending.append(entry.path)
    return Usage(size=size, inodes=len(seen))
