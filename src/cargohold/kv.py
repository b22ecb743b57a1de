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
  doubles it first; a write that still hits MDB_MAP_FULL is aborted, the map
  is doubled and the transaction's journal of writes is replayed. Resizing
  must not race transactions of this process (LMDB remaps the file), so it
  waits for the other threads' open transactions to end and holds new ones
  back meanwhile; this is the only moment a reader can delay a writer.
* Another process's growth shows up as MDB_MAP_RESIZED when a transaction
  begins; the map is then adopted the same way and the begin retried.

Every lmdb exception is turned into a `cargohold.errors` class.

Damage: LMDB trusts its pages, and a damaged page can abort the process. So
an environment whose data file changed since a cargohold process last closed
it cleanly (a crash, a copy, a truncation, an edit) is first walked entirely
by a child process; if the child dies or fails, opening raises Corrupted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from typing import Iterator, Optional, Sequence

import lmdb

from .errors import Corrupted, Error, InvalidArgument, Unavailable
from .locks import FileLock

DEFAULT_MAP_SIZE = 256 << 20
MAX_KEY_SIZE = 511


def _translate(exc: lmdb.Error, path: str) -> Error:
    if isinstance(exc, (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.InvalidError,
                        lmdb.BadRslotError, lmdb.PanicError, lmdb.VersionMismatchError,
                        lmdb.InvalidParameterError)):
        return Corrupted(f"metadata database {path!r} is damaged or unreadable: {exc}")
    if isinstance(exc, lmdb.BadValsizeError):
        return InvalidArgument(f"key too long for the metadata database: {exc}")
    if isinstance(exc, lmdb.ReadersFullError):
        return Unavailable(f"too many concurrent readers of {path!r}: {exc}")
    return Error(f"metadata database {path!r}: {exc}")


