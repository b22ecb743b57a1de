"""A fleet on one etcd cluster: hosts (processes with their own roots) sharing one
content directory and one metadata prefix, a collector among them, and faults:
a lease that expires mid-collection, the leader killed, a member restarted."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import cargohold
from cargohold.errors import NotFound, Unavailable

import fleetutil
from etcd_cluster import Cluster
from gcutil import blob, digest_of, image


open_host = functools.partial(fleetutil.open_host, native=False)
"""A host: its own root for locks and sessions, the fleet's content directory and metadata."""


HOST = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, {tests!r})
    from test_etcd_fleet import open_host
    from gcutil import blob, image
    db = open_host({root!r}, {content!r}, {url!r})
    ns = db.namespace("default")
    kept, deadline, i = [], time.monotonic() + {seconds!r}, 0
    while time.monotonic() < deadline:
        data = b"{name} kept %d" % i
        from gcutil import digest_of
        image(ns, "{name}-%d" % i, digest_of(data), size=len(data))  # the reference first, then the bytes
        blob(ns, data)
        blob(ns, b"{name} garbage %d" % i)
        kept.append(["{name}-%d" % i, digest_of(data)])
        i += 1
    db.close()
    print(json.dumps(kept))
""")


def run_fleet(tmp_path, url, seconds: float, fault=None) -> None:
    """Two writing hosts and a collecting one for `seconds`; nothing committed lost, nothing reachable deleted."""
    content = str(tmp_path / "content")
    tests = os.path.dirname(__file__)
    hosts = [subprocess.Popen([sys.executable, "-c", HOST.format(
        tests=tests, root=str(tmp_path / name), content=content, url=url, seconds=seconds, name=name)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in ("host-a", "host-b")]
    collector = open_host(str(tmp_path / "collector"), content, url)
    try:
        collections = 0
        started = time.monotonic()
        faulted = False
        while any(host.poll() is None for host in hosts):
            collector.garbage_collect()
            collections += 1
            if fault is not None and not faulted and time.monotonic() - started > seconds / 3:
                fault()
                faulted = True
        results = [host.communicate() for host in hosts]
        for host, (out, err) in zip(hosts, results):
            assert host.returncode == 0, err
        collector.garbage_collect()
        ns = collector.namespace("default")
        kept = [item for out, _ in results for item in json.loads(out)]
        assert collections > 1 and len(kept) > 2
        names = {img.name for img in ns.images.list()}
        for name, digest in kept:
            assert name in names
            assert ns.content.read(digest).startswith(name.rsplit("-", 1)[0].encode())
        for name in ("host-a", "host-b"):
            with pytest.raises(NotFound):
                ns.content.info(digest_of(f"{name} garbage 0".encode()))
    finally:
        for host in hosts:
            if host.poll() is None:
                host.kill()
                host.wait()
        collector.close()


def test_two_hosts_write_while_a_third_collects(tmp_path, etcd_url):
    run_fleet(tmp_path, etcd_url, 6)


@pytest.mark.slow
def test_two_hosts_write_while_a_third_collects_for_60s(tmp_path, etcd_url):
    run_fleet(tmp_path, etcd_url, 60)


def test_a_collector_whose_lease_expires_mid_collection_commits_no_sweep(tmp_path, etcd_url, etcd_cluster):
    db = open_host(str(tmp_path / "a"), str(tmp_path / "content"), etcd_url)
    try:
        ns = db.namespace("default")
        kept = blob(ns, b"kept")
        image(ns, "kept", kept, size=4)
        garbage = blob(ns, b"garbage")

        def expire(phase):
            if phase == "exclusive":  # the collector holds every host's writers off
                etcd_cluster.request(0, "/v3/lease/revoke", {"ID": str(db._env._lease.id)})

        db._gc_hook = expire
        with pytest.raises(Unavailable, match="lost its writer lock or a lock it held"):
            db.garbage_collect()
        db._gc_hook = None
        assert ns.content.read(garbage) == b"garbage"  # the sweep did not commit
        db.garbage_collect()  # a new lease: the next collection goes through
        with pytest.raises(NotFound):
            ns.content.info(garbage)
        assert ns.content.read(kept) == b"kept"
    finally:
        db.close()


@pytest.mark.parametrize("shared", [False, True], ids=["copy", "shared"])
def test_a_blob_another_host_recorded_survives_a_writer_that_lost_its_lock(tmp_path, etcd_url, etcd_cluster,
                                                                           shared):
    """Host a links a blob in a transaction and loses its writer lock (its lease expires) before
    the commit; host b, writing the same bytes (or sharing the stored blob), finds it in place
    and records it. a's commit fails, and its undo must not delete the blob b recorded."""
    a = open_host(str(tmp_path / "a"), str(tmp_path / "content"), etcd_url)
    b = open_host(str(tmp_path / "b"), str(tmp_path / "content"), etcd_url)
    b.shared = shared
    try:
        data = b"bytes both hosts store"
        digest = digest_of(data)
        with pytest.raises(Unavailable, match="lost its writer lock"):
            with a.update():
                with a.namespace("default").content.writer("ref-a", total=len(data), expected=digest) as w:
                    w.write(data)
                    w.commit(len(data), digest)
                etcd_cluster.request(0, "/v3/lease/revoke", {"ID": str(a._env._lease.id)})
                with b.namespace("default").content.writer("ref-b", total=len(data), expected=digest) as w:
                    if w.status().offset == 0 and not shared:
                        w.write(data)
                    w.commit(len(data), digest)
        assert b.namespace("default").content.read(digest) == data
        # what a's failed transaction leaves is its ingest (no record owns it), never a missing blob
        assert [f.kind for f in cargohold.fsck(b).problems] == ["unowned-ingest"]
    finally:
        b.close()
        a.close()


