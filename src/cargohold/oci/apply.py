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
from typing import BinaryIO, Optional, Union

from ..errors import FailedPrecondition, InvalidArgument
from ..model import Descriptor
from ..snapshots.fsutil import remove_tree
from ..validation import validate_digest
from . import mediatypes
from .compression import decompressed
from .digests import CHUNK, CountingReader, DigestingReader, VerifiedReader
from .limits import SizeBudget
from .tarheaders import SafeTarFile

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"
MAX_NAME = 4096
"""Longest entry name, hard-link or symlink target (Linux's PATH_MAX)."""

_XATTR_PAX_PREFIX = "SCHILY.xattr."
_MAX_SYMLINKS = 40
_MAX_ID = (1 << 32) - 2
_MAX_TIME_NS = (1 << 63) - 1
_IGNORED_XATTR_ERRORS = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM)
_GONE_ERRORS = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_SEARCH_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


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


def _open_dir(name: str, dir_fd: int) -> int:
    """Open directory `name` of `dir_fd`, never through a symlink; search-only if it cannot be read."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except PermissionError:
        return os.open(name, _SEARCH_FLAGS, dir_fd=dir_fd)


def _exists(name: str, dir_fd: int) -> Optional[int]:
    """The st_mode of `name` in `dir_fd` (not following a symlink), None if there is nothing."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return None


class _Applier:
    def __init__(self, root: str, root_fd: int, what: str, overlay_whiteouts: bool, same_owner: bool,
                 budget: SizeBudget) -> None:
        self.root = root
        self.root_fd = root_fd
        self.what = what
        self.overlay = overlay_whiteouts
        self.same_owner = same_owner
        self.budget = budget
        self.proc = os.path.isdir(f"/proc/self/fd/{root_fd}")
        self.unpacked: set[str] = set()
        self.opaque_done: set[str] = set()
        self.dirs: list[tuple] = []  # (real components, st_dev, st_ino, mode, times) of each directory entry

    def walk(self, parts) -> int:
        """A new descriptor of directory root/`parts`, no component a symlink (else OSError)."""
        fd = os.open(".", _DIR_FLAGS, dir_fd=self.root_fd)
        try:
            for part in parts:
                fd, old = _open_dir(part, fd), fd
                os.close(old)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def path_at(self, fd: int, parent: list[str], name: str = "") -> str:
        """A path to `name` in directory `fd` (`parent` below the root) for the calls that take no dir_fd.

        Through /proc/self/fd, pinned to that directory's inode, where /proc is
        mounted; else the real path, whose components were just walked.
        """
        base = f"/proc/self/fd/{fd}" if self.proc else os.path.join(self.root, *parent)
        return os.path.join(base, name) if name else base

    def resolve(self, parts: list[str], entry: str, create: bool) -> tuple[int, list[str]]:
        """A descriptor of the real directory `parts` names, and its real components below the root.

        Symlinks on the way are followed here, inside the root; missing
        directories are created (0755) when `create`. The caller closes the descriptor.
        """
        resolved: list[str] = []
        pending = collections.deque(parts)
        links = 0
        fd = self.walk(())
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
                    fd, old = _open_dir("..", fd), fd  # the real parent: `resolved` holds no symlink
                    os.close(old)
                    continue
                mode = _exists(part, fd)
                if mode is None:
                    if not create:
                        raise InvalidArgument(f"{self.what}: entry {entry!r}: "
                                              f"{'/'.join(resolved + [part])} does not exist")
                    os.mkdir(part, 0o755, dir_fd=fd)
                    mode = stat.S_IFDIR
                if stat.S_ISLNK(mode):
                    links += 1
                    if links > _MAX_SYMLINKS:
                        raise InvalidArgument(f"{self.what}: entry {entry!r}: too many levels of symlinks")
                    target = os.readlink(part, dir_fd=fd)
                    if target.startswith("/"):
                        resolved = []
                        fd, old = self.walk(()), fd
                        os.close(old)
                    pending.extendleft(reversed(target.split("/")))
                    continue
                if not stat.S_ISDIR(mode):
                    raise InvalidArgument(f"{self.what}: entry {entry!r}: "
                                          f"{'/'.join(resolved + [part])} is not a directory")
                fd, old = _open_dir(part, fd), fd
                os.close(old)
                resolved.append(part)
        except BaseException:
            os.close(fd)
            raise
        return fd, resolved

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
            if existing is not None and not (stat.S_ISDIR(existing) and member.isdir()):
                remove_tree(base, dir_fd=fd)
                existing = None
            if self.create(tar, member, fd, parent, base, existing is not None):
                self.unpacked.add("/".join(parent + [base]))
        finally:
            os.close(fd)

    def whiteout(self, member: tarfile.TarInfo, fd: int, parent: list[str], base: str) -> None:
        if base == WHITEOUT_OPAQUE:
            if self.overlay:
                os.setxattr(self.path_at(fd, parent), OVERLAY_OPAQUE_XATTR, b"y")
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
        options = {} if isinstance(target, int) else {"follow_symlinks": False}
        for key, value in member.pax_headers.items():
            if key.startswith(_XATTR_PAX_PREFIX):
                try:
                    os.setxattr(target, key[len(_XATTR_PAX_PREFIX):], value.encode("utf-8", "surrogateescape"),
                                **options)
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
                overlay_whiteouts: bool = False, same_owner: Optional[bool] = None,
                max_size: Optional[int] = None) -> AppliedLayer:
    """Apply the layer read from `stream` onto directory `root` and return its diff ID.

    `descriptor`, when given, is the layer blob's: its media type must be a
    tar layer (else Unsupported) and the compressed bytes are checked against
    its size and digest. `diff_id`, when given, must equal the computed one
    (else InvalidArgument). `overlay_whiteouts` writes whiteouts the way an
    overlay upper directory holds them (0/0 character devices of mode 0000
    and the ``trusted.overlay.opaque`` xattr) instead of deleting. `same_owner`
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
        try:
            tar = SafeTarFile.open(fileobj=plain, mode="r|", what=what)
        except tarfile.ReadError:
            if plain.count:
                raise
            tar = None  # an empty stream is an empty layer
        if tar is not None:
            with tar:
                _Applier(root, root_fd, what, overlay_whiteouts, same_owner, budget).apply(tar)
        plain.drain()
        while stream.read(CHUNK):
            pass  # let the verifying reader see the whole blob
    except tarfile.TarError as exc:
        raise InvalidArgument(f"{what} is not a valid tar stream: {exc}") from None
    except OSError as exc:
        raise FailedPrecondition(f"cannot apply {what} into {root}: {exc}") from None
    finally:
        os.close(root_fd)
    actual = plain.digest()
    if diff_id is not None and actual != diff_id:
        raise InvalidArgument(f"{what}: diff ID mismatch, expected {diff_id}, the uncompressed content is {actual}")
    return AppliedLayer(actual, plain.count)
