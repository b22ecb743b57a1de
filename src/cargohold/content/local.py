"""The local content store: a content-addressed blob store on disk (containerd's
``content/local``), the backend behind every namespace's ``ns.content``.

Layout under ``root``::

    blobs/<alg>/<hex>        committed blobs (sha256, sha384, sha512), read-only
    ingest/<sha256(ref)>/    one directory per ingest, named by a hash of its ref
                             so that no ref can name a path outside the root
        lock                 flocked by the writer that has the ingest open
        meta                 JSON {"ref", "total", "alg", "started", "updated"} (ns),
                             written in place when the ingest starts (a partial
                             one reads as none), later replaced atomically (write
                             a temporary file, rename), never flushed: one a
                             crash or power cut lost is written anew by the next
                             writer, which keeps the data
        data                 the bytes written so far
    cleanup.lock             see `cargohold.content.store` (commits vs. GC cleanup)

Writers stream: each ``write`` goes to ``data`` and the running hash, so memory
stays bounded whatever the blob size. An ingest resumes after a close, a
reopen or a crash from the bytes in ``data`` (re-hashed in 1 MiB chunks). A
commit verifies size and digest, fsyncs the data, links it to its blob path
and fsyncs the directory (or leaves that flush to its caller, which flushes the
directory once for all the blobs of a transaction before it records them): a
blob is either absent or complete. The ingest goes only after that
(`LocalWriter.publish` leaves it to the caller, who records the blob first), so
a crash in between leaves both, sharing one file; a writer resuming such an
ingest copies the file before writing on.

Locking, as owned by this module: a writer holds an exclusive flock on its
ingest's ``lock`` file for as long as it is open; a second writer on the same
ref, in this or any other process, gets Unavailable (the lock is taken
without waiting). The kernel drops the lock when its holder dies, so a killed
writer leaves a resumable ingest, never a stuck ref. Since an ingest directory
is removed while its lock is held, whoever locks checks afterwards that the
file it locked is still the one at the path, and starts over otherwise.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import json
import os
import stat
import time
from json.encoder import encode_basestring_ascii as _json_text
from typing import BinaryIO, Callable, Iterator, NamedTuple, Optional

from .. import filters
from ..errors import AlreadyExists, Corrupted, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from ..kvguard import sync_dir
from ..locks import FileLock, writer_lock_lost
from ..model import Freed, Info, Status
from ..timeutil import from_ns
from ..validation import DIGEST_ALGORITHMS, validate_digest, validate_key, validate_size

CHUNK = 1 << 20
"""Bytes read at a time when hashing or copying: the bound on a writer's memory."""

_LOCK_ATTEMPTS = 8

ABANDONED_AFTER = 60.0
"""Seconds after which an ingest directory without a ``meta`` is debris of a crash."""


class IngestBusy(Unavailable):
    """The ingest ref is open in another writer (of this or another process)."""


