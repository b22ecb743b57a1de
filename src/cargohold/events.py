"""Events published through the DB's publisher: ``publisher(namespace, topic, event)``.

Topics and payloads follow containerd's event types. Events are published
only after the transaction that caused them commits (`Transaction.publish`).
"""

from __future__ import annotations

from dataclasses import dataclass

TOPIC_SNAPSHOT_PREPARE = "/snapshot/prepare"
TOPIC_SNAPSHOT_COMMIT = "/snapshot/commit"
TOPIC_SNAPSHOT_REMOVE = "/snapshot/remove"
TOPIC_IMAGE_DELETE = "/images/delete"


@dataclass(frozen=True)
class SnapshotPrepare:
    key: str
    parent: str
    snapshotter: str


@dataclass(frozen=True)
class SnapshotCommit:
    key: str
    name: str
    snapshotter: str


@dataclass(frozen=True)
class SnapshotRemove:
    key: str
    snapshotter: str


@dataclass(frozen=True)
class ImageDelete:
    name: str


TOPIC_CONTENT_CREATE = "/content/create"
TOPIC_CONTENT_DELETE = "/content/delete"


@dataclass(frozen=True)
class ContentCreate:
    digest: str
    size: int


@dataclass(frozen=True)
class ContentDelete:
    digest: str
