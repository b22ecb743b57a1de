"""The etcd engine over TLS (``etcds://``): a real member started with self-signed certificates
(openssl) that requires a client certificate."""

from __future__ import annotations

import os

import pytest

import cargohold
from cargohold.errors import InvalidArgument, Unavailable

from etcd_cluster import Cluster, free_ports, make_certs
from gcutil import blob, image


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    cluster = Cluster(1, tls=make_certs(str(tmp_path_factory.mktemp("certs")))).start()
    yield cluster
    cluster.stop()


def test_hosts_share_a_store_over_tls_with_client_certificates(tls_cluster, tmp_path):
    url = tls_cluster.url("tls-fleet")
    with cargohold.open(tmp_path / "a", metadata=url) as db:
        ns = db.namespace("default")
        kept = blob(ns, b"kept over TLS")
        image(ns, "img", kept, size=len(b"kept over TLS"))
        db.namespace("default").snapshotter("native").prepare("k")
        assert not db.garbage_collect().errors
        assert db.fsck().clean
    with cargohold.open(tmp_path / "b", metadata=url) as other:
        assert [img.name for img in other.namespace("default").images.list()] == ["img"]


def test_tls_needs_the_clusters_ca_and_a_client_certificate(tls_cluster, tmp_path):
    tls = tls_cluster.tls
    hosts = tls_cluster.endpoints
    wrong = make_certs(str(tmp_path / "other"), "other")
    for url in (f"etcd://{hosts}/x",  # plain HTTP to a TLS member
                f"etcds://{hosts}/x?cacert={tls['ca']}",  # no client certificate
                f"etcds://{hosts}/x?cacert={wrong['ca']}&cert={tls['cert']}&key={tls['key']}",  # another CA
                f"etcds://{hosts}/x?cacert={tls['ca']}&cert={wrong['cert']}&key={wrong['key']}"):  # not its client
        with pytest.raises(Unavailable, match="does not answer|refused"):
            cargohold.open(tmp_path / "root", metadata=url)
        assert not (tmp_path / "root" / "meta" / "data.mdb").exists()


def test_tls_options_are_checked_naming_them(tmp_path):
    pem = tmp_path / "ca.pem"
    pem.write_text("not checked before a connection")
    port = free_ports(1)[0]
    base = f"127.0.0.1:{port}/x"
    for url, detail in ((f"etcd://{base}?cacert={pem}", "needs etcds"),
                        (f"etcds://{base}?cacert={tmp_path / 'missing.pem'}", "not a readable file"),
                        (f"etcds://{base}?cacert=", "not a readable file"),
                        (f"etcds://{base}?cert={pem}", "both cert= and key="),
                        (f"etcds://{base}?cacert={pem}&cacert={pem}", "twice"),
                        (f"etcds://{base}?ttl=3", "option 'ttl'"),
                        (f"etcds://{base}?cacert", "malformed query")):
        with pytest.raises(InvalidArgument, match=detail):
            cargohold.open(tmp_path / "root", metadata=url)
        assert not os.path.exists(tmp_path / "root" / "meta" / "data.mdb")
    with pytest.raises(Unavailable, match="does not answer"):  # well-formed: the member is not there
        cargohold.open(tmp_path / "root", metadata=f"etcds://{base}?cacert={pem}")
