"""A real root holding every kind of object, damaged as it happens in life, and what fsck says of it."""

from __future__ import annotations

import hashlib
import os
import shutil

from cliutil import image_archive, invoke, parsed

import cargohold
from cargohold import Container, Resource, RuntimeInfo, schema
from cargohold.model import ResourceType

GARBAGE = b"content nothing references"
GARBAGE_DIGEST = "sha256:" + hashlib.sha256(GARBAGE).hexdigest()


def build(tmp_path, name: str = "root"):
    """A root with an unpacked image, a container on it, a lease holding a blob, an open ingest,
    a blob no root reaches and a chain of snapshots no root reaches; returns its path."""
    archive, _ = image_archive(tmp_path)
    root = tmp_path / name
    invoke(root, "images", "import", "--unpack", archive)
    with cargohold.open(root) as db:
        ns = db.namespace("default")
        image = ns.images.list()[0]
        infos = list(ns.snapshotter("native").walk())
        top = next(i.name for i in infos if i.name not in {i.parent for i in infos})
        sn = ns.snapshotter("native")
        sn.prepare("work", top)
        ns.containers.create(Container("web", runtime=RuntimeInfo("io.containerd.runc.v2"), snapshotter="native",
                                       snapshot_key="work", image=image.name))
        lease = ns.leases.create("keep")
        ns.leases.add_resource(lease.id, Resource(image.target.digest, "content"))
        with ns.content.writer("open-ingest", total=100) as w:
            w.write(b"x" * 10)
        with ns.content.writer("garbage") as w:
            w.write(GARBAGE)
            w.commit(len(GARBAGE), GARBAGE_DIGEST)
        sn.prepare("loose-a")
        with open(os.path.join(sn.mounts("loose-a")[0].source, "f"), "w") as fh:
            fh.write("loose")
        sn.commit("loose", "loose-a")
        sn.prepare("loose-child", "loose")
    return root


def top_snapshot(db) -> str:
    """The committed snapshot the image's layers end in (the container's snapshot builds on it)."""
    return db.namespace("default").snapshotter("native").stat("work").parent


def fsck(root, **kwargs) -> cargohold.integrity.Report:
    with cargohold.open(root) as db:
        return cargohold.fsck(db, **kwargs)


def problems(report) -> set:
    """(kind, namespace, store, key) of every problem."""
    return {(x.kind, x.namespace, x.store, x.key) for x in report.problems}


def repairs(report) -> dict:
    """kind → repair of every problem."""
    return {(x.kind, x.key): x.repair for x in report.problems}


def raw_write(root, fn) -> None:
    """Change the metadata database's tables directly, as a bug or a hand edit would: fn(txn)."""
    with cargohold.open(root) as db:
        with db._env.write() as txn:
            fn(txn)


def snapshot_record(root, key: str, ns: str = "default", snapshotter: str = "native") -> dict:
    with cargohold.open(root) as db:
        with db.view() as tx:
            return schema.unpack(tx.kv.get(schema.T_OBJECTS, schema.object_key(ns, schema.K_SNAPSHOT, snapshotter, key)))


def snapshot_dir(root, key: str, snapshotter: str = "native") -> str:
    """The directory of the backend snapshot a record of namespace default names."""
    backend_key = snapshot_record(root, key, snapshotter=snapshotter)["b"]
    with cargohold.open(root) as db:
        backend = db.snapshotters[snapshotter]
        return backend.snapshot_dir(backend.snapshot_id(backend_key))


def state(root) -> dict:
    """What the root holds, through the CLI's listings: compared before and after repairs and collections."""
    out = {kind: parsed(invoke(root, kind, "ls", "--json")) for kind in ("containers", "leases")}
    out["images"] = sorted((i.name, i.target.digest) for i in images(root))
    out["content"] = sorted(i["digest"] for i in parsed(invoke(root, "content", "ls", "--json")))
    out["snapshots"] = sorted((i["name"], i["kind"]) for i in
                              parsed(invoke(root, "snapshots", "--snapshotter", "native", "ls", "--json")))
    return out


def images(root) -> list:
    with cargohold.open(root) as db:
        return db.namespace("default").images.list()


def copy(root, target) -> str:
    shutil.copytree(root, target, symlinks=True)
    return str(target)


def collects_nothing_reachable(root, before: dict) -> None:
    """A whole collection keeps what the listings showed (`before`, from `state`) and every blob a root reaches."""
    with cargohold.open(root) as db:
        reachable = db.mark()
        stats = db.garbage_collect()
    assert stats.errors == [], stats.errors
    assert not set(stats.removed) & reachable
    after = state(root)
    for kind in ("images", "containers", "leases"):
        assert after[kind] == before[kind]
    kept = {n.key for n in reachable if n.type == ResourceType.CONTENT}
    assert kept <= set(after["content"])
