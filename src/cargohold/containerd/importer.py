"""`import_root`: a new cargohold root holding the state of a containerd root.

Everything is read from one `Host` snapshot and written through cargohold's
public API into a directory beside the destination, flushed to disk (one
syncfs) and renamed into place at the end: a failed import leaves nothing
behind, a power cut never leaves a destination naming blobs that are not on
disk, and the source is only read.

* Blobs: each digest once, hard-linked into cargohold's content store when both
  are on one filesystem (else, or with ``copy=True``, copied), its digest and
  size verified first; every namespace's record then commits it without its
  bytes, with its labels.
* Snapshots: parents first, each active or committed snapshot's tree copied
  into the new snapshot with owners, modes, times, xattrs and hard links
  (`snapshots.fsutil.copy_tree`; trees are never linked: an active one is
  written by its container, and a link would write both roots); a view is
  created as a view. Snapshotters keep their names (cargohold's are
  containerd's: ``native``, ``overlayfs``), so labels are copied as they are.
* Images, containers, sandboxes, leases (with their resources) and ingests in
  progress (their bytes so far, their expiry or lease) follow. Timestamps are
  kept: the destination's clock is set to each record's time as it is written.

The report says what was brought over and where containerd's release line
would collect differently from cargohold's rules (containerd 2.x's).
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Optional

import cargohold

from ..content.store import INGEST_EXPIRY_NS
from ..errors import AlreadyExists, Corrupted, FailedPrecondition, InvalidArgument, Unavailable, Unsupported
from ..kvguard import sync_dir
from ..model import Info, Kind, Node
from ..snapshots.fsutil import copy_tree, flush_filesystem, open_dir, remove_tree
from ..timeutil import utcnow
from . import plan
from .contentstore import ContentDir
from .root import Host, open_root
from .snapshotters import Backend

_CHUNK = 1 << 20
@dataclass
class ImportReport:
    """What `import_root` brought over."""

    source: str
    dest: str
    db_version: int
    rules: str
    namespaces: list = field(default_factory=list)
    images: int = 0
    containers: int = 0
    sandboxes: int = 0
    leases: int = 0
    content: int = 0
    """Content records (one per namespace holding a blob)."""
    blobs: int = 0
    blob_bytes: int = 0
    linked: int = 0
    copied: int = 0
    ingests: int = 0
    snapshots: dict = field(default_factory=dict)
    """snapshotter name → snapshots imported."""
    warnings: list = field(default_factory=list)


class _Clock:
    """The destination's clock: what each record's time should be while it is written."""

    def __init__(self) -> None:
        self.at: Optional[datetime] = None

    def __call__(self) -> datetime:
        return self.at or utcnow()

    def set(self, when: Optional[datetime]) -> None:
        self.at = when


def import_root(path: "str | os.PathLike[str]", dest_root: "str | os.PathLike[str]", *,
                copy: bool = False) -> ImportReport:
    """Import the containerd root (or meta.db) at `path` into a new cargohold root `dest_root`.

    `dest_root` must not exist, or be an empty directory. FailedPrecondition when
    a record's blob or snapshot directory is missing (`fsck` finds them),
    Corrupted when a blob does not match its digest, Unsupported for a
    snapshotter cargohold has no backend for, Unavailable when the filesystem
    fails (a running containerd may delete what it collects while we copy).
    """
    try:
        dest = os.path.abspath(os.fspath(dest_root))
    except TypeError:
        raise InvalidArgument(f"destination must be a path, not {dest_root!r}") from None
    if not isinstance(copy, bool):
        raise InvalidArgument(f"copy must be True or False, not {copy!r}")
    if os.path.lexists(dest) and not (os.path.isdir(dest) and not os.listdir(dest)):
        raise AlreadyExists(f"destination {dest!r} exists and is not an empty directory")
    with open_root(path) as host:
        if host.root is None or host.content_dir is None:
            raise FailedPrecondition(f"{path!r} is a bare meta.db: importing needs the containerd root "
                                     "around it (its content store and snapshotters)")
        work = os.path.join(os.path.dirname(dest), f".{os.path.basename(dest)}.import-{secrets.token_hex(4)}")
        try:
            report = _Importer(host, work, dest, copy).run()
            # The records committed name blobs linked in without a flush of their directory: the
            # new root may become the destination only once all of it is on disk, and stays it.
            flush_filesystem(work)
            if os.path.isdir(dest):
                os.rmdir(dest)
            os.rename(work, dest)
            sync_dir(os.path.dirname(dest))
        except BaseException as exc:
            shutil.rmtree(work, ignore_errors=True)
            if isinstance(exc, OSError):   # e.g. the running daemon deleted a blob while we copied it
                raise Unavailable(f"import of {path!r} into {dest!r} failed: {exc}") from None
            raise
    return report


class _Importer:
    def __init__(self, host: Host, work: str, dest: str, copy: bool) -> None:
        self.host, self.work, self.copy = host, work, copy
        self.clock = _Clock()
        self.report = ImportReport(host.root or host.meta_path, dest, host.db_version, host.rules)
        self.backends: list[str] = []

    # -- checks, before anything is written ---------------------------------------------------

    def _plan_snapshots(self, ns: str) -> list[tuple[str, list]]:
        """(snapshotter, [(record, backend snapshot)] parents first) of a namespace; checked."""
        out = []
        for snapshotter in self.host.snapshotters(ns):
            backend = self.host.backend(snapshotter)
            if snapshotter not in self.backends:
                raise Unsupported(f"snapshotter {snapshotter!r} of namespace {ns!r} has no cargohold backend "
                                  f"(cargohold has {', '.join(self.backends)})")
            records = {r.key: r for r in self.host.snapshot_records(ns, snapshotter)}
            items = []
            for record in records.values():
                found = backend.get(record.backend_key) if backend else None
                if found is None:
                    raise FailedPrecondition(f"snapshot {snapshotter}/{record.key} of namespace {ns!r} has no "
                                             "backend snapshot (see `cargohold containerd fsck`)")
                if found.kind != Kind.VIEW and not os.path.isdir(backend.tree_dir(found.id)):
                    raise FailedPrecondition(f"snapshot {snapshotter}/{record.key} of namespace {ns!r}: its "
                                             f"directory {backend.tree_dir(found.id)!r} is gone")
                if record.parent and record.parent not in records:
                    raise FailedPrecondition(f"snapshot {snapshotter}/{record.key} of namespace {ns!r}: its "
                                             f"parent {record.parent!r} has no record")
                items.append((record, found))
            out.append((snapshotter, _parents_first(items)))
        return out

    def _check_blobs(self) -> dict[str, int]:
        """digest → size of every blob some namespace records, each file present with that size."""
        content: ContentDir = self.host.content_dir
        sizes: dict[str, int] = {}
        for ns in self.host.namespaces():
            for info in self.host.content(ns):
                actual = content.blob_size(info.digest)
                if actual is None:
                    raise FailedPrecondition(f"content {info.digest} of namespace {ns!r} has no blob "
                                             f"(see `cargohold containerd fsck`)")
                if actual != info.size:
                    raise Corrupted(f"blob {info.digest} has {actual} bytes, its record in namespace {ns!r} "
                                    f"says {info.size}")
                sizes[info.digest] = actual
        return sizes

    # -- the import -------------------------------------------------------------------------

    def run(self) -> ImportReport:
        with cargohold.open(self.work, clock=self.clock) as db:
            self.backends = sorted(db.snapshotters)
            snapshot_plans = {ns: self._plan_snapshots(ns) for ns in self.host.namespaces()}
            blobs = self._check_blobs()
            for digest in sorted(blobs):
                self._place_blob(db.content_store, digest, blobs[digest])
            for ns in self.host.namespaces():
                self._namespace(db, ns, snapshot_plans[ns])
        self._warn_rules()
        return self.report

    def _place_blob(self, store, digest: str, size: int) -> None:
        source = self.host.content_dir.blob_path(digest)
        target = store.blob_path(digest)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        temp = f"{target}.import-{secrets.token_hex(4)}"
        linked = False
        if not self.copy:
            _verify(source, digest)
            try:
                os.link(source, temp)
                linked = True
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
        if not linked:
            _copy_verified(source, temp, digest)
        os.rename(temp, target)
        self.report.blobs += 1
        self.report.blob_bytes += size
        if linked:
            self.report.linked += 1
        else:
            self.report.copied += 1

    def _namespace(self, db, ns: str, snapshot_plan: list) -> None:
        host, clock = self.host, self.clock
        db.namespaces.create(ns, host.namespace_labels(ns))
        self.report.namespaces.append(ns)
        handle = db.namespace(ns)
        resources = {lease.id: host.lease_resources(ns, lease.id) for lease in host.leases(ns)}
        for lease in host.leases(ns):
            clock.set(lease.created_at)
            handle.leases.create(id=lease.id, labels=lease.labels)
            self.report.leases += 1
        for info in host.content(ns):
            self._content(handle, info)
        self._ingests(handle, ns, resources)
        for snapshotter, items in snapshot_plan:
            self._snapshots(handle, snapshotter, items)
        for image in host.images(ns):
            clock.set(image.created_at)
            created = handle.images.create(image)
            _touch(handle.images, created, image.updated_at, clock)
            self.report.images += 1
        for container in host.containers(ns):
            clock.set(container.created_at)
            created = handle.containers.create(container)
            _touch(handle.containers, created, container.updated_at, clock)
            self.report.containers += 1
        for sandbox in host.sandboxes(ns):
            clock.set(sandbox.created_at)
            created = handle.sandboxes.create(sandbox)
            _touch(handle.sandboxes, created, sandbox.updated_at, clock)
            self.report.sandboxes += 1
            if host.db_version < 4 and sandbox.labels:
                self.report.warnings.append(
                    f"sandbox {ns}/{sandbox.id}: containerd 1.7 kept it outside v1, where its collector never "
                    "read its labels; cargohold roots what they reference")
        for lease_id, items in resources.items():
            for resource in items:
                handle.leases.add_resource(lease_id, resource)
        clock.set(None)

    def _content(self, handle, info: Info) -> None:
        self.clock.set(info.created_at)
        with handle.content.writer(f"import-{info.digest}", total=info.size, expected=info.digest) as w:
            w.commit(info.size, info.digest, labels=info.labels)
        if info.updated_at and info.updated_at != info.created_at:
            self.clock.set(info.updated_at)
            handle.content.update(Info(info.digest, labels=info.labels), "labels")
        self.report.content += 1

    def _ingests(self, handle, ns: str, resources: dict) -> None:
        content: ContentDir = self.host.content_dir
        holders = {r.id: lease_id for lease_id, items in resources.items() for r in items if r.type == "ingests"}
        temporary = None
        for record in self.host.ingest_records(ns):
            found = content.ingest(record.backend_ref)
            if found is None:
                self.report.warnings.append(f"ingest {ns}/{record.ref}: its directory is gone; not imported")
                continue
            if record.expire_at is not None:
                self.clock.set(record.expire_at.datetime() - timedelta(microseconds=INGEST_EXPIRY_NS // 1000))
                writer_ns = handle
            elif record.ref in holders:
                self.clock.set(found.started_at.datetime())
                writer_ns = handle.with_lease(holders[record.ref])
            else:  # no expiry and no lease: only a lease makes cargohold open it without one
                if temporary is None:
                    temporary = handle.leases.create(id=f"import-{secrets.token_hex(6)}").id
                self.clock.set(found.started_at.datetime())
                writer_ns = handle.with_lease(temporary)
            with writer_ns.content.writer(record.ref, total=found.total, expected=record.expected or None) as w:
                offset = w.status().offset
                if offset < found.offset:
                    _append(os.path.join(found.path, "data"), offset, w)
            self.report.ingests += 1
        if temporary is not None:
            handle.leases.delete(temporary)

    def _snapshots(self, handle, snapshotter: str, items: list) -> None:
        sn = handle.snapshotter(snapshotter)
        backend: Backend = self.host.backend(snapshotter)
        for record, found in items:
            self.clock.set(record.created_at)
            labels = {**found.labels, **record.labels}
            source = backend.tree_dir(found.id)
            if found.kind == Kind.VIEW:
                sn.view(record.key, record.parent, labels=labels)
            elif found.kind == Kind.ACTIVE:
                _fill(_writable_dir(sn.prepare(record.key, record.parent, labels=labels)), source)
            else:
                temp = f"import-{secrets.token_hex(8)}"
                _fill(_writable_dir(sn.prepare(temp, record.parent)), source)
                sn.commit(record.key, temp, labels=labels)
            self.report.snapshots[snapshotter] = self.report.snapshots.get(snapshotter, 0) + 1

    def _warn_rules(self) -> None:
        """Name the nodes containerd's rules and cargohold's would judge differently today."""
        if self.host.rules == "2.x":
            return
        now = self.host.now()
        theirs = set(self.host.unreachable())
        ours = set(plan.unreachable(plan.mark(self.host.graph("2.x"), now)))
        for node in sorted(theirs ^ ours):
            verdict = "collects" if node in ours else "keeps"
            self.report.warnings.append(f"{_node_text(node)}: cargohold's rules (containerd 2.x) {verdict} it, "
                                        f"containerd {self.host.rules} does not")


def _node_text(node: Node) -> str:
    try:
        kind = node.type.name.lower()
    except AttributeError:
        kind = f"type{int(node.type)}"
    return f"{kind} {node.namespace}/{node.key}"


def _touch(store, created, updated_at: Optional[datetime], clock: _Clock) -> None:
    """Give a just-created record its source's update time (an update without changes, at that time)."""
    if updated_at and created.updated_at != updated_at:
        clock.set(updated_at)
        store.update(created, "labels")



