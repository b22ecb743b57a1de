"""Applying a layer (a tar diff, plain, gzip or zstd) onto a directory.

The OCI changeset rules, as containerd's `archive.Apply` implements them:
``.wh.<name>`` deletes ``<name>``, ``.wh..wh..opq`` empties its directory of
what lower layers put there, an entry replaces what was at its path (a
directory merges with a directory), directory modes and times are set last.
Regular files, directories, symlinks, hard links, FIFOs and device nodes are
created with their mode, ownership (when running as root), extended
attributes (where the filesystem and privileges allow) and modification time
(bounded as containerd bounds it: a time outside 1970..2262 becomes 1970).
Tar headers are read by `tarheaders.SafeTarFile` (bounded, linear);
global PAX headers are ignored, as containerd ignores them.

Nothing is ever written outside the target directory, whatever the layer
does to its own tree meanwhile. Entry and hard-link names that are absolute,
contain ``..`` or are longer than PATH_MAX are refused. Every file operation
goes through a directory descriptor reached from the target's one component
at a time with O_NOFOLLOW: symlinks met on the way to an entry are followed
by this code, inside the target (an absolute one from the target's root, as
the container will see it; a relative one that climbs above the target is
refused, as is creating one), never by the kernel, and the final component
is never followed. A regular file's metadata is set through its own
descriptor; the deferred mode and times of a directory go only to the very
inode its entry created or merged, reached the same way, so a directory that
was replaced meanwhile, or is now reached through a replaced parent, is left
alone.

Into an overlay upper directory, the layer is applied onto the tree the
mount will show (the lower directories beneath it, read as overlayfs merges
them, see `lowerdirs`), so that the merged view equals the native
snapshotter's full copy: a whiteout is a 0/0 character device of mode 0000,
an opaque directory carries ``trusted.overlay.opaque=y``; a lower layer's
symlink on the way to an entry is followed as the upper directory's own are;
a directory only a lower layer has is copied up, with its mode, owner, times
and xattrs, before anything is written in it (as containerd's overlay
applier makes a parent); a directory that replaces a whiteout or another
non-directory of the layer is made opaque, so that what the layer deleted
stays deleted. The lower directories are only read.

The layer's diff ID (sha256 of the whole uncompressed stream) is computed
while applying and checked against the expected one. The uncompressed
stream and the bytes written are bounded (see `limits`). On any error the
directory is left partly applied: the caller discards it, as containerd
discards the active snapshot. Memory stays bounded whatever the layer's size.
"""

from __future__ import annotations

import collections
import errno
import os
import posixpath
import shutil
import stat
import tarfile
from dataclasses import dataclass
from typing import BinaryIO, Optional, Sequence, Union

from ..errors import FailedPrecondition, InvalidArgument
from ..model import Descriptor
from ..snapshots.fsutil import remove_tree
from ..validation import validate_digest
from . import mediatypes
from .compression import decompressed
from .digests import CHUNK, CountingReader, DigestingReader, VerifiedReader
from .limits import SizeBudget
from .lowerdirs import OVERLAY_OPAQUE_XATTR, Lowers, is_opaque, is_whiteout, lstat_at, open_dir, xattr_target
from .tarheaders import SafeTarFile

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
MAX_NAME = 4096
"""Longest entry name, hard-link or symlink target (Linux's PATH_MAX)."""

_XATTR_PAX_PREFIX = "SCHILY.xattr."
_MAX_SYMLINKS = 40
_MAX_ID = (1 << 32) - 2
_MAX_TIME_NS = (1 << 63) - 1
_IGNORED_XATTR_ERRORS = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM)
_GONE_ERRORS = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class AppliedLayer:
    """The result of applying a layer: its diff ID and the size of its uncompressed tar stream."""

    diff_id: str
    size: int


def _check_length(name: str, what: str) -> None:
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME:
        raise InvalidArgument(f"{what}: name {name[:64]!r}... is longer than {MAX_NAME} bytes")


