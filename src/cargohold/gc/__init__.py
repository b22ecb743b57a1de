"""Garbage collection: the node table the stores keep (`index`, journaled for a concurrent
collection by `journal`), what labels mean to the collector (`labels`), one collection's
roots/references/removal (`context`), and background scheduling (`Scheduler`).

`index`, `journal` and `labels` lie below the stores (they write beside every record);
`context` and `scheduler` above them. Importing this package loads neither of those.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Scheduler"]


def __getattr__(name: str) -> Any:
    if name == "Scheduler":
        from .scheduler import Scheduler

        return Scheduler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