def _os_errors(method):
    """Report an operating-system failure (no space, no permission...) as Unavailable."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except OSError as exc:
            raise Unavailable(f"content store {method.__name__} failed: {exc}") from None

    return wrapper


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _hash_file(path: str, hasher, limit: Optional[int] = None) -> int:
    """Feed the file (its first `limit` bytes) to hasher in chunks; return the byte count."""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    total = 0
    with open(path, "rb", buffering=0) as f:
        while limit is None or total < limit:
            want = CHUNK if limit is None else min(CHUNK, limit - total)
            n = f.readinto(view[:want])
            if not n:
                break
            hasher.update(view[:n])
            total += n
    return total


def info_adaptor(info: Info) -> filters.Adaptor:
    """Filter fields of a blob: ``digest`` and ``labels.<key>`` (containerd's AdaptInfo)."""
    return filters.adaptor({"digest": info.digest}, {"labels": info.labels})


def _status_adaptor(status: Status) -> filters.Adaptor:
    return filters.adaptor({"ref": status.ref})


class _IngestLock:
    """The exclusive flock on one ingest directory's ``lock`` file (a bare descriptor: a file
    object would cost two more system calls to open; dropping the lock unreleased still closes it)."""

    __slots__ = ("_fd", "made")

    def __init__(self, fd: int, made: bool = False) -> None:
        self._fd = fd
        self.made = made
        """Whether `acquire` created the directory it locked: it held only this lock file then,
        unless someone who knows the ref locked it in between."""

    @classmethod
    def acquire(cls, path: str, ref: str, *, create: bool = True) -> Optional["_IngestLock"]:
        """Lock the ingest at `path`, creating the directory if `create`.

        Unavailable if another writer holds it; None if the directory is gone
        and `create` is false.
        """
        lock_path = f"{path}/lock"
        for _ in range(_LOCK_ATTEMPTS):
            made = False
            if create:
                try:
                    os.mkdir(path)
                    made = True
                except FileExistsError:
                    pass
                except FileNotFoundError:
                    os.makedirs(path, exist_ok=True)  # the ingest directory itself is gone
            try:
                fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666)
            except FileNotFoundError:
                if not create:
                    return None
                continue  # removed between mkdir and open
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise IngestBusy(f"ingest ref {ref!r} is open in another writer") from None
            except BaseException:
                os.close(fd)
                raise
            try:
                current = os.stat(lock_path)
                mine = os.fstat(fd)
            except FileNotFoundError:
                current = mine = None
            except BaseException:
                os.close(fd)
                raise
            if current is not None and (current.st_ino, current.st_dev) == (mine.st_ino, mine.st_dev):
                return cls(fd, made)
            os.close(fd)  # we locked a file that was removed meanwhile: start over
            if not create:
                return None
        raise Unavailable(f"ingest ref {ref!r} keeps being removed while it is locked")

    def release(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)  # closing the descriptor drops the flock

    def __del__(self, _close: Callable[[int], None] = os.close) -> None:
        if self._fd >= 0:
            _close(self._fd)


