"""containerd's BenchmarkGarbageCollect workload, built through the public API.

Each *set* is one 256-byte blob, one image on it, a chain of 7 committed
snapshots and one container on the last snapshot: 10 nodes, none garbage.
Sets are written in batches, each batch one transaction (containerd builds its
whole workload in one bolt transaction).
"""

from __future__ import annotations

import hashlib
import random

import cargohold
from cargohold import Container, Descriptor, Image, RuntimeInfo

NAMESPACE = "test"
SNAPSHOTS_PER_SET = 7
NODES_PER_SET = 1 + 1 + SNAPSHOTS_PER_SET + 1


def bytes_for(i: int) -> bytes:
    return random.Random(i).randbytes(256)


def add_sets(db: cargohold.DB, start: int, stop: int, batch: int = 200) -> None:
    ns = db.namespace(NAMESPACE)
    sn = ns.snapshotter("native")
    for first in range(start, stop, batch):
        with db.update():
            for i in range(first, min(first + batch, stop)):
                data = bytes_for(i)
                d = "sha256:" + hashlib.sha256(data).hexdigest()
                with ns.content.writer(f"ref-{i}", total=len(data), expected=d) as w:
                    w.write(data)
                    w.commit(len(data), d)
                ns.images.create(Image(f"image-{i}", Descriptor("irrelevant", d, len(data))))
                parent = ""
                for j in range(SNAPSHOTS_PER_SET):
                    key = f"snapshot-{i}-{j}"
                    sn.prepare(f"{key}-active", parent)
                    sn.commit(key, f"{key}-active")
                    parent = key
                ns.containers.create(Container(f"container-{i}", runtime=RuntimeInfo("testruntime"),
                                               snapshotter="native", snapshot_key=parent))


def clone_namespace(db: cargohold.DB, source: str, target: str) -> None:
    """Copy every metadata record of namespace `source` to `target` (same name length).

    Used only to scale the workload past what building snapshot directories
    through the API allows in a benchmark run: the copy is exactly the records
    the API would have written in `target`, except that its snapshot records
    share `source`'s backend snapshots (harmless: nothing is garbage, so no
    backend is cleaned).
    """
    from cargohold import schema

    if len(source) != len(target):
        raise ValueError("clone needs namespace names of equal length")
    old, new = source.encode() + b"\x00", target.encode() + b"\x00"
    with db._env.write() as txn:
        for table in (schema.T_OBJECTS, schema.T_LEASERES):
            for key, value in list(txn.scan(table, old)):
                txn.put(table, new + key[len(old):], value)
        for key, value in list(txn.scan(schema.T_GC)):
            if key[1:1 + len(old)] == old:
                txn.put(schema.T_GC, key[:1] + new + key[1 + len(old):], value.replace(old, new))
        txn.put(schema.T_NAMESPACES, target.encode(), txn.get(schema.T_NAMESPACES, source.encode()))