def clean_name(name: str, what: str) -> list[str]:
    """The components of a tar entry name, refusing absolute names, any ``..`` and names over PATH_MAX."""
    _check_length(name, what)
    if name.startswith("/"):
        raise InvalidArgument(f"{what}: absolute path {name!r} is not allowed")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"{what}: path {name!r} contains '..'")
    return parts


def _times(member: tarfile.TarInfo) -> tuple[int, int]:
    """(atime, mtime) in nanoseconds: the exact modification time, 0 when out of range (containerd's boundTime)."""
    ns = getattr(member, "mtime_ns", int(member.mtime) * 1_000_000_000)
    ns = ns if 0 <= ns <= _MAX_TIME_NS else 0
    return ns, ns


def _exists(name: str, dir_fd: int) -> Optional[int]:
    """The st_mode of `name` in `dir_fd` (not following a symlink), None if there is nothing."""
    st = lstat_at(name, dir_fd)
    return None if st is None else st.st_mode


class _Applier:
    def __init__(self, root: str, root_fd: int, what: str, overlay_whiteouts: bool, same_owner: bool,
                 budget: SizeBudget, lower_roots: Lowers) -> None:
        self.root = root
        self.lower_roots = lower_roots
        self.root_fd = root_fd
        self.what = what
        self.overlay = overlay_whiteouts
        self.same_owner = same_owner
        self.budget = budget
        self.proc = os.path.isdir(f"/proc/self/fd/{root_fd}")
        self.unpacked: set[str] = set()
        self.opaque_done: set[str] = set()
        self.copied_up: dict[tuple[int, int], tuple[int, int]] = {}  # (st_dev, st_ino): the times copied
        self.dirs: list[tuple] = []  # (real components, st_dev, st_ino, mode, times) of each directory entry

    def walk(self, parts) -> int:
        """A new descriptor of directory root/`parts`, no component a symlink (else OSError)."""
        fd = os.open(".", _DIR_FLAGS, dir_fd=self.root_fd)
        try:
            for part in parts:
                fd, old = open_dir(part, fd), fd
                os.close(old)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def mark_opaque(self, fd: int, parent: list[str], name: str = "") -> None:
        """Set overlayfs' opaque flag on directory `name` of `fd` (`parent`), or on `fd` itself."""
        os.setxattr(self.path_at(fd, parent, name), OVERLAY_OPAQUE_XATTR, b"y", follow_symlinks=not name)

    def path_at(self, fd: int, parent: list[str], name: str = "") -> str:
        """A path to `name` in directory `fd` (`parent` below the root) for the calls that take no dir_fd.

        Through /proc/self/fd, pinned to that directory's inode, where /proc is
        mounted; else the real path, whose components were just walked.
        """
        base = f"/proc/self/fd/{fd}" if self.proc else os.path.join(self.root, *parent)
        return os.path.join(base, name) if name else base

    def resolve(self, parts: list[str], entry: str, create: bool) -> tuple[int, list[str]]:
        """A descriptor of the real directory `parts` names, and its real components below the root.

        Symlinks on the way, the upper directory's or a lower layer's, are
        followed here, inside the root. When `create`, a directory only a
        lower layer has is copied up (`copy_up`) and a missing one is
        created (0755; opaque where it replaces a whiteout of this layer, so
        that what the whiteout hid stays hidden). The caller closes the descriptor.
        """
        resolved: list[str] = []
        pending = collections.deque(parts)
        links = 0
        fd: Optional[int] = self.walk(())  # None: the upper directory does not have `resolved` (not `create`)
        lowers: Optional[Lowers] = None  # the lower layers' `resolved`, None until needed
        try:
            while pending:
                part = pending.popleft()
                if part in ("", "."):
                    continue
                if part == "..":
                    if not resolved:
                        raise InvalidArgument(f"{self.what}: entry {entry!r} leads outside the target "
                                              "through a symlink")
                    resolved.pop()
                    fd, lowers = self.release(fd, lowers, self.upper_at(resolved)), None
                    continue
                st = lstat_at(part, fd) if fd is not None else None
                whiteout = st is not None and self.overlay and is_whiteout(st)
                source = -1  # the lower layer holding `part`, -1 for the upper directory
                if st is None and self.lower_roots.fds:
                    if lowers is None:
                        lowers = self.lowers_at(resolved)
                    st, source = lowers.find(part)
                if st is None or whiteout:
                    if not create:
                        raise InvalidArgument(f"{self.what}: entry {entry!r}: "
                                              f"{'/'.join(resolved + [part])} does not exist")
                    self.make_dir(part, fd, resolved, opaque=whiteout)
                    fd, lowers = self.release(fd, lowers, open_dir(part, fd)), Lowers()
                    resolved.append(part)
                    continue
                if stat.S_ISLNK(st.st_mode):
                    links += 1
                    if links > _MAX_SYMLINKS:
                        raise InvalidArgument(f"{self.what}: entry {entry!r}: too many levels of symlinks")
                    target = os.readlink(part, dir_fd=fd) if source < 0 else lowers.readlink(part, source)
                    if target.startswith("/"):
                        resolved = []
                        fd, lowers = self.release(fd, lowers, self.walk(())), None
                    pending.extendleft(reversed(target.split("/")))
                    continue
                if not stat.S_ISDIR(st.st_mode):
                    raise InvalidArgument(f"{self.what}: entry {entry!r}: "
                                          f"{'/'.join(resolved + [part])} is not a directory")
                if source < 0:
                    child, below = open_dir(part, fd), None
                else:
                    below = lowers.child(part, source)
                    try:
                        child = self.copy_up(part, fd, resolved, below) if create else None
                    except BaseException:
                        below.close()
                        raise
                fd, lowers = self.release(fd, lowers, child), below
                resolved.append(part)
        except BaseException:
            self.release(fd, lowers, None)
            raise
        if lowers is not None:
            lowers.close()
        if fd is None:
            raise InvalidArgument(f"{self.what}: entry {entry!r}: {'/'.join(resolved)} is only in a lower layer")
        return fd, resolved

    @staticmethod
    def release(fd: Optional[int], lowers: Optional[Lowers], new_fd: Optional[int]) -> Optional[int]:
        """Close `fd` and `lowers` (either may be None) and return `new_fd`: one step of `resolve`."""
        if fd is not None:
            os.close(fd)
        if lowers is not None:
            lowers.close()
        return new_fd

    def upper_at(self, parts: list[str]) -> Optional[int]:
        """A descriptor of the upper directory's `parts` (real directories), None if it has not got them."""
        try:
            return self.walk(parts)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            raise

    def lowers_at(self, parts: list[str]) -> Lowers:
        """The lower layers' directory `parts` (real directories of the merged tree) as overlayfs merges
        them under the upper directory: nothing below an opaque directory of this layer."""
        lowers = self.lower_roots.copy()
        fd = self.walk(())
        try:
            for part in parts:
                if not lowers.fds:
                    break
                st = lstat_at(part, fd) if fd is not None else None
                upper = open_dir(part, fd) if st is not None and stat.S_ISDIR(st.st_mode) else None
                fd = self.release(fd, None, upper)
                below = Lowers() if upper is not None and is_opaque(upper) else lowers.child(part)
                lowers.close()
                lowers = below
        except BaseException:
            lowers.close()
            raise
        finally:
            if fd is not None:
                os.close(fd)
        return lowers

    def make_dir(self, name: str, fd: int, parent: list[str], opaque: bool) -> None:
        """A missing directory on the way to an entry (0755), replacing a whiteout when `opaque`."""
        if opaque:
            os.unlink(name, dir_fd=fd)
        os.mkdir(name, 0o755, dir_fd=fd)
        if opaque:
            self.mark_opaque(fd, parent, name)

    def copy_up(self, name: str, fd: int, parent: list[str], lowers: Lowers) -> int:
        """Make in directory `fd` (`parent`) the directory `name` a lower layer has (`lowers`, nearest
        first) with that one's mode, owner, times and xattrs (but ``trusted.*``, overlayfs' own), as
        containerd's overlay applier makes a parent; its descriptor. A copied-up parent nothing else
        changed keeps its times: in the merged tree, its content did not change."""
        source = lowers.fds[0]
        st = os.fstat(source)
        here = os.fstat(fd)
        times = self.copied_up.get((here.st_dev, here.st_ino))
        os.mkdir(name, 0o700, dir_fd=fd)
        if times is not None and times[1] == here.st_mtime_ns:
            os.utime(self.path_at(fd, parent), ns=times)
        child = open_dir(name, fd)
        try:
            if self.same_owner:
                os.chown(name, st.st_uid, st.st_gid, dir_fd=fd, follow_symlinks=False)
            source_xattrs, child_xattrs = xattr_target(source), xattr_target(child)
            try:
                keys = os.listxattr(source_xattrs)
            except OSError as exc:
                if exc.errno not in _IGNORED_XATTR_ERRORS:
                    raise
                keys = []
            for key in keys:
                if not key.startswith("trusted."):
                    self.set_xattr(child_xattrs, key, os.getxattr(source_xattrs, key))
            self.set_mode_and_times(child, stat.S_IMODE(st.st_mode), (st.st_atime_ns, st.st_mtime_ns))
            mine = os.fstat(child)
            self.copied_up[(mine.st_dev, mine.st_ino)] = (st.st_atime_ns, st.st_mtime_ns)
        except BaseException:
            os.close(child)
            raise
        return child

    def apply(self, tar: tarfile.TarFile) -> None:
        while True:
            member = tar.next()
            if member is None:
                break
            tar.members.clear()  # tarfile keeps every header otherwise
            self.entry(tar, member)
        self.finish_directories()

    def finish_directories(self) -> None:
        """Give each directory entry its mode and times, on the inode it made, the last entry winning."""
        done = set()
        for parts, dev, ino, mode, times in reversed(self.dirs):
            if (dev, ino) in done:
                continue
            done.add((dev, ino))
            try:
                fd = self.walk(parts)
            except OSError as exc:
                if exc.errno in _GONE_ERRORS:
                    continue  # replaced or removed by a later entry
                raise
            try:
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) == (dev, ino):
                    self.set_mode_and_times(fd, mode, times)
            finally:
                os.close(fd)

    def set_mode_and_times(self, fd: int, mode: int, times: tuple[int, int]) -> None:
        try:
            os.chmod(fd, mode)
            os.utime(fd, ns=times)
        except OSError as exc:
            if exc.errno != errno.EBADF or not self.proc:
                raise
            os.chmod(f"/proc/self/fd/{fd}", mode)  # a search-only descriptor: its inode through /proc
            os.utime(f"/proc/self/fd/{fd}", ns=times)

    def entry(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = clean_name(member.name, self.what)
        if not parts:
            return  # the root itself keeps its metadata
        fd, parent = self.resolve(parts[:-1], member.name, create=True)
        try:
            base = parts[-1]
            if base.startswith(WHITEOUT_PREFIX):
                self.whiteout(member, fd, parent, base)
                return
            existing = _exists(base, fd)
            replaced = existing is not None and not (stat.S_ISDIR(existing) and member.isdir())
            if replaced:
                remove_tree(base, dir_fd=fd)
                existing = None
            if self.create(tar, member, fd, parent, base, existing is not None):
                self.unpacked.add("/".join(parent + [base]))
            if replaced and self.overlay and member.isdir():
                # what this layer put there (a whiteout, a file) hid the lower layers' directory: keep it hidden
                self.mark_opaque(fd, parent, base)
        finally:
            os.close(fd)

    def whiteout(self, member: tarfile.TarInfo, fd: int, parent: list[str], base: str) -> None:
        if base == WHITEOUT_OPAQUE:
            if self.overlay:
                self.mark_opaque(fd, parent)
            else:
                self.make_opaque(parent)
            return
        if base.startswith(WHITEOUT_META_PREFIX):
            return  # other AUFS metadata has no meaning here
        name = base[len(WHITEOUT_PREFIX):]
        if name in ("", ".", ".."):
            raise InvalidArgument(f"{self.what}: invalid whiteout {member.name!r}")
        if _exists(name, fd) is not None:
            remove_tree(name, dir_fd=fd)
        if self.overlay:
            os.mknod(name, stat.S_IFCHR, os.makedev(0, 0), dir_fd=fd)  # mode 0000, as containerd makes them
            os.chown(name, *self.owner(member), dir_fd=fd, follow_symlinks=False)

    def make_opaque(self, parent: list[str]) -> None:
        key = "/".join(parent)
        if key in self.opaque_done:
            return
        self.opaque_done.add(key)
        pending = [list(parent)]
        while pending:
            parts = pending.pop()
            fd = self.walk(parts)
            try:
                for name in os.listdir(fd):
                    rel = "/".join(parts + [name])
                    if rel not in self.unpacked:
                        remove_tree(name, dir_fd=fd)
                    elif stat.S_ISDIR(_exists(name, fd) or 0):
                        pending.append(parts + [name])
            finally:
                os.close(fd)

    def create(self, tar: tarfile.TarFile, member: tarfile.TarInfo, fd: int, parent: list[str], base: str,
               exists: bool) -> bool:
        """Create one entry in directory `fd`; False when it was skipped (a device node without the privilege)."""
        if member.isreg():
            self.write_file(tar, member, fd, base)
            return True
        if member.isdir():
            if not exists:
                os.mkdir(base, 0o700, dir_fd=fd)
        elif member.issym():
            self.check_symlink(member, parent)
            os.symlink(member.linkname, base, dir_fd=fd)
        elif member.islnk():
            self.link(member, fd, base)
            return True  # the inode keeps the metadata of the entry that created it
        elif member.isfifo():
            os.mkfifo(base, 0o600, dir_fd=fd)
        elif member.ischr() or member.isblk():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            try:
                device = os.makedev(member.devmajor, member.devminor)
            except (OverflowError, ValueError):
                raise InvalidArgument(f"{self.what}: device {member.name!r} has an invalid number") from None
            try:
                os.mknod(base, kind | 0o600, device, dir_fd=fd)
            except PermissionError:
                return False
        else:
            raise InvalidArgument(f"{self.what}: entry {member.name!r} has unsupported tar type {member.type!r}")
        self.set_metadata(member, fd, parent, base)
        return True

    def write_file(self, tar: tarfile.TarFile, member: tarfile.TarInfo, fd: int, base: str) -> None:
        """A new regular file with the entry's content; its metadata set through its own descriptor."""
        self.budget.write(member.size, member.name)
        out = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=fd)
        try:
            with open(out, "wb", closefd=False) as f:
                shutil.copyfileobj(tar.extractfile(member), f, CHUNK)
            if self.same_owner:
                os.chown(out, *self.owner(member))
            self.set_xattrs(member, out)
            os.chmod(out, member.mode & 0o7777)  # after chown, which clears set-id bits
            os.utime(out, ns=_times(member))
        finally:
            os.close(out)

    def owner(self, member: tarfile.TarInfo) -> tuple[int, int]:
        if not (0 <= member.uid <= _MAX_ID and 0 <= member.gid <= _MAX_ID):
            raise InvalidArgument(f"{self.what}: entry {member.name!r} has an invalid owner "
                                  f"{member.uid}:{member.gid}")
        return member.uid, member.gid

    def check_symlink(self, member: tarfile.TarInfo, parent: list[str]) -> None:
        target = member.linkname
        if not target:
            raise InvalidArgument(f"{self.what}: symlink {member.name!r} has an empty target")
        _check_length(target, f"{self.what}: symlink {member.name!r}")
        if not target.startswith("/"):
            landing = posixpath.normpath(posixpath.join(*parent, target) if parent else target)
            if landing == ".." or landing.startswith("../"):
                raise InvalidArgument(
                    f"{self.what}: symlink {member.name!r} -> {target!r} points outside the target")

    def link(self, member: tarfile.TarInfo, fd: int, base: str) -> None:
        parts = clean_name(member.linkname, f"{self.what}: hard link {member.name!r}")
        if not parts:
            raise InvalidArgument(f"{self.what}: hard link {member.name!r} has no target")
        source_fd, _ = self.resolve(parts[:-1], member.name, create=False)
        try:
            mode = _exists(parts[-1], source_fd)
            if mode is None:
                raise InvalidArgument(f"{self.what}: hard link {member.name!r} -> {member.linkname!r}: "
                                      "the target does not exist")
            if stat.S_ISDIR(mode):
                raise InvalidArgument(f"{self.what}: hard link {member.name!r} -> {member.linkname!r}: "
                                      "the target is a directory")
            os.link(parts[-1], base, src_dir_fd=source_fd, dst_dir_fd=fd, follow_symlinks=False)
        finally:
            os.close(source_fd)

    def set_xattrs(self, member: tarfile.TarInfo, target: Union[int, str]) -> None:
        """The entry's SCHILY.xattr records on `target`, a descriptor or a path not to follow."""
        for key, value in member.pax_headers.items():
            if key.startswith(_XATTR_PAX_PREFIX):
                self.set_xattr(target, key[len(_XATTR_PAX_PREFIX):], value.encode("utf-8", "surrogateescape"),
                               follow=False)

    @staticmethod
    def set_xattr(target: Union[int, str], key: str, value: bytes, follow: bool = True) -> None:
        """One xattr on `target` (a descriptor, or a path followed only if `follow`); where the
        filesystem or the privileges refuse it, none."""
        options = {} if isinstance(target, int) else {"follow_symlinks": follow}
        try:
            os.setxattr(target, key, value, **options)
        except OSError as exc:
            if exc.errno not in _IGNORED_XATTR_ERRORS:
                raise

    def set_metadata(self, member: tarfile.TarInfo, fd: int, parent: list[str], base: str) -> None:
        """Metadata of the entry `base` just made in directory `fd` (not a regular file); a directory's mode
        and times wait for the end."""
        if self.same_owner:
            os.chown(base, *self.owner(member), dir_fd=fd, follow_symlinks=False)
        self.set_xattrs(member, self.path_at(fd, parent, base))
        if member.isdir():
            st = os.stat(base, dir_fd=fd, follow_symlinks=False)
            self.dirs.append((tuple(parent + [base]), st.st_dev, st.st_ino, member.mode & 0o7777, _times(member)))
            return
        if not member.issym():
            os.chmod(base, member.mode & 0o7777, dir_fd=fd)  # a FIFO or device node made just now
        os.utime(base, ns=_times(member), dir_fd=fd, follow_symlinks=False)


