"""`cargohold.locks.FileLock`: its holds exclude across threads as across processes, its pooled
descriptors are never handed to two holders at once, and none outlives a fork in the child."""

from __future__ import annotations

import os
import threading

import pytest

from cargohold.locks import FileLock
from conftest import run_python


@pytest.fixture
def lock(tmp_path):
    held = FileLock(tmp_path / "the.lock")
    yield held
    held.close()


def test_exclusive_holds_exclude_each_other_across_threads(lock):
    """Many threads taking and dropping the lock through its pool of descriptors: two holders
    sharing one descriptor would share its flock, and both be inside at once."""
    threads, rounds = 8, 300
    inside = [0]
    overlaps: list = []
    start = threading.Barrier(threads)

    def work(t: int) -> None:
        start.wait()
        for i in range(rounds):
            if (t + i) % 2:
                token = lock.acquire_exclusive()
                release = lambda: lock.release(token)  # noqa: E731
            else:
                held = lock.exclusive()
                held.__enter__()
                release = lambda: held.__exit__(None, None, None)  # noqa: E731
            inside[0] += 1
            if inside[0] != 1:
                overlaps.append((t, i))
            inside[0] -= 1
            release()

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert overlaps == []
    assert len(lock._pool) <= 8 + threads  # reused, not one descriptor per acquisition


def test_shared_holders_at_once_get_descriptors_of_their_own(lock):
    threads = 6
    tokens: list = []
    guard = threading.Lock()
    start = threading.Barrier(threads)
    release = threading.Event()

    def hold() -> None:
        start.wait()
        token = lock.acquire_shared()
        with guard:
            tokens.append(token)
        release.wait(10)
        lock.release(token)

    workers = [threading.Thread(target=hold) for _ in range(threads)]
    for w in workers:
        w.start()
    for _ in range(1000):
        with guard:
            if len(tokens) == threads:
                break
        threading.Event().wait(0.01)
    assert len(set(tokens)) == threads
    release.set()
    for w in workers:
        w.join()
    with lock.exclusive():  # every shared hold went
        pass


def test_a_hold_is_exclusive_against_another_process(lock, tmp_path):
    probe = f"""
        import fcntl, os
        fd = os.open({str(lock.path)!r}, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            print("free")
        except BlockingIOError:
            print("held")
    """
    with lock.shared():
        assert run_python(probe).stdout.strip() == "held"
    token = lock.acquire_exclusive()
    assert run_python(probe).stdout.strip() == "held"
    lock.release(token)
    assert run_python(probe).stdout.strip() == "free"  # released, though its descriptor stays pooled


def test_a_hold_cannot_be_entered_twice(lock):
    held = lock.shared()
    with held:
        with pytest.raises(RuntimeError, match="already held"):
            held.__enter__()
    with held:  # entered again once it was left
        pass


def test_a_forked_child_never_reuses_its_parents_descriptors(lock):
    """A child's copy of a pooled descriptor shares the parent's flock: the child must open its own."""
    token = lock.acquire_shared()
    lock.release(token)
    assert lock._pool  # pooled in the parent
    token = lock.acquire_shared()  # the parent holds it again
    pid = os.fork()
    if pid == 0:  # the child: an exclusive hold must wait for the parent, not share its lock
        try:
            os._exit(0 if not lock._pool and _taken_elsewhere(lock) else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    lock.release(token)
    assert os.WEXITSTATUS(status) == 0


def _taken_elsewhere(lock: FileLock) -> bool:
    """Whether an exclusive hold of the lock, without waiting, is refused (someone else holds it)."""
    from cargohold.errors import Unavailable

    try:
        with lock.exclusive(timeout=0):
            return False
    except Unavailable:
        return True
