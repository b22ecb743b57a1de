"""The lower directories of an overlay snapshot, read the way overlayfs merges them.

A layer applied into an upper directory must see the tree the mount will
show beneath it: a directory it writes into may come from a lower layer
(its mode, owner, times and xattrs must be kept), a lower symlink must be
followed, a lower whiteout or opaque directory hides what lies under it.
`Lowers` holds, for one directory of the merged tree, the descriptors of
that directory in each lower layer that contributes to it, nearest first,
and looks names up with overlayfs' rules: the nearest layer holding the
name decides; a whiteout (a 0/0 character device) hides it; a directory
merges with the same directory of further layers until one is opaque
(``trusted.overlay.opaque=y``) or a layer holds a whiteout or a
non-directory there. Lower directories are only read, never written; every
lookup is one component through a directory descriptor, never following a
symlink.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from typing import Optional, Sequence

OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_PATH = getattr(os, "O_PATH", 0)
_SEARCH_FLAGS = (_O_PATH or os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NO_XATTRS = (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP)


def open_dir(name: str, dir_fd: int) -> int:
    """Open directory `name` of `dir_fd`, never through a symlink; search-only if it cannot be read."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except PermissionError:
        return os.open(name, _SEARCH_FLAGS, dir_fd=dir_fd)


def xattr_target(fd: int) -> "int | str":
    """What the xattr calls take for directory descriptor `fd`: itself, or its inode through /proc when
    it is search-only (those calls refuse an O_PATH descriptor)."""
    if _O_PATH and fcntl.fcntl(fd, fcntl.F_GETFL) & _O_PATH:
        return f"/proc/self/fd/{fd}"
    return fd


def lstat_at(name: str, dir_fd: int) -> Optional[os.stat_result]:
    """The lstat of `name` in `dir_fd`, None if there is nothing."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def is_whiteout(st: os.stat_result) -> bool:
    """Whether `st` is an overlay whiteout: a character device numbered 0/0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(fd: int) -> bool:
    """Whether the directory `fd` is marked opaque (it hides the same directory of the layers below)."""
    try:
        return os.getxattr(xattr_target(fd), OVERLAY_OPAQUE_XATTR) == b"y"
    except OSError as exc:
        if exc.errno in _NO_XATTRS:
            return False
        raise


class Lowers:
    """One directory of the merged lower tree: its descriptor in each contributing layer, nearest first.

    The instance owns its descriptors: `close` them.
    """

    def __init__(self, fds: Sequence[int] = ()) -> None:
        self.fds = list(fds)

    @classmethod
    def roots(cls, paths: Sequence[str]) -> "Lowers":
        """The root of each lower directory (nearest first), as the overlay mount's ``lowerdir`` lists them."""
        out = cls()
        try:
            for path in paths:
                out.fds.append(os.open(path, _DIR_FLAGS))
        except BaseException:
            out.close()
            raise
        return out

    def copy(self) -> "Lowers":
        return Lowers([os.dup(fd) for fd in self.fds])

    def close(self) -> None:
        fds, self.fds = self.fds, []
        for fd in fds:
            os.close(fd)

    def find(self, name: str) -> tuple[Optional[os.stat_result], int]:
        """What the merged lower tree holds at `name`: (its lstat, the index of the layer holding it);
        (None, -1) when no layer has it or the nearest one holding it has a whiteout."""
        for index, fd in enumerate(self.fds):
            st = lstat_at(name, fd)
            if st is None:
                continue
            return (None, -1) if is_whiteout(st) else (st, index)
        return None, -1

    def readlink(self, name: str, index: int) -> str:
        return os.readlink(name, dir_fd=self.fds[index])

    def child(self, name: str, start: int = 0) -> "Lowers":
        """The directory `name` as the layers from `start` on merge it (empty when none has it as a directory)."""
        out = Lowers()
        try:
            for fd in self.fds[start:]:
                st = lstat_at(name, fd)
                if st is None:
                    continue
                if not stat.S_ISDIR(st.st_mode):
                    break  # a whiteout or a non-directory ends the merge
                out.fds.append(open_dir(name, fd))
                if is_opaque(out.fds[-1]):
                    break
        except BaseException:
            out.close()
            raise
        return out
