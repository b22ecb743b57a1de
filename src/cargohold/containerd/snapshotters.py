"""containerd's snapshotter backends on disk: their own metastores and snapshot directories.

The native and overlayfs snapshotters (and every other one built on containerd's
``snapshots/storage``) keep ``io.containerd.snapshotter.v1.<name>/metadata.db``:
``v1/snapshots/<backend key>`` holds the snapshot's numeric id (uvarint), kind
(one byte), parent's backend key, labels, times and, once committed, its size
and inodes (varints); ``v1/parents`` indexes children by parent id. The
snapshot's directory is ``snapshots/<id>`` beside it: for ``native`` the tree
itself, for ``overlayfs`` its ``fs`` (upper) and ``work`` directories.

The metadata's snapshot records name their backend snapshot by that backend
key (``<ns>/<sequence>/<key>``), which `Backend.get` resolves.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from typing import Any, Optional

from ..errors import Corrupted, FailedPrecondition
from ..snapshots.fsutil import open_dirs
from . import decode, tree
from . import schema as s
from .decode import BackendSnapshot

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")

TREE_SUBDIR = {"overlayfs": "fs"}
"""Where a snapshot's files are inside its directory, per snapshotter (the directory itself otherwise)."""


def valid_name(name: str) -> bool:
    """Whether `name` can be a snapshotter's directory suffix (no path tricks)."""
    return bool(_NAME.match(name)) and name not in (".", "..")


@dataclass
class Backend:
    """One snapshotter's metastore, read at one transaction, and where its directories are."""

    name: str
    directory: str
    snapshots: dict
    """backend key → `BackendSnapshot`."""

    def get(self, backend_key: str) -> Optional[BackendSnapshot]:
        return self.snapshots.get(backend_key)

    def snapshot_dir(self, snapshot_id: int) -> str:
        return os.path.join(self.directory, s.SNAPSHOTS_DIR, str(snapshot_id))

    def tree_dir(self, snapshot_id: int) -> str:
        """The directory holding the snapshot's files (overlayfs: its upper ``fs``)."""
        sub = TREE_SUBDIR.get(self.name)
        base = self.snapshot_dir(snapshot_id)
        return os.path.join(base, sub) if sub else base

    def open_tree(self, snapshot_id: int, what: str) -> int:
        """A descriptor of the snapshot's tree directory, every component from the backend's
        directory down opened without following a symlink: whoever can write into the root could
        otherwise point one at a host directory and have it read.

        FailedPrecondition when a component is missing, Corrupted when one is a symlink or not a
        directory; both name `what` and the path.
        """
        sub = TREE_SUBDIR.get(self.name)
        names = (s.SNAPSHOTS_DIR, str(snapshot_id), *((sub,) if sub else ()))
        try:
            return open_dirs(self.directory, *names)
        except FileNotFoundError as exc:
            raise FailedPrecondition(f"{what}: its directory {exc.filename!r} is gone") from None
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            raise Corrupted(f"{what}: {exc.filename!r} is a symlink or not a directory; "
                            "refusing to follow it out of the containerd root") from None

    def directories(self) -> list[str]:
        """Names of the entries of ``snapshots/`` (ids, and whatever else lies there)."""
        try:
            return sorted(os.listdir(os.path.join(self.directory, s.SNAPSHOTS_DIR)))
        except FileNotFoundError:
            return []


def _select(f: Any) -> decode.Tree:
    root = f.bucket(s.SCHEMA)
    snapshots = root.bucket(s.STORAGE_SNAPSHOTS) if root is not None else None
    return decode.EMPTY if snapshots is None else snapshots


def open_backend(root: Optional[str], name: str) -> Optional[Backend]:
    """The backend `name` of the containerd root `root`, or None when there is none to read.

    None when the root is unknown or has no directory for that snapshotter; an
    empty backend when the directory exists without a metastore (containerd
    creates it on first use).
    """
    if root is None or not valid_name(name):
        return None
    directory = os.path.join(root, s.SNAPSHOTTER_PREFIX + name)
    if not os.path.isdir(directory):
        return None
    path = os.path.join(directory, s.SNAPSHOTTER_DB)
    if not os.path.exists(path):
        return Backend(name, directory, {})
    _, raw = tree.read(path, _select, f"{name} snapshotter metastore")
    snapshots = {key: decode.backend_snapshot(key, sub, name)
                 for key, sub in decode.children(raw, f"{name} backend snapshot")}
    return Backend(name, directory, snapshots)


def known_backends(root: Optional[str]) -> list[str]:
    """The snapshotters that have a directory under `root`."""
    if root is None:
        return []
    try:
        names = os.listdir(root)
    except OSError:
        return []
    return sorted(n[len(s.SNAPSHOTTER_PREFIX):] for n in names
                  if n.startswith(s.SNAPSHOTTER_PREFIX) and valid_name(n[len(s.SNAPSHOTTER_PREFIX):]))
