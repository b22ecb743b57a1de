"""The native snapshotter (containerd's ``snapshots/native``): every active
snapshot is a full copy of its parent's tree, so it works on any filesystem
and mounts as a plain bind mount.

Layout under the root: ``metadata/`` (the metastore) and ``snapshots/<id>/``,
the snapshot's tree. A view of a parent adds no directory of its own content:
it mounts the parent's tree read-only.
"""

from __future__ import annotations

from ..model import Kind, Mount
from .base import DirectorySnapshotter, bind_mount
from .fsutil import copy_tree
from .storage import Snapshot


class NativeSnapshotter(DirectorySnapshotter):
    """Copying snapshot backend; see the module docstring for the layout."""

    _parent_depth = 1  # a copy of, or a mount of, the nearest parent's tree

    def _changes_path(self, snapshot_id: int) -> str:
        return self.snapshot_dir(snapshot_id)

    def _populate(self, directory: str, snapshot: Snapshot) -> None:
        if snapshot.kind == Kind.ACTIVE and snapshot.parent_ids:
            if copy_tree(self.snapshot_dir(snapshot.parent_ids[0]), directory):
                self._flush(f"copy snapshot {snapshot.parent_ids[0]}", directory)

    def _mounts(self, snapshot: Snapshot) -> list[Mount]:
        if snapshot.kind == Kind.ACTIVE or not snapshot.parent_ids:
            source = self.snapshot_dir(snapshot.id)
        else:
            source = self.snapshot_dir(snapshot.parent_ids[0])
        return bind_mount(source, snapshot.kind == Kind.VIEW)
