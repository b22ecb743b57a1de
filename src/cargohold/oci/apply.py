"""Applying a layer (a tar diff, plain, gzip or zstd) onto a directory.

The OCI changeset rules, as containerd's `archive.Apply` implements them:
``.wh.<name>`` deletes ``<name>``, ``.wh..wh..opq`` empties its directory of
what lower layers put there, an entry replaces what was at its path (a
directory merges with a directory), directory times are set last. Regular
files, directories, symlinks, hard links, FIFOs and device nodes are created
with their mode, ownership (when running as root), extended attributes
(where the filesystem and privileges allow) and modification time.

Nothing is ever written outside the target directory. Entry and hard-link
names that are absolute or contain ``..`` are refused; symlinks met on the
way to an entry are followed inside the target, an absolute one from the
target's root (as the container will see it), and a relative one that climbs
above the target is refused, as is creating one. The final component of a
path is never followed.

The layer's diff ID (sha256 of the whole uncompressed stream) is computed
while applying and checked against the expected one. On any error the
directory is left partly applied: the caller discards it, as containerd
discards the active snapshot. Memory stays bounded whatever the layer's size.
"""

from __future__ import annotations

import decimal
import errno
import os
import posixpath
import shutil
import stat
import tarfile
from dataclasses import dataclass
from typing import BinaryIO, Optional

from ..errors import FailedPrecondition, InvalidArgument
from ..model import Descriptor
from ..snapshots.fsutil import remove_tree
from ..validation import validate_digest
from . import mediatypes
from .compression import decompressed
from .digests import CHUNK, DigestingReader, VerifiedReader

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"
_XATTR_PAX_PREFIX = "SCHILY.xattr."
_MAX_SYMLINKS = 40
_IGNORED_XATTR_ERRORS = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM)


@dataclass(frozen=True)
class AppliedLayer:
    """The result of applying a layer: its diff ID and the size of its uncompressed tar stream."""

    diff_id: str
    size: int


class _StrictTarInfo(tarfile.TarInfo):
    """Refuses a damaged header instead of taking it for the end of the archive, as Go's reader does."""

    @classmethod
    def frombuf(cls, buf, encoding, errors):
        try:
            return super().frombuf(buf, encoding, errors)
        except (tarfile.TruncatedHeaderError, tarfile.InvalidHeaderError) as exc:
            raise InvalidArgument(f"invalid tar header: {exc}") from None


def clean_name(name: str, what: str) -> list[str]:
    """The components of a tar entry name, refusing absolute names and any ``..``."""
    if name.startswith("/"):
        raise InvalidArgument(f"{what}: absolute path {name!r} is not allowed")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"{what}: path {name!r} contains '..'")
    return parts


def _times(member: tarfile.TarInfo) -> tuple[int, int]:
    """(atime, mtime) in nanoseconds: the modification time, exact even from a fractional PAX record."""
    try:
        ns = int(decimal.Decimal(member.pax_headers["mtime"]) * 1_000_000_000)
    except (KeyError, decimal.InvalidOperation):
        ns = int(member.mtime) * 1_000_000_000
    return ns, ns


