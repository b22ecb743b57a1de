"""Namespaces: the store of namespace records, and the `Namespace` handle
through which every namespaced store is reached (``db.namespace("default")``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from . import schema
from .errors import AlreadyExists, FailedPrecondition, NotFound
from .model import ResourceType, snapshotter_name
from .validation import validate_identifier, validate_label, validate_labels

if TYPE_CHECKING:
    from .transaction import Database, Transaction


class NamespaceStore:
    """Create, list, label and delete namespaces (``db.namespaces``)."""

    def __init__(self, db: "Database") -> None:
        self._db = db

    def _record(self, tx: "Transaction", name: str) -> Optional[dict]:
        raw = tx.kv.get(schema.T_NAMESPACES, name.encode())
        return None if raw is None else schema.unpack(raw, f"namespace {name!r}")

    def create(self, name: str, labels: Optional[dict] = None, *, tx: Optional["Transaction"] = None) -> None:
        """Create a namespace; AlreadyExists if it exists."""
        validate_identifier(name, "namespace")
        labels = validate_labels(labels)

        def _body(t: "Transaction"):
            record = schema.pack({"labels": labels, "created": t.now})
            if not t.kv.put(schema.T_NAMESPACES, name.encode(), record, overwrite=False):
                raise AlreadyExists(f"namespace {name!r} already exists")
            t._namespaces.add(name)

        self._db.write(tx, _body)

    def list(self, *, tx: Optional["Transaction"] = None) -> list[str]:
        """Names of every namespace, sorted."""
        with self._db.transaction(tx, write=False) as t:
            return [schema.text(key, "namespace") for key, _ in t.kv.scan(schema.T_NAMESPACES)]

    def labels(self, name: str, *, tx: Optional["Transaction"] = None) -> dict:
        """The labels of a namespace; NotFound if it does not exist."""
        validate_identifier(name, "namespace")
        with self._db.transaction(tx, write=False) as t:
            record = self._record(t, name)
            if record is None:
                raise NotFound(f"namespace {name!r} not found")
            return dict(record.get("labels", {}))

    def set_label(self, name: str, key: str, value: str, *, tx: Optional["Transaction"] = None) -> None:
        """Set one label (an empty value deletes it); creates the namespace if needed, as containerd does."""
        validate_identifier(name, "namespace")
        validate_label(key, value)

        def _body(t: "Transaction"):
            record = self._record(t, name) or {"labels": {}, "created": t.now}
            if value:
                record["labels"][key] = value
            else:
                record["labels"].pop(key, None)
            t.kv.put(schema.T_NAMESPACES, name.encode(), schema.pack(record))
            t._namespaces.add(name)

        self._db.write(tx, _body)

    def delete(self, name: str, *, tx: Optional["Transaction"] = None) -> None:
        """Delete an empty namespace, with its leases and ingests.

        FailedPrecondition while it still holds images, content, containers,
        sandboxes or snapshots; NotFound if it does not exist.
        """
        validate_identifier(name, "namespace")

        def _body(t: "Transaction"):
            if self._record(t, name) is None:
                raise NotFound(f"namespace {name!r} not found")
            held = [kind.decode() for kind in schema.DATA_KINDS
                    if t.kv.has_prefix(schema.T_OBJECTS, schema.object_prefix(name, kind))]
            if held:
                raise FailedPrecondition(f"namespace {name!r} must be empty, but it still has {', '.join(held)}")
            removed_ingests = t.kv.has_prefix(schema.T_OBJECTS, schema.object_prefix(name, schema.K_INGEST))
            t.kv.delete_prefix(schema.T_OBJECTS, schema.ns_prefix(name))
            t.kv.delete_prefix(schema.T_LEASERES, schema.ns_prefix(name))
            for rtype in (ResourceType.LEASE, ResourceType.INGEST):
                t.kv.delete_prefix(schema.T_GC, schema.node_prefix(rtype, name))
            t.kv.delete(schema.T_NAMESPACES, name.encode())
            t._namespaces.discard(name)
            t.mark_dirty(content=removed_ingests)

        self._db.write(tx, _body)


class Namespace:
    """A namespace handle: the entry to its stores. Creating one writes nothing.

    ``with_lease(id)`` returns a handle whose new content, ingests, snapshots
    and images join that lease in the transaction that creates them.
    """

    def __init__(self, db: "Database", name: str, lease: Optional[str] = None) -> None:
        self.db = db
        self.name = validate_identifier(name, "namespace")
        self.lease = None if lease is None else validate_identifier(lease, "lease id")
        self._stores: dict[str, Any] = {}

    def __repr__(self) -> str:
        suffix = f", lease={self.lease!r}" if self.lease else ""
        return f"Namespace({self.name!r}{suffix})"

    def with_lease(self, lease_id: str) -> "Namespace":
        return Namespace(self.db, self.name, lease_id)

    def _store(self, key: str, factory) -> Any:
        store = self._stores.get(key)
        if store is None:
            store = self._stores[key] = factory(self)
        return store

    @property
    def images(self):
        store = self._stores.get("images")
        if store is None:
            from .images import ImageStore

            store = self._store("images", ImageStore)
        return store

    @property
    def containers(self):
        store = self._stores.get("containers")
        if store is None:
            from .containers import ContainerStore

            store = self._store("containers", ContainerStore)
        return store

    @property
    def sandboxes(self):
        store = self._stores.get("sandboxes")
        if store is None:
            from .sandboxes import SandboxStore

            store = self._store("sandboxes", SandboxStore)
        return store

    @property
    def leases(self):
        store = self._stores.get("leases")
        if store is None:
            from .leases import LeaseStore

            store = self._store("leases", LeaseStore)
        return store

    @property
    def content(self):
        store = self._stores.get("content")
        if store is None:
            from .content.store import ContentStore

            store = self._store("content", ContentStore)
        return store

    def snapshotter(self, name: str):
        """The namespaced view of one snapshotter (``overlay`` is ``overlayfs``); NotFound for an unknown name."""
        from .snapshots.store import Snapshotter

        self.db.snapshotter_backend(name)
        name = snapshotter_name(name)
        return self._store(f"snapshotter:{name}", lambda ns: Snapshotter(ns, name))
