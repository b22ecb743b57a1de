"""What the directory snapshotters share: one directory per snapshot under
``<root>/snapshots/<id>``, their records in a metastore
(`cargohold.snapshots.metastore`: the metadata database once a `DB` binds
the backend, else ``<root>/metadata``), and the life cycle of those
directories.

A directory is built under a temporary name (``new-*``) and renamed to its id
inside the metastore's write transaction (the caller's metadata transaction,
when the backend is bound and the thread has one open); if that transaction
does not commit, the directory goes. Removal deletes it only after its
transaction committed (a crash before that keeps the record and the
directory; one after it leaves a directory no record owns, for `cleanup`).
Because creations and `cleanup` both run inside a write transaction of the
metastore's LMDB environment (whose writer lock is a flock, see
`cargohold.kv`), cleanup never sees a half-built directory of a creation in
flight, in this process or another, and may delete every directory that no
record owns.

The garbage collector removes snapshots with `purge`, which deletes the
directories first and the records after, in one transaction: deleting needs
no free space, while an LMDB write on a full disk may fail for want of a new
page. That order is safe only for snapshots nobody can use any more (see
`cargohold.snapshots.store.collect_backend`); a record whose directory is
gone is forgotten by the next purge.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Iterator, Optional

from ..errors import Error, FailedPrecondition, InvalidArgument, Unavailable
from ..kvguard import sync_dir
from ..model import Freed, Kind, Mount, SnapshotInfo, Usage
from ..timeutil import Clock, to_ns, utcnow
from ..validation import validate_labels
from . import storage
from .metastore import Metastore
from .fsutil import disk_usage, flush_filesystem, make_temp_dir, remove_tree


def bind_mount(source: str, readonly: bool) -> list[Mount]:
    """A single recursive bind mount of `source`, read-only or read-write."""
    return [Mount("bind", source, ("ro" if readonly else "rw", "rbind"))]


class DirectorySnapshotter:
    """A snapshot backend keeping each snapshot in its own directory.

    Subclasses say how a new snapshot's directory is filled (`_populate`),
    which directory holds its changes (`_changes_path`) and how it is
    mounted (`_mounts`).
    """

    def __init__(self, root: "str | os.PathLike[str]", *, clock: Optional[Clock] = None) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self._clock = clock or utcnow
        self._snapshots_dir = os.path.join(self.root, "snapshots")
        try:
            os.makedirs(self._snapshots_dir, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise Unavailable(f"cannot create snapshotter directory {self._snapshots_dir!r}: {exc}") from None
        self._store = Metastore(os.path.join(self.root, "metadata"), storage.TABLES)

    def bind_metastore(self, env, name: str, current, *, move: bool = True) -> bool:
        """Keep the records in metadata environment `env`, as snapshotter `name`, joining the
        metadata transaction ``current()`` returns (see `cargohold.snapshots.metastore`)."""
        return self._store.bind(env, name, current, move=move)

    @property
    def metastore_env(self):
        """The metadata environment the records are kept in, once bound (else None)."""
        return self._store.bound_env

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root!r})"

    # -- layout ---------------------------------------------------------------------

    def _path(self, name: str) -> str:
        return os.path.join(self._snapshots_dir, name)

    def snapshot_dir(self, snapshot_id: int) -> str:
        # os.path.join's result: `_snapshots_dir` is absolute and never ends with a separator.
        return f"{self._snapshots_dir}{os.sep}{snapshot_id}"

    _parent_depth: Optional[int] = None
    """How many of a snapshot's nearest parents its layout and mounts need (None: the whole chain);
    `storage.Snapshot.parent_ids` holds that many."""

    def _taken(self, snapshot_id: int) -> bool:
        """Whether anything (even a dangling symlink) is at the snapshot id's directory path:
        `os.path.lexists` without raising an exception when nothing is there."""
        return os.access(self.snapshot_dir(snapshot_id), os.F_OK, follow_symlinks=False)

    def _changes_path(self, snapshot_id: int) -> str:
        """The directory holding what the snapshot adds to its parents."""
        raise NotImplementedError

    def _populate(self, directory: str, snapshot: storage.Snapshot) -> None:
        """Fill the new snapshot's (temporary) directory."""
        raise NotImplementedError

    def _mounts(self, snapshot: storage.Snapshot) -> list[Mount]:
        raise NotImplementedError

    def _now(self) -> int:
        return to_ns(self._clock())

    def _flush(self, action: str, path: str) -> None:
        """Put the tree at `path` on disk before a record naming it commits. Done with
        ``durable=False`` too: that database may reopen at an earlier commit, but a record that
        did reach the disk must not name a tree that did not (blob files are flushed likewise)."""
        with _filesystem(action, path):
            flush_filesystem(path)

    def _flush_renames(self) -> None:
        """Put the new snapshots' directory entries on disk before the records naming them commit:
        once per transaction, for every snapshot it created (a crash must not leave a record of a
        directory that is not there)."""
        with _filesystem("flush the snapshot directories", self._snapshots_dir):
            sync_dir(self._snapshots_dir)

    # -- queries ----------------------------------------------------------------------

    def stat(self, key: str) -> SnapshotInfo:
        """The info of a snapshot of any kind; NotFound if it does not exist."""
        storage.check_key(key)
        with self._store.read() as txn:
            return storage.get_info(txn, key)[1]

    def usage(self, key: str) -> Usage:
        """Bytes and inodes: measured now for an active snapshot, recorded at commit otherwise."""
        storage.check_key(key)
        with self._store.read() as txn:
            snapshot_id, info, usage = storage.get_info(txn, key)
        return self._measure(key, snapshot_id) if info.kind == Kind.ACTIVE else usage

    def _measure(self, key: str, snapshot_id: int) -> Usage:
        path = self._changes_path(snapshot_id)
        with _filesystem("measure snapshot", path, key):
            return disk_usage(path)

    def mounts(self, key: str) -> list[Mount]:
        """The mounts of an active snapshot or view (FailedPrecondition for a committed one)."""
        storage.check_key(key)
        with self._store.read() as txn:
            return self._mounts(storage.get_snapshot(txn, key, self._parent_depth))

    def holds_data(self) -> bool:
        """Whether the backend holds a snapshot record or any snapshot directory (even one no record owns)."""
        with self._store.read() as txn:
            if next(iter(storage.walk(txn)), None) is not None:
                return True
        with _filesystem("list snapshot directories", self._snapshots_dir), os.scandir(self._snapshots_dir) as it:
            return next(it, None) is not None

    def layout(self, consume: Callable[[Iterator, list], Any]) -> Any:
        """``consume(rows, names)``: `rows` iterates the metastore's raw (backend key, record) pairs,
        in one read transaction during which `names`, those under ``snapshots/``, are listed.
        fsck reads the snapshots this way, to check the metadata's records against them."""
        with _filesystem("list snapshot directories", self._snapshots_dir), self._store.read() as txn:
            entries = sorted(os.listdir(self._snapshots_dir))
            return consume(txn.scan(storage.T_SNAPSHOTS), entries)

    def snapshot_id(self, key: str) -> Optional[int]:
        """The id (the directory's name) of backend snapshot `key`, None if there is none."""
        storage.check_key(key)
        with self._store.read() as txn:
            return storage.get_info(txn, key)[0] if storage.exists(txn, key) else None

    def walk(self, *filters: str) -> Iterator[SnapshotInfo]:
        """Every snapshot matching the filters (containerd's syntax), in key order."""
        with self._store.read() as txn:
            return iter(list(storage.walk(txn, *filters)))

    # -- changes ---------------------------------------------------------------------

    def prepare(self, key: str, parent: str = "", labels: Optional[dict] = None) -> list[Mount]:
        """Create an active (writable) snapshot on top of committed `parent`."""
        return self._create(Kind.ACTIVE, key, parent, labels)

    def view(self, key: str, parent: str = "", labels: Optional[dict] = None) -> list[Mount]:
        """Create a read-only view of committed `parent`."""
        return self._create(Kind.VIEW, key, parent, labels)

    def _create(self, kind: Kind, key: str, parent: str, labels: Optional[dict]) -> list[Mount]:
        storage.check_key(key)
        if parent:
            storage.check_key(parent, "parent snapshot key")
        labels = validate_labels(labels)
        with _filesystem("create snapshot", self._snapshots_dir, key), self._store.write() as txn:
            snapshot = storage.create(txn, kind, key, parent, labels, self._now(), taken=self._taken,
                                      depth=self._parent_depth)
            temp = make_temp_dir(self._snapshots_dir, "new-")
            txn.on_abort(lambda: _discard(temp))
            self._populate(temp, snapshot)
            path = self.snapshot_dir(snapshot.id)
            os.rename(temp, path)
            txn.on_abort(lambda: _discard(path))
            txn.before_commit(("snapshot-directories", self._snapshots_dir), self._flush_renames)
        return self._mounts(snapshot)

    def commit(self, name: str, key: str, labels: Optional[dict] = None) -> None:
        """Turn active snapshot `key` into committed snapshot `name` (key is gone afterwards)."""
        storage.check_key(name, "snapshot name")
        storage.check_key(key)
        labels = validate_labels(labels)
        with self._store.write() as txn:
            record = storage.require(txn, key)
            snapshot_id = record["id"]
            usage = self._measure(key, snapshot_id)
            if usage.inodes > 1:  # an empty tree has nothing to flush
                self._flush(f"commit snapshot {key!r}", self._changes_path(snapshot_id))
            storage.commit_active(txn, key, name, usage, labels, self._now(), remember=txn.joined is None,
                                  record=record)

    def uncommit(self, name: str, active: Optional[SnapshotInfo] = None) -> None:
        """Revert a commit whose caller failed: `name` becomes active snapshot `active` again.

        `active` is the `stat` of the active snapshot taken before `commit`;
        without it, the source the commit recorded (`commit_sources`) is used.
        """
        storage.check_key(name, "snapshot name")
        if active is not None and not isinstance(active, SnapshotInfo):
            raise InvalidArgument(f"active must be a SnapshotInfo, not {active!r}")
        with self._store.write() as txn:
            if active is None:
                active = storage.commit_sources(txn).get(name)
                if active is None:
                    raise FailedPrecondition(f"snapshot {name!r} has no recorded commit to revert")
            storage.check_key(active.name)
            storage.uncommit(txn, name, active)

    def commit_sources(self) -> dict[str, SnapshotInfo]:
        """For each commit not yet settled: committed key -> the active snapshot it came from."""
        with self._store.read() as txn:
            return storage.commit_sources(txn)

    def settle_commits(self, names: Iterable[str]) -> None:
        """Forget the sources of these commits (their callers have recorded them)."""
        names = [storage.check_key(name, "snapshot name") for name in names]
        if names:
            with self._store.write() as txn:
                storage.settle_commits(txn, names)

    def update(self, info: SnapshotInfo, *fieldpaths: str) -> SnapshotInfo:
        """Update labels (field paths ``labels`` or ``labels.<key>``; none means all labels)."""
        if not isinstance(info, SnapshotInfo):
            raise InvalidArgument(f"info must be a SnapshotInfo, not {info!r}")
        storage.check_key(info.name)
        with self._store.write() as txn:
            return storage.update_info(txn, info, fieldpaths, self._now())

    def remove(self, key: str) -> None:
        """Remove a snapshot and its directory; FailedPrecondition while it has children."""
        storage.check_key(key)
        with _filesystem("remove snapshot", self._snapshots_dir, key), self._store.write() as txn:
            snapshot_id = storage.remove(txn, key)
            path = self.snapshot_dir(snapshot_id)
            if os.path.lexists(path):
                # Only once the record is gone: a crash before the commit keeps both.
                txn.after_commit(lambda: _discard(path), deletes=True)

    def purge(self, keys: Iterable[str], freed: Optional[Freed] = None) -> list[str]:
        """Delete snapshots no one may use any more, directories first; return one line per failure.

        `keys` come children first. A key that is gone is skipped, and so is
        one with a child outside `keys` or whose child could not be deleted.
        Each directory's bytes are measured just before it goes (`freed`).
        Then every deleted directory's record is forgotten in one transaction.
        """
        errors: list[str] = []
        freed = freed if freed is not None else Freed()
        with self._store.read() as txn:
            plan = [(key, storage.get_info(txn, key)[0], storage.child_keys(txn, key))
                    for key in dict.fromkeys(keys) if storage.exists(txn, key)]
        deleted: list[str] = []
        done: set = set()
        for key, snapshot_id, children in plan:
            if not children <= done:
                continue  # a child stays, so its parent does too
            path = self.snapshot_dir(snapshot_id)
            try:
                size = disk_usage(path).size if os.path.lexists(path) else None
                remove_tree(path)
            except OSError as exc:
                errors.append(f"cannot remove snapshot directory {path!r}: {exc}")
                continue
            if size is not None:
                freed.add(size)
            deleted.append(key)
            done.add(key)
        if deleted:
            try:
                with self._store.write() as txn:
                    for key in deleted:
                        if storage.exists(txn, key):
                            storage.remove(txn, key)
            except (Error, OSError) as exc:
                errors.append(f"deleted {len(deleted)} snapshot directories under {self._snapshots_dir!r} but "
                              f"could not forget their records (the next cleanup does): {exc}")
        return errors

    def cleanup(self, freed: Optional[Freed] = None) -> list[str]:
        """Delete every directory under ``snapshots/`` that no snapshot record owns.

        It lists with no lock held, so creations go on meanwhile. A numbered
        directory no record owns whose id is at most the sequence seen then
        can never be owned (every later creation takes a higher id): it goes.
        The others (a higher id, which a creation in flight may be filling;
        ``new-*`` of a creation, ``rm-*`` an earlier cleanup set aside, strays) are checked
        again and set aside (renamed ``rm-*``) in one write transaction, which
        no creation is inside; the full re-read of the records it then needs
        happens only when a higher id is there (a crash's debris). Everything
        is deleted after that, with no lock held. Returns one line per
        directory that could not be deleted; `freed` counts those deleted,
        with their bytes.
        """
        with _filesystem("list snapshot directories", self._snapshots_dir):
            with self._store.read() as txn:
                owned, last = {str(snapshot_id) for snapshot_id in storage.ids(txn)}, storage.sequence(txn)
            names = [entry.name for entry in os.scandir(self._snapshots_dir) if entry.name not in owned]
        orphans = [self._path(name) for name in names if name.isdigit() and int(name) <= last]
        later = [name for name in names if not (name.isdigit() and int(name) <= last)]
        if later:
            with _filesystem("set aside snapshot directories", self._snapshots_dir), self._store.write() as txn:
                if any(name.isdigit() for name in later):
                    owned = {str(snapshot_id) for snapshot_id in storage.ids(txn)}
                for name in later:
                    if name in owned:
                        continue  # a creation that committed since the listing
                    doomed = name if name.startswith("rm-") else f"rm-{name}"
                    try:
                        if doomed != name:
                            os.rename(self._path(name), self._path(doomed))
                    except FileNotFoundError:
                        continue
                    orphans.append(self._path(doomed))
        errors = []
        for path in orphans:
            try:
                size = disk_usage(path).size
                remove_tree(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                errors.append(f"cannot remove snapshot directory {path!r}: {exc}")
                continue
            if freed is not None:
                freed.add(size)
        return errors

    def leftover_dirs(self, unowned: Iterable[str]) -> list[str]:
        """The directories of the snapshots `unowned` and every directory no record owns."""
        with _filesystem("list snapshot directories", self._snapshots_dir), self._store.read() as txn:
            paths = [self.snapshot_dir(storage.get_info(txn, key)[0]) for key in unowned if storage.exists(txn, key)]
            return paths + self._orphans(txn)

    def _orphans(self, txn) -> list[str]:
        owned = {str(snapshot_id) for snapshot_id in storage.ids(txn)}
        return [entry.path for entry in os.scandir(self._snapshots_dir) if entry.name not in owned]

    def compact(self, timeout: float = 10.0) -> Optional[tuple[str, int, int]]:
        """Compact the metastore's own LMDB file (`cargohold.kv.Env.compact`): (its path, bytes before,
        after); None for a bound metastore (its records are in the metadata file, compacted with it)."""
        if self._store.bound_env is not None:
            return None
        env, _ = self._store._env()
        return (os.path.join(self._store.path, "data.mdb"), *env.compact(timeout))

    def close(self) -> None:
        self._store.close()


class _filesystem:
    """``with _filesystem(action, where[, key]):`` reports a filesystem failure in the block as a
    cargohold error that names the action (on snapshot `key`, if given) and path. (A class, not a
    generator, and the message is built only on failure: it wraps every creation.)"""

    __slots__ = ("action", "where", "key")

    def __init__(self, action: str, where: str, key: Optional[str] = None) -> None:
        self.action = action
        self.where = where
        self.key = key

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and issubclass(exc_type, OSError):
            action = self.action if self.key is None else f"{self.action} {self.key!r}"
            raise Unavailable(f"cannot {action} in {self.where!r}: {exc}") from exc


def _discard(path: str) -> None:
    """Delete a tree no record owns any more; what fails stays for the next `cleanup`."""
    try:
        remove_tree(path)
    except OSError:
        pass
