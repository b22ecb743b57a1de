"""The collection journal: which nodes writers changed while a concurrent collection marked.

A concurrent collection (`cargohold.db.DB.garbage_collect`) marks a read
snapshot while writers go on, so it must learn what they changed meanwhile.
It commits a *marker* (``gc\\0active`` in table ``meta``: a fresh token, the
current round, the start time) before it opens its snapshot. Every write
transaction that sees the marker (one get per transaction, cached on the
`Transaction`) records, in the same transaction as the change, the packed
node key of every node

* whose node-table entry it writes or deletes (new edges, new roots, new
  nodes, relabels, deletions: `cargohold.gc.index` calls `record` from its
  one writer and one remover), and
* that a lease-resource row it adds or removes names (the resource; a
  lease's own entry is journaled when it is written or deleted).

A row ``gc\\0journal\\0<round><node key>`` is written once per node and round
(duplicates within a transaction are skipped before LMDB sees them). The
collector moves to the next round in a transaction of its own; since write
transactions are serialised, each one journals wholly in one round, so a
read snapshot opened after that move holds every change of the rounds before
it. The collector then reloads those nodes from that snapshot, marks them
gray (`cargohold.gc.context.Marking.update`), and finally, with writers held
off, reads only the last round in its sweep transaction.

What is not journaled, and why that is safe: namespace deletion drops its
leases' and ingests' entries and rows by prefix, unjournaled; removals only
take reachability away (the snapshot's marking keeps the old edges, so the
collection keeps more, never less), and the sweep checks that each node it
is about to remove still has an entry.

A dead collector: the marker says a collection is running only while some
process holds the collector lock (``<meta>/collector.lock``, a flock that
dies with its holder); a writer that sees a marker probes that lock (a
non-blocking shared attempt) and journals only if a live collector holds it.
So a crashed collector's journal stops growing at once, and the next
collection (which holds the lock) clears the marker and every row before it
writes its own marker (`begin`). Rows of a finished collection are removed
after its sweep commits, in small transactions (`drop_rows`), by the
collector while it still holds the lock.
"""

from __future__ import annotations

import struct
from typing import Any, Optional, Protocol

from .. import schema
from ..errors import FailedPrecondition


class Writing(Protocol):
    """The write transaction a node-table writer runs in (`cargohold.transaction.Transaction`)."""

    kv: Any
    db: Any
    now: int
    _journaled: set
    _gc_round: Optional[int]

    def gc_round(self) -> int: ...

MARKER = schema.META_GC_ACTIVE
PREFIX = schema.META_GC_JOURNAL
MAX_ROUND = 255

_VALUE = struct.Struct("<8sBq")  # token, round, started (ns)


def _key(round_: int, packed: bytes) -> bytes:
    return PREFIX + bytes((round_,)) + packed


def _parse(raw: Optional[bytes]) -> Optional[tuple[bytes, int, int]]:
    if raw is None or len(raw) != _VALUE.size:
        return None
    return _VALUE.unpack(raw)


def active_round(tx: "Writing") -> int:
    """The round a writer journals in (0: no live collection). Read once per transaction."""
    marker = _parse(tx.kv.get(schema.T_META, MARKER))
    if marker is None or not tx.db._collector_alive():
        return 0
    return marker[1]


def record(tx: "Writing", packed: bytes) -> None:
    """Journal node `packed` if a collection is running (called by every node-table writer)."""
    round_ = tx.gc_round()
    if round_ and packed not in tx._journaled:
        tx._journaled.add(packed)
        tx.kv.put(schema.T_META, _key(round_, packed), b"")


# -- the collector's side ---------------------------------------------------------------------


def begin(tx: "Writing", token: bytes) -> int:
    """Forget a dead collection's marker and rows, then start round 1; returns the rows dropped."""
    dropped = tx.kv.delete_prefix(schema.T_META, PREFIX)
    tx.kv.put(schema.T_META, MARKER, _VALUE.pack(token, 1, tx.now))
    return dropped


def advance(tx: "Writing", token: bytes) -> int:
    """Move writers to the next round; returns it. FailedPrecondition if the marker is not ours."""
    marker = _parse(tx.kv.get(schema.T_META, MARKER))
    if marker is None or marker[0] != token:
        raise FailedPrecondition("the collection's marker was replaced: another collector ran")
    round_ = marker[1] + 1
    if round_ > MAX_ROUND:
        raise FailedPrecondition(f"a collection cannot have more than {MAX_ROUND} rounds")
    tx.kv.put(schema.T_META, MARKER, _VALUE.pack(token, round_, marker[2]))
    return round_


def changed(kv_txn, round_: int, limit: Optional[int] = None) -> list[bytes]:
    """The packed keys of the nodes journaled in `round_` (each once; the first `limit` only)."""
    prefix = _key(round_, b"")
    found = []
    for key, _ in kv_txn.scan(schema.T_META, prefix):
        found.append(key[len(prefix):])
        if limit is not None and len(found) >= limit:
            break
    return found


def end(tx: "Writing") -> None:
    """Stop the journaling (in the sweep's transaction); the rows go later (`drop_rows`)."""
    tx.kv.delete(schema.T_META, MARKER)


def drop_rows(kv_txn, limit: int) -> int:
    """Delete up to `limit` journal rows; returns how many."""
    keys = []
    for key, _ in kv_txn.scan(schema.T_META, PREFIX):
        keys.append(key)
        if len(keys) >= limit:
            break
    for key in keys:
        kv_txn.delete(schema.T_META, key)
    return len(keys)


def pending(kv_txn) -> bool:
    """Whether a marker or rows are left (of a running or a dead collection)."""
    return kv_txn.get(schema.T_META, MARKER) is not None or kv_txn.has_prefix(schema.T_META, PREFIX)
