"""What is known about an LMDB environment's data file between sessions.

LMDB trusts its data file: a damaged page can make it read wild memory and
kill the process (SIGSEGV, SIGBUS), and a value that changed is returned as
it is. `cargohold.kv` asks this module, before LMDB maps a file, whether the
file is lost, may be trusted as it is, or must be verified first. No LMDB
here: only the files beside ``data.mdb``:

``env-open.lock``
    flocked exclusively while a process opens or closes the environment, so
    that those decisions never interleave.
``env-sessions.lock``
    flocked shared by every open `kv.Env` (a *session*) for its whole life;
    whoever gets it exclusively knows no other session is open. Its content
    counts the sessions begun and not yet cleanly ended.
``clean.json``
    the *clean marker*: written by the last session to close cleanly, it
    records the data file's fingerprint (size, mtime, ctime, inode, device,
    boot id) and its SHA-256. A session removes it before its first write.

Deciding at open, with no other session open:

* marker present, fingerprint equal: nobody changed the file; trusted.
* marker present, fingerprint different (a reboot, a touch, a copy, an edit
  that restored the mtime: ctime cannot be set back): the file is hashed;
  the same bytes are trusted, other bytes are refused as damaged, because no
  cargohold session wrote since the marker was made.
* no marker (a crash, a first open by this version): the caller verifies the
  structure (`kv.walk_all` in a child process).

With another session open the file is in use by a process that verified it:
it is trusted, and cannot be checked anyway while it is being written.

A process that cannot write the directory (`decide_unwritable`) decides the
same way through read-only descriptors of these files, and writes nothing:
it joins no session and leaves the marker as it is.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

from .errors import Corrupted, Unavailable

DATA_FILE = "data.mdb"
MARKER_FILE = "clean.json"
WRITER_LOCK_FILE = "writer.lock"
"""Created by `kv.Env` once LMDB has written the data file's header: proof the environment was used."""

_GATE_FILE = "env-open.lock"
_SESSIONS_FILE = "env-sessions.lock"
_MARKER_VERSION = 2
_BOOT_ID = "/proc/sys/kernel/random/boot_id"

MIN_DATA_SIZE = 2 * 4096
"""LMDB's two meta pages at its smallest page size: no used data file is shorter."""


def check_not_lost(path: str) -> None:
    """Refuse an environment whose data file is missing, empty or short although it was in use.

    Runs before anything is created or written. A directory without a data
    file and without any sign of use is a new environment; an empty data file
    without any sign of use is one whose creation was interrupted before LMDB
    wrote its header (LMDB starts it afresh).
    """
    data = os.path.join(path, DATA_FILE)
    try:
        size: Optional[int] = os.stat(data).st_size
    except FileNotFoundError:
        size = None
    except OSError as exc:
        raise Unavailable(f"cannot read metadata database {path!r}: {exc}") from None
    if size is not None and size >= MIN_DATA_SIZE:
        return
    evidence = [name for name in (MARKER_FILE, WRITER_LOCK_FILE) if os.path.exists(os.path.join(path, name))]
    if not evidence and not size:
        return
    if size is None:
        state = "is missing"
    elif size == 0:
        state = "is empty (0 bytes)"
    else:
        state = f"has {size} bytes, shorter than LMDB's two header pages ({MIN_DATA_SIZE} bytes)"
    why = f" although {' and '.join(evidence)} show(s) the database was in use" if evidence else ""
    raise Corrupted(
        f"metadata database {path!r} is lost: {DATA_FILE} {state}{why}. Nothing was changed. "
        f"Restore {DATA_FILE} from a backup, or, to start over with an empty database on purpose, "
        f"move the directory {path!r} away"
    )


# -- the clean marker ---------------------------------------------------------------


def _boot_id() -> str:
    try:
        with open(_BOOT_ID) as f:
            return f.read().strip()
    except OSError:
        return ""


def fingerprint(data: str) -> dict:
    """What changes whenever the file's bytes may have changed (ctime cannot be set back)."""
    st = os.stat(data)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
            "ino": st.st_ino, "dev": st.st_dev, "boot": _boot_id()}