def _parents_first(items: list) -> list:
    by_key = {record.key: (record, found) for record, found in items}
    ordered, done = [], set()
    for key in sorted(by_key):
        chain = []
        while key and key not in done and key in by_key:
            chain.append(key)
            key = by_key[key][0].parent
        for k in reversed(chain):
            if k not in done:
                done.add(k)
                ordered.append(by_key[k])
    return ordered


def _writable_dir(mounts: list) -> str:
    """The directory an active snapshot's changes go to: the overlay upper directory, else the bind source."""
    for mount in mounts:
        for option in mount.options:
            if option.startswith("upperdir="):
                return option[len("upperdir="):]
    return mounts[0].source


def _fill(target: str, source: str) -> None:
    """Make directory `target` an exact copy of the tree at `source`."""
    fd = open_dir(target)
    try:
        for name in os.listdir(fd):
            remove_tree(name, dir_fd=fd)
    finally:
        os.close(fd)
    copy_tree(source, target)


def _verify(path: str, digest: str) -> None:
    algorithm, _, expected = digest.partition(":")
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            hasher.update(chunk)
    if hasher.hexdigest() != expected:
        raise Corrupted(f"blob {digest} does not match its digest (its bytes hash to "
                        f"{algorithm}:{hasher.hexdigest()})")


def _copy_verified(source: str, target: str, digest: str) -> None:
    algorithm, _, expected = digest.partition(":")
    hasher = hashlib.new(algorithm)
    with open(source, "rb") as fin, open(target, "xb") as fout:
        while chunk := fin.read(_CHUNK):
            hasher.update(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    os.chmod(target, 0o444)
    if hasher.hexdigest() != expected:
        os.unlink(target)
        raise Corrupted(f"blob {digest} does not match its digest (its bytes hash to "
                        f"{algorithm}:{hasher.hexdigest()})")


def _append(path: str, offset: int, writer) -> None:
    with open(path, "rb") as f:
        f.seek(offset)
        while chunk := f.read(_CHUNK):
            writer.write(chunk)