class _BudgetedDigest(DigestingReader):
    """A DigestingReader that also counts the stream against a SizeBudget."""

    def __init__(self, raw: BinaryIO, budget: SizeBudget) -> None:
        super().__init__(raw)
        self._budget = budget

    def _update(self, data: bytes) -> None:
        super()._update(data)
        self._budget.stream(len(data))


def apply_layer(root: "str | os.PathLike[str]", stream: BinaryIO, *,
                descriptor: Optional[Descriptor] = None, diff_id: Optional[str] = None,
                overlay_whiteouts: bool = False, lower_dirs: Sequence[str] = (),
                same_owner: Optional[bool] = None, max_size: Optional[int] = None) -> AppliedLayer:
    """Apply the layer read from `stream` onto directory `root` and return its diff ID.

    `descriptor`, when given, is the layer blob's: its media type must be a
    tar layer (else Unsupported) and the compressed bytes are checked against
    its size and digest. `diff_id`, when given, must equal the computed one
    (else InvalidArgument). `overlay_whiteouts` writes whiteouts the way an
    overlay upper directory holds them (0/0 character devices of mode 0000
    and the ``trusted.overlay.opaque`` xattr) instead of deleting. `lower_dirs`
    (only with `overlay_whiteouts`) are the directories under `root` in the
    overlay mount, nearest first, as its ``lowerdir`` lists them: the layer is
    applied onto the tree they show with `root` on top, as the native
    snapshotter applies it onto a full copy (see `lowerdirs`); they are only
    read. `same_owner`
    (default: when running as root) applies the entries' uid/gid.
    `max_size` bounds the uncompressed stream and the bytes written: None
    for the default, max(1 GiB, 100 x the compressed size), a number of
    bytes, or 0 for no limit (see `limits`).
    Raises InvalidArgument for a corrupt, unsafe or too large layer,
    FailedPrecondition when the filesystem refuses a write.
    """
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise InvalidArgument(f"layer target {root!r} is not a directory")
    if diff_id is not None:
        validate_digest(diff_id, "diff ID")
    lower_dirs = [os.path.abspath(os.fspath(path)) for path in lower_dirs]
    if lower_dirs and not overlay_whiteouts:
        raise InvalidArgument(f"lower directories {lower_dirs!r} are only for an overlay upper directory "
                              "(overlay_whiteouts=True)")
    for path in lower_dirs:
        if not os.path.isdir(path):
            raise InvalidArgument(f"lower directory {path!r} is not a directory")
    if descriptor is not None:
        what = f"layer {descriptor.digest}"
        mediatypes.layer_compression(descriptor.media_type)
        stream = VerifiedReader(stream, descriptor.digest, descriptor.size, what)
        budget = SizeBudget(what, max_size, lambda: descriptor.size)
    else:
        what = "layer"
        stream = counted = CountingReader(stream)
        budget = SizeBudget(what, max_size, lambda: counted.count)
    if same_owner is None:
        same_owner = os.geteuid() == 0
    plain = _BudgetedDigest(decompressed(stream, what), budget)
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise FailedPrecondition(f"cannot apply {what} into {root}: {exc}") from None
    try:
        lower_roots = Lowers.roots(lower_dirs)
    except OSError as exc:
        os.close(root_fd)
        raise FailedPrecondition(f"cannot apply {what} onto {lower_dirs}: {exc}") from None
    try:
        try:
            tar = SafeTarFile.open(fileobj=plain, mode="r|", what=what)
        except tarfile.ReadError:
            if plain.count:
                raise
            tar = None  # an empty stream is an empty layer
        if tar is not None:
            with tar:
                _Applier(root, root_fd, what, overlay_whiteouts, same_owner, budget, lower_roots).apply(tar)
        plain.drain()
        while stream.read(CHUNK):
            pass  # let the verifying reader see the whole blob
    except tarfile.TarError as exc:
        raise InvalidArgument(f"{what} is not a valid tar stream: {exc}") from None
    except OSError as exc:
        raise FailedPrecondition(f"cannot apply {what} into {root}: {exc}") from None
    finally:
        os.close(root_fd)
        lower_roots.close()
    actual = plain.digest()
    if diff_id is not None and actual != diff_id:
        raise InvalidArgument(f"{what}: diff ID mismatch, expected {diff_id}, the uncompressed content is {actual}")
    return AppliedLayer(actual, plain.count)