def file_digest(data: str) -> str:
    """SHA-256 of the file, read with read(2): a damaged file cannot fault this."""
    import hashlib  # only when a fingerprint changed: most opens need not load OpenSSL

    h = hashlib.sha256()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with open(data, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                return h.hexdigest()
            h.update(view[:n])


def read_marker(path: str) -> Optional[dict]:
    """The clean marker, or None if there is none this version can use."""
    try:
        with open(os.path.join(path, MARKER_FILE)) as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return None
    if (not isinstance(marker, dict) or marker.get("version") != _MARKER_VERSION
            or not isinstance(marker.get("fingerprint"), dict) or not isinstance(marker.get("sha256"), str)):
        return None  # e.g. the size/mtime marker of older versions
    return marker


def write_marker(path: str, digest: Optional[str] = None) -> None:
    """Record the data file as it is now, whose SHA-256 is `digest` if known (atomically:
    a half-written marker is never read)."""
    data = os.path.join(path, DATA_FILE)
    target = os.path.join(path, MARKER_FILE)
    tmp = f"{target}.{os.getpid()}"
    try:
        marker = {"version": _MARKER_VERSION, "fingerprint": fingerprint(data), "sha256": digest or file_digest(data)}
        with open(tmp, "w") as f:
            json.dump(marker, f)
        os.replace(tmp, target)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass  # only costs a verification at the next open


def drop_marker(path: str) -> None:
    """Remove the marker, durably, before the data file is written."""
    try:
        os.unlink(os.path.join(path, MARKER_FILE))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise Unavailable(f"cannot remove the clean marker of {path!r} before writing: {exc}") from None
    sync_dir(path)


def sync_dir(path: str) -> None:
    """Make the directory's entries (a removal, a rename) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_marker(path: str, marker: dict, *, refresh: bool = True) -> None:
    """Refuse a data file that differs from what its last clean close recorded; refresh a stale
    fingerprint (unless not `refresh`: an open that must write nothing)."""
    data = os.path.join(path, DATA_FILE)
    try:
        if fingerprint(data) == marker["fingerprint"]:
            return
        digest = file_digest(data)
    except OSError as exc:
        raise Unavailable(f"cannot read metadata database {path!r}: {exc}") from None
    if digest != marker["sha256"]:
        raise Corrupted(
            f"metadata database {path!r} is damaged: {DATA_FILE} changed while no cargohold process had it "
            f"open (its SHA-256 differs from the one recorded in {MARKER_FILE} when it was last closed). "
            f"Nothing was changed. Restore it from a backup; if you replaced it on purpose, delete "
            f"{MARKER_FILE} to have its structure verified instead"
        )
    if refresh:
        write_marker(path, digest)  # same bytes (a reboot, a touch, a copy): trust it quickly next time


# -- sessions ---------------------------------------------------------------------------


def _lock_file(path: str) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _try_exclusive(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


_COUNT_WIDTH = 12


def _read_count(fd: int) -> int:
    raw = os.pread(fd, _COUNT_WIDTH, 0)
    try:
        return int(raw) if raw.strip() else 0
    except ValueError:
        return 1 << 30  # unreadable: assume a session ended uncleanly


def _write_count(fd: int, count: int) -> None:
    os.pwrite(fd, b"%*d" % (_COUNT_WIDTH, count), 0)  # fixed width: no truncation, no metadata change


def _open_existing(path: str) -> Optional[int]:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Unavailable(f"cannot lock {path!r} to open the metadata database: {exc}") from None


def decide_unwritable(path: str, verify_alone: Callable[[], None]) -> None:
    """`Sessions.begin`'s decision for a process that cannot write the directory: run
    `verify_alone()` when no session is open, without joining the sessions or writing anything."""
    gate = _open_existing(os.path.join(path, _GATE_FILE))
    try:
        if gate is not None:
            fcntl.flock(gate, fcntl.LOCK_EX)
        fd = _open_existing(os.path.join(path, _SESSIONS_FILE))
        try:
            if fd is None or _try_exclusive(fd):
                verify_alone()
        finally:
            if fd is not None:
                os.close(fd)
    finally:
        if gate is not None:
            os.close(gate)


class Sessions:
    """This process's session on one environment (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: Optional[int] = None

    def begin(self, verify_alone: Callable[[], None]) -> None:
        """Join the environment's sessions; when no other is open, run `verify_alone()` first.

        If it raises, nothing is joined and nothing is written.
        """
        try:
            gate = _lock_file(os.path.join(self.path, _GATE_FILE))
        except OSError as exc:
            raise Unavailable(f"cannot lock metadata database {self.path!r}: {exc}") from None
        try:
            fcntl.flock(gate, fcntl.LOCK_EX)
            fd = _lock_file(os.path.join(self.path, _SESSIONS_FILE))
            try:
                alone = _try_exclusive(fd)
                if alone:
                    verify_alone()
                # Crashed sessions before a verification are covered by it: count from here.
                _write_count(fd, 1 if alone else _read_count(fd) + 1)
                fcntl.flock(fd, fcntl.LOCK_SH)
            except OSError as exc:
                os.close(fd)
                raise Unavailable(f"cannot register a session of metadata database {self.path!r}: {exc}") from None
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
        finally:
            os.close(gate)

    @contextmanager
    def alone(self, timeout: float) -> Iterator[None]:
        """Be the only session, and stay so for the block: no other can open or close meanwhile
        (compaction swaps the data file). Unavailable if others stay open `timeout` seconds."""
        deadline = time.monotonic() + timeout
        gate = _lock_file(os.path.join(self.path, _GATE_FILE))
        try:
            while True:
                try:
                    fcntl.flock(gate, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    pass  # another process is opening or closing: try again
                else:
                    if _try_exclusive(self._fd):
                        break
                    fcntl.flock(self._fd, fcntl.LOCK_SH)  # the failed conversion dropped our shared lock
                    fcntl.flock(gate, fcntl.LOCK_UN)
                if time.monotonic() >= deadline:
                    raise Unavailable(f"metadata database {self.path!r} is open in another process")
                time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_SH)
        finally:
            os.close(gate)  # drops the gate

    def end(self, on_last_clean: Callable[[], None]) -> None:
        """Leave; the last session to leave runs `on_last_clean()` if every session since
        the last verification ended cleanly (a crashed one leaves its count behind)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            gate = _lock_file(os.path.join(self.path, _GATE_FILE))
        except OSError:
            os.close(fd)
            return
        try:
            fcntl.flock(gate, fcntl.LOCK_EX)
            left = _read_count(fd) - 1
            if _try_exclusive(fd):  # (a failed conversion drops our shared lock: we are leaving anyway)
                _write_count(fd, 0)
                if left == 0:
                    on_last_clean()
            else:
                _write_count(fd, max(left, 1))
        except OSError:
            pass  # only costs a verification at the next open
        finally:
            os.close(fd)
            os.close(gate)
