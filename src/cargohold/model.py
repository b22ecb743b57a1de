"""Public value types: graph nodes, resource types and the frozen data classes
of every stored object. Timestamps are timezone-aware UTC datetimes.

The data classes are `dataclasses.dataclass` classes built on first use
(`cargohold.deferred`), so that importing this module costs start-up almost nothing."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Mapping, NamedTuple, Optional

from .deferred import deferred_dataclass, field


class ResourceType(enum.IntEnum):
    """Kinds of node the garbage collector knows (containerd's gc.ResourceType)."""

    UNKNOWN = 0
    CONTENT = 1
    SNAPSHOT = 2
    CONTAINER = 3
    TASK = 4
    IMAGE = 5
    LEASE = 6
    INGEST = 7


RESOURCE_END = 8
"""First value available to collectible resource types."""

RESOURCE_MAX = 0x1F
"""Collectible resource types lie in [RESOURCE_END, RESOURCE_MAX)."""


SNAPSHOTTER_ALIASES = {"overlay": "overlayfs"}
"""Other names of snapshotters: cargohold called its overlay backend ``overlay``
before taking containerd's name, ``overlayfs``; the old name keeps working."""


def snapshotter_name(name: str) -> str:
    """The canonical (containerd's) name of a snapshotter: ``overlay`` is ``overlayfs``."""
    return SNAPSHOTTER_ALIASES.get(name, name)


class Node(NamedTuple):
    """One resource as the garbage collector sees it.

    Snapshot keys are ``"<snapshotter>/<key>"``, content keys are digests.
    """

    type: int
    namespace: str
    key: str


def _labels(value: Optional[Mapping[str, str]]) -> dict:
    return dict(value) if value else {}


class _Frozen:
    """Mixin: copy the mutable label/annotation mappings given to a frozen dataclass."""

    _mappings: tuple = ()

    def __post_init__(self) -> None:
        for name in self._mappings:
            object.__setattr__(self, name, _labels(getattr(self, name)))


def evolve(obj: Any, **changes: Any) -> Any:
    """`dataclasses.replace` for the stores' hot paths: a copy of frozen data class `obj` with
    `changes`, skipping `__init__` and `__post_init__`. Only for values the caller already
    validated, mappings it already copied (the copy shares them with `obj`)."""
    new = object.__new__(type(obj))
    state = new.__dict__
    state.update(obj.__dict__)
    state.update(changes)
    return new


@deferred_dataclass(frozen=True)
class Descriptor(_Frozen):
    """An OCI content descriptor: what an image's target points at."""

    media_type: str
    digest: str
    size: int
    annotations: Optional[dict] = None
    _mappings = ("annotations",)


@deferred_dataclass(frozen=True)
class Image(_Frozen):
    """A named image: what its name points at, its labels and (as stored) its times."""

    name: str
    target: Descriptor
    labels: Optional[dict] = None
    created_at: Optional[datetime] = None
    updated_at: Optional[datetime] = None
    _mappings = ("labels",)


@deferred_dataclass(frozen=True)
class RuntimeInfo:
    """The runtime a container or sandbox runs on: its name and its options (opaque to cargohold)."""

    name: str
    options: Any = None


@deferred_dataclass(frozen=True)
class Container(_Frozen):
    """A container record: runtime, OCI spec bytes, the snapshot it runs on, its image, labels and extensions."""

    id: str
    runtime: RuntimeInfo = field(default_factory=lambda: RuntimeInfo(""))
    spec: bytes = b""
    snapshotter: str = ""
    snapshot_key: str = ""
    image: str = ""
    labels: Optional[dict] = None
    extensions: Optional[dict] = None
    sandbox_id: str = ""
    created_at: Optional[datetime] = None
    updated_at: Optional[datetime] = None
    _mappings = ("labels", "extensions")


@deferred_dataclass(frozen=True)
class Sandbox(_Frozen):
    """A sandbox record (a pod, for a CRI runtime): runtime, spec bytes, sandboxer, labels and extensions."""

    id: str
    runtime: RuntimeInfo = field(default_factory=lambda: RuntimeInfo(""))
    spec: bytes = b""
    sandboxer: str = ""
    labels: Optional[dict] = None
    extensions: Optional[dict] = None
    created_at: Optional[datetime] = None
    updated_at: Optional[datetime] = None
    _mappings = ("labels", "extensions")


@deferred_dataclass(frozen=True)
class Lease(_Frozen):
    """A lease: while it lives, the resources it holds are kept by the garbage collector."""

    id: str
    created_at: Optional[datetime] = None
    labels: Optional[dict] = None
    _mappings = ("labels",)


@deferred_dataclass(frozen=True)
class Resource:
    """A resource held by a lease; type is "content", "ingests", "images" or "snapshots/<snapshotter>"."""

    id: str
    type: str


@deferred_dataclass(frozen=True)
class Info(_Frozen):
    """A committed blob as one namespace sees it."""

    digest: str
    size: int = 0
    labels: Optional[dict] = None
    created_at: Optional[datetime] = None
    updated_at: Optional[datetime] = None
    _mappings = ("labels",)


@deferred_dataclass(frozen=True)
class Status:
    """Progress of an ingest (an open or resumable content writer)."""

    ref: str
    offset: int = 0
    total: int = 0
    expected: str = ""
    started_at: Optional[datetime] = None
    updated_at: Optional[datetime] = None


class Kind(enum.IntEnum):
    """Snapshot kinds, numbered as containerd numbers them."""

    UNKNOWN = 0
    VIEW = 1
    ACTIVE = 2
    COMMITTED = 3

    def __str__(self) -> str:
        return self.name.capitalize()


@deferred_dataclass(frozen=True)
class SnapshotInfo(_Frozen):
    """A snapshot as its snapshotter records it: key, parent key, kind, labels and times."""

    name: str
    parent: str = ""
    kind: Kind = Kind.UNKNOWN
    labels: Optional[dict] = None
    created_at: Optional[datetime] = None
    updated_at: Optional[datetime] = None
    _mappings = ("labels",)


@deferred_dataclass(frozen=True)
class Usage:
    """The disk use of one snapshot: bytes and inodes."""

    size: int = 0
    inodes: int = 0


@deferred_dataclass(frozen=True)
class Mount:
    """One mount that makes a snapshot usable: ``mount -t TYPE SOURCE TARGET -o OPTIONS``."""

    type: str
    source: str
    options: tuple = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", tuple(self.options))


@deferred_dataclass()
class Freed:
    """What a backend cleanup removed of one kind: how many, and their bytes (measured before deleting)."""

    count: int = 0
    bytes: int = 0

    def add(self, size: int) -> None:
        self.count += 1
        self.bytes += size


class Leftover(NamedTuple):
    """Backend data no metadata record owns: what the next collection's cleanup deletes.

    ``type`` is ``"blob"`` (key: the digest), ``"ingest-dir"`` (key: the backend
    ingest ref, or the directory name when it has no ``meta``) or
    ``"snapshot-dir"`` (key: ``<snapshotter>/<directory name>``); ``size`` in bytes.
    """

    type: str
    key: str
    size: int


@deferred_dataclass()
class GCStats:
    """What one garbage collection did: its phases' durations and what each store freed.

    ``meta_d`` (also ``writers_blocked_s``) is the pause: the time writers were
    held off (waiting for the transactions in flight, marking what they
    changed, the sweep and the commit). ``mark_d`` is the marking done while
    writers ran (the snapshot's, and the rounds of what writers changed; in a
    stop-the-world collection, the whole mark, inside the pause), ``sweep_d``
    the removal of the unreachable records (inside the pause), ``total_d``
    the whole call, backend cleanups included. ``content_d`` and
    ``snapshot_d`` time the backend cleanups that follow the commit. ``removed`` lists the nodes whose records the sweep
    deleted, ``records`` counts them by type name. ``blobs``, ``ingests`` and
    ``snapshot_dirs`` (per snapshotter) count what the cleanups deleted from
    the backends, with the bytes measured just before. ``errors`` holds one
    line per backend removal that failed (the collection went on with the rest,
    and the metadata collection had committed) and per backend cleanup refused
    because this database does not own the backend (`cargohold.ownership`).
    """

    meta_d: float = 0.0
    mark_d: float = 0.0
    sweep_d: float = 0.0
    total_d: float = 0.0
    content_d: float = 0.0
    snapshot_d: dict = field(default_factory=dict)
    removed: list = field(default_factory=list)
    records: dict = field(default_factory=dict)
    blobs: Freed = field(default_factory=Freed)
    ingests: Freed = field(default_factory=Freed)
    snapshot_dirs: dict = field(default_factory=dict)
    errors: list = field(default_factory=list)

    def elapsed(self) -> float:
        """The time the collection blocked writers (containerd's `Elapsed`)."""
        return self.meta_d

    @property
    def writers_blocked_s(self) -> float:
        return self.meta_d

    @property
    def freed_bytes(self) -> int:
        """Bytes the backend cleanups freed: blobs, ingests and snapshot directories."""
        return self.blobs.bytes + self.ingests.bytes + sum(f.bytes for f in self.snapshot_dirs.values())


__all__ = [
    "SNAPSHOTTER_ALIASES",
    "snapshotter_name",
    "ResourceType",
    "RESOURCE_END",
    "RESOURCE_MAX",
    "Node",
    "Descriptor",
    "Image",
    "RuntimeInfo",
    "Container",
    "Sandbox",
    "Lease",
    "Resource",
    "Info",
    "Status",
    "Kind",
    "SnapshotInfo",
    "Usage",
    "Mount",
    "Freed",
    "Leftover",
    "GCStats",
]
