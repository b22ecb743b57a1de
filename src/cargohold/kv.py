"""The storage engine: the only module that imports `lmdb`.

An `Env` is one LMDB environment (a directory) holding named tables. It hands
out `Txn`s: any number of read transactions (MVCC snapshots that never block
and are never blocked by a writer) and one write transaction at a time.

Locking, as owned by this module:

* Write transactions are serialised across threads and processes by an
  exclusive flock on ``<path>/writer.lock``, taken before LMDB's own writer
  mutex. It makes the map-growth retry below safe: nobody else can commit
  between our abort and our replay.
* The map grows by itself. A write that finds the map more than half full
  doubles it first (one that finds it at most a quarter full lets the next
  seven writes begin without looking); a write that still hits MDB_MAP_FULL is aborted, the map
  is doubled and the transaction's journal of writes is replayed. Resizing
  must not race transactions of this process (LMDB remaps the file), so it
  waits for the other threads' open transactions to end and holds new ones
  back meanwhile; this is the only moment a reader can delay a writer.
* Another process's growth shows up as MDB_MAP_RESIZED wherever LMDB begins
  a transaction: inside ``lmdb.open`` (the open is repeated), when the tables
  are opened and whenever a transaction begins (the map is adopted as above
  and the begin retried), and in the child verifier (it adopts the size). It
  is never an error, except when the thread asking still holds another
  transaction of the same environment, under which LMDB cannot remap: that
  is Unavailable, saying so.
* Opening and closing hold ``env-open.lock`` (`cargohold.kvguard`) exclusively,
  so a process verifying the file has it to itself; every open environment
  holds ``env-sessions.lock`` shared until it closes.

Every lmdb exception is turned into a `cargohold.errors` class.

Read-only environments (``readonly=True``; the default, ``None``, chooses it
when the directory exists but this process cannot write it): nothing is
created or written, a missing table reads as empty and `write` raises
FailedPrecondition. In a directory this process can write, LMDB keeps its
lock file and the session rules below hold as for any session. In one it
cannot write (a read-only mount, another user's root) LMDB runs without a
lock file, so a writer in another process would not see this reader; each
read transaction therefore holds ``writer.lock`` shared (opened read-only),
which keeps cargohold writers of every process out of the data file while it
reads. The open is decided as below but writes nothing: no session is
counted, no clean marker is written or refreshed, and a file that needs
verifying is verified in a child process every time.

Durability: by default a commit returns once it is on disk (LMDB flushes the
data pages, then the meta page: two fdatasyncs). ``durable=False``, as
containerd's ``no_sync``, drops the meta page's flush (MDB_NOMETASYNC): a
commit is flushed once, and a power cut or kernel crash may undo the last
commits, but never leaves the file inconsistent (the previous meta page
still describes a complete, flushed tree); a process crash loses nothing.
Closing flushes, so a clean close leaves everything durable (`Env.sync`).

Verification: LMDB trusts its pages, and a damaged page can kill the process
(SIGSEGV, SIGBUS) or be returned as data. So before LMDB maps a data file
no other session has open, `cargohold.kvguard` decides. A lost file (missing,
empty or shorter than its header while the directory shows it was used) is
Corrupted. A file recorded by the last clean close (``clean.json``) is
trusted if its fingerprint is unchanged (it includes the ctime, which no
``touch -d`` restores, and the boot id, so the first open after a reboot
looks again), else hashed and refused unless its bytes are the recorded
ones. Any other file (its last writer crashed) is verified in a child
process by `walk_all`: py-lmdb's offline structural verifier, which reads
the file with read(2) and cannot fault, then a read of every key and value
through LMDB; a child that fails or dies by a fault means Corrupted. A
session drops ``clean.json`` (durably) before its first write; the last one
to close writes it again if every session since the last verification ended
cleanly. A refused open writes nothing.

What this cannot catch: changed value bytes in a file whose last writer
crashed (LMDB has no checksums, and the structure is intact), and damage
done while a session has the file open. A fault on a mapping of this
process (say, the file truncated under it) cannot become an exception: the
signal arrives inside LMDB, and jumping out of it would leave its reader
slots and locks inconsistent, so the process dies; the next open refuses
the file.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import threading
import contextlib
import time
from typing import Callable, Iterator, NamedTuple, Optional, Sequence

import lmdb

from . import kvguard
from .errors import Corrupted, Error, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from .locks import FileLock

DEFAULT_MAP_SIZE = 256 << 20
MAX_KEY_SIZE = 511
COMPACT_FILE = "data.mdb.compact"
"""The compacted copy `Env.compact` writes beside the data file before renaming it over it."""

_ATTEMPTS = 8
"""Times a begin is retried after another process grew the map under it."""

_UNCHECKED_WRITES = 7
"""Write transactions that begin without looking at the map's fill after one found it at most a
quarter full: reading it (``Environment.info``) costs more than an empty transaction, and a map
that fills faster than that is still grown, by the MDB_MAP_FULL replay."""

_CRASH_SIGNALS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGILL, signal.SIGFPE)


def _translate(exc: lmdb.Error, path: str) -> Error:
    if isinstance(exc, (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.InvalidError,
                        lmdb.BadRslotError, lmdb.PanicError, lmdb.VersionMismatchError,
                        lmdb.InvalidParameterError, lmdb.IncompatibleError)):
        return Corrupted(f"metadata database {path!r} is damaged or unreadable: {exc}")
    if isinstance(exc, lmdb.BadValsizeError):
        return InvalidArgument(f"key too long for the metadata database: {exc}")
    if isinstance(exc, lmdb.ReadersFullError):
        return Unavailable(f"too many concurrent readers of {path!r}: {exc}")
    return Error(f"metadata database {path!r}: {exc}")


class Env:
    """One LMDB environment with named tables."""

    def __init__(self, path: str, tables: Sequence[str], *, map_size: Optional[int] = None,
                 max_readers: int = 512, readonly: Optional[bool] = None, durable: bool = True) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.durable = check_durable(durable)
        """Whether a commit is on disk when it returns (see "Durability" in the module docstring)."""
        writable = not os.path.isdir(self.path) or os.access(self.path, os.W_OK)
        self.readonly = (not writable) if readonly is None else bool(readonly)
        """Whether this environment only reads (see the module docstring)."""
        if not self.readonly and not writable:
            raise FailedPrecondition(f"metadata database {self.path!r} is read-only (its directory is not "
                                     "writable by this process): it can only be opened read-only")
        self._lockless = self.readonly and not writable
        kvguard.check_not_lost(self.path)
        if self.readonly:
            if not os.path.isfile(self._data):
                raise NotFound(f"metadata database {self.path!r} does not exist: there is nothing to read")
        else:
            try:
                os.makedirs(self.path, exist_ok=True)
            except OSError as exc:
                raise Unavailable(f"cannot create metadata directory {self.path!r}: {exc}") from None
        self._writer_lock = FileLock(os.path.join(self.path, kvguard.WRITER_LOCK_FILE))
        self._settings = (map_size, len(tables), max_readers, tuple(tables))
        self._read_gate = _ReadGate(os.path.join(self.path, kvguard.WRITER_LOCK_FILE)) if self._lockless else None
        self._mutex = threading.RLock()
        self._cond = threading.Condition(self._mutex)
        """Guards `_active` and `_resizing`; entered through `_mutex` where nobody waits (`_enter`,
        `_leave`: every transaction passes them, and the Condition's own enter is Python code)."""
        self._active: dict[int, int] = {}
        self._resizing = False
        self._closed = False
        self._marker_dropped = False
        self._unchecked_writes = 0
        """Write transactions that may begin before the map's fill is looked at again (`_grow_if_needed`)."""
        self._dbs: dict = {}
        self._sessions = kvguard.Sessions(self.path)
        if self._lockless:
            kvguard.decide_unwritable(self.path, self._verify_alone)
        else:
            self._sessions.begin(self._verify_alone)
        try:
            self._env = self._open(map_size, len(tables), max_readers)
            try:
                self._check_size()
                self._open_tables(tables)
            except BaseException as exc:
                self._env.close()
                if isinstance(exc, lmdb.Error):
                    raise _translate(exc, self.path) from None
                raise
        except BaseException:
            self._writer_lock.close()
            self._sessions.end(lambda: None)
            raise

    @property
    def _data(self) -> str:
        return os.path.join(self.path, kvguard.DATA_FILE)

    def _open(self, map_size: Optional[int], tables: int, max_readers: int) -> "lmdb.Environment":
        data = self._data
        existing = os.path.getsize(data) if os.path.exists(data) else 0
        size = max(map_size or DEFAULT_MAP_SIZE, 1 << 20)
        while size < existing * 2:
            size *= 2
        for _ in range(_ATTEMPTS):
            try:
                # lmdb.open begins a transaction of its own: a growth just before it is MAP_RESIZED
                return lmdb.open(self.path, subdir=True, map_size=size, max_dbs=tables + 2,
                                 max_readers=max_readers, readahead=False, meminit=False,
                                 readonly=self.readonly, lock=not self._lockless, metasync=self.durable)
            except lmdb.MapResizedError:
                continue  # the next open maps the new size
            except lmdb.Error as exc:
                raise _translate(exc, self.path) from None
        raise Unavailable(f"metadata database {self.path!r} keeps being resized while it is opened")

    def _open_tables(self, tables: Sequence[str]) -> None:
        """Open the tables, creating missing ones (committing a write that changed nothing writes nothing);
        read-only, a missing table is recorded as such and reads as empty."""
        if self.readonly:
            # without a txn: LMDB keeps the handles only when the transaction opening them commits
            with self._read_gate.shared() if self._read_gate is not None else contextlib.nullcontext():
                for name in tables:
                    try:
                        self._dbs[name] = self._env.open_db(name.encode(), create=False)
                    except lmdb.NotFoundError:
                        self._dbs[name] = _MISSING
            return
        with self._writer_lock.exclusive():
            txn = self._begin(True)
            try:
                if any(txn.get(name.encode()) is None for name in tables):
                    self._before_write()
                for name in tables:
                    self._dbs[name] = self._env.open_db(name.encode(), txn=txn, create=True)
                txn.commit()
            except BaseException:
                txn.abort()
                raise
            finally:
                self._leave()

    def _check_size(self) -> None:
        # A truncated data file would fault (SIGBUS) on first access: refuse it.
        info = self._env.info()
        psize = self._psize = self._env.stat()["psize"]
        needed = (info["last_pgno"] + 1) * psize
        actual = os.path.getsize(self._data)
        if actual < needed:
            raise Corrupted(
                f"metadata database {self.path!r} is truncated: {actual} bytes on disk, "
                f"{needed} bytes in use"
            )

    def _verify_alone(self) -> None:
        """Decide, with no other session open, whether the data file may be mapped (see the docstring)."""
        try:
            if os.path.getsize(self._data) == 0:
                return  # a new environment (check_not_lost let it through)
        except FileNotFoundError:
            return
        marker = kvguard.read_marker(self.path)
        if marker is not None:
            kvguard.check_marker(self.path, marker, refresh=not self._lockless)
            return
        self._deep_check()
        if not self._lockless:
            kvguard.write_marker(self.path)

    def _deep_check(self) -> None:
        """Verify the whole file in a child process: a damaged file kills the child, not us."""
        import subprocess  # only here: most opens trust the file, and need not pay for it

        code = "import sys; from cargohold.kv import walk_all; walk_all(sys.argv[1], lock=sys.argv[2] == 'lock')"
        try:
            proc = subprocess.run([sys.executable, "-c", code, self.path, "nolock" if self._lockless else "lock"],
                                  capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Unavailable(f"cannot verify metadata database {self.path!r}: {exc}") from None
        if proc.returncode == 0:
            return
        if proc.returncode < 0:
            sig = signal.Signals(-proc.returncode)
            if sig not in _CRASH_SIGNALS:
                raise Unavailable(f"verifying metadata database {self.path!r} was interrupted by {sig.name}")
            detail = f"reading it killed the verifying process with {sig.name}"
        else:
            detail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise Corrupted(f"metadata database {self.path!r} is damaged: {detail}. Nothing was changed")

    def _before_write(self) -> None:
        """Called under the writer lock before a write: the clean marker no longer describes the file."""
        if not self._marker_dropped:
            kvguard.drop_marker(self.path)
            self._marker_dropped = True

    def _mark_clean(self) -> None:
        """Last session out, every session since the last verification ended cleanly: record the file.

        A marker that is still there is left alone: if it no longer matches, something
        other than a cargohold session changed the file, and the next open must see that.
        """
        if kvguard.read_marker(self.path) is None:
            kvguard.write_marker(self.path)

    # -- transaction bookkeeping ------------------------------------------------

    def _leave(self) -> None:
        me = threading.get_ident()
        with self._mutex:
            count = self._active.get(me, 0) - 1
            if count > 0:
                self._active[me] = count
            else:  # (a transaction interrupted as it ended may come twice: see `Txn._finish`)
                self._active.pop(me, None)
            if self._resizing or self._closed:  # the only ones who wait for transactions to end
                self._cond.notify_all()

    def _resize(self, size: int) -> None:
        """Set the map size (0 adopts another process's) with no transaction of ours open."""
        me = threading.get_ident()
        with self._cond:
            if self._active.get(me):
                raise Unavailable(
                    f"the map of metadata database {self.path!r} must be remapped (it grew, here or in "
                    "another process), but this thread still holds a transaction of it: end that first"
                )
            while self._resizing:
                self._cond.wait()
            self._resizing = True
            try:
                while self._active:
                    self._cond.wait()
                self._env.set_mapsize(size)
            except lmdb.Error as exc:
                raise _translate(exc, self.path) from None
            finally:
                self._resizing = False
                self._cond.notify_all()

    def _begin(self, write: bool) -> "lmdb.Transaction":
        """Begin an LMDB transaction, counted in `_active` (`_leave` uncounts it) and held back
        while the map is being resized."""
        me = threading.get_ident()
        for _ in range(_ATTEMPTS):
            counted = False
            try:
                with self._mutex:  # inside the `try`: an interrupt as the mutex goes must count this out
                    while self._resizing and not self._active.get(me):
                        self._cond.wait()
                    if self._closed:
                        raise Unavailable(f"metadata database {self.path!r} is closed")
                    self._active[me] = self._active.get(me, 0) + 1
                    counted = True
                return self._env.begin(write=write)
            except lmdb.MapResizedError:
                self._leave()
                self._resize(0)
            except lmdb.Error as exc:
                self._leave()
                raise _translate(exc, self.path) from None
            except BaseException:
                if counted:
                    self._leave()
                raise
        raise Unavailable(f"metadata database {self.path!r} keeps being resized")

    def _grow_if_needed(self) -> None:
        """Double the map if it is more than half full (see the module docstring)."""
        if self._active.get(threading.get_ident()):
            return  # cannot remap under our own open transaction; MAP_FULL replay still applies
        info = self._env.info()
        used = (info["last_pgno"] + 1) * self._psize
        if used * 2 > info["map_size"]:
            self._resize(info["map_size"] * 2)
        elif used * 4 <= info["map_size"]:
            self._unchecked_writes = _UNCHECKED_WRITES

    # -- public ------------------------------------------------------------------

    def read(self) -> "Txn":
        """Begin a read transaction (a consistent snapshot)."""
        txn = Txn.__new__(Txn)  # as `write` does
        txn.__init__(self, write=False)
        return txn

    def write(self) -> "Txn":
        """Begin the write transaction (blocks while another writer runs); FailedPrecondition when read-only."""
        if self.readonly:
            self.require_writable()
        # Not ``return Txn(...)``: a signal's handler may run as a class call returns, and a
        # KeyboardInterrupt there would drop a transaction that holds the writer lock. A plain
        # function's return is no such point, and an interrupt inside `__init__` lets go of all.
        txn = Txn.__new__(Txn)
        txn.__init__(self, write=True)
        return txn

    def require_writable(self) -> None:
        """FailedPrecondition, saying why, if this environment is read-only."""
        if self.readonly:
            how = ("its directory is not writable by this process" if self._lockless
                   else "it was opened read-only")
            raise FailedPrecondition(f"metadata database {self.path!r} is read-only ({how}): this call writes")

    @property
    def map_size(self) -> int:
        return self._env.info()["map_size"]

    @property
    def closed(self) -> bool:
        return self._closed

    def entries(self, table: str) -> int:
        with self.read() as txn:
            return txn.count(table)

    def usage(self) -> tuple[int, int]:
        """(bytes of the data file, bytes its live pages take): their difference is free pages,
        what `compact` gives back."""
        with self.read() as txn:
            pages = 2 + sum(_pages(txn._txn.stat(db)) for db in self._dbs.values())
            pages += _pages(self._env.stat())
            psize = self._env.stat()["psize"]
        return os.path.getsize(self._data), pages * psize

    def compact(self, timeout: float = 10.0, holders: Optional[Callable[[], list]] = None) -> tuple[int, int]:
        """Rewrite the data file compacted (LMDB's compacting copy) and swap it in; returns the file's
        bytes before and after.

        The swap needs the environment to itself: it takes the writer lock (no writer in any
        process), holds back this process's new transactions and waits for its open ones,
        then waits until no other process has the environment open (the sessions lock,
        `kvguard.Sessions.alone`), up to `timeout` seconds in all; else Unavailable, and
        nothing changed. The copy is written beside the file, synced, and renamed over it:
        a crash leaves the old file or the new one, never neither. The clean marker is
        dropped before the rename and written for the new file after it. `holders()` names the
        other processes for the message (pids), when the caller knows them.
        """
        deadline = time.monotonic() + timeout
        try:
            lock = self._writer_lock.exclusive(timeout=timeout)
            lock.__enter__()
        except Unavailable:
            raise Unavailable(f"cannot compact metadata database {self.path!r}: a write transaction "
                              f"stayed open for {timeout} s") from None
        try:
            self._hold_back(deadline)
            try:
                try:
                    with self._sessions.alone(max(0.0, deadline - time.monotonic())):
                        return self._swap_compacted()
                except Unavailable:
                    pids = holders() if holders is not None else []
                    who = f" (pid {', '.join(map(str, pids))})" if pids else ""
                    raise Unavailable(f"cannot compact metadata database {self.path!r}: another process has it "
                                      f"open{who}; close it and try again") from None
            finally:
                with self._cond:
                    self._resizing = False
                    self._cond.notify_all()
        finally:
            lock.__exit__(None, None, None)

    def _hold_back(self, deadline: float) -> None:
        """Hold back new transactions of this process and wait for the open ones (as `_resize` does)."""
        me = threading.get_ident()
        with self._cond:
            if self._active.get(me):
                raise FailedPrecondition(f"cannot compact metadata database {self.path!r} while this thread "
                                         "holds a transaction of it")
            while self._resizing:
                self._cond.wait()
            self._resizing = True
            while self._active:
                left = deadline - time.monotonic()
                if left <= 0 or not self._cond.wait(left):
                    if self._active:
                        self._resizing = False
                        self._cond.notify_all()
                        raise Unavailable(f"cannot compact metadata database {self.path!r}: transactions of "
                                          "this process stayed open")

    def _swap_compacted(self) -> tuple[int, int]:
        data = self._data
        before = os.path.getsize(data)
        tmp = os.path.join(self.path, COMPACT_FILE)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                self._env.copyfd(fd, compact=True)
                os.fsync(fd)
            finally:
                os.close(fd)
        except (OSError, lmdb.Error) as exc:
            _unlink_quietly(tmp)
            if isinstance(exc, lmdb.Error):
                raise _translate(exc, self.path) from None
            raise Unavailable(f"cannot write the compacted copy of {self.path!r}: {exc}") from None
        kvguard.drop_marker(self.path)
        map_size = self._env.info()["map_size"]
        self._env.close()
        try:
            os.replace(tmp, data)
            kvguard.sync_dir(self.path)
        except OSError as exc:
            _unlink_quietly(tmp)
            raise Unavailable(f"cannot swap in the compacted copy of {self.path!r}: {exc}") from None
        finally:
            self._reopen(map_size)
        after = os.path.getsize(data)
        kvguard.write_marker(self.path)
        self._marker_dropped = False
        return before, after

    def _reopen(self, map_size: int) -> None:
        """Map the data file again after a swap (the writer lock is ours, no transaction is open)."""
        _, tables, max_readers, names = self._settings
        self._env = self._open(map_size, tables, max_readers)
        self._check_size()
        txn = self._env.begin(write=True)
        try:
            self._dbs = {name: self._env.open_db(name.encode(), txn=txn, create=True) for name in names}
            txn.commit()
        except BaseException:
            txn.abort()
            raise

    def close(self) -> None:
        """Close the environment once every open transaction has ended."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            while self._active:
                self._cond.wait()
            self._flush_before_close()
            self._env.close()
        self._writer_lock.close()
        self._sessions.end(self._mark_clean)

    def release_pages(self) -> None:
        """Give back this process's resident pages of the data file's map (Linux: madvise
        MADV_DONTNEED on a shared file mapping). Nothing is lost: the pages stay in the page
        cache and a later read maps them again. Used by reads of a whole table (`Txn.scan`)."""
        madvise = _libc_madvise()
        if madvise is None:
            return
        data = os.path.realpath(os.path.join(self.path, "data.mdb"))
        try:
            with open("/proc/self/maps") as maps:
                ranges = [line.split(None, 1)[0] for line in maps if line.rstrip("\n").endswith(" " + data)]
        except OSError:
            return
        for span in ranges:
            low, high = (int(part, 16) for part in span.split("-"))
            madvise(low, high - low, _MADV_DONTNEED)

    # -- durability (durable=False: containerd's no_sync) ------------------------------

    def sync(self) -> None:
        """Flush every commit so far to disk: what a non-durable environment's last commit
        left in memory is durable once this returns (harmless when durable)."""
        try:
            self._env.sync(True)
        except lmdb.Error as exc:
            raise _translate(exc, self.path) from None

    def _flush_before_close(self) -> None:
        """A non-durable environment's last commit goes to disk before the close: the clean
        marker written after it must describe the file as it will stay."""
        if not self.durable and not self.readonly:
            self.sync()


_MADVISE: list = []
"""libc's madvise once looked up (ctypes loads on first use: no start-up pays for it)."""


def _libc_madvise():
    """libc's madvise, or None where there is none to call (not Linux, no ctypes)."""
    if not _MADVISE:
        _MADVISE.append(_find_madvise())
    return _MADVISE[0]


def _find_madvise():
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.madvise
    except (ImportError, OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    fn.restype = ctypes.c_int
    return fn


_MADV_DONTNEED = 4


def check_durable(durable: object) -> bool:
    """`durable` as `Env` takes it: InvalidArgument unless a bool."""
    if not isinstance(durable, bool):
        raise InvalidArgument(f"durable must be True or False, not {durable!r}")
    return durable



def _redo(txn, journal: list) -> None:
    """Apply a transaction's journal of writes to a fresh LMDB transaction (after the map grew)."""
    for op, db, key, value in journal:
        if op == "put":
            txn.put(key, value, db=db)
        else:
            txn.delete(key, db=db)


def _pages(stat: dict) -> int:
    return stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def walk_all(path: str, *, lock: bool = True) -> None:
    """Verify an environment entirely (run in a child process by `Env._deep_check`).

    First py-lmdb's offline verifier checks every invariant LMDB relies on
    (pages, trees, overflow extents, the free list) reading the file with
    read(2); only a file that passes is handed to LMDB, whose every key and
    value is then read. Exits with a one-line reason on the first problem.
    Without `lock`, LMDB runs without its lock file (a directory this process
    cannot write; no session can be open meanwhile, see `Env`).
    """
    from lmdb import verify

    try:
        problems = verify.verify(path)
    except (verify.VerifyError, OSError) as exc:
        sys.exit(f"not a readable LMDB data file: {exc}")
    if problems:
        more = f" (and {len(problems) - 3} more problems)" if len(problems) > 3 else ""
        sys.exit("damaged structure: " + "; ".join(problems[:3]) + more)
    try:
        for _ in range(_ATTEMPTS):
            try:
                env = lmdb.open(path, subdir=True, readonly=True, max_dbs=64, lock=lock)
                break
            except lmdb.MapResizedError:
                continue
        else:
            sys.exit("the database kept being resized while it was verified")
        for _ in range(_ATTEMPTS):
            try:
                txn = env.begin()
                break
            except lmdb.MapResizedError:
                env.set_mapsize(0)  # another process grew the map: adopt its size
        else:
            sys.exit("the database kept being resized while it was verified")
        with txn:
            names = [key for key, _ in txn.cursor()]
            for name in names:
                db = env.open_db(name, txn=txn, create=False)
                for key, value in txn.cursor(db=db):
                    len(key) + len(value)
        env.close()
    except lmdb.Error as exc:
        sys.exit(f"{type(exc).__name__}: {exc}")


class TableFile(NamedTuple):
    """One table of a read snapshot, as LMDB lays it out in the data file (`Txn.table_file`)."""

    path: str
    """The data file."""
    page_size: int
    record: bytes
    """The table's entry in LMDB's main database (its tree's root page, depth and counts)."""
    table: str


_MISSING = object()
"""The handle of a table a read-only environment does not have: it reads as empty."""


class _ReadGate:
    """``writer.lock`` held shared, through a read-only descriptor, by each read transaction of a
    lockless read-only environment: cargohold writers hold it exclusive while they write."""

    def __init__(self, path: str) -> None:
        self.path = path

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            yield  # never written by cargohold: no writer to hold off
            return
        except OSError as exc:
            raise Unavailable(f"cannot lock {self.path!r} to read the metadata database: {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)


class Txn:
    """A read or write transaction; a context manager that commits on success."""

    __slots__ = ("_env", "write", "_txn", "_journal", "_lock_cm", "_writer", "_done", "_open", "committed")

    def __init__(self, env: Env, *, write: bool) -> None:
        self._env = env
        self.write = write
        self._journal: Optional[list] = [] if write else None
        self._lock_cm = None
        self._writer: Optional[int] = None
        """The writer lock's hold (`FileLock.acquire_exclusive`), while this write transaction has it."""
        self._done = False
        self._open = False
        self.committed = False
        """LMDB has committed it: from then on nothing takes it back, whatever interrupts the rest."""
        if write:
            self._writer = env._writer_lock.acquire_exclusive()
            try:
                if not env._marker_dropped:
                    env._before_write()
                if env._unchecked_writes:
                    env._unchecked_writes -= 1
                else:
                    env._grow_if_needed()
                self._txn = env._begin(True)
            except BaseException:
                env._writer_lock.release(self._writer)
                self._writer = None
                raise
        else:
            if env._read_gate is not None:
                self._lock_cm = env._read_gate.shared()
                self._lock_cm.__enter__()
            try:
                self._txn = env._begin(False)
            except BaseException:
                if self._lock_cm is not None:
                    self._lock_cm.__exit__(None, None, None)
                raise
        self._open = True

    def __enter__(self) -> "Txn":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def _db(self, table: str):
        try:
            return self._env._dbs[table]
        except KeyError:
            raise InvalidArgument(f"unknown table {table!r}") from None

    def _replay(self) -> None:
        """After MDB_MAP_FULL: abort, double the map, redo every write so far."""
        self._txn.abort()
        self._open = False
        self._env._leave()
        self._env._resize(self._env.map_size * 2)
        self._txn = self._env._begin(True)
        self._open = True
        try:
            _redo(self._txn, self._journal)
        except lmdb.MapFullError:
            return self._replay()

    def _guard(self, fn, *args, **kwargs):
        if self._done:
            raise Unavailable("transaction already finished")
        while True:
            try:
                return fn(*args, **kwargs)
            except lmdb.MapFullError:
                if not self.write:
                    raise Error("metadata map full during a read") from None
                self._replay()
            except lmdb.Error as exc:
                raise _translate(exc, self._env.path) from None

    def _again(self, exc: lmdb.Error, fn):
        """`fn` once more under `_guard`, after the direct call failed with `exc`: a full map is
        grown (the transaction replayed) first, as `_guard` would have."""
        if isinstance(exc, lmdb.MapFullError) and self.write and not self._done:
            self._replay()
        return self._guard(fn)

    def _require_write(self) -> None:
        if not self.write:
            raise InvalidArgument("write attempted in a read-only transaction")

    # get, put and delete try LMDB directly first; an lmdb error (a full map, a finished
    # transaction) goes to `_again`. They pass LMDB's arguments by position (get: key, default,
    # db; put: key, value, dupdata, overwrite, append, db; delete: key, value, db): a keyword
    # argument makes every call build a dict, a quarter of the cost of a put.

    def get(self, table: str, key: bytes) -> Optional[bytes]:
        db = self._env._dbs.get(table)
        if db is None:
            db = self._db(table)
        if db is _MISSING:
            return None
        try:
            return self._txn.get(key, None, db)
        except lmdb.Error as exc:
            return self._again(exc, lambda: self._txn.get(key, None, db))

    def put(self, table: str, key: bytes, value: bytes, *, overwrite: bool = True) -> bool:
        """Store value at key; with overwrite=False return False if key exists."""
        if not self.write:
            self._require_write()
        if len(key) > MAX_KEY_SIZE:
            raise InvalidArgument(f"key of {len(key)} bytes exceeds the {MAX_KEY_SIZE}-byte limit")
        db = self._env._dbs.get(table)
        if db is None:
            db = self._db(table)
        try:
            done = self._txn.put(key, value, False, overwrite, False, db)
        except lmdb.Error as exc:
            done = self._again(exc, lambda: self._txn.put(key, value, False, overwrite, False, db))
        if done:
            self._journal.append(("put", db, key, value))
        return done

    def delete(self, table: str, key: bytes) -> bool:
        if not self.write:
            self._require_write()
        db = self._env._dbs.get(table)
        if db is None:
            db = self._db(table)
        try:
            done = self._txn.delete(key, b"", db)
        except lmdb.Error as exc:
            done = self._again(exc, lambda: self._txn.delete(key, b"", db))
        if done:
            self._journal.append(("del", db, key, None))
        return done

    def scan(self, table: str, prefix: bytes = b"", *, start: Optional[bytes] = None,
             release_every: int = 0) -> Iterator[tuple[bytes, bytes]]:
        """Yield (key, value) in key order for keys starting with prefix (from `start` if given).

        The iterator must be consumed before the transaction ends or writes to
        the same table: materialise it (list) when writing while iterating.
        With `release_every`, a scan of a whole table gives the map's pages
        back after every that many rows (`Env.release_pages`), so that reading
        the table does not keep it resident in this process.
        """
        db = self._db(table)
        if db is _MISSING:
            return
        cursor = self._guard(lambda: self._txn.cursor(db=db))
        first = start if start is not None else prefix
        if not self._guard(lambda: cursor.set_range(first)):
            return
        rows = 0
        try:
            for key, value in cursor.iternext():
                if prefix and not key.startswith(prefix):
                    return
                yield key, value
                if release_every:
                    rows += 1
                    if rows % release_every == 0:
                        self._env.release_pages()
        except lmdb.Error as exc:
            raise _translate(exc, self._env.path) from None
        finally:
            if release_every:
                self._env.release_pages()

    def rows_from(self, table: str, start: bytes, *, values: bool = True) -> Iterator:
        """The rows of `table` from `start` to its end: (key, value) pairs, or keys without `values`.

        For callers that stop by themselves: no per-row work here at all (`scan` checks a
        prefix at every row). Read it inside `translated()`.
        """
        db = self._db(table)
        cursor = self._guard(lambda: self._txn.cursor(db=db))
        if not self._guard(lambda: cursor.set_range(start)):
            return iter(())
        return cursor.iternext(keys=True, values=values)

    @contextlib.contextmanager
    def translated(self) -> Iterator[None]:
        """Report LMDB's errors raised in the block (reading `rows_from`) as cargohold errors."""
        try:
            yield
        except lmdb.Error as exc:
            raise _translate(exc, self._env.path) from None

    def keys(self, table: str, prefix: bytes = b"") -> list[bytes]:
        """The keys starting with prefix, in key order (one cursor walk, no values read)."""
        db = self._db(table)
        if db is _MISSING:
            return []
        try:
            cursor = self._txn.cursor(db)
        except lmdb.Error as exc:
            cursor = self._again(exc, lambda: self._txn.cursor(db))
        found = []
        try:
            if cursor.set_range(prefix):
                for key in cursor.iternext(True, False):
                    if not key.startswith(prefix):
                        break
                    found.append(key)
        except lmdb.Error as exc:
            raise _translate(exc, self._env.path) from None
        return found

    def has_prefix(self, table: str, prefix: bytes) -> bool:
        for _ in self.scan(table, prefix):
            return True
        return False

    def delete_prefix(self, table: str, prefix: bytes) -> int:
        """Delete every key starting with prefix; return how many."""
        keys = self.keys(table, prefix)
        for key in keys:
            self.delete(table, key)
        return len(keys)

    def table_file(self, table: str) -> Optional[TableFile]:
        """Where a read transaction's snapshot of `table` lies in the data file, for a reader of
        LMDB's pages (`cargohold.gc.load`); None in a write transaction (its changes are not in
        the file until it commits) or for a table the environment does not have."""
        db = self._db(table)
        if self.write or db is _MISSING:
            return None
        record = self._guard(lambda: self._txn.get(table.encode()))
        if record is None:
            return None
        return TableFile(self._env._data, self._guard(lambda: self._txn.stat(db))["psize"], bytes(record), table)

    def count(self, table: str) -> int:
        db = self._db(table)
        if db is _MISSING:
            return 0
        return self._guard(lambda: self._txn.stat(db))["entries"]

    def commit(self, undo: Optional[Callable[[], None]] = None) -> None:
        """Commit; if that fails, `undo` runs (see `abort`) and the error is raised."""
        if self._done:
            return
        replayed = False
        try:
            try:
                self._txn.commit()
            except lmdb.MapFullError:
                if not self.write:
                    raise Error("metadata map full during a read") from None
                replayed = True
                self._replay()
                self._guard(lambda: self._txn.commit())
            except lmdb.Error as exc:
                raise _translate(exc, self._env.path) from None
        except BaseException as exc:
            if replayed or isinstance(exc, (lmdb.Error, Error)) or not _finished(self._txn):
                self._finish(abort=True, undo=undo)
                raise
            # Else a KeyboardInterrupt raised as LMDB's commit returned (a signal's handler runs at
            # the first check after the call): the commit stands, and is reported as it is; taking
            # it back, or running `undo` for what committed, is not possible.
        self.committed = True
        self._finish(abort=False)

    def abort(self, undo: Optional[Callable[[], None]] = None) -> None:
        """Abort; `undo` (the caller's filesystem undo steps) runs while the writer lock is still
        held, so that no other writer sees a state that neither committed nor was taken back."""
        if not self._done:  # after a commit interrupted as it let go, only the letting go is left
            self._finish(abort=not self.committed, undo=None if self.committed else undo)

    def _finish(self, abort: bool, undo: Optional[Callable[[], None]] = None) -> None:
        self._done = True
        try:
            if abort:
                self._abort(undo)
        finally:
            try:
                if self._open:
                    self._open = False
                    try:
                        self._env._leave()
                    except BaseException:  # interrupted as it began: count it out all the same
                        self._env._leave()
                        raise
            finally:  # the locks go even if what came before was interrupted
                self._journal = None
                if self._writer is not None:
                    self._env._writer_lock.release(self._writer)
                    self._writer = None
                elif self._lock_cm is not None:
                    self._lock_cm.__exit__(None, None, None)
                    self._lock_cm = None

    def _abort(self, undo: Optional[Callable[[], None]]) -> None:
        """Abort the LMDB transaction, then run the caller's undo steps (before any lock goes)."""
        if self._open:
            self._txn.abort()
        if undo is not None:
            undo()

    # -- nested transactions (savepoints, group commit) --------------------------------

    def child(self) -> "Txn":
        """A write transaction nested in this one (LMDB's child transaction).

        It sees this transaction's writes; its own reach this one only when
        it commits, and vanish when it aborts. This transaction must not be
        used while the child is open. Commit or abort the child before this one.
        """
        self._require_write()
        if self._done:
            raise Unavailable("transaction already finished")
        child = _Child.__new__(_Child)  # as `Env.write` does
        child.__init__(self)
        return child


class _Child(Txn):
    """A nested write transaction: no locks of its own, its journal joins the parent's on commit."""

    __slots__ = ("_parent",)

    def __init__(self, parent: Txn) -> None:
        self._env = parent._env
        self.write = True
        self._journal = []
        self._lock_cm = None
        self._writer = None
        self._done = False
        self._open = False
        self.committed = False
        self._parent = parent
        self._txn = self._begin_child()
        self._open = True

    def _begin_child(self) -> "lmdb.Transaction":
        try:
            return self._env._env.begin(write=True, parent=self._parent._txn)
        except lmdb.Error as exc:
            raise _translate(exc, self._env.path) from None

    def _replay(self) -> None:
        """After MDB_MAP_FULL: the parent replays (growing the map), then this child redoes its writes."""
        self._txn.abort()
        self._open = False
        self._parent._replay()
        self._txn = self._begin_child()
        self._open = True
        try:
            _redo(self._txn, self._journal)
        except lmdb.MapFullError:
            return self._replay()

    def commit(self, undo: Optional[Callable[[], None]] = None) -> None:
        if self._done:
            return
        try:
            try:
                self._txn.commit()
            except lmdb.Error as exc:
                self._again(exc, lambda: self._txn.commit())
        except BaseException as exc:
            if isinstance(exc, (lmdb.Error, Error)) or not _finished(self._txn):
                self._finish(abort=True, undo=undo)
                raise
            # an interrupt as LMDB's commit returned: the child's writes are in its parent (see `Txn.commit`)
        self.committed = True
        self._parent._journal.extend(self._journal)
        self._finish(abort=False)

    def _finish(self, abort: bool, undo: Optional[Callable[[], None]] = None) -> None:
        self._done = True
        try:
            if abort:
                self._abort(undo)
        finally:
            self._open = False
            self._journal = None


def _finished(txn: "lmdb.Transaction") -> bool:
    """Whether LMDB has ended `txn` (committed or aborted it): it refuses every use then."""
    try:
        txn.id()
    except lmdb.Error:
        return True
    return False


def open_env(path: str, tables: Sequence[str], *, metadata: Optional[str] = None,
             map_size: Optional[int] = None, readonly: bool = False, durable: bool = True):
    """The metadata engine: LMDB at `path`, or the one the `metadata` URL names (`cargohold.engines`)."""
    if not metadata:
        return Env(path, tables, map_size=map_size, readonly=readonly, durable=durable)
    from .engines import open_engine

    return open_engine(metadata, tables, readonly=readonly)
