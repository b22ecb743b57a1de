"""Helpers for the garbage-collector tests: a settable clock and builders that go
through the public API only (real blobs, real snapshot directories)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import cargohold
from cargohold import Container, Descriptor, Image, Node, Resource, ResourceType as RT, RuntimeInfo

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime = datetime(2030, 6, 1, tzinfo=timezone.utc)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)

    def rfc3339(self, **delta) -> str:
        return (self.now + timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob(ns, data: bytes, labels=None) -> str:
    """Commit `data` as content in namespace handle `ns`; return its digest."""
    d = digest_of(data)
    with ns.content.writer(f"ingest-{d}", total=len(data), expected=d) as w:
        w.write(data[w.status().offset:])  # shared content already stored needs no bytes
        w.commit(len(data), d, labels=labels)
    return d


def image(ns, name: str, target: str, size: int = 1, labels=None) -> Image:
    return ns.images.create(Image(name, Descriptor(MANIFEST, target, size), labels=labels))


def container(ns, cid: str, snapshot_key: str = "", snapshotter: str = "native", labels=None) -> Container:
    return ns.containers.create(Container(
        cid, runtime=RuntimeInfo("io.containerd.runc.v2"),
        snapshotter=snapshotter if snapshot_key else "", snapshot_key=snapshot_key, labels=labels))


def chain(ns, names: list[str], snapshotter: str = "native", labels=None) -> list[str]:
    """Committed snapshots names[0] <- names[1] <- ...; return the names."""
    sn = ns.snapshotter(snapshotter)
    parent = ""
    for name in names:
        sn.prepare(f"{name}-active", parent)
        sn.commit(name, f"{name}-active", labels=labels)
        parent = name
    return names


def content_node(ns: str, d: str) -> Node:
    return Node(RT.CONTENT, ns, d)


def snap_node(ns: str, key: str, snapshotter: str = "native") -> Node:
    return Node(RT.SNAPSHOT, ns, f"{snapshotter}/{key}")


__all__ = ["Clock", "blob", "image", "container", "chain", "content_node", "snap_node", "digest_of",
           "Resource", "cargohold"]