def _paused_collection(collector, phase):
    """Start a collection on `collector` that waits at `phase`; (thread, entered, release, errors)."""
    entered, release, errors = threading.Event(), threading.Event(), []

    def hook(name):
        if name == phase:
            entered.set()
            release.wait(30)

    def run():
        try:
            collector.garbage_collect()
        except Exception as exc:
            errors.append(exc)

    collector._gc_hook = hook
    thread = threading.Thread(target=run)
    thread.start()
    assert entered.wait(30)
    return thread, release, errors


def test_a_reference_added_on_another_host_during_the_mark_is_kept(tmp_path, etcd_url):
    """The collector lock is the fleet's: another host sees the collection running and journals."""
    content = str(tmp_path / "content")
    collector = open_host(str(tmp_path / "a"), content, etcd_url)
    writer = open_host(str(tmp_path / "b"), content, etcd_url)
    try:
        ns = writer.namespace("default")
        late = blob(ns, b"referenced after the snapshot")
        gone = blob(ns, b"garbage")
        thread, release, errors = _paused_collection(collector, "marked")
        image(ns, "late", late, size=29)
        release.set()
        thread.join(60)
        assert not errors
        assert ns.content.read(late) == b"referenced after the snapshot"
        with pytest.raises(NotFound):
            ns.content.info(gone)
    finally:
        collector.close()
        writer.close()


def test_a_second_hosts_collection_waits_for_the_first(tmp_path, etcd_url):
    content = str(tmp_path / "content")
    first = open_host(str(tmp_path / "a"), content, etcd_url)
    second = open_host(str(tmp_path / "b"), content, etcd_url)
    try:
        blob(first.namespace("default"), b"garbage")
        thread, release, errors = _paused_collection(first, "marked")
        started = threading.Event()
        second._gc_hook = lambda name: name == "started" and started.set()
        other = threading.Thread(target=second.garbage_collect)
        other.start()
        assert not started.wait(1.0)
        release.set()
        thread.join(60)
        assert started.wait(30)
        other.join(60)
        assert not errors
    finally:
        first.close()
        second.close()


@pytest.fixture
def own_cluster():
    cluster = Cluster(3).start()
    yield cluster
    cluster.stop()


def test_leader_killed_during_writes_and_a_collection(tmp_path, own_cluster):
    """Every write that returned survives the leader's death; a member restarted catches up."""
    url = own_cluster.url("fleet")
    db = open_host(str(tmp_path / "a"), str(tmp_path / "content"), url)
    try:
        ns = db.namespace("default")
        done, errors, stop = [], [], threading.Event()

        def write():
            i = 0
            while not stop.is_set():
                try:
                    db.namespaces.create(f"ns-{i}")
                    done.append(f"ns-{i}")
                except Unavailable as exc:  # allowed while no leader: nothing committed
                    errors.append(exc)
                except cargohold.errors.AlreadyExists:  # an ambiguous commit that had gone through
                    done.append(f"ns-{i}")
                i += 1

        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(0.5)
        garbage = blob(ns, b"garbage")
        leader = own_cluster.leader()
        own_cluster.stop_member(leader)
        db.garbage_collect()
        time.sleep(1.0)
        stop.set()
        writer.join(60)
        assert done
        own_cluster.restart_member(leader)
        assert set(done) <= set(db.namespaces.list())
        with pytest.raises(NotFound):
            ns.content.info(garbage)
        restarted = own_cluster.request(leader, "/v3/kv/range", {"key": "AA==", "serializable": True})
        assert int(restarted["header"]["revision"]) > 0
    finally:
        db.close()


def test_a_member_stopped_and_restarted_catches_up(tmp_path, own_cluster):
    url = own_cluster.url("fleet")
    db = open_host(str(tmp_path / "a"), str(tmp_path / "content"), url)
    try:
        follower = (own_cluster.leader() + 1) % 3
        own_cluster.stop_member(follower)
        for i in range(20):
            db.namespaces.create(f"while-down-{i}")
        own_cluster.restart_member(follower)
        own_cluster.stop_member((follower + 1) % 3)  # the restarted member is now needed for a quorum
        db.namespaces.create("after")
        names = db.namespaces.list()
        assert {f"while-down-{i}" for i in range(20)} | {"after"} <= set(names)
    finally:
        db.close()


def test_one_ref_ingested_by_two_hosts_is_refused_as_on_one(tmp_path, etcd_url):
    content = str(tmp_path / "content")
    first = open_host(str(tmp_path / "a"), content, etcd_url)
    second = open_host(str(tmp_path / "b"), content, etcd_url)
    try:
        writer = first.namespace("default").content.writer("the-ref", total=4)
        try:
            writer.write(b"half")
            with pytest.raises(Unavailable, match="the-ref"):
                second.namespace("default").content.writer("the-ref", total=4)
            writer.commit(4, digest_of(b"half"))
        finally:
            writer.close()
        assert second.namespace("default").content.read(digest_of(b"half")) == b"half"
    finally:
        first.close()
        second.close()


@pytest.mark.slow
def test_fleet_with_the_leader_killed_mid_run_for_60s(tmp_path, own_cluster):
    """Two hosts write, a third collects, the leader is killed a third of the way in and restarted."""
    killed = []

    def kill_leader():
        killed.append(own_cluster.leader())
        own_cluster.stop_member(killed[0])

    try:
        run_fleet(tmp_path, own_cluster.url("fleet"), 60, fault=kill_leader)
    finally:
        if killed:
            own_cluster.restart_member(killed[0])
    assert killed
