"""Reader/writer locks shared by threads *and* processes, built on flock(2).

Each acquisition uses its own open file description, so two threads of one
process exclude each other exactly as two processes do. A lock dies with its
holder: a killed process never leaves a stale lock behind.
"""

from __future__ import annotations

import contextvars
import errno
import fcntl
import os
import time
import weakref
from typing import Callable, Optional

from .errors import Unavailable

_ALL_LOCKS: "weakref.WeakSet[FileLock]" = weakref.WeakSet()

_POOLED = 8
"""Unlocked descriptors a lock keeps for reuse."""

_LOCK_LOST = contextvars.ContextVar("cargohold_writer_lock_lost", default=False)


def run_after_lock_loss(fn: Callable[[], None]) -> None:
    """Run undo steps `fn` of a transaction that lost its writer lock before it ended (a shared
    engine's lease expired): other writers may have seen, and recorded, what those steps would
    delete, so the steps that delete shared data ask `writer_lock_lost` and leave it instead
    (a collection deletes it later if nothing records it)."""
    token = _LOCK_LOST.set(True)
    try:
        fn()
    finally:
        _LOCK_LOST.reset(token)


def writer_lock_lost() -> bool:
    """Whether the undo steps running now belong to a transaction that lost its writer lock."""
    return _LOCK_LOST.get()


class FileLock:
    """A shared/exclusive lock on one file, usable across threads and processes.

    In a directory this process cannot write, the lock file is opened read-only (flock needs no
    more), and one that does not exist stands for a lock nobody holds.
    """

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self._pool: list[int] = []
        """Unlocked descriptors of the file, for the next acquisitions (list operations are atomic)."""
        _ALL_LOCKS.add(self)

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
        # A root this process may only read (a read-only open writes nothing): flock works on a
        # read-only descriptor; a lock file that does not exist, and cannot be made, nobody holds.
        try:
            return os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return os.memfd_create("cargohold-unheld-lock", os.MFD_CLOEXEC)

    def _release(self, fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        pool = self._pool
        if len(pool) < _POOLED:
            pool.append(fd)  # a race of two releases may keep one more: harmless
        else:
            os.close(fd)

    def _acquire(self, mode: int, timeout: Optional[float]) -> int:
        try:
            fd = self._pool.pop()  # atomic: two threads never get one descriptor
        except IndexError:
            fd = self._open()
        try:
            if timeout is None:
                fcntl.flock(fd, mode)
                return fd
            deadline = time.monotonic() + timeout
            delay = 0.0005
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    return fd
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise Unavailable(f"lock {self.path!r} is held by another writer") from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.02)
        except BaseException:
            os.close(fd)
            raise

    def acquire_shared(self) -> int:
        """Take the lock shared, waiting as long as it takes; returns the token to `release`.
        For hot paths that cannot afford a context manager (the write transaction's locks)."""
        return self._acquire(fcntl.LOCK_SH, None)

    def acquire_exclusive(self) -> int:
        """Take the lock alone, waiting as long as it takes; returns the token to `release`."""
        return self._acquire(fcntl.LOCK_EX, None)

    release = _release
    """Let go of a hold `acquire_shared` or `acquire_exclusive` returned."""

    def shared(self, timeout: Optional[float] = None) -> "Held":
        """Hold the lock shared (many holders at once): ``with lock.shared(): ...``."""
        return Held(self, fcntl.LOCK_SH, timeout)

    def exclusive(self, timeout: Optional[float] = None) -> "Held":
        """Hold the lock alone: ``with lock.exclusive(): ...``."""
        return Held(self, fcntl.LOCK_EX, timeout)

    def close(self) -> None:
        pool = self._pool
        while pool:
            try:
                fd = pool.pop()
            except IndexError:
                break
            os.close(fd)

    def _forget_after_fork(self) -> None:
        # Inherited descriptors share their lock with the parent: never reuse them.
        self._pool = []


class Held:
    """One hold of a `FileLock` in one mode, as a context manager (`FileLock.shared`,
    `FileLock.exclusive`): a plain class, since a write transaction enters several."""

    __slots__ = ("_lock", "_mode", "_timeout", "_fd")

    def __init__(self, lock: FileLock, mode: int, timeout: Optional[float]) -> None:
        self._lock = lock
        self._mode = mode
        self._timeout = timeout
        self._fd = -1

    def __enter__(self) -> None:
        if self._fd >= 0:
            raise RuntimeError(f"lock {self._lock.path!r} is already held by this context manager")
        self._fd = self._lock._acquire(self._mode, self._timeout)

    def __exit__(self, *exc: object) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            self._lock._release(fd)


def _after_fork_in_child() -> None:
    for lock in list(_ALL_LOCKS):
        lock._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
