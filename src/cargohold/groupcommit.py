"""Group commit: concurrent single-call writers of one process share write transactions.

A store method called outside any transaction (``ns.images.create(img)``)
needs a write transaction of its own, and a durable commit: two flushes of
the LMDB file. LMDB serialises write transactions anyway, so while one
commits the others wait; here they wait in a queue instead. The thread that
finds no batch running leads: it takes the queued calls (its own among
them), runs each in one write transaction, every call but a lone one in a
child transaction of its own (so a call that fails is rolled back alone,
its undo steps run, and the others go on), and commits once. Calls that
queued meanwhile form the next batch, led by one of their threads. A call
that finds nothing running or queued runs at once, without the queue. Either
way a call's own transaction (or child) counts as its savepoint
(`Transaction.savepoints`): whatever it writes goes with it if it fails.

A call returns only after the commit that holds it: a call that returned is
as durable as the database's mode makes any commit (`cargohold.kv`,
``durable``). The calls' before-commit work (`Transaction.before_commit`)
runs just before that commit, once per key across the batch. If it or the
commit fails, every call in it fails with its error and runs its undo steps
(but for a Ctrl-C, below). Post-commit work (events, mutation callbacks, a
hook's error) runs in the calling thread, as for a call that committed
alone.

An interrupt (Ctrl-C) of a waiting thread withdraws its call if no leader took it yet, else
waits for the batch's outcome. One of the leading thread, met while it runs or commits another
thread's call, is the leader's: the batch is taken back, its other calls queue again, and the
leader's thread raises it.

The leader runs the queued calls in its own thread, with the thread's current
transaction set to the call's (`cargohold.transaction`): calls must not rely
on running in the thread that made them, besides that. LMDB requires a write
transaction to be used by the thread that began it; this is how.
"""

from __future__ import annotations

import threading
from collections import deque
from itertools import islice
from typing import Any, Callable, Optional, TypeVar

from .transaction import Transaction, commit, enter_writer, run_all

T = TypeVar("T")

MAX_BATCH = 64
"""Calls one transaction holds at most."""


class _Call:
    __slots__ = ("fn", "owner", "done", "again", "tx", "value", "error")

    def __init__(self, fn: Callable[[Transaction], Any]) -> None:
        self.fn = fn
        self.owner = threading.get_ident()
        self.done = False
        self.again = False
        """Its batch was cancelled by an interrupt of the leading thread: it goes back to the queue."""
        self.tx: Optional[Transaction] = None
        self.value: Any = None
        self.error: Optional[BaseException] = None