class LocalStore:
    """A content-addressed blob store in a directory (see the module docstring)."""

    def __init__(self, root: "str | os.PathLike[str]") -> None:
        self.root = os.path.abspath(os.fspath(root))
        self._blobs = os.path.join(self.root, "blobs")
        self._ingests = os.path.join(self.root, "ingest")
        try:
            os.makedirs(self._blobs, exist_ok=True)
            os.makedirs(self._ingests, exist_ok=True)
        except OSError as exc:
            raise Unavailable(f"cannot create content store {self.root!r}: {exc}") from None
        self.cleanup_lock = FileLock(os.path.join(self.root, "cleanup.lock"))
        """Held shared by commits, exclusive by the GC cleanup (`cargohold.content.store`)."""

    def __repr__(self) -> str:
        return f"LocalStore({self.root!r})"

    def close(self) -> None:
        self.cleanup_lock.close()

    # -- paths -------------------------------------------------------------------------

    def blob_path(self, digest: str) -> str:
        """Where the blob of a (validated) digest lives."""
        validate_digest(digest)
        return self._blob_file(digest)

    def _blob_file(self, digest: str) -> str:
        """`blob_path` of a digest known to be valid."""
        algorithm, _, encoded = digest.partition(":")
        return f"{self._blobs}/{algorithm}/{encoded}"

    def _ingest_path(self, ref: str) -> str:
        return f"{self._ingests}/{hashlib.sha256(ref.encode()).hexdigest()}"

    def ingest_dir(self, ref: str) -> str:
        """The directory of the ingest `ref` (present or not): ``ingest/<sha256(ref)>``."""
        return self._ingest_path(ref)

    # -- blobs -------------------------------------------------------------------------

    @_os_errors
    def info(self, digest: str) -> Info:
        """Size and times of a blob; NotFound if absent. The backend keeps no labels."""
        path = self.blob_path(digest)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise NotFound(f"content {digest} not found") from None
        return Info(digest, st.st_size, {}, from_ns(st.st_mtime_ns), from_ns(st.st_mtime_ns))

    @_os_errors
    def _size(self, digest: str) -> Optional[int]:
        """The size of the blob of a digest known to be valid, None if absent (`info` without the Info)."""
        try:
            return os.stat(self._blob_file(digest)).st_size
        except FileNotFoundError:
            return None

    def exists(self, digest: str) -> bool:
        return os.path.exists(self.blob_path(digest))

    @_os_errors
    def open(self, digest: str) -> BinaryIO:
        """A binary, seekable file object on the blob; NotFound if absent."""
        path = self.blob_path(digest)
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise NotFound(f"content {digest} not found") from None

    def read(self, digest: str) -> bytes:
        """The whole blob."""
        with self.open(digest) as f:
            return f.read()

    @_os_errors
    def delete(self, digest: str) -> int:
        """Remove a blob and return its size; NotFound if absent. Readers that have it open keep reading."""
        path = self.blob_path(digest)
        try:
            size = os.lstat(path).st_size
            os.unlink(path)
        except FileNotFoundError:
            raise NotFound(f"content {digest} not found") from None
        return size

    def walk(self, *filter_args: str) -> Iterator[Info]:
        """Every blob (matching the filters: ``digest``, ``labels``), skipping stray files."""
        matcher = filters.parse(*filter_args)
        for algorithm in sorted(DIGEST_ALGORITHMS):
            directory = os.path.join(self._blobs, algorithm)
            try:
                names = sorted(os.listdir(directory))
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise Unavailable(f"content store walk failed: {exc}") from None
            for name in names:
                digest = f"{algorithm}:{name}"
                try:
                    validate_digest(digest)
                    info = self.info(digest)
                except (InvalidArgument, NotFound):
                    continue  # not a blob, or deleted while walking
                if matcher.match(info_adaptor(info)):
                    yield info

    # -- ingests -----------------------------------------------------------------------

    @_os_errors
    def writer(self, ref: str, *, total: int = 0, expected: Optional[str] = None,
               algorithm: Optional[str] = None, fresh: bool = False) -> "LocalWriter":
        """Open (or resume) the ingest `ref`.

        AlreadyExists if `expected` is already stored; Unavailable if the ref is
        open in another writer. The digest algorithm is `algorithm`, else that of
        `expected`, else sha256. A resumed ingest keeps its bytes unless `total`
        or the algorithm differ from what it was started with; then it restarts.
        ``fresh=True`` says the caller made `ref` up for this call, so that nobody
        else knows it: a directory this call creates then holds nothing to
        resume or clear, and the writer skips looking.
        """
        validate_key(ref, "ingest ref")
        validate_size(total, "total")
        if expected:
            validate_digest(expected, "expected digest")
            if self.exists(expected):
                raise AlreadyExists(f"content {expected} already exists")
        algorithm = algorithm or (expected.partition(":")[0] if expected else "sha256")
        if algorithm not in DIGEST_ALGORITHMS:
            raise InvalidArgument(f"unsupported digest algorithm {algorithm!r}")
        path = self._ingest_path(ref)
        lock = _IngestLock.acquire(path, ref)
        try:
            return LocalWriter._open(self, path, ref, lock, total, algorithm, fresh)
        except BaseException:
            lock.release()
            raise

    @_os_errors
    def status(self, ref: str) -> Status:
        """Progress of the ingest `ref`; NotFound if there is none."""
        validate_key(ref, "ingest ref")
        path = self._ingest_path(ref)
        status = _read_status(path)
        if status is None:
            status = _status_without_meta(path, ref)
        if status is None:
            raise NotFound(f"ingest ref {ref!r} not found")
        if status.ref != ref:
            raise Corrupted(f"ingest directory of ref {ref!r} records ref {status.ref!r}")
        return status

    @_os_errors
    def statuses(self, *filter_args: str) -> list[Status]:
        """Every ingest (matching the filters: ``ref``), in no particular order."""
        matcher = filters.parse(*filter_args)
        found = []
        for path in self._ingest_dirs():
            status = _read_status(path)
            if status is not None and matcher.match(_status_adaptor(status)):
                found.append(status)
        return found

    @_os_errors
    def abort(self, ref: str) -> None:
        """Discard the ingest `ref`; NotFound if there is none, Unavailable while it is open."""
        validate_key(ref, "ingest ref")
        path = self._ingest_path(ref)
        if not os.path.isdir(path):
            raise NotFound(f"ingest ref {ref!r} not found")
        claim = self.claim(ref)
        if _read_meta(path) is None and not os.path.exists(os.path.join(path, "data")):
            claim.discard()
            raise NotFound(f"ingest ref {ref!r} not found")
        claim.discard()

    @_os_errors
    def claim(self, ref: str) -> "IngestClaim":
        """Lock the ingest `ref` (Unavailable while it is open) to discard it later, or not."""
        validate_key(ref, "ingest ref")
        path = self._ingest_path(ref)
        return IngestClaim(path, _IngestLock.acquire(path, ref))

    def clean_ingests(self, keep: "set[str]", *, now: Optional[float] = None, freed: Optional[Freed] = None,
                      errors: Optional[list] = None, deferred: Optional[list] = None,
                      owned: Optional[Callable[[str], bool]] = None) -> list[str]:
        """Discard every ingest whose ref is not in `keep`, skipping open ones.

        Directories a crash left without a ``meta`` are discarded once they are
        older than `ABANDONED_AFTER` seconds at `now` (seconds since the epoch,
        default: the system time; a younger one may be a writer between
        creating its directory and locking it). Ingests that are kept are not
        even locked, so a writer resuming one is never turned away. Returns the
        refs (or directory names) discarded; `freed` counts them with their
        bytes, `errors` receives one line per ingest that could not be removed
        (without `errors`, the first failure raises Unavailable), `deferred` the
        path of each one left for a later call (open in a writer, or too young).
        With `owned`, only ingests whose ref it accepts are candidates (never a
        directory without ``meta``, whose ref is unknown). A directory without a
        readable ``meta`` is kept if it is that of a ref iterating `keep` yields
        (its meta was lost, e.g. in a power cut: it is written without fsync).
        """
        now = time.time() if now is None else now
        try:
            paths = self._ingest_dirs()
        except OSError as exc:
            raise Unavailable(f"content store clean_ingests failed: {exc}") from None
        removed = []
        kept_dirs = self._dirs_of(keep)
        for path in paths:
            if os.path.basename(path) in kept_dirs and _read_meta(path) is None:
                continue
            try:
                name = self._clean_ingest(path, keep, now, freed, deferred, owned)
            except (OSError, Unavailable) as exc:
                if errors is None:
                    raise Unavailable(f"content store clean_ingests failed: {exc}") from None
                errors.append(f"cannot remove ingest directory {path!r}: {exc}")
                continue
            if name is not None:
                removed.append(name)
        return removed

    def _clean_ingest(self, path: str, keep: "set[str]", now: float, freed: Optional[Freed],
                      deferred: Optional[list], owned: Optional[Callable[[str], bool]]) -> Optional[str]:
        meta = _read_meta(path)
        if meta is not None and meta["ref"] in keep:
            return None
        if owned is not None and (meta is None or not owned(meta["ref"])):
            return None
        lock = None
        if meta is not None or _abandoned(path, now):
            try:
                lock = _IngestLock.acquire(path, path, create=False)
            except Unavailable:
                pass  # open in a writer
            if lock is None and not os.path.isdir(path):
                return None  # removed meanwhile
        if lock is None:
            if deferred is not None:
                deferred.append(path)
            return None
        meta = _read_meta(path)  # again, now that nobody can change it
        if meta is not None and meta["ref"] in keep:
            lock.release()
            return None
        size = _bytes_in(path)
        IngestClaim(path, lock).discard()
        if freed is not None:
            freed.add(size)
        return meta["ref"] if meta else os.path.basename(path)

    @_os_errors
    def ingest_leftovers(self, keep: "set[str]", *, now: Optional[float] = None) -> list[tuple[str, int]]:
        """(ref or directory name, bytes) of each ingest `clean_ingests` would discard now; changes nothing."""
        now = time.time() if now is None else now
        found = []
        kept_dirs = self._dirs_of(keep)
        for path in self._ingest_dirs():
            meta = _read_meta(path)
            if meta is None and os.path.basename(path) in kept_dirs:
                continue
            if _orphan(path, meta, keep, now) and not _is_open(path):
                found.append((meta["ref"] if meta else os.path.basename(path), _bytes_in(path)))
        return found

    def _dirs_of(self, refs: "set[str]") -> set[str]:
        return {os.path.basename(self._ingest_path(ref)) for ref in refs}

    def _ingest_dirs(self) -> list[str]:
        try:
            names = os.listdir(self._ingests)
        except FileNotFoundError:
            return []
        return [os.path.join(self._ingests, n) for n in sorted(names) if len(n) == 64]


