"""Ordered schema migrations.

`DB.init()` reads the stored db version, runs every migration whose version
is above it, in order, inside one write transaction, then records the last
version. Either all of them apply or none does. A database whose version is
above the last one here was written by a newer cargohold and is refused.

A migration is added, never edited: its number is what older databases hold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, NamedTuple, Optional

from . import schema
from .errors import FailedPrecondition
from .model import ResourceType

if TYPE_CHECKING:
    from .transaction import Transaction


class Migration(NamedTuple):
    """One schema change: its number, what it does, and the function that makes it in a transaction
    (a named tuple: every open builds the list, and a dataclass would cost it `dataclasses` and `inspect`)."""

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
        import uuid  # here, not at import: it loads `platform`, and only a new database needs it

        tx.kv.put(schema.T_META, schema.META_IDENTITY, uuid.uuid4().hex.encode())


def _overlayfs(tx: "Transaction") -> None:
    """Version 3: the overlay snapshotter takes containerd's name, ``overlayfs`` (``overlay`` stays
    an alias of it): its records, children links, node-table entries and the edges pointing at
    them, lease resources, dirty marker and id sequence are renamed. Labels keep their text
    (``containerd.io/gc.ref.snapshot.overlay`` now means overlayfs)."""
    _rename_snapshotter(tx, "overlay", "overlayfs")


def _rename_snapshotter(tx: "Transaction", old: str, new: str) -> None:
    kv, sep = tx.kv, schema.SEP
    old_b, new_b = old.encode(), new.encode()
    moves: list[tuple[str, bytes, bytes, bytes]] = []  # (table, old key, new key, value)

    for key, value in kv.scan(schema.T_OBJECTS):
        parts = key.split(sep)
        if len(parts) >= 4 and parts[1] in (schema.K_SNAPSHOT, schema.K_SNAPSHOT_CHILD) and parts[2] == old_b:
            moves.append((schema.T_OBJECTS, key, sep.join([*parts[:2], new_b, *parts[3:]]), value))
        elif len(parts) == 3 and parts[1] == schema.K_CONTAINER:
            record = schema.unpack(value, "container record")
            if isinstance(record, dict) and record.get("sn") == old:
                record["sn"] = new
                moves.append((schema.T_OBJECTS, key, key, schema.pack(record)))

    def renamed(packed: bytes) -> Optional[bytes]:
        if packed[:1] != bytes((ResourceType.SNAPSHOT,)):
            return None
        ns, found, name = packed[1:].partition(sep)
        if found and name.startswith(old_b + b"/"):
            return packed[:1] + ns + sep + new_b + name[len(old_b):]
        return None

    from .gc import index

    for key, value in kv.scan(schema.T_GC):
        new_key = renamed(key) or key
        new_value = index.rename_targets(value, renamed) or value
        if (new_key, new_value) != (key, value):
            moves.append((schema.T_GC, key, new_key, new_value))
    for key, value in kv.scan(schema.T_LEASERES):  # <ns> NUL <lease> NUL <type byte><node key>
        ns, _, rest = key.partition(sep)
        lease, _, ref = rest.partition(sep)
        if ref[:1] == bytes((ResourceType.SNAPSHOT,)) and ref[1:].startswith(old_b + b"/"):
            moves.append((schema.T_LEASERES, key, ns + sep + lease + sep + ref[:1] + new_b + ref[1 + len(old_b):],
                          value))
    for old_key, new_key in ((schema.dirty_snapshotter_key(old), schema.dirty_snapshotter_key(new)),
                             (schema.META_SEQUENCE + b"snapshots/" + old_b,
                              schema.META_SEQUENCE + b"snapshots/" + new_b)):
        value = kv.get(schema.T_META, old_key)
        if value is not None:
            moves.append((schema.T_META, old_key, new_key, value))

    for table, old_key, new_key, _ in moves:
        if new_key != old_key and kv.get(table, new_key) is not None:
            raise FailedPrecondition(f"cannot rename snapshotter {old!r} to {new!r}: the database already "
                                     f"holds records of a snapshotter named {new!r}")
    for table, old_key, new_key, value in moves:
        if new_key != old_key:
            kv.delete(table, old_key)
        kv.put(table, new_key, value)


def _bound_metastores(tx: "Transaction") -> None:
    """Version 4: the snapshot backends' records live in the metadata database (table
    ``snapshotters``), so that they commit with the metadata. Each backend's own environment is
    moved in when the database binds it (`cargohold.snapshots.metastore`), right after this, and
    for a backend bound later, then; the version keeps older cargohold, which would look for the
    records in the backend's own environment, out."""


MIGRATIONS: list[Migration] = [
    Migration(1, "initial v1 layout", _initial_layout),
    Migration(2, "database identity", _identity),
    Migration(3, "the overlay snapshotter is named overlayfs", _overlayfs),
    Migration(4, "snapshot backends keep their records in the metadata database", _bound_metastores),
]

IDENTITY_VERSION = 2
"""The first version with an identity: a database below it predates backend ownership."""


def latest_version() -> int:
    return MIGRATIONS[-1].version if MIGRATIONS else 0


def pending(current: int) -> list[Migration]:
    """Migrations to run on a database at version `current`, in order."""
    return [m for m in MIGRATIONS if m.version > current]