class GroupCommit:
    """The write queue of one database (`DB.write`)."""

    def __init__(self, db: Any) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        """Waited on by queued calls; entered through `_lock` (the Condition's own enter is Python code)."""
        self._queue: deque[_Call] = deque()
        self._leading = False
        self._waiting = 0
        """Threads waiting on `_cond`: with none, nobody needs notifying."""
        self.batches = 0
        """Write transactions committed for queued calls (a statistic for tests and benchmarks)."""
        self.calls = 0
        """Calls those transactions held."""

    def run(self, fn: Callable[[Transaction], T]) -> T:
        """Run ``fn(tx)`` in a write transaction shared with concurrent calls; return its value
        once that transaction has committed (then post-commit work runs here)."""
        # The flags are set in one statement inside the `try` whose `finally` clears them: a
        # KeyboardInterrupt raised between two statements must not leave `_leading` set, or every
        # later call of the process would wait for a batch that never ends.
        call = _Call(fn)
        alone = False
        try:
            with self._lock:
                if not self._leading and not self._queue:
                    self._leading = alone = True  # nothing running or queued: a batch of this call alone
            if alone:
                self._commit([call])
        finally:
            if alone:
                with self._lock:
                    self._leading = False
                    if self._waiting:
                        self._cond.notify_all()
        if alone:
            return self._outcome(call)
        cond = self._cond
        lead = False
        try:
            try:
                with cond:
                    self._queue.append(call)
                    while self._leading and not call.done:
                        self._waiting += 1
                        try:
                            cond.wait()
                        finally:
                            self._waiting -= 1
                    if not call.done:
                        self._leading = lead = True
                if lead:
                    while not call.done:
                        self._lead()
            except BaseException:
                if not self._settle(call):
                    raise  # withdrawn from the queue: it never ran
        finally:
            if lead:
                with cond:
                    self._leading = False
                    cond.notify_all()
        return self._outcome(call)

    def _lead(self) -> None:
        """Take up to `MAX_BATCH` queued calls and commit them in one transaction. An interrupt
        leaves each call it took either done, with its outcome, or queued again as it was."""
        cond = self._cond
        batch: list[_Call] = []
        begun = False
        try:
            with cond:
                queue = self._queue
                batch = list(islice(queue, MAX_BATCH))  # copied before any leaves the queue
                for _ in batch:
                    queue.popleft()
            begun = True
            self._commit(batch)
        finally:
            with cond:
                queue = self._queue
                for item in reversed(batch):
                    if begun and not item.again:
                        item.done = True
                    elif item not in queue:  # interrupted before it ran, or its batch cancelled
                        item.again, item.tx, item.value = False, None, None
                        queue.appendleft(item)  # back to the front, in their order
                cond.notify_all()

    def _settle(self, call: _Call) -> bool:
        """After an interrupt in `run`: withdraw `call` if it is still queued (False: it never ran);
        else a leader took it, and this waits, through further interrupts, for its outcome (True)."""
        cond = self._cond
        while True:
            try:
                with cond:
                    while not call.done:
                        if call in self._queue:
                            self._queue.remove(call)
                            return False
                        self._waiting += 1
                        try:
                            cond.wait()
                        finally:
                            self._waiting -= 1
                    return True
            except BaseException:  # noqa: BLE001 -- another interrupt: the call's state must still be known
                continue

    def _outcome(self, call: _Call) -> Any:
        """The value of a committed call (its post-commit work run here), or its error raised."""
        if call.error is not None:
            raise call.error
        self._db._committed(call.tx)
        return call.value

    def _commit(self, batch: list[_Call]) -> None:
        """One write transaction for `batch`: every call's outcome lands in its `_Call`."""
        db = self._db
        try:
            db._require_open()
            lock = enter_writer(db)
        except BaseException as exc:
            _fail(batch, exc)
            return
        try:
            kv = None
            try:
                kv = db._env.write()
                ok = self._run(kv, batch)
                if ok:
                    commit(kv, [call.tx for call in ok], lambda: run_all(call.tx._undo_all for call in ok))
                else:
                    kv.abort()
            except BaseException as exc:
                if kv is not None and kv.committed:  # an interrupt as the commit let go: it stands,
                    kv.abort()  # and so do the outcomes (this only lets go)
                    self.batches += 1
                    self.calls += len(batch)
                    return
                # nothing committed: the calls fail with it
                ran = [call for call in batch if call.tx is not None and call.error is None]
                if kv is not None:
                    kv.abort(undo=lambda: run_all(call.tx._undo_all for call in ran))
                _fail(batch, exc)
            self.batches += 1
            self.calls += len(batch)
        finally:
            try:
                for call in batch:
                    if call.tx is not None:
                        call.tx._release()
            finally:
                db.wlock.release(lock)  # inline: no Python call for an interrupt to precede

    def _run(self, kv: Any, batch: list[_Call]) -> list[_Call]:
        """Run the calls in `kv` (each in a child transaction unless alone); the ones that succeeded."""
        db = self._db
        alone = len(batch) == 1
        ok = []
        for call in batch:
            txn = None
            try:
                txn = kv if alone else kv.child()
                tx = call.tx = Transaction(db, txn, True)
            except BaseException as exc:
                if txn is not None and not alone:
                    txn.abort()
                if _interrupts_another(exc, call):
                    raise  # the whole batch goes, and its calls run again (`_commit`)
                call.error = exc
                continue
            tx.savepoints = 1  # the call's own (child) transaction: if the call fails, all of it goes
            db._local.tx = tx
            try:
                call.value = call.fn(tx)
                if not alone:
                    txn.commit()
            except BaseException as exc:
                if not alone and txn.committed:  # an interrupt as its child let go: its writes are in
                    txn.abort()  # the batch (this only lets go), and it succeeds with it
                    if _interrupts_another(exc, call):
                        raise  # the whole batch goes, and this call's undo steps with it (`_commit`)
                    ok.append(call)
                    continue
                if not alone:
                    txn.abort()
                tx._undo_all()
                tx._release()
                if _interrupts_another(exc, call):
                    call.tx = None  # taken back already
                    raise
                call.error = exc
                continue
            finally:
                db._local.tx = None
            ok.append(call)
        return ok


def _fail(batch: list[_Call], exc: BaseException) -> None:
    """Give `exc` to every call of `batch` without an outcome, unless it is the leading thread's
    Ctrl-C (`_interrupts_another`): those calls queue again (`_lead`) and the leader raises it, even
    when its own call was not in this batch."""
    for call in batch:
        if call.error is None:
            if _interrupts_another(exc, call):
                call.again = True
            else:
                call.error = exc
    if any(call.again for call in batch):
        raise exc


def _interrupts_another(exc: BaseException, call: _Call) -> bool:
    """Whether `exc` is a Ctrl-C of the leading thread (the main thread, which alone gets signals)
    met while it ran or committed another thread's call: it cancels the batch rather than fail that
    call. Whatever a call's own code raises stays that call's (`_run`)."""
    return (isinstance(exc, KeyboardInterrupt) and call.owner != threading.get_ident()
            and threading.current_thread() is threading.main_thread())