_INGEST_FILES = ("data", "data.tmp", "meta", "meta.tmp", "lock")
"""What an ingest directory may hold, in the order a discard removes it."""

_TIDY_INGEST_FILES = ("data", "meta", "lock")
"""What it holds when no temporary file was ever made in it (`LocalWriter._tidy`)."""


class IngestClaim:
    """A locked ingest directory: `discard` removes it, `release` leaves it."""

    __slots__ = ("_path", "_lock", "_files")

    def __init__(self, path: str, lock: _IngestLock, files: tuple = _INGEST_FILES) -> None:
        self._path = path
        self._lock = lock
        self._files = files

    @property
    def path(self) -> str:
        """The ingest's directory."""
        return self._path

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @_os_errors
    def discard(self) -> None:
        """Remove the ingest. ``data`` goes first: bytes without a ``meta`` are those of a live ingest
        whose meta was lost (see `LocalWriter._open`), and a directory without either is abandoned."""
        if self._lock is None:
            return
        try:
            for name in self._files:
                _unlink(f"{self._path}/{name}")
            try:
                os.rmdir(self._path)
            except OSError as exc:
                # ENOTEMPTY: a new writer took the ref after the lock file went; it is theirs now.
                if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY):
                    raise
        finally:
            self.release()


class Published(NamedTuple):
    """What `LocalWriter.publish` did: the blob `digest` is in place (`created`: by this call, else it
    was there already) and `ingest` is the ingest, still locked, to discard once the blob is
    recorded, or to give back with `undo`."""

    digest: str
    created: bool
    ingest: IngestClaim
    blob: str
    mode: int
    """The mode the ingest's data had before it became the blob (read-only)."""

    def undo(self) -> None:
        """The blob was not recorded: remove it again if this publication created it, and release
        the ingest, resumable as it was. Only while nothing can have recorded the blob since (the
        caller still holds the metadata writer lock: `Transaction.on_abort`); after the lock was
        lost (`locks.writer_lock_lost`) another writer may have recorded it, so it stays."""
        try:
            if self.created and not writer_lock_lost():
                data = os.path.join(self.ingest.path, "data")
                mine, there = os.stat(data), os.stat(self.blob)
                if (mine.st_ino, mine.st_dev) == (there.st_ino, there.st_dev):
                    os.unlink(self.blob)
                    os.chmod(data, self.mode)
        finally:
            self.ingest.release()


