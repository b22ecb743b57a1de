"""The scope of a namespace-scoped or restricted collection, as the backend cleanups receive it.

Below the stores (they take it), apart from `cargohold.gc.context` and `cargohold.gc.allowed`,
which make it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Scope:
    """What a scoped collection lets the backend cleanups delete: only what was `namespace`'s,
    or (`snapshots` and `ingests` given) only what the records its sweep removed owned.

    `digests` are the content records its sweep removed; their blobs go unless
    another namespace still records them. Without `snapshots` and `ingests`,
    `namespace`'s ingests and snapshots are recognised by their backend refs and
    keys (each store knows its format). A restricted collection
    (``garbage_collect(allowed=...)``) gives both: `snapshots` holds the
    (stored snapshotter name, backend key) of each snapshot record it removed,
    `ingests` the backend ref of each ingest record it removed; nothing else in
    the backends is a candidate, and `namespace` may then be None (every namespace).
    """

    namespace: Optional[str]
    digests: frozenset
    snapshots: Optional[frozenset] = None
    ingests: Optional[frozenset] = None

    def owns_snapshot(self, stored: str, backend_key: str) -> bool:
        """Whether the cleanup of the snapshotter whose records are keyed by `stored` may delete `backend_key`."""
        if self.snapshots is not None:
            return (stored, backend_key) in self.snapshots
        return backend_key.startswith(f"{self.namespace}/")
