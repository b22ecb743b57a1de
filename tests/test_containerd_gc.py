"""The GC plan of a containerd root equals what containerd's own collector then removes.

Each scenario builds a state on a private containerd 1.6 with ctr (and its gRPC
API where ctr has no command), plans with `Host.unreachable()` while the daemon
runs, triggers one synchronous collection (`ctr leases rm --sync`) and compares:
the nodes that disappeared are exactly the plan, the plan of what is left is
empty, and the files and directories that disappeared are exactly what
`usage.reclaim` said would be freed.
"""

from __future__ import annotations

import hashlib
import os
import time
from datetime import datetime, timedelta, timezone

import cargohold.containerd as ctrd
from cargohold.containerd import usage
from cargohold.model import Node, ResourceType
from containerd_daemon import (Api, image_archive, index_archive, layer, needs_containerd, start_daemon,
                               unmount_under)

pytestmark = needs_containerd

CONTENT, SNAPSHOT, LEASE, INGEST = ResourceType.CONTENT, ResourceType.SNAPSHOT, ResourceType.LEASE, ResourceType.INGEST


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _files(root: str) -> set:
    """Every blob file, ingest directory and backend snapshot directory under a containerd root."""
    out = set()
    for sub in ("io.containerd.content.v1.content/blobs/sha256", "io.containerd.content.v1.content/ingest",
                "io.containerd.snapshotter.v1.native/snapshots", "io.containerd.snapshotter.v1.overlayfs/snapshots"):
        directory = os.path.join(root, sub)
        if os.path.isdir(directory):
            out.update(os.path.join(directory, name) for name in os.listdir(directory))
    return out


class Scenario:
    def __init__(self, base, daemon, api):
        self.base, self.d, self.api = base, daemon, api

    def ingest(self, data: bytes, ref: str, ns: str = "default", **labels) -> str:
        self.d.ctr("content", "ingest", ref, input=data, namespace=ns)
        digest = sha(data)
        if labels:
            self.d.ctr("content", "label", digest, *(f"{k}={v}" for k, v in labels.items()), namespace=ns)
        return digest

    def label(self, digest: str, *pairs: str, ns: str = "default") -> None:
        self.d.ctr("content", "label", digest, *pairs, namespace=ns)

    def archive(self, name: str, files: list, **options) -> str:
        path = str(self.base / f"{name.replace('/', '_').replace(':', '_')}.tar")
        image_archive(path, name, [layer(f) for f in files], **options)
        return path

    def snapshot_chain(self, snapshotter: str, *names: str, ns: str = "default") -> None:
        """Committed snapshots, each on the previous; ctr roots them (gc.root), so that label is dropped."""
        parent = ""
        for name in names:
            args = ["snapshots", "--snapshotter", snapshotter, "prepare", f"{name}-active"] + ([parent] if parent else [])
            self.d.ctr(*args, namespace=ns)
            self.d.ctr("snapshots", "--snapshotter", snapshotter, "commit", name, f"{name}-active", namespace=ns)
            self.d.ctr("snapshots", "--snapshotter", snapshotter, "label", name, "containerd.io/gc.root=", namespace=ns)
            parent = name


def run(tmp_path, build):
    """Build a scenario, plan, collect, compare; returns (plan, freed) for scenario-specific checks."""
    daemon = start_daemon(str(tmp_path / "d"))
    api = Api(daemon.address)
    try:
        build(Scenario(tmp_path, daemon, api))
        with ctrd.open_root(daemon.root) as before:
            planned = before.unreachable()
            known = set(before.nodes())
            freed = usage.reclaim(before, planned)
        files_before = _files(daemon.root)
        daemon.gc()
        with ctrd.open_root(daemon.root) as after:
            left = set(after.nodes())
            assert after.unreachable() == []
        assert left <= known
        assert sorted(known - left) == planned
        assert files_before - _files(daemon.root) == {item.path for item in freed}
        return set(planned), freed
    finally:
        api.close()
        unmount_under(str(tmp_path))
        daemon.stop()


def node(rtype, key, ns="default") -> Node:
    return Node(rtype, ns, key)


def test_shared_layers(tmp_path):
    def build(s: Scenario):
        a = s.archive("example.com/a:1", [{"base": b"shared"}, {"only-a": b"a"}])
        b = s.archive("example.com/b:1", [{"base": b"shared"}, {"only-b": b"b"}])
        s.d.ctr("images", "import", "--snapshotter", "native", a)
        s.d.ctr("images", "import", "--snapshotter", "native", b)
        s.d.ctr("images", "rm", "example.com/a:1")

    planned, freed = run(tmp_path, build)
    types = sorted(n.type for n in planned)
    # a's manifest, config and own layer, both archives' index.json (ctr drops their image); a's top snapshot
    assert types == [CONTENT] * 5 + [SNAPSHOT], planned
    assert sum(item.size for item in freed if item.store == "content") > 0


