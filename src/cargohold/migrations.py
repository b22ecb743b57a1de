"""Ordered schema migrations.

`DB.init()` reads the stored db version, runs every migration whose version
is above it, in order, inside one write transaction, then records the last
version. Either all of them apply or none does. A database whose version is
above the last one here was written by a newer cargohold and is refused.

A migration is added, never edited: its number is what older databases hold.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from . import schema

if TYPE_CHECKING:
    from .db import Transaction


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[["Transaction"], None]


def _initial_layout(tx: "Transaction") -> None:
    """Version 1: the `v1` schema marker. The tables themselves exist once the env is open."""
    tx.kv.put(schema.T_META, schema.META_SCHEMA, schema.SCHEMA)


def _identity(tx: "Transaction") -> None:
    """Version 2: a random identity, written once, by which backends name the database that owns
    them (`cargohold.ownership`); a database upgraded to it adopts the backends it is opened with."""
    if tx.kv.get(schema.T_META, schema.META_IDENTITY) is None:
        tx.kv.put(schema.T_META, schema.META_IDENTITY, uuid.uuid4().hex.encode())


MIGRATIONS: list[Migration] = [
    Migration(1, "initial v1 layout", _initial_layout),
    Migration(2, "database identity", _identity),
]

IDENTITY_VERSION = 2
"""The first version with an identity: a database below it predates backend ownership."""


def latest_version() -> int:
    return MIGRATIONS[-1].version if MIGRATIONS else 0


def pending(current: int) -> list[Migration]:
    """Migrations to run on a database at version `current`, in order."""
    return [m for m in MIGRATIONS if m.version > current]
