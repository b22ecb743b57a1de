"""Disk usage per namespace and store, and what a collection would free now (like ``docker
system df``); `prune` removes every image no container uses, then collects (``docker image
prune -a``).

Bytes: a blob by its file's length, an ingest by the bytes written so far, a snapshot by the
usage its snapshotter reports (recorded at commit, measured now while active). Each row of
a namespace counts what that namespace's records hold: ``shared`` is the part other
namespaces hold too (stored once), ``reclaimable`` what a collection would delete from disk
now: records the collection removes whose data no remaining record keeps (a blob another
namespace still records stays). The rows of namespace ``-`` are the stores on disk as a
whole, data no record owns included (what a collection's cleanup also deletes: `leftovers`).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Optional

from . import schema
from .errors import Error, FailedPrecondition, InvalidArgument, NotFound
from .gc import context as gccontext
from .model import GCStats, Leftover, Node, ResourceType
from .validation import validate_identifier

if TYPE_CHECKING:
    from .transaction import Database as DB, Transaction


@dataclass(frozen=True)
class StoreUsage:
    """Bytes one namespace holds in one store (namespace ``-``: the store on disk as a whole)."""

    namespace: str
    store: str
    """``content``, ``ingests`` or ``snapshots/<snapshotter>``."""
    count: int
    total: int
    shared: int
    """Bytes of objects other namespaces hold too (stored once)."""
    reclaimable: int
    """Bytes a collection would free now."""


@dataclass
class _Held:
    """What the records of one store hold: (namespace, node key, data id) rows and each data's size."""

    rows: list = field(default_factory=list)
    sizes: dict = field(default_factory=dict)


def usage(db: "DB") -> list[StoreUsage]:
    """Usage per namespace and store, then per store on disk (namespace ``-``); changes nothing."""
    db._require_open()
    removed = set(db.unreachable())
    leftovers = db.leftovers()
    with db.view() as tx:
        return _usage(db, tx, removed, leftovers)


def _usage(db: "DB", tx: "Transaction", removed: set, leftovers: Iterable[Leftover]) -> list[StoreUsage]:
    stores = _held(db, tx)
    dirty = _dirty(tx, removed)
    extra: dict[str, list] = defaultdict(list)
    for leftover in leftovers:
        store = {"blob": "content", "ingest-dir": "ingests"}.get(leftover.type)
        if store is None:
            store = f"snapshots/{leftover.key.partition('/')[0]}"
        extra[store].append(leftover.size)
    out: list[StoreUsage] = []
    whole: list[StoreUsage] = []
    for store, held in stores.items():
        holders: dict[str, set] = defaultdict(set)
        kept: set = set()
        for ns, node, data in held.rows:
            holders[data].add(ns)
            if node not in removed:
                kept.add(data)
        freed = {data for data in holders if data not in kept} if store in dirty else set()
        per_ns: dict[str, dict] = defaultdict(dict)
        for ns, _, data in held.rows:
            per_ns[ns][data] = held.sizes.get(data, 0)
        for ns in sorted(per_ns):
            items = per_ns[ns]
            out.append(StoreUsage(ns, store, len(items), sum(items.values()),
                                  sum(size for data, size in items.items() if len(holders[data]) > 1),
                                  sum(size for data, size in items.items() if data in freed)))
        others = extra.get(store, [])
        unlisted = [] if store == "content" else others  # every blob file is in the content sizes already
        whole.append(StoreUsage("-", store, len(held.sizes) + len(unlisted), sum(held.sizes.values()) + sum(unlisted),
                                0, sum(held.sizes.get(data, 0) for data in freed)
                                + (sum(others) if store in dirty else 0)))
    return out + whole


def _held(db: "DB", tx: "Transaction") -> dict[str, _Held]:
    """Per store: which records hold which data, and the data's sizes (every blob on disk, for content)."""
    stores: dict[str, _Held] = {}
    namespaces = db.namespaces.list(tx=tx)
    if db.content_store is not None:
        content = stores["content"] = _Held()
        ingests = stores["ingests"] = _Held()
        content.sizes = {info.digest: info.size for info in db.content_store.walk()}
        for ns in namespaces:
            prefix = schema.object_prefix(ns, schema.K_BLOB)
            for key, _ in tx.kv.scan(schema.T_OBJECTS, prefix):
                digest = schema.text(key[len(prefix):])
                content.rows.append((ns, Node(ResourceType.CONTENT, ns, digest), digest))
            prefix = schema.object_prefix(ns, schema.K_INGEST)
            for key, raw in tx.kv.scan(schema.T_OBJECTS, prefix):
                ref = schema.text(key[len(prefix):])
                record = schema.unpack(raw, f"ingest record {ref!r}")
                node = Node(ResourceType.INGEST, ns, ref)
                if record.get("sh") and record.get("d"):
                    content.rows.append((ns, node, record["d"]))  # it retains the content it will commit
                    continue
                ingests.rows.append((ns, node, record["b"]))
                try:
                    ingests.sizes[record["b"]] = db.content_store.status(record["b"]).offset
                except (NotFound, Error):
                    ingests.sizes[record["b"]] = 0
    for name, backend in sorted(db.snapshotters.items()):
        held = stores[f"snapshots/{name}"] = _Held()
        for ns in namespaces:
            prefix = schema.object_prefix(ns, schema.K_SNAPSHOT, db.stored_snapshotter(name))
            for key, raw in tx.kv.scan(schema.T_OBJECTS, prefix):
                snapshot = schema.text(key[len(prefix):])
                bkey = schema.unpack(raw, f"snapshot {snapshot!r}")["b"]
                held.rows.append((ns, Node(ResourceType.SNAPSHOT, ns, f"{name}/{snapshot}"), bkey))
                if bkey not in held.sizes:
                    try:
                        held.sizes[bkey] = backend.usage(bkey).size
                    except (NotFound, Error):
                        held.sizes[bkey] = 0
    return stores


