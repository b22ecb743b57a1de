"""Consistency of a root: `fsck` checks every invariant the store relies on and repairs what
can be repaired without guessing.

`check` reads (`cargohold.integrity.check`), `repair` fixes (`cargohold.integrity.repair`);
both report with the types of `cargohold.integrity.findings`, which the containerd checker
(`cargohold.containerd.fsck`) shares.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from ..errors import InvalidArgument
from .check import check
from .findings import Finding, Repair, Report
from .repair import repair

if TYPE_CHECKING:
    from ..transaction import Database as DB


def fsck(db: "DB", repair: bool = False, verify_content: bool = False, *, prune_orphans: bool = False,
         workers: Optional[int] = None) -> Report:
    """Check root `db`; with `repair`, then fix what can be fixed (`Report.repairs` says what was done).

    `verify_content` hashes every blob a record names; `prune_orphans` (with `repair`) deletes
    the data no record owns. `workers`: threads hashing blobs (default: one per core, at most 4).
    """
    for name, value in (("repair", repair), ("verify_content", verify_content), ("prune_orphans", prune_orphans)):
        if not isinstance(value, bool):
            raise InvalidArgument(f"{name} must be True or False, not {value!r}")
    if prune_orphans and not repair:
        raise InvalidArgument("prune_orphans needs repair=True")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise InvalidArgument(f"workers must be a positive integer, not {workers!r}")
    report = check(db, verify_content=verify_content, workers=workers)
    if repair:
        report.repairs = _repair(db, report, prune_orphans=prune_orphans)
    return report


_repair = repair

__all__ = ["Finding", "Repair", "Report", "check", "fsck", "repair"]
