"""The etcd metadata engine (`cargohold.engines.etcd`) on a real etcd cluster.

"Hosts" are separate `EtcdEnv`s (their own lease and writer-lock holds), in
this process or in child processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import cargohold
from cargohold import schema
from cargohold.db import DB
from cargohold.engines.etcd import REQUEST_LIMIT, EtcdEnv, parse_url
from cargohold.errors import InvalidArgument, Unavailable
from cargohold.kv import Env, open_env

TABLES = ("a", "b")


@pytest.fixture
def env(etcd_url):
    store = EtcdEnv(etcd_url, TABLES)
    yield store
    store.close()


@pytest.mark.parametrize("url", [
    "etcd://127.0.0.1:2379", "etcd://127.0.0.1:2379/", "http://127.0.0.1:2379/x", "etcd://127.0.0.1/x",
    "etcd://127.0.0.1:0/x", "etcd://127.0.0.1:99999/x", "etcd://:2379/x", "etcd://127.0.0.1:2379/a!b",
    "etcd://127.0.0.1:2379/x?ttl=3", "etcd://127.0.0.1:2379/x\n", 7,
])
def test_bad_urls_are_refused_naming_them(url, tmp_path):
    with pytest.raises(InvalidArgument, match="metadata URL"):
        open_env(str(tmp_path), TABLES, metadata=url)
    if isinstance(url, str):
        with pytest.raises(InvalidArgument, match="metadata URL"):
            cargohold.open(tmp_path / "root", metadata=url)
        assert not (tmp_path / "root" / "meta" / "data.mdb").exists()


def test_a_bad_or_unreachable_url_creates_nothing(tmp_path):
    """A failed open leaves the disk as it was: neither the root nor its meta directory is made."""
    from etcd_cluster import free_ports

    port = free_ports(1)[0]
    for url, error in (("bogus", InvalidArgument), ("etcd://127.0.0.1/x", InvalidArgument),
                       (f"etcds://127.0.0.1:{port}/x?cacert={tmp_path / 'no.pem'}", InvalidArgument),
                       (f"etcd://127.0.0.1:{port}/x", Unavailable)):
        with pytest.raises(error, match="metadata URL|does not answer") as caught:
            cargohold.open(tmp_path / "root", metadata=url)
        assert url in str(caught.value)
        with pytest.raises(error, match="metadata URL|does not answer"):
            DB(str(tmp_path / "meta"), metadata=url)
        assert sorted(os.listdir(tmp_path)) == [], url


def test_parse_url_takes_every_member():
    assert parse_url("etcd://127.0.0.1:2379,[::1]:22379/fleet/a") == ([("127.0.0.1", 2379), ("::1", 22379)],
                                                                      "fleet/a")


def test_unreachable_cluster_is_unavailable(tmp_path):
    from etcd_cluster import free_ports

    port = free_ports(1)[0]
    with pytest.raises(Unavailable, match="does not answer"):
        open_env(str(tmp_path), TABLES, metadata=f"etcd://127.0.0.1:{port}/x")


def _exercise(store) -> list:
    """The same sequence on any engine; what each step returned."""
    seen = []
    with store.write() as txn:
        for i in (3, 1, 2, 10):
            seen.append(txn.put("a", b"k%d" % i, b"v%d" % i))
        seen.append(txn.put("a", b"k1", b"again", overwrite=False))
        seen.append(txn.put("b", b"k1", b"other table"))
        seen.append(txn.delete("a", b"k2"))
        seen.append(txn.delete("a", b"missing"))
        seen.append(list(txn.scan("a")))
        seen.append(txn.count("a"))
    with store.write() as txn:
        txn.put("a", b"k0", b"new")
        txn.put("a", b"k3", b"changed")
        txn.delete("a", b"k10")
        seen.append(list(txn.scan("a", b"k")))
        seen.append(list(txn.scan("a", b"k", start=b"k1")))
        seen.append(txn.keys("a", b"k1"))
        seen.append(txn.has_prefix("a", b"k2"))
        seen.append(txn.count("a"))
        seen.append(txn.delete_prefix("b", b""))
    with store.read() as txn:
        seen.append(list(txn.scan("a")))
        seen.append([txn.get("a", b"k3"), txn.get("a", b"k2"), txn.get("b", b"k1")])
        seen.append(txn.count("a"))
        seen.append(list(txn.scan("a", start=b"k1")))
    try:
        with store.write() as txn:
            txn.put("a", b"gone", b"x")
            raise RuntimeError("abort")
    except RuntimeError:
        pass
    with store.read() as txn:
        seen.append(txn.get("a", b"gone"))
        for call in (lambda: txn.put("a", b"x", b"y"), lambda: txn.get("nope", b"x")):
            with pytest.raises(InvalidArgument):
                call()
    with store.write() as txn:
        with pytest.raises(InvalidArgument, match="511"):
            txn.put("a", b"x" * 512, b"")
    return seen


def test_same_results_as_lmdb(env, tmp_path):
    lmdb_env = Env(str(tmp_path / "lmdb"), TABLES)
    try:
        expected = _exercise(lmdb_env)
    finally:
        lmdb_env.close()
    assert _exercise(env) == expected


def test_a_read_transaction_sees_one_revision(env, etcd_url):
    other = EtcdEnv(etcd_url, TABLES)
    try:
        with env.write() as txn:
            txn.put("a", b"x", b"1")
            txn.put("a", b"y", b"1")
        with env.read() as reader:
            assert reader.get("a", b"x") == b"1"
            with other.write() as txn:
                txn.put("a", b"x", b"2")
                txn.put("a", b"z", b"2")
                txn.delete("a", b"y")
            assert reader.get("a", b"x") == b"1"
            assert list(reader.scan("a")) == [(b"x", b"1"), (b"y", b"1")]
            assert reader.count("a") == 2
        with env.read() as reader:
            assert list(reader.scan("a")) == [(b"x", b"2"), (b"z", b"2")]
    finally:
        other.close()


def test_two_hosts_never_lose_each_others_updates(etcd_url):
    hosts = [EtcdEnv(etcd_url, TABLES) for _ in range(2)]
    rounds = 25

    def bump(store):
        for _ in range(rounds):
            with store.write() as txn:
                value = int(txn.get("a", b"n") or b"0")
                txn.put("a", b"n", b"%d" % (value + 1))

    threads = [threading.Thread(target=bump, args=(store,)) for store in hosts for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with hosts[0].read() as txn:
            assert txn.get("a", b"n") == b"%d" % (4 * rounds)
    finally:
        for store in hosts:
            store.close()


def test_a_value_above_the_request_limit_is_refused_naming_the_object(env):
    with env.write() as txn:
        txn.put("a", b"keep", b"1")
    with pytest.raises(InvalidArgument, match=r"object b'big'.*bytes"):
        with env.write() as txn:
            txn.put("a", b"small", b"2")
            txn.put("a", b"big", b"x" * REQUEST_LIMIT)
    with env.read() as txn:
        assert list(txn.scan("a")) == [(b"keep", b"1")]


def test_a_value_above_the_limit_through_the_api_is_invalid_argument(tmp_path, etcd_url):
    with cargohold.open(tmp_path / "root", metadata=etcd_url) as db:
        ns = db.namespace("default")
        big = cargohold.Container(id="big-spec", runtime=cargohold.RuntimeInfo("io.containerd.runc.v2"),
                                  spec=b"x" * REQUEST_LIMIT)
        with pytest.raises(InvalidArgument, match=r"objects object b'default.*big-spec"):
            ns.containers.create(big)
        assert ns.containers.list() == []


def test_the_writer_lock_wait_is_bounded(env, etcd_url):
    other = EtcdEnv(etcd_url, TABLES, lock_wait=0.3)
    try:
        with env.write() as txn:
            txn.put("a", b"x", b"1")
            start = time.monotonic()
            with pytest.raises(Unavailable, match="writer lock"):
                other.write()
            assert time.monotonic() - start >= 0.3
        with other.write() as txn:  # free again once the holder committed
            assert txn.get("a", b"x") == b"1"
    finally:
        other.close()


def test_waiting_writers_of_every_host_get_the_lock_in_the_order_they_asked(env, etcd_url):
    hosts = [EtcdEnv(etcd_url, TABLES) for _ in range(5)]
    order: list[int] = []
    threads = []
    try:
        holder = env.write()
        for number, host in enumerate(hosts):
            def write(number=number, host=host):
                with host.write() as txn:
                    order.append(number)
                    txn.put("a", b"w%d" % number, b"x")
            threads.append(threading.Thread(target=write))
            threads[-1].start()
            time.sleep(0.15)  # each host asks after the one before it
        holder.put("a", b"first", b"x")
        holder.commit()
        for thread in threads:
            thread.join(30)
        assert order == list(range(len(hosts)))
        with env.read() as txn:
            assert txn.count("a") == len(hosts) + 1
    finally:
        for host in hosts:
            host.close()


def test_an_expired_holder_cannot_commit(env, etcd_url, etcd_cluster):
    """Fencing: the lease behind a hold expires, another host takes the lock; the old commit fails."""
    other = EtcdEnv(etcd_url, TABLES)
    try:
        txn = env.write()
        txn.put("a", b"x", b"stale")
        etcd_cluster.request(0, "/v3/lease/revoke", {"ID": str(env._lease.id)})  # what an expiry does
        with other.write() as fresh:
            fresh.put("a", b"y", b"fresh")
        with pytest.raises(Unavailable, match="lost its writer lock"):
            txn.commit()
        with other.read() as reader:
            assert list(reader.scan("a")) == [(b"y", b"fresh")]
    finally:
        other.close()


def test_a_dead_hosts_hold_expires(etcd_url):
    """A process killed while it holds the writer lock: another host writes after the lease TTL."""
    code = textwrap.dedent(f"""
        import sys, time
        from cargohold.engines.etcd import EtcdEnv
        env = EtcdEnv({etcd_url!r}, ("a", "b"), lease_ttl=2)
        txn = env.write()
        txn.put("a", b"x", b"never")
        print("held", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        store = EtcdEnv(etcd_url, TABLES, lock_wait=20)
        try:
            start = time.monotonic()
            with store.write() as txn:
                assert txn.get("a", b"x") is None
                txn.put("a", b"x", b"after")
            assert time.monotonic() - start < 15
        finally:
            store.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_keys_and_values_are_those_of_the_schema_under_the_prefix(tmp_path, etcd_url, etcd_cluster):
    from base64 import b64decode, b64encode

    with cargohold.open(tmp_path / "root", metadata=etcd_url) as db:
        db.namespaces.create("fleet", labels={"team": "ci"})
    prefix = etcd_url.rpartition("/")[2].encode() + b"/" + schema.T_NAMESPACES.encode() + b"/"
    found = etcd_cluster.request(0, "/v3/kv/range", {"key": b64encode(prefix + b"fleet").decode()})
    raw = b64decode(found["kvs"][0]["value"])
    assert schema.unpack(raw)["labels"] == {"team": "ci"}
    assert not (tmp_path / "root" / "meta" / "data.mdb").exists()


def test_metadata_comes_from_the_environment_and_the_cli(tmp_path, etcd_url, monkeypatch):
    monkeypatch.setenv("CARGOHOLD_METADATA", etcd_url)
    with cargohold.open(tmp_path / "one") as db:
        db.namespaces.create("shared-ns")
    monkeypatch.delenv("CARGOHOLD_METADATA")
    with cargohold.open(tmp_path / "two", metadata=etcd_url) as db:  # another host, same metadata
        assert "shared-ns" in db.namespaces.list()
    with cargohold.open(tmp_path / "three") as db:
        assert db.namespaces.list() == []
    proc = subprocess.run([sys.executable, "-m", "cargohold.cli.main", "--root", str(tmp_path / "four"),
                           "--metadata", etcd_url, "namespaces", "ls"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "shared-ns" in proc.stdout


def test_a_transaction_beyond_the_clusters_limits_is_invalid_argument():
    """A cluster at etcd's defaults (1.5 MiB requests, 128 operations): refused whole, naming the limit."""
    from etcd_cluster import Cluster

    cluster = Cluster(1, raised_limits=False).start()
    store = EtcdEnv(cluster.url("limits"), TABLES)
    try:
        with pytest.raises(InvalidArgument, match="request size limit"):
            with store.write() as txn:
                for i in range(3):
                    txn.put("a", b"big%d" % i, b"x" * (REQUEST_LIMIT // 2))
        with pytest.raises(InvalidArgument, match="max-txn-ops"):
            with store.write() as txn:
                for i in range(200):
                    txn.put("a", b"k%d" % i, b"v")
        with store.read() as txn:
            assert txn.count("a") == 0
        with store.write() as txn:  # the lock was given back
            txn.put("a", b"fits", b"v")
    finally:
        store.close()
        cluster.stop()


def test_a_read_set_beyond_the_clusters_operation_limit_commits():
    """A cluster at etcd's default --max-txn-ops (128): a transaction that read 300 keys still commits
    (its read-set compares are capped at `MAX_COMPARES`: the counter compare makes it serializable)."""
    from etcd_cluster import Cluster

    cluster = Cluster(1, raised_limits=False).start()
    store = EtcdEnv(cluster.url("reads"), TABLES)
    other = EtcdEnv(cluster.url("reads"), TABLES)
    try:
        for batch in range(3):
            with store.write() as txn:
                for i in range(100):
                    txn.put("a", b"k%03d" % (100 * batch + i), b"v")
        with store.write() as txn:
            assert all(txn.get("a", b"k%03d" % i) == b"v" for i in range(300))
            txn.put("b", b"sum", b"300")
        with other.read() as txn:
            assert txn.get("b", b"sum") == b"300"
    finally:
        other.close()
        store.close()
        cluster.stop()
