"""The background scheduler: containerd's policy, driven by real mutations."""

from __future__ import annotations

import time

import pytest

import os

from cargohold import errors
from cargohold.gc import Scheduler
from conftest import run_python
from gcutil import blob

TESTS = os.path.dirname(os.path.abspath(__file__))

WAIT = 20.0


def wait_for(predicate, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_defaults_are_containerds(db):
    s = Scheduler(db)
    assert (s.pause_threshold, s.deletion_threshold, s.mutation_threshold, s.schedule_delay,
            s.startup_delay) == (0.02, 0, 100, 0.0, 0.1)
    assert s.idle_delay == 60.0


SETTINGS = ["pause_threshold", "deletion_threshold", "mutation_threshold", "schedule_delay",
            "startup_delay", "idle_delay"]


def test_a_pause_threshold_past_the_useful_range_is_clamped(db):
    """0.9 is legal but would space collections by less than their pause: taken as 0.5."""
    assert Scheduler(db, pause_threshold=0.9).pause_threshold == 0.5
    assert Scheduler(db, pause_threshold=0).pause_threshold == 0.0


@pytest.mark.parametrize("name", SETTINGS)
@pytest.mark.parametrize("value", [-1, -0.5, float("nan"), float("inf"), float("-inf"), True, "fast", None])
def test_nonsense_settings_are_refused(db, name, value):
    with pytest.raises(errors.InvalidArgument, match=name):
        Scheduler(db, **{name: value})


@pytest.mark.parametrize("name", ["deletion_threshold", "mutation_threshold"])
def test_thresholds_are_whole_numbers(db, name):
    with pytest.raises(errors.InvalidArgument, match=f"{name} must be a whole number"):
        Scheduler(db, **{name: 2.5})
    assert getattr(Scheduler(db, **{name: 0}), name) == 0


def test_trigger_waits_for_a_collection(db):
    ns = db.namespace("s")
    orphan = blob(ns, b"orphan")
    with Scheduler(db, startup_delay=0) as s:
        stats = s.trigger(wait=True, timeout=WAIT)
        assert stats is not None and stats.removed and stats.removed[0].key == orphan
        assert s.collections == 1
        assert s.trigger(wait=False) is None
        assert wait_for(lambda: s.collections == 2)


def test_trigger_needs_a_running_scheduler(db):
    s = Scheduler(db)
    with pytest.raises(errors.FailedPrecondition):
        s.trigger()
    s.start()
    with pytest.raises(errors.FailedPrecondition):
        s.start()
    s.stop()
    with pytest.raises(errors.FailedPrecondition):
        s.trigger()


def test_startup_collection(db):
    with Scheduler(db, startup_delay=0.05) as s:
        assert wait_for(lambda: s.collections == 1)


def test_a_deletion_schedules_a_collection(db):
    ns = db.namespace("s")
    d = blob(ns, b"x")
    with Scheduler(db, startup_delay=0) as s:
        time.sleep(0.2)
        assert s.collections == 0  # nothing asked for one yet
        ns.content.delete(d)
        assert wait_for(lambda: s.collections == 1)
        assert list(db.content_store.walk()) == []


def test_mutation_threshold(db):
    with Scheduler(db, startup_delay=0, mutation_threshold=5) as s:
        for i in range(4):
            db.namespaces.create(f"n{i}")
        time.sleep(0.3)
        assert s.collections == 0  # four mutations, no deletion: not yet
        db.namespaces.create("n4")
        assert wait_for(lambda: s.collections == 1)


def test_deletion_threshold_collects_even_when_a_slot_is_scheduled(db):
    ns = db.namespace("s")
    digests = [blob(ns, b"%d" % i) for i in range(3)]
    # a long startup delay schedules a slot far away; three deletions must not wait for it
    with Scheduler(db, startup_delay=3600, deletion_threshold=3) as s:
        ns.content.delete(digests[0])
        ns.content.delete(digests[1])
        time.sleep(0.3)
        assert s.collections == 0
        ns.content.delete(digests[2])
        assert wait_for(lambda: s.collections == 1)


def test_pause_threshold_spaces_collections(db):
    ns = db.namespace("s")
    with Scheduler(db, startup_delay=0, pause_threshold=0.5) as s:
        s.trigger(timeout=WAIT)
        # with a 50% threshold the next slot is one average collection away: deletions then
        # collect again promptly
        ns.content.delete(blob(ns, b"y"))
        assert wait_for(lambda: s.collections == 2)


def test_a_failed_collection_reaches_the_waiter_and_the_schedule_goes_on(db):
    class Broken:
        fail = True

        def reference_label(self):
            return ""

        def start_collection(self):
            owner = self

            class Context:
                def all(self, fn):
                    if owner.fail:
                        raise RuntimeError("collector broke")

                def active(self, namespace, fn):
                    pass

                def leased(self, namespace, lease, fn):
                    pass

                def remove(self, node):
                    pass

                def cancel(self):
                    pass

                def finish(self):
                    pass
            return Context()

    broken = Broken()
    db.register_collectible_resource(9, broken)
    with Scheduler(db, startup_delay=0) as s:
        with pytest.raises(RuntimeError, match="collector broke"):
            s.trigger(timeout=WAIT)
        broken.fail = False
        assert s.trigger(timeout=WAIT) is not None


def test_stop_ends_the_thread(db):
    s = Scheduler(db, startup_delay=0).start()
    thread = s._thread
    s.stop()
    assert not thread.is_alive()
    s.stop()  # idempotent


# -- garbage nothing announced: idle and start-up collections -----------------------------------


def _delete_in_another_process(root, data: bytes) -> None:
    run_python(f"""
        import sys
        sys.path.insert(0, {TESTS!r})
        import cargohold
        from gcutil import blob
        with cargohold.open({str(root)!r}) as db:
            ns = db.namespace("other")
            ns.content.delete(blob(ns, {data!r}))
    """)


def test_an_idle_scheduler_collects_another_processs_deletions(db, root):
    """The deletion happened in another process: no mutation callback here, only its dirty marker."""
    with Scheduler(db, startup_delay=0, idle_delay=0.2) as s:
        _delete_in_another_process(root, b"deleted elsewhere")
        assert wait_for(lambda: s.collections == 1)
        assert list(db.content_store.walk()) == []
        assert s.last_stats.blobs.count == 1
        time.sleep(0.6)
        assert s.collections == 1  # clean now: the idle checks find nothing more


def test_an_idle_scheduler_collects_a_dead_processs_debris(db, root):
    """A process killed while writing leaves an ingest no record owns and no dirty marker."""
    proc = run_python(f"""
        import os, signal, cargohold
        with cargohold.open({str(root)!r}) as db:
            w = db.content_store.writer("debris", total=10)
            w.write(b"0123456789")
            w.sync()
            os.kill(os.getpid(), signal.SIGKILL)
    """, check=False)
    assert proc.returncode == -9
    assert [name for name, _ in db.content_store.ingest_leftovers(set())] == ["debris"]
    with Scheduler(db, startup_delay=0, idle_delay=0.2) as s:
        assert wait_for(lambda: s.collections == 1)
        assert s.last_stats.ingests.count == 1
    assert db.content_store.ingest_leftovers(set()) == []


def test_no_idle_collection_on_a_clean_store(db):
    blob(db.namespace("s"), b"kept")
    with Scheduler(db, startup_delay=0, idle_delay=0.1) as s:
        time.sleep(0.8)
        assert s.collections == 0


def test_idle_delay_zero_never_collects_on_its_own(db, root):
    with Scheduler(db, startup_delay=0, idle_delay=0) as s:
        _delete_in_another_process(root, b"waits for a trigger")
        time.sleep(0.8)
        assert s.collections == 0


def test_a_start_with_deletions_pending_collects_once(root):
    """The previous process deleted and died before any collection: a scheduler with no startup
    delay collects once when it starts, then waits."""
    import cargohold

    _delete_in_another_process(root, b"deleted before a crash")
    with cargohold.open(root) as db:
        with Scheduler(db, startup_delay=0, idle_delay=0) as s:
            assert wait_for(lambda: s.collections == 1)
            assert list(db.content_store.walk()) == []
            time.sleep(0.5)
            assert s.collections == 1
        with Scheduler(db, startup_delay=0, idle_delay=0) as s:
            time.sleep(0.5)
            assert s.collections == 0  # nothing was pending this time