def _orphan(path: str, meta: Optional[dict], keep: "set[str]", now: float) -> bool:
    return meta["ref"] not in keep if meta is not None else _abandoned(path, now)


def _abandoned(path: str, now: float) -> bool:
    """Whether a directory without meta is older than `ABANDONED_AFTER` at `now`."""
    try:
        return now - os.stat(path).st_mtime > ABANDONED_AFTER
    except FileNotFoundError:
        return False


def _is_open(path: str) -> bool:
    """Whether a writer holds the ingest's lock (tested without creating anything)."""
    try:
        fd = os.open(os.path.join(path, "lock"), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's lock
    return False


def _bytes_in(path: str) -> int:
    """The sizes of the files directly in an ingest directory, added up."""
    total = 0
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            total += entry.stat(follow_symlinks=False).st_size
        except FileNotFoundError:
            continue
    return total


def _read_meta(path: str) -> Optional[dict]:
    """The ingest's meta record, or None if missing or damaged (the ingest then restarts)."""
    try:
        with open(os.path.join(path, "meta"), "rb") as f:
            meta = json.loads(f.read())
    except (OSError, ValueError):
        return None
    if not (isinstance(meta, dict) and isinstance(meta.get("ref"), str)
            and isinstance(meta.get("total"), int) and meta.get("alg") in DIGEST_ALGORITHMS
            and isinstance(meta.get("started"), int) and isinstance(meta.get("updated"), int)):
        return None
    return meta


def _write_meta(path: str, meta: dict, *, absent: bool = False) -> None:
    """Replace the ingest's meta record atomically: a temporary file renamed over it.

    With `absent` (the caller holds the ingest's lock and has made sure there is no meta), it is
    written in place: a reader takes a partial one (no prefix of a JSON object parses) for none,
    which is what it saw until then, and the data file beside it stands for (`LocalWriter._open`).
    """
    data = _meta_json(meta) if absent else json.dumps(meta).encode()
    if absent:
        try:
            fd = os.open(f"{path}/meta", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            pass
        else:
            _write_all(fd, data)
            return
    tmp = os.path.join(path, "meta.tmp")
    _write_all(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666), data)
    os.replace(tmp, os.path.join(path, "meta"))


def _meta_json(meta: dict) -> bytes:
    """``json.dumps(meta).encode()`` of a meta made by `LocalWriter._open` (its keys, in its order),
    without the encoder's set-up."""
    return (f'{{"ref": {_json_text(meta["ref"])}, "total": {meta["total"]:d}, "alg": {_json_text(meta["alg"])}, '
            f'"started": {meta["started"]:d}, "updated": {meta["updated"]:d}}}').encode()


_HASHES = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}