def test_container_keeps_its_snapshots(tmp_path):
    def build(s: Scenario):
        s.d.ctr("images", "import", "--snapshotter", "native", s.archive("example.com/c:1", [{"a": b"1"}, {"b": b"2"}]))
        s.d.ctr("containers", "create", "--snapshotter", "native", "example.com/c:1", "web")
        s.d.ctr("images", "rm", "example.com/c:1")

    planned, _ = run(tmp_path, build)
    assert {n.type for n in planned} == {CONTENT} and len(planned) == 5   # 4 blobs of the image, index.json


def test_leases_flat_and_expired(tmp_path):
    blobs = {name: name.encode() * 3 for name in ("keep", "old", "loose", "m", "n", "m2", "n2", "q")}
    digests = {name: sha(data) for name, data in blobs.items()}

    def build(s: Scenario):
        for name, data in blobs.items():
            s.ingest(data, f"ref-{name}")
        s.label(digests["m"], f"containerd.io/gc.ref.content.child={digests['n']}")
        s.label(digests["m2"], f"containerd.io/gc.ref.content.child={digests['n2']}")
        s.snapshot_chain("native", "s1", "s2")
        s.d.ctr("snapshots", "--snapshotter", "native", "label", "s2", f"containerd.io/gc.ref.content={digests['q']}")
        s.snapshot_chain("native", "unheld")
        s.d.ctr("leases", "create", "--id", "keep", "--expires", "0s")
        s.d.ctr("leases", "create", "--id", "old", "--expires", "1s")
        s.d.ctr("leases", "create", "--id", "flat", "containerd.io/gc.flat=1")
        s.d.ctr("leases", "create", "--id", "deep")
        s.api.lease_add("keep", digests["keep"], "content")
        s.api.lease_add("old", digests["old"], "content")
        s.api.lease_add("flat", digests["m"], "content")
        s.api.lease_add("flat", "s2", "snapshots/native")
        s.api.lease_add("deep", digests["m2"], "content")
        time.sleep(1.2)  # lease "old" expires

    planned, _ = run(tmp_path, build)
    assert planned == {node(CONTENT, digests[n]) for n in ("old", "loose", "n", "q")} | {
        node(LEASE, "old"), node(SNAPSHOT, "native/unheld")}


def test_gc_root_labels_are_exact_in_1x(tmp_path):
    root_blob, near_miss, plain = b"rooted", b"near miss", b"plain"

    def build(s: Scenario):
        s.ingest(root_blob, "r1", **{"containerd.io/gc.root": "2030-01-01T00:00:00Z"})
        s.ingest(near_miss, "r2", **{"containerd.io/gc.rootish": "x"})
        s.ingest(plain, "r3")
        s.snapshot_chain("native", "base", "pinned")
        s.d.ctr("snapshots", "--snapshotter", "native", "label", "pinned", "containerd.io/gc.root=1")
        s.snapshot_chain("native", "unpinned")

    planned, _ = run(tmp_path, build)
    assert planned == {node(CONTENT, sha(near_miss)), node(CONTENT, sha(plain)), node(SNAPSHOT, "native/unpinned")}


def test_label_references(tmp_path):
    names = ("a1", "a2", "a3", "bad", "back", "img")
    data = {n: f"target {n}".encode() for n in names}
    d = {n: sha(v) for n, v in data.items()}
    parent = b"the parent"

    def build(s: Scenario):
        for n in names:
            s.ingest(data[n], f"ref-{n}")
        s.snapshot_chain("native", "snap1")
        s.snapshot_chain("native", "snap2")
        s.snapshot_chain("native", "snap3")
        s.ingest(parent, "parent", **{
            "containerd.io/gc.root": "1",
            "containerd.io/gc.ref.content.a": d["a1"], "containerd.io/gc.ref.content/b": d["a2"],
            "containerd.io/gc.ref.content": d["a3"], "containerd.io/gc.ref.contentbad": d["bad"],
            "containerd.io/gc.ref.snapshot.native": "snap1", "containerd.io/gc.ref.snapshot.native/x": "snap2",
            "containerd.io/gc.ref.image": "example.com/none:1"})
        s.label(d["back"], f"containerd.io/gc.bref.content={sha(parent)}")   # a 2.x back reference

    planned, _ = run(tmp_path, build)
    assert planned == {node(CONTENT, d["bad"]), node(CONTENT, d["back"]), node(CONTENT, d["img"]),
                       node(SNAPSHOT, "native/snap3")}


