"""The overlayfs snapshotter (containerd's ``snapshots/overlay``, registered as
``overlayfs``, with ``overlay`` as an alias): a snapshot stores only its own
changes, and its mounts stack the parents' change directories with overlayfs.

Layout under the root: ``metadata/`` (the metastore) and
``snapshots/<id>/fs`` (the changes, overlayfs ``upperdir``) plus
``snapshots/<id>/work`` (its ``workdir``) for active snapshots. Creating
snapshots only makes directories: it needs no mount privilege. Mounts are
built exactly as containerd builds them:

* no parent: a bind mount of ``fs`` (``rw``, or ``ro`` for a view);
* a view of a single layer: a read-only bind mount of the parent's ``fs``;
* otherwise one ``overlay`` mount with ``lowerdir`` listing the parents'
  ``fs`` directories nearest first, and ``upperdir``/``workdir`` for an
  active snapshot (an overlay without an upper directory is read-only).

``index=off`` is added when the kernel's overlay module has the ``index``
parameter, and ``userxattr`` when running in a user namespace on a kernel
that supports it (5.11+), as containerd does.
"""

from __future__ import annotations

import os
from typing import Optional

from ..errors import InvalidArgument
from ..model import Kind, Mount
from ..timeutil import Clock
from .base import DirectorySnapshotter, bind_mount
from .storage import Snapshot

_INDEX_PARAMETER = "/sys/module/overlay/parameters/index"


def supports_index() -> bool:
    """Whether overlayfs accepts ``index=off`` here."""
    return os.path.exists(_INDEX_PARAMETER)


def needs_userxattr() -> bool:
    """Whether mounts need ``userxattr``: inside a user namespace, on Linux 5.11 or later."""
    try:
        with open("/proc/self/uid_map") as f:
            in_userns = f.read().split() != ["0", "0", "4294967295"]
    except OSError:
        return False
    if not in_userns:
        return False
    release = os.uname().release.split("-")[0].split(".")
    try:
        return tuple(int(part) for part in release[:2]) >= (5, 11)
    except ValueError:
        return False


class OverlaySnapshotter(DirectorySnapshotter):
    """overlayfs snapshot backend; see the module docstring for layout and mounts."""

    def __init__(self, root: "str | os.PathLike[str]", *, clock: Optional[Clock] = None) -> None:
        super().__init__(root, clock=clock)
        self._options = (["index=off"] if supports_index() else []) + (["userxattr"] if needs_userxattr() else [])

    def upper_path(self, snapshot_id: int) -> str:
        return os.path.join(self.snapshot_dir(snapshot_id), "fs")

    def work_path(self, snapshot_id: int) -> str:
        return os.path.join(self.snapshot_dir(snapshot_id), "work")

    def _changes_path(self, snapshot_id: int) -> str:
        return self.upper_path(snapshot_id)

    def _check_nameable(self) -> None:
        """The kernel (and the unpacker) split an overlay mount's options at ',' and its lower
        directories at ':', so a root holding either cannot be named in one."""
        if ":" in self.root or "," in self.root:
            raise InvalidArgument(f"overlayfs snapshotter root {self.root!r}: an overlay mount cannot name "
                                  "directories whose paths hold ':' or ','")

    def _populate(self, directory: str, snapshot: Snapshot) -> None:
        if snapshot.parent_ids:
            self._check_nameable()
        upper = os.path.join(directory, "fs")
        os.mkdir(upper, 0o755)
        if snapshot.kind == Kind.ACTIVE:
            os.mkdir(os.path.join(directory, "work"), 0o711)
        if snapshot.parent_ids:
            st = os.stat(self.upper_path(snapshot.parent_ids[0]))
            try:
                os.lchown(upper, st.st_uid, st.st_gid)
            except PermissionError:
                pass  # unprivileged: the layer stays ours

    def _mounts(self, snapshot: Snapshot) -> list[Mount]:
        if not snapshot.parent_ids:
            return bind_mount(self.upper_path(snapshot.id), snapshot.kind == Kind.VIEW)
        options = list(self._options)
        if snapshot.kind == Kind.ACTIVE:
            options.append(f"workdir={self.work_path(snapshot.id)}")
            options.append(f"upperdir={self.upper_path(snapshot.id)}")
        elif len(snapshot.parent_ids) == 1:
            return bind_mount(self.upper_path(snapshot.parent_ids[0]), readonly=True)
        lowers = ":".join(self.upper_path(parent_id) for parent_id in snapshot.parent_ids)
        options.append(f"lowerdir={lowers}")
        self._check_nameable()
        return [Mount("overlay", "overlay", tuple(options))]
