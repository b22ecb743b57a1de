"""Collections beside writers in threads and in other processes, and collections killed midway."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time

import cargohold
from cargohold import Descriptor, Image
from gcutil import blob

WRITER = """
import sys, cargohold
from cargohold import Descriptor, Image
root, tag, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
with cargohold.open(root) as db:
    ns = db.namespace("work")
    for i in range(count):
        lease = ns.leases.create(f"{tag}-lease-{i}")
        leased = ns.with_lease(lease.id)
        data = f"{tag} payload {i}".encode() * 50
        import hashlib
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        with leased.content.writer(f"{tag}-{i}", total=len(data), expected=d) as w:
            w.write(data[w.status().offset:])
            w.commit(len(data), d)
        leased.images.create(Image(f"{tag}/image:{i}", Descriptor("application/octet-stream", d, len(data))))
        ns.leases.delete(lease.id)
        garbage = f"{tag} garbage {i}".encode()
        g = "sha256:" + hashlib.sha256(garbage).hexdigest()
        with ns.content.writer(f"{tag}-g{i}", total=len(garbage), expected=g) as w:
            w.write(garbage[w.status().offset:])
            w.commit(len(garbage), g)
        print(f"{tag}/image:{i} {d}", flush=True)
"""


def _verify_everything_readable(db) -> int:
    """Every image's target and every content record has a blob that hashes to its digest."""
    checked = 0
    for name in db.namespaces.list():
        ns = db.namespace(name)
        for info in ns.content.walk():
            data = ns.content.read(info.digest)
            assert "sha256:" + hashlib.sha256(data).hexdigest() == info.digest
            assert len(data) == info.size
            checked += 1
        for img in ns.images.list():
            assert ns.content.info(img.target.digest).size == img.target.size
    return checked


def test_writers_in_threads_and_a_process_lose_nothing(root):
    cargohold.open(root).close()
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root), "proc", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    created = {}
    errors = []
    with cargohold.open(root) as db:
        def writer(tag: str) -> None:
            ns = db.namespace("work")
            try:
                for i in range(40):
                    lease = ns.leases.create(f"{tag}-lease-{i}")
                    leased = ns.with_lease(lease.id)
                    d = blob(leased, f"{tag} payload {i}".encode() * 50)
                    name = f"{tag}/image:{i}"
                    leased.images.create(Image(name, Descriptor("application/octet-stream", d, 50 * len(f"{tag} payload {i}"))))
                    ns.leases.delete(lease.id)
                    blob(ns, f"{tag} garbage {i}".encode())  # unreferenced: must go eventually
                    created[name] = d
            except Exception as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(f"t{n}",)) for n in range(3)]
        for t in threads:
            t.start()
        collections = 0
        while any(t.is_alive() for t in threads) or proc.poll() is None:
            db.garbage_collect()
            collections += 1
        for t in threads:
            t.join()
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert not errors, errors
        for line in out.splitlines():
            name, d = line.split()
            created[name] = d
        assert collections > 1
        db.garbage_collect()
        ns = db.namespace("work")
        images = {img.name: img.target.digest for img in ns.images.list()}
        assert images == created  # every image, none lost
        assert {info.digest for info in ns.content.walk()} == set(created.values())  # garbage gone
        assert ns.leases.list() == []
        assert _verify_everything_readable(db) == len(created)


KILLABLE = """
import sys, cargohold
with cargohold.open(sys.argv[1]) as db:
    print("collecting", flush=True)
    db.garbage_collect()
    print("done", flush=True)
"""


def test_kill_9_during_collection_loses_nothing_reachable(root):
    rng = random.Random(7)
    with cargohold.open(root) as db:
        ns = db.namespace("k")
        kept = []
        for i in range(60):
            d = blob(ns, b"kept %d" % i * 20)
            ns.images.create(Image(f"kept:{i}", Descriptor("application/octet-stream", d, len(b"kept %d" % i * 20))))
            kept.append(d)
        ns.snapshotter("native").prepare("rootfs")
        ns.containers.create(cargohold.Container("ctr", runtime=cargohold.RuntimeInfo("runc"),
                                                 snapshotter="native", snapshot_key="rootfs"))
    interrupted = 0
    for round_ in range(24):  # at least 5 rounds, and until two kills have landed inside a collection
        if round_ >= 5 and interrupted >= 2:
            break
        with cargohold.open(root) as db:
            ns = db.namespace("k")
            for i in range(200):
                blob(ns, b"garbage %d %d" % (round_, i))
            sn = ns.snapshotter("native")
            parent = ""
            for i in range(20):
                sn.prepare(f"g{round_}-{i}-a", parent)
                sn.commit(f"g{round_}-{i}", f"g{round_}-{i}-a")
                parent = f"g{round_}-{i}"
        proc = subprocess.Popen([sys.executable, "-c", KILLABLE, str(root)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "collecting"
        time.sleep(rng.uniform(0.0, 0.25 if round_ < 5 else 0.05))
        os.kill(proc.pid, signal.SIGKILL)
        interrupted += proc.stdout.read().strip() != "done"
        proc.wait()
        with cargohold.open(root) as db:
            ns = db.namespace("k")
            assert {img.target.digest for img in ns.images.list()} == set(kept)
            _verify_everything_readable(db)
            for info in db.content_store.walk():  # and nothing half-written is left as a blob
                with db.content_store.open(info.digest) as f:
                    assert "sha256:" + hashlib.sha256(f.read()).hexdigest() == info.digest
    assert interrupted >= 2  # most kills landed inside a collection
    with cargohold.open(root) as db:
        db.garbage_collect()
        ns = db.namespace("k")
        assert {info.digest for info in ns.content.walk()} == set(kept)
        assert {info.digest for info in db.content_store.walk()} == set(kept)
        assert [s.name for s in ns.snapshotter("native").walk()] == ["rootfs"]
        assert len(list(db.snapshotters["native"].walk())) == 1