def test_ingests(tmp_path):
    wanted, stray = b"the expected bytes", b"stray"

    def build(s: Scenario):
        s.api.write("unleased", b"part of", commit=False)                    # expires in 24 h: a root
        s.d.ctr("leases", "create", "--id", "tmp")
        s.api.write("leased", b"part of more", lease="tmp", commit=False)   # no expiry: lives by its lease
        s.d.ctr("leases", "rm", "tmp")
        s.ingest(wanted, "other-ref", ns="other")                            # garbage in "other"...
        s.api.write("pending", b"", expected=sha(wanted), commit=False)     # ...but a shared ingest expects it
        s.ingest(stray, "stray-ref")

    planned, freed = run(tmp_path, build)
    assert planned == {node(INGEST, "leased"), node(CONTENT, sha(stray)), node(CONTENT, sha(wanted), "other")}
    assert [item.store for item in freed if item.node == node(INGEST, "leased")] == ["ingests"]
    assert not [item for item in freed if item.name == sha(wanted)]     # the blob stays for "pending"


def test_ingest_expiry_follows_the_clock(tmp_path):
    """No oracle can wait 24 hours: judged a day later, the unleased ingest is garbage."""
    daemon = start_daemon(str(tmp_path / "d"))
    api = Api(daemon.address)
    try:
        api.write("unleased", b"part of", commit=False)
        later = datetime.now(timezone.utc) + timedelta(hours=25)
        with ctrd.open_root(daemon.root) as now, ctrd.open_root(daemon.root, clock=lambda: later) as tomorrow:
            assert now.unreachable() == []
            assert tomorrow.unreachable() == [node(INGEST, "unleased")]
    finally:
        api.close()
        daemon.stop()


def test_multi_platform_index(tmp_path):
    def build(s: Scenario):
        one = str(s.base / "one.tar")
        two = str(s.base / "two.tar")
        index_archive(one, "example.com/one:1", {"linux/amd64": [layer({"x": b"1"})], "linux/arm64": [layer({"x": b"2"})]})
        index_archive(two, "example.com/two:1", {"linux/amd64": [layer({"y": b"3"})], "linux/arm64": [layer({"y": b"4"})]})
        s.d.ctr("images", "import", "--all-platforms", "--no-unpack", one)
        s.d.ctr("images", "import", "--snapshotter", "native", two)   # the host's platform only
        s.d.ctr("images", "rm", "example.com/one:1")

        state["two"] = s.d.ctr_lines("images", "ls", "-q")

    state = {}
    planned, _ = run(tmp_path, build)
    assert {n.type for n in planned} == {CONTENT}
    one = _archive_blobs(tmp_path / "one.tar")
    two = _archive_blobs(tmp_path / "two.tar")
    assert one <= {n.key for n in planned}                 # every blob of the removed index
    kept = two - {n.key for n in planned}
    assert len(kept) == 4                                  # two's index, and its amd64 manifest, config, layer


def _archive_blobs(path) -> set:
    import tarfile

    with tarfile.open(path) as tar:
        return {"sha256:" + m.name.rsplit("/", 1)[1] for m in tar.getmembers() if m.name.startswith("blobs/sha256/")}


def test_overlayfs(tmp_path):
    def build(s: Scenario):
        s.d.ctr("images", "import", "--snapshotter", "overlayfs", s.archive("example.com/o:1", [{"a": b"1"}, {"b": b"2"}]))
        s.d.ctr("images", "import", "--snapshotter", "overlayfs", s.archive("example.com/p:1", [{"c": b"3"}]))
        s.d.ctr("containers", "create", "--snapshotter", "overlayfs", "example.com/o:1", "ov")
        s.d.ctr("images", "rm", "example.com/o:1")
        s.d.ctr("images", "rm", "example.com/p:1")

    planned, freed = run(tmp_path, build)
    assert node(SNAPSHOT, "overlayfs/ov") not in planned
    assert sum(1 for n in planned if n.type == SNAPSHOT) == 1      # p's single layer
    snapshot_dirs = [item for item in freed if item.store == "snapshots/overlayfs"]
    assert len(snapshot_dirs) == 1 and snapshot_dirs[0].size > 0


def test_rules_2x_differ_where_containerd_2_does(tmp_path):
    """On the same 1.x file, the 2.x rules keep what back references and gc.root prefixes hold."""
    daemon = start_daemon(str(tmp_path / "d"))
    try:
        s = Scenario(tmp_path, daemon, None)
        root = s.ingest(b"root", "r", **{"containerd.io/gc.root": "1"})
        s.ingest(b"back", "b", **{"containerd.io/gc.bref.content": root})
        s.ingest(b"prefixed", "p", **{"containerd.io/gc.rootish": "1"})
        with ctrd.open_root(daemon.root) as h1, ctrd.open_root(daemon.root, rules="2.x") as h2:
            assert h1.rules == "1.x" and {n.key for n in h1.unreachable()} == {sha(b"back"), sha(b"prefixed")}
            assert h2.unreachable() == []
    finally:
        daemon.stop()