class Env:
    """One LMDB environment with named tables."""

    def __init__(self, path: str, tables: Sequence[str], *, map_size: Optional[int] = None,
                 max_readers: int = 512) -> None:
        self.path = os.fspath(path)
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as exc:
            raise Unavailable(f"cannot create metadata directory {self.path!r}: {exc}") from None
        data = os.path.join(self.path, "data.mdb")
        existing = os.path.getsize(data) if os.path.exists(data) else 0
        size = max(map_size or DEFAULT_MAP_SIZE, 1 << 20)
        while size < existing * 2:
            size *= 2
        self._writer_lock = FileLock(os.path.join(self.path, "writer.lock"))
        self._cond = threading.Condition()
        self._active: dict[int, int] = {}
        self._resizing = False
        self._closed = False
        try:
            self._env = lmdb.open(self.path, subdir=True, map_size=size, max_dbs=len(tables) + 2,
                                  max_readers=max_readers, readahead=False, meminit=False, lock=True)
        except lmdb.Error as exc:
            raise _translate(exc, self.path) from None
        try:
            self._check_size(data)
            if existing and not self._clean_marker_matches(data):
                self._deep_check()
            with self._writer_lock.exclusive():
                self._dbs = {name: self._env.open_db(name.encode(), create=True) for name in tables}
        except lmdb.Error as exc:
            self._env.close()
            raise _translate(exc, self.path) from None
        except Error:
            self._env.close()
            raise

    def _check_size(self, data: str) -> None:
        # A truncated data file would fault (SIGBUS) on first access: refuse it.
        info = self._env.info()
        psize = self._env.stat()["psize"]
        needed = (info["last_pgno"] + 1) * psize
        actual = os.path.getsize(data)
        if actual < needed:
            raise Corrupted(
                f"metadata database {self.path!r} is truncated: {actual} bytes on disk, "
                f"{needed} bytes in use"
            )

    def _marker_path(self) -> str:
        return os.path.join(self.path, "clean.json")

    @staticmethod
    def _fingerprint(data: str) -> dict:
        st = os.stat(data)
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}

    def _clean_marker_matches(self, data: str) -> bool:
        try:
            with open(self._marker_path()) as f:
                return json.load(f) == self._fingerprint(data)
        except (OSError, ValueError):
            return False

    def _write_clean_marker(self) -> None:
        data = os.path.join(self.path, "data.mdb")
        tmp = self._marker_path() + f".{os.getpid()}"
        try:
            with open(tmp, "w") as f:
                json.dump(self._fingerprint(data), f)
            os.replace(tmp, self._marker_path())
        except OSError:
            pass  # only costs a verification at the next open

    def _deep_check(self) -> None:
        """Walk every page in a child process: a damaged file kills the child, not us."""
        code = "import sys; from cargohold.kv import walk_all; walk_all(sys.argv[1])"
        try:
            proc = subprocess.run([sys.executable, "-c", code, self.path], capture_output=True,
                                  text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Unavailable(f"cannot verify metadata database {self.path!r}: {exc}") from None
        if proc.returncode != 0:
            detail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
            raise Corrupted(f"metadata database {self.path!r} is damaged: {detail}")
        self._write_clean_marker()

    # -- transaction bookkeeping ------------------------------------------------

    def _enter(self) -> None:
        me = threading.get_ident()
        with self._cond:
            while self._resizing and not self._active.get(me):
                self._cond.wait()
            if self._closed:
                raise Unavailable(f"metadata database {self.path!r} is closed")
            self._active[me] = self._active.get(me, 0) + 1

    def _leave(self) -> None:
        me = threading.get_ident()
        with self._cond:
            count = self._active[me] - 1
            if count:
                self._active[me] = count
            else:
                del self._active[me]
            self._cond.notify_all()

    def _resize(self, size: int) -> None:
        """Set the map size (0 adopts another process's) with no transaction of ours open."""
        me = threading.get_ident()
        with self._cond:
            if self._active.get(me):
                raise Unavailable(
                    "the metadata map must grow, but this thread still holds an open transaction"
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
        for _ in range(8):
            self._enter()
            try:
                return self._env.begin(write=write)
            except lmdb.MapResizedError:
                self._leave()
                self._resize(0)
            except lmdb.Error as exc:
                self._leave()
                raise _translate(exc, self.path) from None
            except BaseException:
                self._leave()
                raise
        raise Unavailable(f"metadata database {self.path!r} keeps being resized")

    def _grow_if_needed(self) -> None:
        if self._active.get(threading.get_ident()):
            return  # cannot remap under our own open transaction; MAP_FULL replay still applies
        info = self._env.info()
        used = (info["last_pgno"] + 1) * self._env.stat()["psize"]
        if used * 2 > info["map_size"]:
            self._resize(info["map_size"] * 2)

    # -- public ------------------------------------------------------------------

    def read(self) -> "Txn":
        """Begin a read transaction (a consistent snapshot)."""
        return Txn(self, write=False)

    def write(self) -> "Txn":
        """Begin the write transaction (blocks while another writer runs)."""
        return Txn(self, write=True)

    @property
    def map_size(self) -> int:
        return self._env.info()["map_size"]

    @property
    def closed(self) -> bool:
        return self._closed

    def entries(self, table: str) -> int:
        with self.read() as txn:
            return txn.count(table)

    def close(self) -> None:
        """Close the environment once every open transaction has ended."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            while self._active:
                self._cond.wait()
            self._env.close()
        self._writer_lock.close()
        self._write_clean_marker()


def walk_all(path: str) -> None:
    """Read every key and value of every table (run in a child by `Env._deep_check`)."""
    try:
        env = lmdb.open(path, subdir=True, readonly=True, max_dbs=64, lock=True)
        with env.begin() as txn:
            names = [key for key, _ in txn.cursor()]
        for name in names:
            db = env.open_db(name, create=False)
            with env.begin(db=db) as txn:
                for key, value in txn.cursor():
                    len(key) + len(value)
        env.close()
    except lmdb.Error as exc:
        sys.exit(f"{type(exc).__name__}: {exc}")


class Txn:
    """A read or write transaction; a context manager that commits on success."""

    __slots__ = ("_env", "write", "_txn", "_journal", "_lock_cm", "_done", "_open")

    def __init__(self, env: Env, *, write: bool) -> None:
        self._env = env
        self.write = write
        self._journal: Optional[list] = [] if write else None
        self._lock_cm = None
        self._done = False
        self._open = False
        if write:
            self._lock_cm = env._writer_lock.exclusive()
            self._lock_cm.__enter__()
            try:
                env._grow_if_needed()
                self._txn = env._begin(True)
            except BaseException:
                self._lock_cm.__exit__(None, None, None)
                raise
        else:
            self._txn = env._begin(False)
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
        for op, db, key, value in self._journal:
            try:
                if op == "put":
                    self._txn.put(key, value, db=db)
                else:
                    self._txn.delete(key, db=db)
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

    def _require_write(self) -> None:
        if not self.write:
            raise InvalidArgument("write attempted in a read-only transaction")

    def get(self, table: str, key: bytes) -> Optional[bytes]:
        db = self._db(table)
        return self._guard(lambda: self._txn.get(key, db=db))

    def put(self, table: str, key: bytes, value: bytes, *, overwrite: bool = True) -> bool:
        """Store value at key; with overwrite=False return False if key exists."""
        self._require_write()
        if len(key) > MAX_KEY_SIZE:
            raise InvalidArgument(f"key of {len(key)} bytes exceeds the {MAX_KEY_SIZE}-byte limit")
        db = self._db(table)
        done = self._guard(lambda: self._txn.put(key, value, db=db, overwrite=overwrite))
        if done:
            self._journal.append(("put", db, key, value))
        return done

    def delete(self, table: str, key: bytes) -> bool:
        self._require_write()
        db = self._db(table)
        done = self._guard(lambda: self._txn.delete(key, db=db))
        if done:
            self._journal.append(("del", db, key, None))
        return done

    def scan(self, table: str, prefix: bytes = b"", *, start: Optional[bytes] = None
             ) -> Iterator[tuple[bytes, bytes]]:
        """Yield (key, value) in key order for keys starting with prefix (from `start` if given).

        The iterator must be consumed before the transaction ends or writes to
        the same table: materialise it (list) when writing while iterating.
        """
        db = self._db(table)
        cursor = self._guard(lambda: self._txn.cursor(db=db))
        first = start if start is not None else prefix
        if not self._guard(lambda: cursor.set_range(first)):
            return
        try:
            if not prefix:
                yield from cursor.iternext()
                return
            for key, value in cursor.iternext():
                if not key.startswith(prefix):
                    return
                yield key, value
        except lmdb.Error as exc:
            raise _translate(exc, self._env.path) from None

    def keys(self, table: str, prefix: bytes = b"") -> list[bytes]:
        return [key for key, _ in self.scan(table, prefix)]

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

    def count(self, table: str) -> int:
        db = self._db(table)
        return self._guard(lambda: self._txn.stat(db))["entries"]

    def commit(self) -> None:
        if self._done:
            return
        try:
            self._guard(lambda: self._txn.commit())
        except BaseException:
            self._finish(abort=True)
            raise
        self._finish(abort=False)

    def abort(self) -> None:
        if not self._done:
            self._finish(abort=True)

    def _finish(self, abort: bool) -> None:
        self._done = True
        try:
            if abort and self._open:
                self._txn.abort()
        finally:
            if self._open:
                self._open = False
                self._env._leave()
            self._journal = None
            if self._lock_cm is not None:
                self._lock_cm.__exit__(None, None, None)
                self._lock_cm = None