def _hasher(algorithm: str):
    """A new hash object of a digest algorithm (``hashlib.new`` without its look-up, for the usual ones)."""
    make = _HASHES.get(algorithm)
    return make() if make is not None else hashlib.new(algorithm)


def _write_all(fd: int, data: bytes) -> None:
    """Write all of data to fd, then close it."""
    try:
        done = 0
        while done < len(data):
            done += os.write(fd, data[done:])
    finally:
        os.close(fd)


def _own_data(path: str) -> None:
    """Make an ingest's data file its own and writable again where a commit left it shared with
    its blob (`LocalWriter.publish`, then a failed recording or a crash): appending must not
    change the blob. The copy is flushed before it replaces the shared file."""
    st = os.stat(path)
    if st.st_nlink > 1:
        tmp = path + ".tmp"
        with open(path, "rb") as src, open(tmp, "wb") as dst:
            while chunk := src.read(CHUNK):
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, path)
    elif not st.st_mode & stat.S_IWUSR:
        os.chmod(path, stat.S_IMODE(st.st_mode) | stat.S_IWUSR)


def _status_without_meta(path: str, ref: str) -> Optional[Status]:
    """The status of an ingest whose meta was lost, from its data file alone (see `LocalWriter._open`)."""
    try:
        st = os.stat(os.path.join(path, "data"))
    except FileNotFoundError:
        return None
    return Status(ref, st.st_size, 0, "", from_ns(st.st_mtime_ns), from_ns(st.st_mtime_ns))


def _read_status(path: str) -> Optional[Status]:
    meta = _read_meta(path)
    if meta is None:
        return None
    try:
        st = os.stat(os.path.join(path, "data"))
    except FileNotFoundError:
        return None
    updated = max(meta["updated"], st.st_mtime_ns)
    return Status(meta["ref"], st.st_size, meta["total"], "", from_ns(meta["started"]), from_ns(updated))


