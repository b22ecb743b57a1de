"""Leases: the lease store (``ns.leases``) and `attach`, which the other
stores call to add what they create to the handle's lease."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import schema
from .errors import NotFound
from .gc import index
from .model import Resource

if TYPE_CHECKING:
    from .db import Transaction
    from .namespaces import Namespace


def attach(tx: "Transaction", ns: "Namespace", resource: Resource) -> None:
    """Add `resource` to the handle's lease, if it has one, in the caller's transaction.

    NotFound if the lease does not exist (containerd's "lease does not exist").
    """
    if ns.lease is None:
        return
    if tx.kv.get(schema.T_OBJECTS, schema.object_key(ns.name, schema.K_LEASE, ns.lease)) is None:
        raise NotFound(f"lease {ns.lease!r} does not exist in namespace {ns.name!r}")
    index.lease_add(tx, ns.name, ns.lease, resource)
