"""Which processes have a root open, and which ones died with it open.

A process that dies in the middle of a change can leave backend data that no
record owns (a blob renamed into place, a snapshot directory, an ingest) and
no dirty marker that would make the next collection clean that backend. So
every open database holds a *session file*, ``<meta>/sessions/<id>.session``,
locked (flock, exclusive) for as long as it is open and deleted by `close`.
The kernel drops the lock when its holder dies: a session file whose lock can
be taken belongs to a process that died without closing. The database then
marks dirty the content store and every snapshotter the dead process had
open (the file lists them) or the database has, and deletes the file
(`cargohold.db`).

Locking, as owned by this module: ``<meta>/sessions.lock`` (a
`cargohold.locks.FileLock`) is held exclusive while a session file is created
and locked, and while session files are probed, so a probe never mistakes a
file that is being created for a dead one. Nothing else is taken while it is
held, so it cannot be part of a deadlock.
"""

from __future__ import annotations

import fcntl
import json
import os
from typing import NamedTuple, Optional

from .locks import FileLock

SUFFIX = ".session"


class DeadSession(NamedTuple):
    """The session file of a process that died with the root open, and the backends it had."""

    path: str
    snapshotters: tuple


class Sessions:
    """The session files of one metadata directory."""

    def __init__(self, meta_path: str) -> None:
        self.directory = os.path.join(meta_path, "sessions")
        self._guard = FileLock(os.path.join(meta_path, "sessions.lock"))
        self._fd: Optional[int] = None
        self._path: Optional[str] = None
        self._pid = 0

    def start(self, snapshotters: list[str]) -> bool:
        """Create and lock this process's session file, listing the backends it opened.

        Returns False when no file could be made (a full disk must not stop
        the database from opening, least of all to collect garbage): a crash
        of this process then goes unnoticed. An empty file (its record could
        not be written) stands for every backend.
        """
        if self._fd is not None:
            return True
        import secrets  # only here: a read-only open starts no session

        record = json.dumps({"pid": os.getpid(), "snapshotters": sorted(snapshotters)})
        try:
            os.makedirs(self.directory, exist_ok=True)
            with self._guard.exclusive():
                path = os.path.join(self.directory, f"{os.getpid()}-{secrets.token_hex(8)}{SUFFIX}")
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BaseException:
                    os.close(fd)
                    os.unlink(path)
                    raise
        except OSError:
            return False
        try:
            os.write(fd, record.encode())
        except OSError:
            pass
        self._fd, self._path, self._pid = fd, path, os.getpid()
        return True

    def dead(self) -> list[DeadSession]:
        """The session files whose process died without closing the database."""
        try:
            names = sorted(n for n in os.listdir(self.directory) if n.endswith(SUFFIX))
        except OSError:
            return []  # none yet (or unreadable: then no crash can be detected)
        found = []
        with self._guard.exclusive():
            for name in names:
                path = os.path.join(self.directory, name)
                if path == self._path:
                    continue
                record = _probe(path)
                if record is not None:
                    found.append(DeadSession(path, tuple(str(s) for s in record.get("snapshotters", ()))))
        return found

    def others(self) -> list[int]:
        """The pids of the other processes that have the root open now (their session is locked)."""
        try:
            names = sorted(n for n in os.listdir(self.directory) if n.endswith(SUFFIX))
        except OSError:
            return []
        pids = set()
        for name in names:
            path = os.path.join(self.directory, name)
            if path != self._path and _probe(path) is None and os.path.exists(path):
                pid = name.partition("-")[0]
                if pid.isdigit():
                    pids.add(int(pid))
        return sorted(pids)

    def forget(self, dead: list[DeadSession]) -> None:
        """Delete the files of dead sessions whose debris has been taken care of."""
        for session in dead:
            try:
                os.unlink(session.path)
            except FileNotFoundError:
                pass

    def close(self) -> None:
        """Delete this process's session file and drop its lock."""
        fd, path = self._fd, self._path
        self._fd = self._path = None
        if fd is None:
            return
        if self._pid == os.getpid():  # a forked child closing its copy leaves its parent's session be
            try:
                os.unlink(path)
            except OSError:
                pass  # left behind, it looks like a dead session: the next collection only cleans more
        os.close(fd)
        self._guard.close()


def _probe(path: str) -> Optional[dict]:
    """The record of a dead session's file (its lock is free), else None (alive, or gone)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        try:
            data = os.read(fd, 1 << 16)
            record = json.loads(data) if data else {}
        except (OSError, ValueError):
            record = {}
        return record if isinstance(record, dict) else {}
    finally:
        os.close(fd)
