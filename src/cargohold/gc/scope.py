"""The scope of a namespace-scoped collection, as the backend cleanups receive it.

Below the stores (they take it), apart from `cargohold.gc.context`, which makes it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scope:
    """What a namespace-scoped collection lets the backend cleanups delete: only what was `namespace`'s.

    `digests` are the content records its sweep removed; their blobs go unless
    another namespace still records them. Its ingests and snapshots are
    recognised by their backend refs and keys (each store knows its format).
    """

    namespace: str
    digests: frozenset
