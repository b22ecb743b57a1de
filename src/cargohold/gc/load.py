"""Loading a whole node table or lease-resource table into a collection's `Marker`.

In a read snapshot the table is read straight from the data file's pages
(`Marker.add_nodes_mapped`: no Python object per row, see ``_ext/lmdbpages.pxi``);
in a write transaction, whose changes are not in the file yet, or for a file
in a format that reader does not know, row by row through `cargohold.kv`.
Either way the rows arrive in key order, so the marking is the same.
"""

from __future__ import annotations

import mmap
from typing import TYPE_CHECKING, Any, Callable

from .. import schema

if TYPE_CHECKING:
    from ..transaction import Transaction

RELEASE_FROM = 262144
"""Tables of fewer rows keep their pages resident while they are read: releasing costs every
later read a fault per page, and below this size (about 40 MiB of pages) it saves little."""

_RELEASE_EVERY_ROWS = 32768
"""Rows read between two releases of the map's pages when rows come through `cargohold.kv`
(`cargohold.kv.Env.release_pages`): the collection's memory is the marker's, not the table's."""

_RELEASE_EVERY_PAGES = 1024
"""Leaf pages (4 MiB of them, about 30000 rows) read from the mapping between two releases."""


def _load(tx: "Transaction", table: str, mapped: Callable[..., bool], rows: Callable[[Any], None]) -> None:
    large = tx.kv.count(table) >= RELEASE_FROM
    where = tx.kv.table_file(table)
    if where is not None:
        try:
            with open(where.path, "rb") as data:
                view = mmap.mmap(data.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            view = None
        if view is not None:
            try:
                if mapped(view, where.page_size, where.record, table, _RELEASE_EVERY_PAGES if large else 0):
                    return
            finally:
                view.close()
    rows(tx.kv.scan(table, release_every=_RELEASE_EVERY_ROWS if large else 0))


def node_table(tx: "Transaction", marker: Any) -> None:
    """Give the marker every entry of the node table."""
    _load(tx, schema.T_GC, marker.add_nodes_mapped, marker.add_nodes)


def lease_resources(tx: "Transaction", marker: Any) -> None:
    """Give the marker every row of the lease-resource table."""
    _load(tx, schema.T_LEASERES, marker.add_lease_resources_mapped, marker.add_lease_resources)
