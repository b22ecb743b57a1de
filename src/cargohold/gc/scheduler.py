"""Background garbage-collection scheduling, with containerd's policy.

A collection runs when it is triggered (`trigger`), when `deletion_threshold`
deletions happened (if > 0), or — at the next scheduled slot — after any
deletion when `deletion_threshold` is 0, or after `mutation_threshold`
mutations. Slots are spaced so that collections pause writers for at most
`pause_threshold` of the time: interval = avg / threshold - avg, where avg is
the mean time writers were held off (`GCStats.meta_d`, the pause, not the
whole collection). The first slot is `startup_delay` seconds after `start()`.

Beyond containerd (whose garbage left by a crash waits for the next
deletion, containerd#6294):

* idle: after `idle_delay` seconds without a mutation, a trigger or a
  collection, the scheduler looks whether the store has garbage waiting that
  nothing announced (the persistent dirty markers another process's deletions
  or a failed cleanup left, a dead process's session, a dead collector's
  journal) and collects if so; then it looks again after another
  `idle_delay`. 0 turns this off.
* start-up: if the store has such garbage when `start()` is called (the
  previous process died, or stopped, with deletions pending), one collection
  runs even with `startup_delay` 0 (after `schedule_delay`).

Settings are validated: each must be a finite, non-negative number
(`deletion_threshold` and `mutation_threshold` whole numbers), else
InvalidArgument naming it. Only `pause_threshold` is clamped: a value above
0.5 is legal but past the useful range (collections would be spaced by less
than their own pause), so it is taken as 0.5, as containerd does.

Threads: the scheduler owns one daemon thread; DB mutation callbacks only
append an event under the scheduler's condition variable and never block.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from typing import Callable, Optional, Protocol

from ..errors import FailedPrecondition, InvalidArgument, Unavailable
from ..logs import LazyLogger
from ..model import GCStats


class Collected(Protocol):
    """What the scheduler drives (`cargohold.db.DB`)."""

    def garbage_collect(self) -> GCStats: ...
    def register_mutation_callback(self, fn: Callable[[bool], None]) -> None: ...
    def _collection_pending(self) -> bool: ...

log = LazyLogger("cargohold.gc")


def _setting(value: object, name: str, *, whole: bool = False) -> float:
    """A finite, non-negative number (an int if `whole`); InvalidArgument naming `name` otherwise."""
    kind = "whole number" if whole else "number"
    if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
        raise InvalidArgument(f"{name} must be a {kind}, not {value!r}")
    if not math.isfinite(value):
        raise InvalidArgument(f"{name} must be a finite {kind}, not {value!r}")
    if value < 0:
        raise InvalidArgument(f"{name} must not be negative, not {value!r}")
    return value


class _Waiter:
    __slots__ = ("done", "stats", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.stats: Optional[GCStats] = None
        self.error: Optional[BaseException] = None


def _settle(waiters: list[_Waiter], stats: Optional[GCStats] = None,
            error: Optional[BaseException] = None) -> None:
    """Hand each waiting `trigger(wait=True)` the collection's stats or its error."""
    for waiter in waiters:
        waiter.stats, waiter.error = stats, error
        waiter.done.set()


