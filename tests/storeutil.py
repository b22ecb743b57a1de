"""Helpers for the object-store tests: a database on a deterministic clock,
and readers of the node table and lease rows as the garbage collector sees them."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import pytest

import cargohold
from cargohold import schema
from cargohold.gc import index

START = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


class Ticker:
    """A clock that advances one millisecond per reading (each transaction reads it once)."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


@pytest.fixture
def db(root):
    """A real database on a ticking clock (import this fixture into a test module)."""
    with cargohold.open(root, clock=Ticker()) as database:
        yield database


@pytest.fixture
def ns(db):
    return db.namespace("testing")


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def node(rtype: int, ns: str, key: str) -> bytes:
    return schema.pack_node(rtype, ns, key)


def entry(db, rtype: int, ns: str, key: str):
    """The decoded node-table entry of a node, or None."""
    with db.view() as tx:
        raw = tx.kv.get(schema.T_GC, node(rtype, ns, key))
    return None if raw is None else index.decode(raw)


def edges(entry_, kind: int) -> set:
    return {target for k, target, _ in entry_.edges if k == kind}


def lease_rows(db, ns: str, lease: str) -> list:
    with db.view() as tx:
        return tx.kv.keys(schema.T_LEASERES, schema.lease_resource_key(ns, lease))


def record_count(db) -> tuple:
    """(objects, gc, leaseres, namespaces) entry counts: proof that a failed call wrote nothing."""
    with db.view() as tx:
        return tuple(tx.kv.count(t) for t in (schema.T_OBJECTS, schema.T_GC, schema.T_LEASERES,
                                               schema.T_NAMESPACES))
