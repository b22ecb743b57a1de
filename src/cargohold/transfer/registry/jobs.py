"""Running a transfer's blob copies on a few threads, stopping them all at the first failure."""

from __future__ import annotations

import threading
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Callable

from ...errors import InvalidArgument


class Cancelled(Exception):
    """Raised inside a job that noticed another job failed (never reported)."""


def validate_concurrency(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgument(f"{what} must be a positive integer, not {value!r}")
    return value


class Jobs:
    """A pool of `limit` threads; a context manager that, on leaving, waits for every job.

    `check()` raises the first job failure (jobs still running are told to
    stop through `cancelled`, those not started are dropped); leaving the
    block on an exception does the same and lets that exception through.
    """

    def __init__(self, limit: int, name: str) -> None:
        self._pool = ThreadPoolExecutor(limit, thread_name_prefix=name)
        self._futures: list[Future] = []
        self.cancelled = threading.Event()

    def __enter__(self) -> "Jobs":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        try:
            if exc is not None:
                self._stop()
            else:
                self.check(wait_all=True)
        finally:
            self._pool.shutdown(wait=True)

    def submit(self, job: Callable, *args) -> None:
        self._futures.append(self._pool.submit(job, *args))

    def check_cancelled(self) -> None:
        """Raise Cancelled in a job once another has failed."""
        if self.cancelled.is_set():
            raise Cancelled()

    def _stop(self) -> None:
        self.cancelled.set()
        for future in self._futures:
            future.cancel()
        wait(self._futures)

    def check(self, wait_all: bool = False) -> None:
        """Raise the first failure among the jobs done so far (with `wait_all`, once all are done)."""
        if wait_all:
            wait(self._futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in self._futures if f.done() and not f.cancelled() and f.exception() is not None]
        if not failed:
            return
        self._stop()
        first = next((f for f in failed if not isinstance(f.exception(), Cancelled)), failed[0])
        raise first.exception()
