"""The etcd metadata engine: the `cargohold.kv` interface on an etcd v3 cluster.

Addressed by ``etcd://host:port[,host:port...]/<prefix>``, or over TLS by
``etcds://host:port,.../<prefix>[?cacert=<CA file>][&cert=<file>&key=<file>]``
(`client_options`). The tables of
`cargohold.schema` live under ``<prefix>/<table>/`` with their keys and values
unchanged; the engine's own keys sit under ``<prefix>!`` (outside every table).

* A read transaction sees one revision: the first read pins the cluster's
  current revision (a linearizable read, so it includes every commit that
  returned before it began) and every later read asks for that revision
  (serializable: any member that has applied it answers the same).
* Write transactions are serialised across every host by the writer lock
  ``<prefix>!writer``: a key created only if absent, bound to this process's
  lease (TTL `LEASE_TTL`), so a dead host's hold expires by itself. Writers
  queue for it first, in order (``<prefix>!writerq/``, etcd's lock-queue
  recipe, see `EtcdTxn._wait_turn`), so it goes to the writers of every host
  in the order they asked; one that has waited `LOCK_WAIT` seconds gives up
  with Unavailable. While it is held nothing else commits, so reads at the
  pinned revision are the latest.
* A write transaction commits with one etcd Txn whose compares are: the
  writer lock still has the revision we created it at (fencing: a holder
  whose lease expired, and whose lock someone else took, cannot commit), the
  commit counter ``<prefix>!commits`` unchanged since the pinned revision
  (no other commit happened), and the mod revision of every key read and of
  every range scanned (up to `MAX_COMPARES` of them). Its operations are the
  writes, a new counter value, this process's commit token and the deletion
  of the lock. A failed compare changes nothing and raises Unavailable.
* When the connection drops while a commit is in flight its outcome is
  settled by reading the commit token back.
* Every etcd request goes through etcd3gw (etcd's JSON gateway); a member
  that cannot be reached is skipped for the next one of the URL.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from base64 import b64decode, b64encode
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional, Sequence
from urllib.parse import parse_qsl, urlsplit

from etcd3gw import exceptions as etcd_errors
from etcd3gw.client import Etcd3Client

from ..errors import Error, FailedPrecondition, InvalidArgument, Unavailable
from ..locks import run_after_lock_loss

SCHEMES = {"etcd": "http", "etcds": "https"}
"""URL schemes and the protocol each reaches the members with."""
_TLS_OPTIONS = {"cacert": "ca_cert", "cert": "cert_cert", "key": "cert_key"}
"""URL query options and the etcd3gw client arguments they set."""
MAX_KEY_SIZE = 511
"""The same key limit as LMDB's, so both engines accept the same objects."""
REQUEST_LIMIT = 1572864
"""etcd's default ``--max-request-bytes``: one value must fit in one request."""
LEASE_TTL = 10
"""Seconds a dead process's writer lock outlives it."""
LOCK_WAIT = 60.0
"""Seconds a write transaction waits for the writer lock before Unavailable."""
MAX_COMPARES = 64
"""Read-set compares per commit beyond the lock and counter ones. etcd refuses a Txn with more
compares (or more operations in a branch) than its ``--max-txn-ops`` (default 128), so the read
set is cut there: the counter compare alone already makes the commit serializable (see
`EtcdTxn._compares`), the read set only checks it again, and a larger one is never refused."""
PAGE = 1000
REQUEST_TIMEOUT = 10.0
_ROUNDS = 3
"""Times every endpoint is tried before a request is Unavailable."""

_UNSET = object()


def _b64(data: bytes) -> str:
    return b64encode(data).decode("ascii")


def _unb64(text: Optional[str]) -> bytes:
    return b64decode(text) if text else b""


def prefix_end(key: bytes) -> bytes:
    """The smallest key greater than every key starting with `key` (etcd's range end)."""
    stripped = key.rstrip(b"\xff")
    if not stripped:
        return b"\x00"  # every key
    return stripped[:-1] + bytes([stripped[-1] + 1])


