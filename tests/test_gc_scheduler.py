"""The background scheduler: containerd's policy, driven by real mutations."""

from __future__ import annotations

import time

import pytest

from cargohold import errors
from cargohold.gc import Scheduler
from gcutil import blob

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


def test_settings_are_clamped_and_validated(db):
    s = Scheduler(db, pause_threshold=0.9, mutation_threshold=-3, schedule_delay=-1, startup_delay=-1)
    assert (s.pause_threshold, s.mutation_threshold, s.schedule_delay, s.startup_delay) == (0.5, 0, 0.0, 0.0)
    with pytest.raises(errors.InvalidArgument, match="pause_threshold"):
        Scheduler(db, pause_threshold="fast")


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
