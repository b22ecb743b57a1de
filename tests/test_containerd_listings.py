"""Every listing of `cargohold.containerd.open_root` equals what ctr lists for the same root.

One private containerd 1.6 (tests/containerd_daemon.py) holds two namespaces
with images (native and overlayfs unpacked, a multi-platform index), labels,
containers, leases with resources, committed, active and view snapshots, and
ingests in progress (leased and not). The host is read while the daemon runs.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from datetime import datetime

import pytest

import cargohold.containerd as ctrd
from cargohold.model import Kind
from containerd_daemon import (Api, image_archive, index_archive, layer, needs_containerd, parse_labels,
                               start_daemon, unmount_under)

pytestmark = needs_containerd

BLOB = b"a blob only labels hold"
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    base = tmp_path_factory.mktemp("listings")
    d = start_daemon(str(base / "d"))
    api = Api(d.address)
    try:
        image_archive(str(base / "a.tar"), "example.com/a:1", [layer({"etc/a": b"a"}), layer({"etc/b": b"b"})])
        image_archive(str(base / "b.tar"), "example.com/b:1", [layer({"etc/a": b"a"}), layer({"bin/b": b"bb"})])
        index_archive(str(base / "multi.tar"), "example.com/multi:1",
                      {"linux/amd64": [layer({"m": b"amd64"})], "linux/arm64": [layer({"m": b"arm64"})]})
        d.ctr("namespaces", "create", "other", "team=storage", "tier=1")
        d.ctr("namespaces", "label", "default", "owner=tests")
        d.ctr("images", "import", "--snapshotter", "native", str(base / "a.tar"))
        d.ctr("images", "import", "--snapshotter", "overlayfs", str(base / "b.tar"))
        d.ctr("images", "import", "--all-platforms", "--no-unpack", str(base / "multi.tar"))
        d.ctr("images", "import", "--snapshotter", "native", str(base / "a.tar"), namespace="other")
        d.ctr("images", "label", "example.com/a:1", "team=infra", "containerd.io/gc.expire=2030-01-01T00:00:00Z")
        d.ctr("containers", "create", "--snapshotter", "native", "--label", "app=web", "example.com/a:1", "web")
        d.ctr("containers", "create", "--snapshotter", "overlayfs", "example.com/b:1", "db")
        d.ctr("content", "ingest", "loose", input=BLOB)
        d.ctr("content", "label", BLOB_DIGEST, "containerd.io/gc.root=yes", "note=x")
        d.ctr("snapshots", "--snapshotter", "native", "prepare", "scratch")
        d.ctr("snapshots", "--snapshotter", "native", "commit", "scratch-done", "scratch")
        d.ctr("snapshots", "--snapshotter", "native", "view", "peek", "scratch-done")
        d.ctr("snapshots", "--snapshotter", "native", "label", "scratch-done", "containerd.io/gc.root=1")
        d.ctr("leases", "create", "--id", "build", "--expires", "1h", "purpose=build")
        api.lease_add("build", BLOB_DIGEST, "content")
        api.lease_add("build", "scratch-done", "snapshots/native")
        api.write("in-lease", b"half of it", lease="build", commit=False)
        api.write("no-lease", b"some bytes", commit=False)
        d.ctr("leases", "create", "--id", "forever", "--expires", "0s", "containerd.io/gc.flat=1", namespace="other")
        yield d
    finally:
        api.close()
        unmount_under(str(base))
        d.stop()


@pytest.fixture(scope="module")
def host(daemon):
    with ctrd.open_root(daemon.root) as h:
        yield h


NAMESPACES = ["default", "other"]


def _ctr_table(daemon, *args, namespace="default") -> list[list[str]]:
    return [line.split() for line in daemon.ctr_lines(*args, namespace=namespace)[1:]]


def test_namespaces_and_labels(daemon, host):
    assert host.namespaces() == daemon.ctr_lines("namespaces", "ls", "-q")
    for row in _ctr_table(daemon, "namespaces", "ls"):
        assert host.namespace_labels(row[0]) == parse_labels(row[1] if len(row) > 1 else "-")
    assert host.db_version == 3 and host.rules == "1.x"


@pytest.mark.parametrize("ns", NAMESPACES)
def test_images(daemon, host, ns):
    images = host.images(ns)
    assert [i.name for i in images] == daemon.ctr_lines("images", "ls", "-q", namespace=ns)
    rows = {row[0]: row for row in _ctr_table(daemon, "images", "ls", namespace=ns)}
    for image in images:
        row = rows[image.name]
        assert (row[1], row[2]) == (image.target.media_type, image.target.digest)
        assert parse_labels(row[-1]) == image.labels
        assert image.target.annotations.get("io.containerd.image.name") == image.name
        assert image.created_at is not None and image.updated_at >= image.created_at


@pytest.mark.parametrize("ns", NAMESPACES)
def test_content(daemon, host, ns):
    infos = host.content(ns)
    assert sorted(i.digest for i in infos) == sorted(daemon.ctr_lines("content", "ls", "-q", namespace=ns))
    rows = {}
    for line in daemon.ctr_lines("content", "ls", namespace=ns)[1:]:
        fields = [f for f in line.split("\t") if f]
        rows[fields[0]] = fields
    for info in infos:
        fields = rows[info.digest]
        assert fields[1] == f"{info.size}B"
        assert parse_labels(fields[-1] if len(fields) == 4 else "-") == info.labels
        with open(host.content_dir.blob_path(info.digest), "rb") as f:
            assert "sha256:" + hashlib.sha256(f.read()).hexdigest() == info.digest


@pytest.mark.parametrize("ns", NAMESPACES)
@pytest.mark.parametrize("snapshotter", ["native", "overlayfs"])
def test_snapshots(daemon, host, ns, snapshotter):
    infos = host.snapshots(ns, snapshotter)
    expected = []
    for row in _ctr_table(daemon, "snapshots", "--snapshotter", snapshotter, "ls", namespace=ns):
        key, parent, kind = (row[0], "", row[1]) if len(row) == 2 else row
        expected.append((key, parent, kind))
    assert sorted((i.name, i.parent, str(i.kind)) for i in infos) == sorted(expected)
    for info in infos:
        ctr = json.loads(daemon.ctr("snapshots", "--snapshotter", snapshotter, "info", info.name, namespace=ns))
        assert info.labels == (ctr.get("Labels") or {})
        assert _us(ctr["Created"]) == info.created_at and _us(ctr["Updated"]) == info.updated_at
    if ns == "default" and snapshotter == "native":
        kinds = {i.name: i.kind for i in infos}
        assert kinds["scratch-done"] == Kind.COMMITTED and kinds["peek"] == Kind.VIEW and kinds["web"] == Kind.ACTIVE


@pytest.mark.parametrize("ns", NAMESPACES)
def test_leases_and_resources(daemon, host, ns):
    leases = host.leases(ns)
    rows = _ctr_table(daemon, "leases", "ls", namespace=ns)
    assert [lease.id for lease in leases] == [row[0] for row in rows]
    api = Api(daemon.address)
    try:
        for lease, row in zip(leases, rows):
            assert lease.created_at.strftime("%Y-%m-%dT%H:%M:%SZ") == row[1]
            assert lease.labels == parse_labels(row[2] if len(row) > 2 else "-")
            assert [(r.id, r.type) for r in host.lease_resources(ns, lease.id)] == \
                api.lease_resources(lease.id, ns=ns)
    finally:
        api.close()
    if ns == "default":
        assert {(r.id, r.type) for r in host.lease_resources(ns, "build")} == {
            (BLOB_DIGEST, "content"), ("scratch-done", "snapshots/native"), ("in-lease", "ingests")}


@pytest.mark.parametrize("ns", NAMESPACES)
def test_containers(daemon, host, ns):
    containers = host.containers(ns)
    assert [c.id for c in containers] == daemon.ctr_lines("containers", "ls", "-q", namespace=ns)
    for c in containers:
        ctr = json.loads(daemon.ctr("containers", "info", c.id, namespace=ns))
        assert (c.image, c.snapshotter, c.snapshot_key) == (ctr["Image"], ctr["Snapshotter"], ctr["SnapshotKey"])
        assert c.labels == ctr["Labels"]
        assert c.runtime.name == ctr["Runtime"]["Name"]
        assert c.runtime.options["type_url"] == ctr["Runtime"]["Options"]["type_url"]
        assert json.loads(c.spec) == ctr["Spec"]
        assert (c.created_at, c.updated_at) == (_us(ctr["CreatedAt"]), _us(ctr["UpdatedAt"]))
        assert c.extensions == {}


@pytest.mark.parametrize("ns", NAMESPACES)
def test_ingests(daemon, host, ns):
    rows = {}
    for line in daemon.ctr_lines("content", "active", namespace=ns)[1:]:
        fields = [f for f in line.split("\t") if f]
        rows[fields[0]] = fields[1]
    assert {s.ref: f"{s.offset}B" for s in host.ingests(ns)} == rows
    records = {r.ref: r for r in host.ingest_records(ns)}
    if ns == "default":
        assert records["in-lease"].expire_at is None
        assert records["no-lease"].expire_at is not None


def test_reading_while_the_daemon_writes(daemon, host):
    """Each read is one committed transaction: two labels set together are always seen together."""
    stop = threading.Event()
    errors: list = []

    def writer():
        n = 0
        while not stop.is_set():
            n += 1
            try:
                daemon.ctr("content", "label", BLOB_DIGEST, "containerd.io/gc.root=yes", f"a={n}", f"b={n}")
            except AssertionError as exc:  # pragma: no cover - reported below
                errors.append(exc)
                return

    planned = host.unreachable()
    thread = threading.Thread(target=writer)
    thread.start()
    seen = set()
    reads = 0
    deadline = time.monotonic() + 60
    try:
        # at least 25 reads, and on until the writer has committed while we read (a read can
        # take less time than one `ctr` call on a loaded machine)
        while reads < 25 or (len(seen) < 2 and time.monotonic() < deadline):
            reads += 1
            with ctrd.open_root(daemon.root) as live:
                labels = {i.digest: i.labels for i in live.content("default")}[BLOB_DIGEST]
                assert labels.get("a") == labels.get("b")
                seen.add(labels.get("a"))
                assert live.unreachable() == planned
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert len(seen) > 1, "the writer never committed while we read"


def _us(text: str) -> datetime:
    """A Go RFC 3339 nanosecond time, at the microsecond precision of a datetime."""
    from cargohold.containerd import gotime

    return gotime.decode_text(text).datetime()