class Scheduler:
    """Runs `db.garbage_collect()` in the background when the policy says so."""

    def __init__(self, db: Collected, pause_threshold: float = 0.02, deletion_threshold: int = 0,
                 mutation_threshold: int = 100, schedule_delay: float = 0.0,
                 startup_delay: float = 0.1, idle_delay: float = 60.0) -> None:
        self.db = db
        self.pause_threshold = min(float(_setting(pause_threshold, "pause_threshold")), 0.5)
        self.deletion_threshold = int(_setting(deletion_threshold, "deletion_threshold", whole=True))
        self.mutation_threshold = int(_setting(mutation_threshold, "mutation_threshold", whole=True))
        self.schedule_delay = float(_setting(schedule_delay, "schedule_delay"))
        self.startup_delay = float(_setting(startup_delay, "startup_delay"))
        self.idle_delay = float(_setting(idle_delay, "idle_delay"))
        self.collections = 0
        self.last_stats: Optional[GCStats] = None
        self._cond = threading.Condition()
        self._events: collections.deque = collections.deque()
        self._waiters: list[_Waiter] = []
        self._thread: Optional[threading.Thread] = None
        self._stopping = False
        self._registered = False

    # -- control ---------------------------------------------------------------------------------
    def start(self) -> "Scheduler":
        with self._cond:
            if self._thread is not None:
                raise FailedPrecondition("scheduler already started")
            self._stopping = False
            if not self._registered:
                self.db.register_mutation_callback(self._on_mutation)
                self._registered = True
            self._thread = threading.Thread(target=self._run, name="cargohold-gc-scheduler", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: Optional[float] = None) -> None:
        """Stop the thread (after a collection in progress); pending waiters get Unavailable."""
        with self._cond:
            thread = self._thread
            if thread is None:
                return
            self._stopping = True
            self._cond.notify_all()
        thread.join(timeout)
        with self._cond:
            self._thread = None
            self._fail_waiters(Unavailable("garbage-collection scheduler stopped"))

    def __enter__(self) -> "Scheduler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def trigger(self, wait: bool = True, timeout: Optional[float] = None) -> Optional[GCStats]:
        """Ask for a collection now (after `schedule_delay`); with wait, return its stats."""
        waiter = _Waiter()
        with self._cond:
            if self._thread is None:
                raise FailedPrecondition("scheduler is not running: call start() first")
            if wait:
                self._waiters.append(waiter)
            self._events.append((time.monotonic(), False, False))
            self._cond.notify_all()
        if not wait:
            return None
        if not waiter.done.wait(timeout):
            with self._cond:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            raise Unavailable(f"no garbage collection completed within {timeout} s")
        if waiter.error is not None:
            raise waiter.error
        return waiter.stats

    def _on_mutation(self, dirty: bool) -> None:
        with self._cond:
            if self._thread is not None:
                self._events.append((time.monotonic(), True, dirty))
                self._cond.notify_all()

    def _fail_waiters(self, error: BaseException) -> None:
        _settle(self._waiters, error=error)
        self._waiters = []

    # -- the loop -----------------------------------------------------------------------------------
    def _pending(self) -> bool:
        try:
            return self.db._collection_pending()
        except Exception:  # a closed or failing database: nothing to do now
            log.exception("cannot tell whether garbage is waiting")
            return False

    def _run(self) -> None:
        started = time.monotonic()
        next_at = started + self.startup_delay if self.startup_delay > 0 else None
        if next_at is None and self._pending():
            next_at = started + self.schedule_delay  # the previous process left garbage
        idle_at = started + self.idle_delay if self.idle_delay > 0 else None
        last: Optional[float] = None
        interval = 1.0
        gc_time = 0.0
        triggered = False
        deletions = mutations = 0
        while True:
            with self._cond:
                while not self._stopping and not self._events and (
                        next_at is None or time.monotonic() < next_at) and (
                        idle_at is None or time.monotonic() < idle_at):
                    deadline = min(t for t in (next_at, idle_at, float("inf")) if t is not None)
                    self._cond.wait(None if deadline == float("inf") else max(deadline - time.monotonic(), 0))
                if self._stopping:
                    return
                now = time.monotonic()
                if idle_at is not None:
                    idle = not self._events and (next_at is None or now < next_at) and now >= idle_at
                    if self._events or idle:
                        idle_at = now + self.idle_delay
                else:
                    idle = False
                if self._events:
                    ts, mutation, dirty = self._events.popleft()
                    if mutation and last is not None and last > ts:
                        continue  # already covered by the last collection
                    deletions += dirty
                    if mutation:
                        mutations += 1
                    else:
                        triggered = True
                    if (triggered
                            or (self.deletion_threshold > 0 and deletions >= self.deletion_threshold)
                            or (next_at is None and (
                                (self.deletion_threshold == 0 and deletions > 0)
                                or (self.mutation_threshold > 0 and mutations >= self.mutation_threshold)))):
                        soon = time.monotonic() + self.schedule_delay
                        if next_at is None or next_at > soon:
                            next_at = soon
                    continue
                if not idle:
                    # the slot has come
                    if (not triggered and last is not None and deletions == 0
                            and (self.mutation_threshold == 0 or mutations < self.mutation_threshold)):
                        next_at = time.monotonic() + interval
                        continue
                    waiters, self._waiters = self._waiters, []
            if idle:
                if not self._pending():
                    continue
                with self._cond:
                    waiters, self._waiters = self._waiters, []
            try:
                stats = self.db.garbage_collect()
            except Exception as exc:  # reported to waiters; the schedule goes on
                log.exception("garbage collection failed")
                last = time.monotonic()
                next_at = last + interval + 1.0
                _settle(waiters, error=exc)
                continue
            last = time.monotonic()
            if idle_at is not None:
                idle_at = last + self.idle_delay
            gc_time += stats.meta_d
            self.collections += 1
            self.last_stats = stats
            triggered = False
            deletions = mutations = 0
            if self.pause_threshold > 0.0:
                avg = gc_time / self.collections
                interval = avg / self.pause_threshold - avg
            next_at = last + interval
            _settle(waiters, stats=stats)
