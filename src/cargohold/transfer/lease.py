"""The lease a transfer works in, so that a collection running meanwhile removes nothing it made."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Iterator

from ..gc.labels import GC_EXPIRE
from ..timeutil import format_rfc3339

if TYPE_CHECKING:
    from ..namespaces import Namespace

EXPIRY = timedelta(hours=24)
"""A transfer's lease expires this long after it began (containerd's default), in case the process dies."""


@contextmanager
def transfer_lease(ns: "Namespace") -> Iterator["Namespace"]:
    """A handle whose new objects join a lease that ends with the block.

    A handle that already has a lease is used as it is and its lease kept
    (containerd's `WithLease` does the same). Otherwise a new lease, expiring
    after `EXPIRY`, is created and deleted when the block ends, however it
    ends: what the block made and nothing else references is then garbage the
    next collection removes.
    """
    if ns.lease is not None:
        yield ns
        return
    lease = ns.leases.create(labels={GC_EXPIRE: format_rfc3339(ns.db.clock() + EXPIRY)})
    try:
        yield ns.with_lease(lease.id)
    except BaseException:
        try:
            ns.leases.delete(lease.id)
        except Exception:  # noqa: BLE001 - the first error is the one to report; the lease expires anyway
            pass
        raise
    ns.leases.delete(lease.id)
