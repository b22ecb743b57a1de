"""Leases: the lease store (``ns.leases``) and `attach`, which the other
stores call to add what they create to the handle's lease.

A lease is a root for the garbage collector that holds its resources (rows
of table ``leaseres``, kept by `cargohold.gc.index`). Its labels
``containerd.io/gc.expire`` and ``containerd.io/gc.flat`` are stored as
given; the collector interprets them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional

from . import filters, schema
from .errors import AlreadyExists, Corrupted, InvalidArgument, NotFound, Unsupported
from .fieldpaths import clean_labels
from .gc import index
from .model import Lease, Resource, ResourceType
from .timeutil import from_ns
from .validation import require_str, validate_digest, validate_identifier, validate_key

if TYPE_CHECKING:
    from .transaction import NamespaceHandle, Transaction


def _lease_key(ns: str, lease_id: str) -> bytes:
    return schema.object_key(ns, schema.K_LEASE, lease_id)


def attach(tx: "Transaction", ns: "NamespaceHandle", resource: Resource) -> None:
    """Add `resource` to the handle's lease, if it has one, in the caller's transaction.

    NotFound if the lease does not exist (containerd's "lease does not exist").
    """
    if ns.lease is None:
        return
    if tx.kv.get(schema.T_OBJECTS, _lease_key(ns.name, ns.lease)) is None:
        raise NotFound(f"lease {ns.lease!r} does not exist in namespace {ns.name!r}")
    index.lease_add(tx, ns.name, ns.lease, resource)


def detach(tx: "Transaction", ns: "NamespaceHandle", resource: Resource) -> None:
    """Drop `resource` from the handle's lease, if it has one (the object is being deleted)."""
    if ns.lease is not None:
        index.lease_remove(tx, ns.name, ns.lease, resource)


def check_resource(resource: object) -> Resource:
    """Validate a lease resource as containerd parses one.

    ``content`` (the id is a digest), ``ingests`` and ``images`` take no
    sub-type; ``snapshots/<snapshotter>`` needs exactly one. A malformed type
    is InvalidArgument, any other type Unsupported.
    """
    if not isinstance(resource, Resource):
        raise InvalidArgument(f"expected a cargohold.Resource, not {type(resource).__name__}")
    rtype = require_str(resource.type, "lease resource type")
    require_str(resource.id, "lease resource id")
    head, *rest = rtype.split("/")
    if head in ("content", "ingests", "images"):
        if rest:
            raise InvalidArgument(f"invalid lease resource type {rtype!r}: {head!r} takes no sub-type")
        if head == "content":
            validate_digest(resource.id, "content resource id")
        else:
            validate_key(resource.id, f"{head} resource id")
    elif head == "snapshots":
        if len(rest) != 1:
            raise InvalidArgument(f"invalid lease resource type {rtype!r}: expected snapshots/<snapshotter>")
        validate_identifier(rest[0], f"snapshotter of lease resource type {rtype!r}")
        validate_key(resource.id, "snapshot resource id")
    else:
        raise Unsupported(f"lease resource type {rtype!r} is not supported "
                          "(content, ingests, images, snapshots/<snapshotter>)")
    return resource


class LeaseStore:
    """create / list / delete leases of one namespace, and their resources.

    Filter fields: ``id``, ``labels.<key>``.
    """

    def __init__(self, ns: "NamespaceHandle") -> None:
        self._ns = ns
        self._db = ns.db

    def _exists(self, t: "Transaction", lease_id: str) -> bool:
        return t.kv.get(schema.T_OBJECTS, _lease_key(self._ns.name, lease_id)) is not None

    def _require(self, t: "Transaction", lease_id: str) -> None:
        if not self._exists(t, lease_id):
            raise NotFound(f"lease {lease_id!r} not found in namespace {self._ns.name!r}")

    def _decode(self, lease_id: str, raw: bytes) -> Lease:
        record = schema.unpack(raw, f"lease {lease_id!r}")
        try:
            return Lease(lease_id, from_ns(record["c"]), record["l"])
        except (KeyError, TypeError, ValueError) as exc:
            raise Corrupted(f"damaged lease {lease_id!r} in namespace {self._ns.name!r}: {exc!r}") from None

    def _new_id(self, t: "Transaction") -> str:
        """A free id: the creation time and a random suffix (containerd's WithRandomID)."""
        while True:
            candidate = f"{t.now}-{os.urandom(4).hex()}"
            if not self._exists(t, candidate):
                return candidate

    def create(self, id: Optional[str] = None, labels: Optional[dict] = None, *,
               tx: Optional["Transaction"] = None) -> Lease:
        """Create a lease (with a generated id when none is given); AlreadyExists if the id is taken."""
        if id is not None:
            validate_identifier(id, "lease id")
        labels = clean_labels(labels)

        def _body(t: "Transaction"):
            lease_id = id if id is not None else self._new_id(t)
            if self._exists(t, lease_id):
                raise AlreadyExists(f"lease {lease_id!r} already exists in namespace {self._ns.name!r}")
            t.ensure_namespace(self._ns.name)
            t.kv.put(schema.T_OBJECTS, _lease_key(self._ns.name, lease_id), schema.pack({"c": t.now, "l": labels}))
            index.index_lease(t, self._ns.name, lease_id, labels)
            return Lease(lease_id, from_ns(t.now), labels)

        return self._db.write(tx, _body)

    def list(self, *filter_args: str, tx: Optional["Transaction"] = None) -> list:
        """Every lease matching any of the filters (all without filters), by id."""
        flt = filters.parse(*filter_args)
        prefix = schema.object_prefix(self._ns.name, schema.K_LEASE)
        with self._db.transaction(tx, write=False) as t:
            leases = (self._decode(schema.text(key[len(prefix):]), raw)
                      for key, raw in t.kv.scan(schema.T_OBJECTS, prefix))
            return [lease for lease in leases
                    if flt.match(filters.adaptor({"id": lease.id}, {"labels": lease.labels}))]

    def delete(self, id: str, *, tx: Optional["Transaction"] = None) -> None:
        """Delete a lease and forget its resources (they become collectable); NotFound if missing."""
        validate_identifier(id, "lease id")

        def _body(t: "Transaction"):
            self._require(t, id)
            remove_for_gc(t, self._ns.name, id)
            t.mark_dirty()

        self._db.write(tx, _body)

    def add_resource(self, lease_id: str, resource: Resource, *, tx: Optional["Transaction"] = None) -> None:
        """Make the lease hold a resource (adding one it holds already is fine); NotFound without the lease."""
        validate_identifier(lease_id, "lease id")
        check_resource(resource)

        def _body(t: "Transaction"):
            self._require(t, lease_id)
            index.lease_add(t, self._ns.name, lease_id, resource)

        self._db.write(tx, _body)

    def delete_resource(self, lease_id: str, resource: Resource, *, tx: Optional["Transaction"] = None) -> None:
        """Stop holding a resource (one not held is ignored); NotFound without the lease."""
        validate_identifier(lease_id, "lease id")
        check_resource(resource)

        def _body(t: "Transaction"):
            self._require(t, lease_id)
            if index.lease_remove(t, self._ns.name, lease_id, resource):
                t.mark_dirty()

        self._db.write(tx, _body)

    def list_resources(self, lease_id: str, *, tx: Optional["Transaction"] = None) -> list:
        """The resources the lease holds; NotFound without the lease."""
        validate_identifier(lease_id, "lease id")
        with self._db.transaction(tx, write=False) as t:
            self._require(t, lease_id)
            return index.lease_resources(t, self._ns.name, lease_id)


def remove_for_gc(tx: "Transaction", ns: str, lease_id: str) -> None:
    """Remove a lease: its record, its node-table entry and every resource row.

    For the garbage collector (an expired lease): no validation, no events, no dirty mark.
    """
    tx.kv.delete(schema.T_OBJECTS, _lease_key(ns, lease_id))
    index.lease_drop(tx, ns, lease_id)
    index.remove(tx, ResourceType.LEASE, ns, lease_id)