def parse_url(url: str) -> tuple[list[tuple[str, int]], str]:
    """(endpoints, prefix) of an ``etcd[s]://host:port,host:port/<prefix>[?options]`` URL
    (options: `client_options`); InvalidArgument otherwise."""
    if not isinstance(url, str):
        raise InvalidArgument(f"metadata URL must be a string, not {type(url).__name__}")
    if not url.isprintable() or " " in url:
        raise InvalidArgument(f"metadata URL {url!r} has spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.netloc:
        raise InvalidArgument(f"metadata URL {url!r} is not etcd://host:port[,host:port...]/<prefix> "
                              "(or etcds:// for TLS)")
    if parts.fragment:
        raise InvalidArgument(f"metadata URL {url!r} has a fragment; none is understood")
    client_options(url)
    prefix = parts.path.strip("/")
    if not prefix or not prefix.isprintable() or "!" in prefix:
        raise InvalidArgument(f"metadata URL {url!r} needs a printable prefix without '!' after the hosts")
    endpoints = []
    for item in parts.netloc.split(","):
        host, sep, port = item.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidArgument(f"metadata URL {url!r}: {item!r} is not host:port")
        endpoints.append((host, int(port)))
    return endpoints, prefix


def client_options(url: str) -> dict:
    """How etcd3gw reaches the members of the URL's cluster: ``etcd://`` over plain HTTP,
    ``etcds://`` over TLS, verified against the system's trust store or ``?cacert=<file>``, with
    a client certificate if ``cert=<file>&key=<file>`` are given. InvalidArgument for an option
    that is unknown, repeated, given without ``etcds://``, or names no readable file."""
    parts = urlsplit(url)
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise InvalidArgument(f"metadata URL {url!r} has a malformed query") from None
    options: dict[str, Any] = {"protocol": SCHEMES.get(parts.scheme, "http")}
    for name, value in pairs:
        if name not in _TLS_OPTIONS:
            raise InvalidArgument(f"metadata URL {url!r} has option {name!r}; only "
                                  f"{', '.join(sorted(_TLS_OPTIONS))} are understood (with etcds://)")
        if parts.scheme != "etcds":
            raise InvalidArgument(f"metadata URL {url!r}: option {name!r} needs etcds:// (TLS)")
        if _TLS_OPTIONS[name] in options:
            raise InvalidArgument(f"metadata URL {url!r} gives option {name!r} twice")
        if not value or not os.path.isfile(value) or not os.access(value, os.R_OK):
            raise InvalidArgument(f"metadata URL {url!r}: {name}={value!r} is not a readable file")
        options[_TLS_OPTIONS[name]] = value
    if ("cert_cert" in options) != ("cert_key" in options):
        raise InvalidArgument(f"metadata URL {url!r}: a client certificate needs both cert= and key=")
    return options


def _message(exc: etcd_errors.Etcd3Exception) -> str:
    """etcd's own error text (the gateway's JSON body), else what the client said."""
    detail = getattr(exc, "detail_text", None) or ""
    try:
        body = json.loads(detail)
        detail = body.get("error") or body.get("message") or detail
    except (ValueError, AttributeError):
        pass
    return " ".join(str(part) for part in (detail, *exc.args) if part) or type(exc).__name__


class Cluster:
    """Requests to the members of one cluster, moving to the next member when one is unreachable."""

    def __init__(self, url: str, endpoints: Sequence[tuple[str, int]]) -> None:
        self.url = url
        options = client_options(url)
        self._clients = [Etcd3Client(host=host, port=port, timeout=REQUEST_TIMEOUT, api_path="/v3/", **options)
                         for host, port in endpoints]
        self._per_request = {"verify": options["ca_cert"]} if "ca_cert" in options else {}
        """The URL's CA for every request: requests lets $REQUESTS_CA_BUNDLE override a session's."""
        self._current = 0

    def post(self, path: str, payload: dict) -> dict:
        """POST one gateway request, trying each member in turn; Unavailable when none answers."""
        last = ""
        for attempt in range(_ROUNDS * len(self._clients)):
            index = (self._current + attempt) % len(self._clients)
            client = self._clients[index]
            try:
                result = client.post(client.get_url(path), json=payload, **self._per_request)
            except (etcd_errors.ConnectionFailedError, etcd_errors.ConnectionTimeoutError,
                    etcd_errors.InternalServerError) as exc:
                last = _message(exc)
                if attempt + 1 >= len(self._clients):
                    time.sleep(min(0.05 * attempt, 0.5))  # a leader election takes about a second
                continue
            except etcd_errors.Etcd3Exception as exc:
                text = _message(exc)
                if "leader" in text or "timed out" in text or "unhealthy" in text:
                    last = text
                    time.sleep(min(0.05 * (attempt + 1), 0.5))
                    continue
                raise _translate(text, self.url) from None
            self._current = index
            return result
        raise Unavailable(f"etcd cluster {self.url!r} does not answer: {last}")

    def txn(self, compare: list, success: list, failure: Sequence = ()) -> dict:
        return self.post("/kv/txn", {"compare": compare, "success": success, "failure": list(failure)})

    def close(self) -> None:
        for client in self._clients:
            client.session.close()


def _translate(text: str, url: str) -> Error:
    if "too large" in text or "larger than max" in text:
        return InvalidArgument(f"the transaction exceeds the request size limit of etcd cluster {url!r}: {text}")
    if "too many operations" in text:
        return InvalidArgument(f"the transaction has more operations than etcd cluster {url!r} allows "
                               f"(its --max-txn-ops): {text}")
    if "compacted" in text:
        return Unavailable(f"the revision this transaction reads was compacted on etcd cluster {url!r}: {text}")
    return Unavailable(f"etcd cluster {url!r} refused a request: {text}")


class _Lease:
    """This process's lease, kept alive by a daemon thread; renewed if it ever expires."""

    def __init__(self, cluster: Cluster, ttl: int) -> None:
        self._cluster = cluster
        self._ttl = ttl
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.id = self._grant()
        self._thread = threading.Thread(target=self._keep_alive, name="cargohold-etcd-lease", daemon=True)
        self._thread.start()

    def _grant(self) -> int:
        return int(self._cluster.post("/lease/grant", {"TTL": self._ttl, "ID": 0})["ID"])

    def renew(self, old: int) -> int:
        """A live lease in place of `old`, which etcd no longer knows (expired or revoked)."""
        with self._lock:
            if self.id == old:
                self.id = self._grant()
            return self.id

    def _keep_alive(self) -> None:
        while not self._stop.wait(self._ttl / 3):
            try:
                result = self._cluster.post("/lease/keepalive", {"ID": self.id})
                if int(result.get("result", {}).get("TTL", 0)) <= 0:
                    with self._lock:  # expired: holds made under it are fenced off; new ones get a new lease
                        self.id = self._grant()
            except Error:
                continue

    def close(self) -> None:
        self._stop.set()
        try:
            self._cluster.post("/lease/revoke", {"ID": self.id})
        except Error:
            pass


class EtcdEnv:
    """The metadata tables under one prefix of one etcd cluster (the `cargohold.kv.Env` interface)."""

    def __init__(self, url: str, tables: Sequence[str], *, lease_ttl: int = LEASE_TTL,
                 lock_wait: float = LOCK_WAIT, readonly: bool = False) -> None:
        endpoints, prefix = parse_url(url)
        self.path = url
        self.readonly = bool(readonly)
        """Whether this process only reads (`cargohold.kv.Env.readonly`): writes are refused."""
        self.durable = True
        """A commit returns once a quorum has it on disk (etcd's raft log): always durable."""
        self.lock_wait = lock_wait
        self._root = prefix.encode()
        self._tables = {name: self._root + b"/" + name.encode() + b"/" for name in tables}
        self.lock_key = self._root + b"!writer"
        self.queue_key = self._root + b"!writerq/"
        self.counter_key = self._root + b"!commits"
        self._token_key = self._root + b"!commit/" + uuid.uuid4().hex.encode()
        self._cluster = Cluster(url, endpoints)
        self._threads = threading.Lock()
        """Serialises this process's writers, so they queue here rather than poll etcd."""
        self._cond = threading.Condition()
        self._active = 0
        self._closed = False
        self._holds = threading.local()
        try:
            self._lease = _Lease(self._cluster, lease_ttl)
        except BaseException:
            self._cluster.close()
            raise

    def table_prefix(self, table: str) -> bytes:
        try:
            return self._tables[table]
        except KeyError:
            raise InvalidArgument(f"unknown table {table!r}") from None

    def with_lease(self, request):
        """`request(lease id)`, once more with a fresh lease if etcd no longer knows ours."""
        lease = self._lease.id
        try:
            return request(lease)
        except Unavailable as exc:
            if "lease not found" not in str(exc):
                raise
        return request(self._lease.renew(lease))

    def lock(self, name: str) -> "EtcdLock":
        """A shared/exclusive lock of every host (the interface of `cargohold.locks.FileLock`)."""
        return EtcdLock(self, name)

    def held(self) -> list:
        """The lock keys this thread holds, as (key, create revision): a commit requires them all."""
        if not hasattr(self._holds, "keys"):
            self._holds.keys = []
        return self._holds.keys

    def read(self) -> "EtcdTxn":
        """Begin a read transaction (one revision of the cluster)."""
        return EtcdTxn(self, write=False)

    def write(self) -> "EtcdTxn":
        """Begin a write transaction (waits for the writer lock of every host)."""
        self.require_writable()
        return EtcdTxn(self, write=True)

    def require_writable(self) -> None:
        """FailedPrecondition if this process opened the metadata only to read (`cargohold.kv.Env`'s)."""
        if self.readonly:
            raise FailedPrecondition(f"metadata {self.path!r} was opened read-only: it cannot be written")

    def usage(self) -> tuple[int, int]:
        """LMDB's (file bytes, live bytes): etcd keeps and compacts its own files, so (0, 0)."""
        return 0, 0

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def map_size(self) -> int:
        return 0

    def entries(self, table: str) -> int:
        with self.read() as txn:
            return txn.count(table)

    def release_pages(self) -> None:
        """LMDB's: nothing of etcd is mapped into this process."""

    def sync(self) -> None:
        """LMDB's: every etcd commit is durable on a quorum when it returns."""

    def _enter(self) -> None:
        with self._cond:
            if self._closed:
                raise Unavailable(f"metadata database {self.path!r} is closed")
            self._active += 1

    def _leave(self) -> None:
        with self._cond:
            self._active -= 1
            self._cond.notify_all()

    def close(self) -> None:
        """Close once every open transaction has ended; revoking the lease drops any hold left."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            while self._active:
                self._cond.wait()
        self._lease.close()
        self._cluster.close()


class EtcdLock:
    """A reader/writer lock of every host: holders are keys under ``<prefix>!lock/<name>/``.

    Each acquisition creates a key bound to the process's lease (``s/`` for
    shared, ``x/`` for exclusive) and is granted once no earlier key blocks
    it: an exclusive one waits for every earlier key, a shared one for
    earlier exclusive ones. Requests are thus served in order, so writers
    cannot starve a collector. A dead host's keys go with its lease; a
    holder whose lease expired has lost the lock and its commits fail
    (`EtcdTxn` compares every key the thread holds).
    """

    def __init__(self, env: EtcdEnv, name: str) -> None:
        self._env = env
        self.path = f"{env.path} lock {name}"
        self._base = env._root + b"!lock/" + name.encode() + b"/"

    def _acquire(self, exclusive: bool, timeout: Optional[float]) -> tuple[bytes, int]:
        env = self._env
        key = self._base + (b"x/" if exclusive else b"s/") + uuid.uuid4().hex.encode()
        blockers = self._base if exclusive else self._base + b"x/"
        scope = {"key": _b64(blockers), "range_end": _b64(prefix_end(blockers)), "count_only": True}
        result = env.with_lease(lambda lease: env._cluster.txn(
            [], [{"request_put": {"key": _b64(key), "value": "", "lease": str(lease)}}, {"request_range": scope}]))
        rev = int(result["header"]["revision"])
        ahead = int(result["responses"][1]["response_range"].get("count", 0)) - exclusive
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.002
        try:
            while ahead > 0:
                if deadline is not None and time.monotonic() >= deadline:
                    raise Unavailable(f"lock {self.path!r} is held by another writer")
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
                # the earliest blocker (etcd applies no revision filter to count_only ranges)
                first = dict(scope, count_only=False, keys_only=True, limit="1", sort_order="ASCEND",
                             sort_target="CREATE")
                found = env._cluster.txn([], [{"request_range": first},
                                              {"request_range": {"key": _b64(key), "count_only": True}}])
                if not int(found["responses"][1]["response_range"].get("count", 0)):
                    raise Unavailable(f"lock {self.path!r} was lost while waiting for it (the lease expired)")
                earliest = found["responses"][0]["response_range"].get("kvs", [])
                ahead = int(bool(earliest) and int(earliest[0]["create_revision"]) < rev)
        except BaseException:
            self._release(key)
            raise
        return key, rev

    def _release(self, key: bytes) -> None:
        try:
            self._env._cluster.post("/kv/deleterange", {"key": _b64(key)})
        except Error:
            pass  # the lease expiry drops it

    @contextmanager
    def _hold(self, exclusive: bool, timeout: Optional[float]) -> Iterator[None]:
        key, rev = self._acquire(exclusive, timeout)
        held = self._env.held()
        held.append((key, rev))
        try:
            yield
        finally:
            held.remove((key, rev))
            self._release(key)

    def shared(self, timeout: Optional[float] = None):
        """Hold the lock shared (many holders at once, on any host)."""
        return self._hold(False, timeout)

    def exclusive(self, timeout: Optional[float] = None):
        """Hold the lock alone (no other holder on any host)."""
        return self._hold(True, timeout)

    def acquire_shared(self) -> Any:
        """Take the lock shared, as `cargohold.locks.FileLock.acquire_shared` does: returns the
        hold to hand to `release` (a write transaction takes ``wlock`` this way on any engine)."""
        hold = self._hold(False, None)
        hold.__enter__()
        return hold

    def release(self, hold: Any) -> None:
        """Let go of a hold `acquire_shared` returned."""
        hold.__exit__(None, None, None)

    def close(self) -> None:
        pass


def _kv(item: dict) -> tuple[bytes, bytes, int]:
    return _unb64(item.get("key")), _unb64(item.get("value")), int(item.get("mod_revision", 0))


class EtcdTxn:
    """A read or write transaction on `EtcdEnv`; a context manager that commits on success."""

    committed = False
    """`cargohold.kv.Txn.committed`: a commit that raises here committed nothing it must keep."""

    def __init__(self, env: EtcdEnv, *, write: bool) -> None:
        self._env = env
        self.write = write
        self._rev = 0
        self._done = False
        self._writes: dict[bytes, Optional[bytes]] = {}
        self._seen: dict[bytes, int] = {}
        self._ranges: list[tuple[bytes, bytes]] = []
        self._lock_rev = 0
        self._lease = 0
        self._queue_key = b""
        env._enter()
        if write:
            env._threads.acquire()
            try:
                self._take_lock()
            except BaseException:
                env._threads.release()
                env._leave()
                raise

    def __enter__(self) -> "EtcdTxn":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    # -- the writer lock ------------------------------------------------------------

    def _take_lock(self) -> None:
        """Take the writer lock at once if it is free and nobody queues for it (one request);
        else queue for it, wait for our turn and take it then (`_wait_turn`)."""
        env = self._env
        deadline = time.monotonic() + env.lock_wait
        self._queue_key = env.queue_key + uuid.uuid4().hex.encode()
        lock = _b64(env.lock_key)

        def attempt(lease: int) -> dict:
            join = {"request_put": {"key": _b64(self._queue_key), "value": "", "lease": str(lease)}}
            result = env._cluster.txn(
                [{"key": lock, "target": "CREATE", "result": "EQUAL", "create_revision": "0"},
                 {"key": _b64(env.queue_key), "range_end": _b64(prefix_end(env.queue_key)), "target": "CREATE",
                  "result": "EQUAL", "create_revision": "0"}],  # true of an empty range only
                [join, {"request_put": {"key": lock, "value": _b64(env._token_key), "lease": str(lease)}},
                 {"request_range": {"key": _b64(env.counter_key)}}],
                [join])
            result["lease"] = lease
            return result

        result = env.with_lease(attempt)
        if result.get("succeeded"):
            self._locked(result, 2)
            return
        try:
            self._wait_turn(int(result["header"]["revision"]), deadline)
            self._put_lock(deadline)
        except BaseException:
            self._leave_queue()
            raise

    def _locked(self, result: dict, counter: int) -> None:
        """Record the hold a successful lock request made (`counter`: the index of its counter read)."""
        self._rev = int(result["header"]["revision"])
        self._lock_rev = self._rev
        self._lease = result["lease"]
        kvs = result["responses"][counter]["response_range"].get("kvs", [])
        self._counter_rev = int(kvs[0]["mod_revision"]) if kvs else 0

    def _wait_turn(self, position: int, deadline: float) -> None:
        """Wait until no writer queued before us is left (etcd's lock-queue recipe).

        Every waiter has a key under ``<prefix>!writerq/`` bound to its lease;
        its create revision is its place in the queue. A waiter polls only the
        key of the waiter just ahead of it (the one with the highest create
        revision below its own) until that key is gone, then looks again: the
        one ahead may have left (done, timed out, or its host died and its
        lease expired) while others before it still wait. The writer lock then
        goes to writers of every host in the order they asked for it.
        """
        env = self._env
        ahead_of_us = {"key": _b64(env.queue_key), "range_end": _b64(prefix_end(env.queue_key)),
                       "max_create_revision": str(position - 1), "sort_order": "DESCEND",
                       "sort_target": "CREATE", "limit": "1", "keys_only": True}
        while True:
            kvs = env._cluster.post("/kv/range", ahead_of_us).get("kvs", [])
            if not kvs:
                return
            predecessor = {"key": kvs[0]["key"], "count_only": True}
            delay = 0.002
            while int(env._cluster.post("/kv/range", predecessor).get("count", 0)):
                if time.monotonic() >= deadline:
                    raise self._lock_timeout()
                time.sleep(delay)
                delay = min(delay * 2, 0.025)

    def _lock_timeout(self) -> Unavailable:
        env = self._env
        return Unavailable(f"the writer lock of {env.path!r} stayed held by another host for "
                           f"{env.lock_wait:g}s; nothing was changed")

    def _leave_queue(self) -> None:
        try:
            self._env._cluster.post("/kv/deleterange", {"key": _b64(self._queue_key)})
        except Error:
            pass  # the lease expiry drops it

    def _holds_lock(self) -> bool:
        """Whether the writer lock key is still the one this transaction took (False if unknown)."""
        try:
            kvs = self._env._cluster.txn([], [{"request_range": {"key": _b64(self._env.lock_key)}}]
                                         )["responses"][0]["response_range"].get("kvs", [])
        except Error:
            return False
        return bool(kvs) and int(kvs[0].get("mod_revision", 0)) == self._lock_rev

    def _put_lock(self, deadline: float) -> None:
        """Take the writer lock key itself; it is free once our turn came, unless a holder that
        never queued (or whose queue key went with an expired lease) still has it."""
        env = self._env
        key = _b64(env.lock_key)
        delay = 0.002
        while True:
            def attempt(lease: int) -> dict:
                result = env._cluster.txn(
                    [{"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
                    [{"request_put": {"key": key, "value": _b64(env._token_key), "lease": str(lease)}},
                     {"request_range": {"key": _b64(env.counter_key)}}])
                result["lease"] = lease
                return result

            result = env.with_lease(attempt)
            if result.get("succeeded"):
                self._locked(result, 1)
                return
            if time.monotonic() >= deadline:
                raise self._lock_timeout()
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _drop_lock(self, undo: Optional[Callable[[], None]] = None) -> None:
        """Give the writer lock back (and leave the queue), after `undo` (an aborted transaction's
        undo steps) has run: as `locks.run_after_lock_loss` if the lock is no longer ours (or we
        cannot tell), since another writer may have used what the steps would delete."""
        try:
            if undo is not None:
                if self._holds_lock():
                    undo()
                else:
                    run_after_lock_loss(undo)
        finally:
            key = _b64(self._env.lock_key)
            leave = {"request_delete_range": {"key": _b64(self._queue_key)}}
            try:
                self._env._cluster.txn([{"key": key, "target": "MOD", "result": "EQUAL",
                                         "mod_revision": str(self._lock_rev)}],
                                       [{"request_delete_range": {"key": key}}, leave], [leave])
            except Error:
                pass  # the lease expiry drops it

    # -- reads ------------------------------------------------------------------------

    def _check(self) -> None:
        if self._done:
            raise Unavailable("transaction already finished")

    def _range(self, key: bytes, end: Optional[bytes], limit: int = 0, count_only: bool = False) -> dict:
        request: dict[str, Any] = {"key": _b64(key), "revision": str(self._rev)}
        if end is not None:
            request["range_end"] = _b64(end)
        if limit:
            request["limit"] = str(limit)
        if count_only:
            request["count_only"] = True
        cluster = self._env._cluster
        if not self._rev:  # linearizable: the revision pinned includes every commit that returned
            result = cluster.post("/kv/range", request)
            self._rev = int(result["header"]["revision"])
            return result
        # A pinned revision reads the same on any member that has applied it: no quorum round trip.
        try:
            return cluster.post("/kv/range", dict(request, serializable=True))
        except Unavailable as exc:
            if "future revision" not in str(exc):
                raise
        return cluster.post("/kv/range", request)

    def _full(self, table: str, key: bytes) -> bytes:
        return self._env.table_prefix(table) + key

    def get(self, table: str, key: bytes) -> Optional[bytes]:
        self._check()
        full = self._full(table, key)
        if full in self._writes:
            return self._writes[full]
        kvs = self._range(full, None).get("kvs", [])
        found = _kv(kvs[0]) if kvs else None
        if self.write:
            self._seen[full] = found[2] if found else 0
        return found[1] if found else None

    def scan(self, table: str, prefix: bytes = b"", *, start: Optional[bytes] = None,
             release_every: int = 0) -> Iterator[tuple[bytes, bytes]]:
        """Yield (key, value) in key order for keys starting with prefix (from `start` if given).

        `release_every` is LMDB's (nothing is mapped here): accepted and ignored."""
        self._check()
        base = self._env.table_prefix(table)
        first = base + (start if start is not None and start > prefix else prefix)
        end = prefix_end(base + prefix)
        if self.write:
            self._ranges.append((first, end))
        pending = sorted((k, v) for k, v in self._writes.items() if first <= k < end)
        cut = len(base)
        for key, value in self._merge(first, end, pending):
            yield key[cut:], value

    def _stored(self, first: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        while True:
            page = self._range(first, end, PAGE)
            kvs = page.get("kvs", [])
            for item in kvs:
                key, value, _ = _kv(item)
                yield key, value
            if not page.get("more") or not kvs:
                return
            first = _unb64(kvs[-1]["key"]) + b"\x00"

    def _merge(self, first: bytes, end: bytes, pending: list) -> Iterator[tuple[bytes, bytes]]:
        """The stored range with this transaction's own writes laid over it, in key order."""
        index = 0
        for key, value in self._stored(first, end):
            while index < len(pending) and pending[index][0] < key:
                if pending[index][1] is not None:
                    yield pending[index]
                index += 1
            if index < len(pending) and pending[index][0] == key:
                if pending[index][1] is not None:
                    yield pending[index]
                index += 1
                continue
            yield key, value
        for item in pending[index:]:
            if item[1] is not None:
                yield item

    def rows_from(self, table: str, start: bytes, *, values: bool = True) -> Iterator:
        """The rows of `table` from `start` to its end, read a page at a time as they are consumed
        (`cargohold.kv.Txn.rows_from`: for callers that stop by themselves)."""
        self._check()
        base = self._env.table_prefix(table)
        first, end = base + start, prefix_end(base)
        if self.write:
            self._ranges.append((first, end))
        pending = sorted((k, v) for k, v in self._writes.items() if first <= k < end)
        cut = len(base)
        for key, value in self._merge(first, end, pending):
            yield (key[cut:], value) if values else key[cut:]

    @contextmanager
    def translated(self) -> Iterator[None]:
        """`cargohold.kv.Txn.translated`: this engine's reads raise cargohold errors already."""
        yield

    def keys(self, table: str, prefix: bytes = b"") -> list[bytes]:
        return [key for key, _ in self.scan(table, prefix)]

    def has_prefix(self, table: str, prefix: bytes) -> bool:
        for _ in self.scan(table, prefix):
            return True
        return False

    def table_file(self, table: str) -> None:
        """LMDB's: no table of etcd lies in a local file (whole tables are read with `scan`)."""
        return None

    def count(self, table: str) -> int:
        self._check()
        base = self._env.table_prefix(table)
        total = int(self._range(base, prefix_end(base), count_only=True).get("count", 0))
        for key, value in list(self._writes.items()):
            if key.startswith(base):
                existed = bool(self._range(key, None).get("kvs"))
                total += (value is not None) - existed
        return total

    # -- writes -----------------------------------------------------------------------

    def _require_write(self) -> None:
        self._check()
        if not self.write:
            raise InvalidArgument("write attempted in a read-only transaction")

    def put(self, table: str, key: bytes, value: bytes, *, overwrite: bool = True) -> bool:
        """Store value at key; with overwrite=False return False if key exists."""
        self._require_write()
        if len(key) > MAX_KEY_SIZE:
            raise InvalidArgument(f"key of {len(key)} bytes exceeds the {MAX_KEY_SIZE}-byte limit")
        full = self._full(table, key)
        if len(full) + len(value) >= REQUEST_LIMIT:
            raise InvalidArgument(
                f"the value of {table} object {key!r} is {len(value)} bytes, more than one etcd request "
                f"may carry ({REQUEST_LIMIT} bytes, etcd's --max-request-bytes default)")
        if not overwrite and self.get(table, key) is not None:
            return False
        self._writes[full] = bytes(value)
        return True

    def delete(self, table: str, key: bytes) -> bool:
        self._require_write()
        if self.get(table, key) is None:
            return False
        self._writes[self._full(table, key)] = None
        return True

    def delete_prefix(self, table: str, prefix: bytes) -> int:
        """Delete every key starting with prefix; return how many."""
        keys = self.keys(table, prefix)
        for key in keys:
            self.delete(table, key)
        return len(keys)

    def child(self) -> "EtcdTxn":
        """A write transaction nested in this one: it sees this one's writes, and its own reach
        this one only when it commits (the interface of `cargohold.kv.Txn.child`)."""
        self._require_write()
        return _ChildTxn(self)

    # -- the end ----------------------------------------------------------------------

    def _compares(self) -> list:
        """The commit's conditions: the writer lock is still ours (fencing), no commit happened
        since the revision this transaction reads (the counter: every commit rewrites it, and
        none can happen without the writer lock, so what we read is still the latest), every
        fleet lock the thread holds is still its own, and then, as a second check of the same
        thing, the mod revision of the first `MAX_COMPARES` keys and ranges read."""
        env = self._env
        compares = [
            {"key": _b64(env.lock_key), "target": "MOD", "result": "EQUAL", "mod_revision": str(self._lock_rev)},
            {"key": _b64(env.counter_key), "target": "MOD", "result": "EQUAL",
             "mod_revision": str(self._counter_rev)},
        ]
        compares += [{"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": str(rev)}
                     for key, rev in env.held()]
        reads = [{"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(rev)}
                 for key, rev in self._seen.items()]
        reads += [{"key": _b64(first), "range_end": _b64(end), "target": "MOD", "result": "LESS",
                   "mod_revision": str(self._rev + 1)} for first, end in self._ranges]
        return compares + reads[:MAX_COMPARES]

    def _operations(self) -> list:
        env = self._env
        ops = []
        for key, value in self._writes.items():
            if value is None:
                ops.append({"request_delete_range": {"key": _b64(key)}})
            else:
                ops.append({"request_put": {"key": _b64(key), "value": _b64(value)}})
        token = uuid.uuid4().hex.encode()
        self._token = token
        ops.append({"request_put": {"key": _b64(env.counter_key), "value": _b64(token)}})
        ops.append({"request_put": {"key": _b64(env._token_key), "value": _b64(token),
                                    "lease": str(self._lease)}})
        ops.append({"request_delete_range": {"key": _b64(env.lock_key)}})
        ops.append({"request_delete_range": {"key": _b64(self._queue_key)}})
        return ops

    def commit(self, undo: Optional[Callable[[], None]] = None) -> None:
        """Commit as one etcd Txn; if nothing was committed, `undo` runs (see `abort`) and the
        error is raised."""
        if self._done:
            return
        if not self.write:
            self._finish()
            return
        try:
            if not self._writes:
                self._drop_lock()
                return
            try:
                result = self._env._cluster.txn(self._compares(), self._operations())
            except Unavailable:
                if self._committed_anyway():
                    return
                self._drop_lock(undo)
                raise
            except BaseException:
                self._drop_lock(undo)
                raise
            if not result.get("succeeded"):
                self._drop_lock(undo)
                raise Unavailable(
                    f"a write transaction on {self._env.path!r} lost its writer lock or a lock it held (the "
                    "lease expired) or what it read was changed by another writer; nothing was committed")
        finally:
            self._finish()

    def _committed_anyway(self) -> bool:
        """After a commit whose answer was lost: whether it was applied (our token is there)."""
        try:
            kvs = self._env._cluster.txn([], [{"request_range": {"key": _b64(self._env._token_key)}}]
                                         )["responses"][0]["response_range"].get("kvs", [])
        except Error:
            raise Unavailable(f"etcd cluster {self._env.path!r} went away during a commit: whether it "
                              "was applied is unknown") from None
        return bool(kvs) and _kv(kvs[0])[1] == self._token

    def abort(self, undo: Optional[Callable[[], None]] = None) -> None:
        """Abort; `undo` (the caller's filesystem undo steps) runs before the writer lock is
        dropped, so that no other writer sees a state that neither committed nor was taken back."""
        if self._done:
            return
        try:
            if self.write:
                self._drop_lock(undo)
        finally:
            self._finish()

    def _finish(self) -> None:
        self._done = True
        self._writes = {}
        if self.write:
            self._env._threads.release()
        self._env._leave()




class _ChildTxn(EtcdTxn):
    """A nested write transaction: its own copy of the parent's writes, the parent's revision,
    read set and locks; committing hands its writes to the parent."""

    def __init__(self, parent: EtcdTxn) -> None:
        self._env = parent._env
        self.write = True
        self._parent = parent
        self._rev = parent._rev
        self._done = False
        self._writes = dict(parent._writes)
        self._seen = parent._seen
        self._ranges = parent._ranges
        self._lock_rev = parent._lock_rev
        self._queue_key = parent._queue_key
        self._lease = parent._lease
        self._counter_rev = parent._counter_rev

    def child(self) -> "EtcdTxn":
        self._require_write()
        return _ChildTxn(self)

    def commit(self, undo: Optional[Callable[[], None]] = None) -> None:
        if not self._done:
            self._parent._writes = self._writes
            self._done = True

    def abort(self, undo: Optional[Callable[[], None]] = None) -> None:
        if not self._done and undo is not None:
            undo()
        self._done = True
