"""Hosts of a fleet in tests: each with its own meta directory and snapshot root, all on one
content directory and one etcd prefix, and what their snapshots look like."""

from __future__ import annotations

import os

from cargohold.content import LocalStore
from cargohold.db import DB
from cargohold.model import Container, RuntimeInfo
from cargohold.snapshots import NativeSnapshotter

NS = "default"


def open_host(root, content, url=None, *, native: bool = True) -> DB:
    """A host: its own meta directory (and, with `native`, snapshot root), the fleet's content
    directory and metadata."""
    snapshotters = {"native": NativeSnapshotter(os.path.join(root, "snapshots", "native"))} if native else {}
    db = DB(os.path.join(root, "meta"), content_store=LocalStore(content), snapshotters=snapshotters,
            metadata=url)
    try:
        db.init()
    except BaseException:
        db.close()
        raise
    return db


def build(db: DB, name: str) -> None:
    """The same keys on every host: a committed base, an active snapshot on it that a container
    uses, a snapshot nothing references and one the host removed."""
    ns = db.namespace(NS)
    sn = ns.snapshotter("native")
    lease = ns.leases.create(f"lease-{name}")
    leased = ns.with_lease(lease.id)
    mounts = leased.snapshotter("native").prepare("base-active")
    with open(os.path.join(mounts[0].source, "host"), "w") as f:
        f.write(name)
    leased.snapshotter("native").commit("base", "base-active")
    sn.prepare("work", "base")
    ns.containers.create(Container(f"ctr-{name}", RuntimeInfo("io.containerd.runc.v2"), snapshotter="native",
                                   snapshot_key="work"))
    sn.prepare("orphan", "base")
    sn.prepare("scratch")
    sn.remove("scratch")


def backend_state(db: DB) -> tuple[dict, list]:
    """(backend key -> (id, kind), directory names) of the host's snapshot backend."""
    backend = db.snapshotter_backend("native")
    records = {info.name: (backend.snapshot_id(info.name), info.kind) for info in backend.walk()}
    return records, sorted(os.listdir(os.path.join(backend.root, "snapshots")))