class LocalWriter:
    """An open ingest: writes stream to disk and to the running hash.

    Closing (or leaving the ``with`` block) without committing keeps the
    ingest for a later writer to resume; `commit` and `close` release the ref.
    """

    def __init__(self, store: LocalStore, path: str, ref: str, lock: _IngestLock, fd: int,
                 hasher, offset: int, meta: dict, created: bool) -> None:
        self._store = store
        self._path = path
        self.ref = ref
        self._lock: Optional[_IngestLock] = lock
        self._fd = fd
        """The data file, opened to append (-1 once closed)."""
        self._hash = hasher
        self._offset = offset
        self._meta = meta
        self._updated = meta["updated"]
        self._synced = False
        """Whether every byte written is flushed already (`sync`): commit then flushes no more."""
        self.created = created
        """True if this writer started the ingest (nothing was there to resume)."""
        self._tidy = False
        """Whether the directory has never held a temporary file (it was new, and this writer
        wrote none): a discard then removes only what is there."""

    @classmethod
    def _open(cls, store: LocalStore, path: str, ref: str, lock: _IngestLock, total: int,
              algorithm: str, fresh: bool = False) -> "LocalWriter":
        data_path = f"{path}/data"
        # A ref only this writer knows, in the directory it has just made: nothing there but the lock.
        new = fresh and lock.made
        meta = None if new else _read_meta(path)
        if meta is None and not new and os.path.exists(data_path):
            # The meta was lost (it is written without fsync) but not the bytes: nothing else leaves
            # data without meta (a restart or a discard removes data first). They are this ref's.
            now = time.time_ns()
            meta = {"ref": ref, "total": total, "alg": algorithm, "started": now, "updated": now}
            _write_meta(path, meta)
        if meta is not None and meta["ref"] != ref:
            raise Corrupted(f"ingest directory of ref {ref!r} records ref {meta['ref']!r}")
        resumable = (meta is not None and meta["alg"] == algorithm and os.path.exists(data_path)
                     and (not total or not meta["total"] or total == meta["total"]))
        hasher = _hasher(algorithm)
        if resumable:
            _own_data(data_path)
            offset = _hash_file(data_path, hasher)
            if total and not meta["total"]:
                meta["total"] = total
                _write_meta(path, meta)
            fd = os.open(data_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666)
            if os.fstat(fd).st_size != offset:  # cannot change under our lock
                os.close(fd)
                raise Corrupted(f"ingest data of ref {ref!r} changed while it was hashed")
        else:
            now = time.time_ns()
            meta = {"ref": ref, "total": total, "alg": algorithm, "started": now, "updated": now}
            # Data first: bytes left without a meta are taken for this ingest's. A new file: the old
            # one may be a blob's too (see `_own_data`). Never leave a meta that describes other bytes.
            if not new:
                _unlink(data_path)
                _unlink(os.path.join(path, "meta"))
            fd = os.open(data_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o666)
            try:
                _write_meta(path, meta, absent=True)
            except BaseException:
                os.close(fd)
                raise
            offset = 0
        writer = cls(store, path, ref, lock, fd, hasher, offset, meta, not resumable)
        writer._tidy = new
        return writer

    def __del__(self, _close: Callable[[int], None] = os.close) -> None:
        if getattr(self, "_fd", -1) >= 0:
            _close(self._fd)  # dropped without closing: the descriptor goes, the ingest stays

    # -- context manager ---------------------------------------------------------------

    def __enter__(self) -> "LocalWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def _require_open(self) -> int:
        if self._fd < 0:
            raise FailedPrecondition(f"writer for ingest ref {self.ref!r} is closed")
        return self._fd

    # -- writing -----------------------------------------------------------------------

    @_os_errors
    def write(self, data) -> int:
        """Append bytes (any bytes-like object); returns how many."""
        fd = self._require_open()
        try:
            view = memoryview(data)
        except TypeError:
            raise InvalidArgument(f"write needs a bytes-like object, not {type(data).__name__}") from None
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        done = 0
        try:
            while done < len(view):
                done += os.write(fd, view[done:])
        finally:
            self._hash.update(view[:done])
            self._offset += done
            self._synced = self._synced and not done
            self._updated = time.time_ns()
        return done

    @property
    def offset(self) -> int:
        """How many bytes the ingest holds."""
        return self._offset

    def digest(self) -> str:
        """Digest of the bytes written so far."""
        return f"{self._meta['alg']}:{self._hash.hexdigest()}"

    @_os_errors
    def status(self) -> Status:
        return Status(self.ref, self._offset, self._meta["total"], "",
                      from_ns(self._meta["started"]), from_ns(self._updated))

    @_os_errors
    def truncate(self, size: int = 0) -> None:
        """Cut the ingest back to its first `size` bytes (re-hashed from disk)."""
        fd = self._require_open()
        validate_size(size, "truncate size")
        if size > self._offset:
            raise InvalidArgument(f"cannot truncate ingest ref {self.ref!r} to {size} bytes: "
                                  f"only {self._offset} were written")
        os.ftruncate(fd, size)
        self._synced = False
        hasher = _hasher(self._meta["alg"])
        if size:
            _hash_file(os.path.join(self._path, "data"), hasher, size)
        self._hash = hasher
        self._offset = size
        self._updated = time.time_ns()

    @_os_errors
    def sync(self) -> None:
        """Flush the written bytes to stable storage."""
        os.fsync(self._require_open())
        self._synced = True

    @_os_errors
    def commit(self, size: int = 0, expected: Optional[str] = None) -> str:
        """Verify and publish the blob; returns its digest. The writer is closed afterwards.

        FailedPrecondition on a size (when `size` is non-zero) or digest mismatch:
        nothing is stored and the ingest stays resumable. AlreadyExists if the
        blob is already stored: the ingest is discarded.
        """
        published = self._publish(size, expected)
        published.ingest.discard()
        if not published.created:
            raise AlreadyExists(f"content {published.digest} already exists")
        return published.digest

    @_os_errors
    def publish(self, size: int = 0, expected: Optional[str] = None, *,
                flush_dir: Optional[Callable[[str], None]] = None) -> "Published":
        """Verify the bytes and link them into place as the blob, keeping the ingest (locked) for the
        caller to discard once the blob is recorded, or to release, resumable as it was, if the
        recording fails: until then (and after a crash) the blob and the ingest share one file.
        The writer is closed afterwards. FailedPrecondition as for `commit`, the ingest left as it was.
        The new link is flushed before this returns, or, with `flush_dir`, handed to
        ``flush_dir(directory)``, whose caller flushes the directory before it records the blob.
        """
        return self._publish(size, expected, flush_dir)

    def _publish(self, size: int, expected: Optional[str],
                 flush_dir: Optional[Callable[[str], None]] = None) -> "Published":
        validate_size(size, "size")
        if expected:
            validate_digest(expected, "expected digest")
        fd = self._require_open()
        try:
            if not self._synced:
                os.fsync(fd)
            st = os.fstat(fd)
            actual = st.st_size
            if actual != self._offset:
                raise Corrupted(f"ingest data of ref {self.ref!r} holds {actual} bytes, "
                                f"{self._offset} were written")
            if size and size != actual:
                raise FailedPrecondition(f"commit of ingest ref {self.ref!r}: {actual} bytes written, "
                                         f"expected size {size}")
            digest = self.digest()
            if expected and expected != digest:
                raise FailedPrecondition(f"commit of ingest ref {self.ref!r}: content has digest "
                                         f"{digest}, expected {expected}")
            target = self._store._blob_file(digest)
            directory = target.rpartition("/")[0]
            data = f"{self._path}/data"
            created = False
            mode = stat.S_IMODE(st.st_mode)
            os.fchmod(fd, 0o444)
            try:
                try:
                    os.link(data, target)
                except FileNotFoundError:
                    if os.path.isdir(directory):
                        raise
                    # the algorithm's first blob: its directory, flushed into the blobs directory
                    os.makedirs(directory, exist_ok=True)
                    sync_dir(os.path.dirname(directory))
                    os.link(data, target)
                created = True
            except FileExistsError:
                os.fchmod(fd, mode)
            # Also when the blob was in place: a writer that linked it may have died before its flush.
            (flush_dir or sync_dir)(directory)
            lock, self._lock = self._lock, None
            return Published(digest, created, self._claim(lock), target, mode)
        finally:
            self.close()

    def close(self) -> None:
        """Release the ref, keeping the ingest resumable."""
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        os.close(fd)
        if self._meta["updated"] != self._updated and self._lock is not None:  # still ours, not committed
            self._meta["updated"] = self._updated
            self._tidy = False
            try:
                _write_meta(self._path, self._meta)
            except OSError:
                pass  # the data file's mtime still tells when it last changed
        self._release()

    @_os_errors
    def discard(self) -> None:
        """Close and remove the ingest (the caller abandons what it started)."""
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        os.close(fd)
        self._discard()

    def _discard(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            self._claim(lock).discard()

    def _claim(self, lock: _IngestLock) -> IngestClaim:
        return IngestClaim(self._path, lock, _TIDY_INGEST_FILES if self._tidy else _INGEST_FILES)

    def _release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()
