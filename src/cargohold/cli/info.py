"""`cargohold info`: how many objects, and how many bytes, each namespace and store holds, and how
large the metadata file is next to the live data in it (the difference is what `compact` gives back)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import click

from .context import Settings, echo, emit_json, emit_table, json_option, pass_settings
from .groups import examples

if TYPE_CHECKING:
    from cargohold import DB


def _entry(count: int, size: Optional[int] = None) -> dict:
    return {"count": count} if size is None else {"count": count, "bytes": size}


def _content_entry(store) -> dict:
    """Blobs of a content store (namespaced or backend) and their bytes."""
    blobs = list(store.walk())
    return _entry(len(blobs), sum(info.size for info in blobs))


def _snapshot_entry(snapshotter) -> dict:
    """Snapshots of a snapshotter (namespaced or backend) and the bytes they use."""
    keys = [info.name for info in snapshotter.walk()]
    return _entry(len(keys), sum(snapshotter.usage(key).size for key in keys))


def namespace_usage(db: "DB", name: str) -> dict:
    """Objects per store of one namespace, with bytes for content, ingests and snapshots."""
    ns = db.namespace(name)
    ingests = ns.content.statuses()
    usage = {"images": _entry(len(ns.images.list())), "containers": _entry(len(ns.containers.list())),
             "sandboxes": _entry(len(ns.sandboxes.list())), "leases": _entry(len(ns.leases.list())),
             "content": _content_entry(ns.content),
             "ingests": _entry(len(ingests), sum(s.offset for s in ingests))}
    for sn_name in sorted(db.snapshotters):
        usage[f"snapshots/{sn_name}"] = _snapshot_entry(ns.snapshotter(sn_name))
    return usage


def backend_usage(db: "DB") -> dict:
    """What the backends hold on disk, shared by every namespace (and not yet collected)."""
    usage = {}
    if db.content_store is not None:
        usage["content"] = _content_entry(db.content_store)
    for name, backend in sorted(db.snapshotters.items()):
        usage[f"snapshots/{name}"] = _snapshot_entry(backend)
    return usage


@click.command("info", epilog=examples("cargohold info", "cargohold info --json | jq .backends"))
@json_option
@pass_settings
def command(settings: Settings, as_json: bool) -> None:
    """Counts and bytes per namespace and store, and what the backends hold on disk.

    BYTES are exact, for comparing with what `du` says.
    """
    db = settings.db(write=False)
    file_bytes, live_bytes = db.storage()
    report = {"root": settings.root, "schema_version": db.version,
              "meta_file_bytes": file_bytes, "meta_live_bytes": live_bytes,
              "namespaces": {name: namespace_usage(db, name) for name in db.namespaces.list()},
              "backends": backend_usage(db)}
    if as_json:
        emit_json(report)
        return
    hint = f": `cargohold compact` gives back {file_bytes - live_bytes}" if file_bytes > live_bytes else ""
    echo(f"root {settings.root} (schema version {db.version}; metadata file {file_bytes} bytes, "
         f"live data {live_bytes} bytes{hint})")
    rows = [(ns, store, e["count"], e.get("bytes")) for ns, stores in report["namespaces"].items()
            for store, e in stores.items()]
    rows += [("-", f"backend:{store}", e["count"], e.get("bytes")) for store, e in report["backends"].items()]
    emit_table(["NAMESPACE", "STORE", "COUNT", "BYTES"], rows)
