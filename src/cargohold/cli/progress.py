"""Progress bars for transfers: one rich bar per blob, only for a person at a terminal.

rich is imported only when bars are drawn: through a pipe a transfer pays nothing for them.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Optional

if TYPE_CHECKING:
    from cargohold.model import Descriptor
    from cargohold.transfer import Progress as ProgressCallback

_VERBS = {"store": "storing", "unpack": "unpacking", "export": "exporting", "pull": "pulling", "push": "pushing"}


@contextmanager
def blob_progress(enabled: bool) -> "Iterator[Optional[ProgressCallback]]":
    """A transfer progress callback drawing a bar per blob on stdout, or None when not `enabled`
    or stdout is not a terminal (then nothing is drawn)."""
    if not (enabled and sys.stdout.isatty()):
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from cargohold.oci.walk import describe

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=Console(soft_wrap=True, highlight=False)) as bars:
        tasks: dict[tuple[str, str], int] = {}

        def report(phase: str, descriptor: "Descriptor", done: int) -> None:
            key = (phase, descriptor.digest)
            task = tasks.get(key)
            if task is None:
                kind, _, digest = describe(descriptor).partition(" ")
                task = tasks[key] = bars.add_task(f"{_VERBS.get(phase, phase)} {kind} {digest[:19]}",
                                                  total=descriptor.size)
            bars.update(task, completed=done)

        yield report