def _dirty(tx: "Transaction", removed: set) -> set:
    """The stores a collection now would clean: dirty already, or with records it removes."""
    found = set()
    if tx.kv.get(schema.T_META, schema.META_DIRTY_CONTENT) is not None or any(
            n.type in (ResourceType.CONTENT, ResourceType.INGEST) for n in removed):
        found.update(("content", "ingests"))
    prefix = schema.META_DIRTY_SNAPSHOTTER
    for key, _ in tx.kv.scan(schema.T_META, prefix):
        stored = key[len(prefix):].decode("utf-8", "replace")
        found.add(f"snapshots/{tx.db.local_snapshotter(stored) or stored}")
    found.update(f"snapshots/{n.key.partition('/')[0]}" for n in removed if n.type == ResourceType.SNAPSHOT)
    return found


# -- prune ---------------------------------------------------------------------------------------


@dataclass
class Pruned:
    """What `prune` removed (or, in a dry run, would remove)."""

    images: list
    """(namespace, image name) of every image removed."""
    removed: list
    """The nodes the collection removed (would remove)."""
    freed: int
    """Bytes freed on disk (a dry run: bytes a collection would free, data no record owns included)."""
    stats: Optional[GCStats] = None
    """The collection's report (None in a dry run)."""


class _DryRun(Exception):
    """Raised to roll the dry run's transaction back."""


def unused_images(db: "DB", tx: "Transaction", namespaces: list) -> list[tuple[str, str]]:
    """(namespace, name) of every image of `namespaces` that no container of its namespace uses."""
    found = []
    for ns in namespaces:
        handle = db.namespace(ns)
        used = {c.image for c in handle.containers.list(tx=tx)}
        found.extend((ns, image.name) for image in handle.images.list(tx=tx) if image.name not in used)
    return found


def prune(db: "DB", namespace: Optional[str] = None, *, dry_run: bool = False) -> Pruned:
    """Remove every image no container uses (of `namespace`, or of every namespace), then collect
    (that namespace only, or the whole root); with `dry_run`, change nothing and say what would go.

    The images go in one transaction. A dry run deletes them in a write transaction that is
    rolled back, after marking what would then be unreachable: it holds writers off while it marks.
    """
    if not isinstance(dry_run, bool):
        raise InvalidArgument(f"dry_run must be True or False, not {dry_run!r}")
    if namespace is not None:
        validate_identifier(namespace, "namespace")
    db._require_open()
    if db._current() is not None:
        raise FailedPrecondition("prune() cannot run inside a transaction of the same thread")
    if dry_run:
        return _dry_run(db, namespace)
    with db.update() as tx:
        names = db.namespaces.list(tx=tx) if namespace is None else [namespace]
        images = unused_images(db, tx, names)
        for ns, name in images:
            db.namespace(ns).images.delete(name, tx=tx)
    stats = db.garbage_collect(namespace=namespace)
    return Pruned(images, list(stats.removed), stats.freed_bytes, stats)


def _dry_run(db: "DB", namespace: Optional[str]) -> Pruned:
    leftovers = db.leftovers() if namespace is None else []
    found: dict[str, Any] = {}
    contexts = gccontext.Contexts(db._collectors)
    try:
        with db.update() as tx:
            names = db.namespaces.list(tx=tx) if namespace is None else [namespace]
            found["images"] = unused_images(db, tx, names)
            for ns, name in found["images"]:
                db.namespace(ns).images.delete(name, tx=tx)
            marker = gccontext.marking(tx, contexts)
            removed = db._presented(gccontext.unreachable(marker, contexts, namespace))
            rows = _usage(db, tx, set(removed), leftovers)
            found["removed"], found["freed"] = removed, sum(r.reclaimable for r in rows if r.namespace == "-")
            raise _DryRun()
    except _DryRun:
        pass
    finally:
        contexts.cancel()
    return Pruned(found["images"], found["removed"], found["freed"])


__all__ = ["Pruned", "StoreUsage", "prune", "unused_images", "usage"]