class _Applier:
    def __init__(self, root: str, what: str, overlay_whiteouts: bool, same_owner: bool) -> None:
        self.root = root
        self.what = what
        self.overlay = overlay_whiteouts
        self.same_owner = same_owner
        self.unpacked: set[str] = set()
        self.opaque_done: set[str] = set()
        self.dirs: list[tuple[str, tarfile.TarInfo]] = []

    def _path(self, parts: list[str]) -> str:
        return os.path.join(self.root, *parts)

    def resolve(self, parts: list[str], entry: str, create: bool) -> list[str]:
        """The real components of directory `parts` below the root, following symlinks inside it."""
        resolved: list[str] = []
        pending = list(parts)
        links = 0
        while pending:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not resolved:
                    raise InvalidArgument(f"{self.what}: entry {entry!r} leads outside the target "
                                          "through a symlink")
                resolved.pop()
                continue
            path = self._path(resolved + [part])
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                if not create:
                    raise InvalidArgument(f"{self.what}: entry {entry!r}: "
                                          f"{'/'.join(resolved + [part])} does not exist") from None
                os.mkdir(path, 0o755)
                mode = stat.S_IFDIR
            if stat.S_ISLNK(mode):
                links += 1
                if links > _MAX_SYMLINKS:
                    raise InvalidArgument(f"{self.what}: entry {entry!r}: too many levels of symlinks")
                target = os.readlink(path)
                if target.startswith("/"):
                    resolved = []
                pending[:0] = target.split("/")
                continue
            if not stat.S_ISDIR(mode):
                raise InvalidArgument(f"{self.what}: entry {entry!r}: "
                                      f"{'/'.join(resolved + [part])} is not a directory")
            resolved.append(part)
        return resolved

    def apply(self, tar: tarfile.TarFile) -> None:
        while True:
            member = tar.next()
            if member is None:
                break
            tar.members.clear()  # tarfile keeps every header otherwise
            self.entry(tar, member)
        for path, member in self.dirs:
            if os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, member.mode & 0o7777)
                os.utime(path, ns=_times(member), follow_symlinks=False)

    def entry(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = clean_name(member.name, self.what)
        if not parts:
            return  # the root itself keeps its metadata
        parent = self.resolve(parts[:-1], member.name, create=True)
        base = parts[-1]
        if base.startswith(WHITEOUT_PREFIX):
            self.whiteout(member, parent, base)
            return
        path = self._path(parent + [base])
        rel = "/".join(parent + [base])
        try:
            existing = os.lstat(path).st_mode
        except FileNotFoundError:
            existing = None
        if existing is not None and not (stat.S_ISDIR(existing) and member.isdir()):
            remove_tree(path)
            existing = None
        if self.create(tar, member, path, parent, existing is not None):
            self.unpacked.add(rel)

    def whiteout(self, member: tarfile.TarInfo, parent: list[str], base: str) -> None:
        directory = self._path(parent)
        if base == WHITEOUT_OPAQUE:
            if self.overlay:
                os.setxattr(directory, OVERLAY_OPAQUE_XATTR, b"y")
            else:
                self.make_opaque(parent)
            return
        if base.startswith(WHITEOUT_META_PREFIX):
            return  # other AUFS metadata has no meaning here
        name = base[len(WHITEOUT_PREFIX):]
        if name in ("", ".", ".."):
            raise InvalidArgument(f"{self.what}: invalid whiteout {member.name!r}")
        target = os.path.join(directory, name)
        if os.path.lexists(target):
            remove_tree(target)
        if self.overlay:
            os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(0, 0))
            os.chown(target, member.uid, member.gid, follow_symlinks=False)

    def make_opaque(self, parent: list[str]) -> None:
        key = "/".join(parent)
        if key in self.opaque_done:
            return
        self.opaque_done.add(key)
        pending = [(self._path(parent), key)]
        while pending:
            directory, rel = pending.pop()
            for name in os.listdir(directory):
                child, child_rel = os.path.join(directory, name), f"{rel}/{name}" if rel else name
                if child_rel not in self.unpacked:
                    remove_tree(child)
                elif stat.S_ISDIR(os.lstat(child).st_mode):
                    pending.append((child, child_rel))

    def create(self, tar: tarfile.TarFile, member: tarfile.TarInfo, path: str, parent: list[str],
               exists: bool) -> bool:
        """Create one entry; False when it was skipped (a device node without the privilege)."""
        if member.isreg():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(tar.extractfile(member), out, CHUNK)
        elif member.isdir():
            if not exists:
                os.mkdir(path, 0o700)
        elif member.issym():
            self.check_symlink(member, parent)
            os.symlink(member.linkname, path)
        elif member.islnk():
            os.link(self.link_source(member), path, follow_symlinks=False)
            return True  # the inode keeps the metadata of the entry that created it
        elif member.isfifo():
            os.mkfifo(path, 0o600)
        elif member.ischr() or member.isblk():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            try:
                os.mknod(path, kind | 0o600, os.makedev(member.devmajor, member.devminor))
            except PermissionError:
                return False
        else:
            raise InvalidArgument(f"{self.what}: entry {member.name!r} has unsupported tar type {member.type!r}")
        self.set_metadata(member, path)
        return True

    def check_symlink(self, member: tarfile.TarInfo, parent: list[str]) -> None:
        target = member.linkname
        if not target:
            raise InvalidArgument(f"{self.what}: symlink {member.name!r} has an empty target")
        if not target.startswith("/"):
            landing = posixpath.normpath(posixpath.join(*parent, target) if parent else target)
            if landing == ".." or landing.startswith("../"):
                raise InvalidArgument(
                    f"{self.what}: symlink {member.name!r} -> {target!r} points outside the target")

    def link_source(self, member: tarfile.TarInfo) -> str:
        parts = clean_name(member.linkname, f"{self.what}: hard link {member.name!r}")
        if not parts:
            raise InvalidArgument(f"{self.what}: hard link {member.name!r} has no target")
        parent = self.resolve(parts[:-1], member.name, create=False)
        source = self._path(parent + [parts[-1]])
        try:
            mode = os.lstat(source).st_mode
        except FileNotFoundError:
            raise InvalidArgument(f"{self.what}: hard link {member.name!r} -> {member.linkname!r}: "
                                  "the target does not exist") from None
        if stat.S_ISDIR(mode):
            raise InvalidArgument(f"{self.what}: hard link {member.name!r} -> {member.linkname!r}: "
                                  "the target is a directory")
        return source

    def set_metadata(self, member: tarfile.TarInfo, path: str) -> None:
        if self.same_owner:
            os.chown(path, member.uid, member.gid, follow_symlinks=False)
        for key, value in member.pax_headers.items():
            if key.startswith(_XATTR_PAX_PREFIX):
                try:
                    os.setxattr(path, key[len(_XATTR_PAX_PREFIX):],
                                value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
                except OSError as exc:
                    if exc.errno not in _IGNORED_XATTR_ERRORS:
                        raise
        if member.isdir():
            self.dirs.append((path, member))
            return
        if not member.issym():
            os.chmod(path, member.mode & 0o7777)
        os.utime(path, ns=_times(member), follow_symlinks=False)


def apply_layer(root: "str | os.PathLike[str]", stream: BinaryIO, *,
                descriptor: Optional[Descriptor] = None, diff_id: Optional[str] = None,
                overlay_whiteouts: bool = False, same_owner: Optional[bool] = None) -> AppliedLayer:
    """Apply the layer read from `stream` onto directory `root` and return its diff ID.

    `descriptor`, when given, is the layer blob's: its media type must be a
    tar layer (else Unsupported) and the compressed bytes are checked against
    its size and digest. `diff_id`, when given, must equal the computed one
    (else InvalidArgument). `overlay_whiteouts` writes whiteouts the way an
    overlay upper directory holds them (0/0 character devices and the
    ``trusted.overlay.opaque`` xattr) instead of deleting. `same_owner`
    (default: when running as root) applies the entries' uid/gid.
    Raises InvalidArgument for a corrupt or unsafe layer, FailedPrecondition
    when the filesystem refuses a write.
    """
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise InvalidArgument(f"layer target {root!r} is not a directory")
    if diff_id is not None:
        validate_digest(diff_id, "diff ID")
    what = "layer"
    if descriptor is not None:
        what = f"layer {descriptor.digest}"
        mediatypes.layer_compression(descriptor.media_type)
        stream = VerifiedReader(stream, descriptor.digest, descriptor.size, what)
    if same_owner is None:
        same_owner = os.geteuid() == 0
    applier = _Applier(root, what, overlay_whiteouts, same_owner)
    plain = DigestingReader(decompressed(stream, what))
    try:
        try:
            tar = tarfile.open(fileobj=plain, mode="r|", tarinfo=_StrictTarInfo)
        except tarfile.ReadError:
            if plain.count:
                raise
            tar = None  # an empty stream is an empty layer
        if tar is not None:
            with tar:
                applier.apply(tar)
        plain.drain()
        while stream.read(CHUNK):
            pass  # let the verifying reader see the whole blob
    except tarfile.TarError as exc:
        raise InvalidArgument(f"{what} is not a valid tar stream: {exc}") from None
    except OSError as exc:
        raise FailedPrecondition(f"cannot apply {what} into {root}: {exc}") from None
    actual = plain.digest()
    if diff_id is not None and actual != diff_id:
        raise InvalidArgument(f"{what}: diff ID mismatch, expected {diff_id}, the uncompressed content is {actual}")
    return AppliedLayer(actual, plain.count)
