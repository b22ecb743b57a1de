"""Random operations against an independent reachability model.

Hypothesis drives images, containers, leases (expiring, flat) with resources,
content and snapshots carrying random reference labels, user deletions and the
clock; after each collection the surviving nodes must be exactly what the
model computes as reachable from containerd's roots.
"""

from __future__ import annotations

from collections import deque

from hypothesis import event, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import cargohold
from cargohold import Node, Resource, ResourceType as RT
from gcutil import Clock, blob, container, image

NS = "model"
REF_CONTENT = "containerd.io/gc.ref.content."
REF_SNAPSHOT = "containerd.io/gc.ref.snapshot.native/"
BREF_CONTENT = "containerd.io/gc.bref.content"
ROOT = "containerd.io/gc.root"
EXPIRE = "containerd.io/gc.expire"
FLAT = "containerd.io/gc.flat"


class Model:
    """What exists, and containerd's reachability rules written directly over it."""

    def __init__(self):
        self.content = {}     # digest -> labels
        self.snapshots = {}   # key -> (parent, labels)
        self.images = {}      # name -> (target, labels)
        self.containers = {}  # id -> snapshot key
        self.leases = {}      # id -> (labels, set of (kind, key))

    def existing(self) -> set:
        return ({Node(RT.CONTENT, NS, d) for d in self.content}
                | {Node(RT.SNAPSHOT, NS, f"native/{k}") for k in self.snapshots}
                | {Node(RT.IMAGE, NS, n) for n in self.images}
                | {Node(RT.LEASE, NS, lease) for lease in self.leases})

    @staticmethod
    def expired(labels, now) -> bool:
        return EXPIRE in labels and labels[EXPIRE] < now

    def label_refs(self, labels) -> list:
        refs = []
        for key, value in labels.items():
            if key.startswith(REF_CONTENT):
                refs.append(("content", value))
            elif key.startswith(REF_SNAPSHOT):
                refs.append(("snapshot", value))
        return refs

    def reachable(self, now: str) -> set:
        brefs = {}  # target -> objects that name it with a back reference
        for d, labels in self.content.items():
            if BREF_CONTENT in labels:
                brefs.setdefault(("content", labels[BREF_CONTENT]), []).append(("content", d))
        roots = []
        for name, (_, labels) in self.images.items():
            if not self.expired(labels, now):
                roots.append((("image", name), False))
        for cid, key in self.containers.items():
            roots.append((("snapshot", key), False))
        for d, labels in self.content.items():
            if ROOT in labels:
                roots.append((("content", d), False))
        for key, (_, labels) in self.snapshots.items():
            if ROOT in labels:
                roots.append((("snapshot", key), False))
        for lease, (labels, resources) in self.leases.items():
            if not self.expired(labels, now):
                roots.append((("lease", lease), False))
                roots.extend((res, FLAT in labels) for res in resources)
        seen = set()
        queue = deque(roots)
        while queue:
            (kind, key), flat = queue.popleft()
            if ((kind, key), flat) in seen:
                continue
            seen.add(((kind, key), flat))
            out = []
            if kind == "image" and key in self.images:
                target, labels = self.images[key]
                out.append((("content", target), flat))
                if not flat:
                    out += [(r, False) for r in self.label_refs(labels)]
            elif kind == "content" and key in self.content and not flat:
                out += [(r, False) for r in self.label_refs(self.content[key])]
            elif kind == "snapshot" and key in self.snapshots:
                parent, labels = self.snapshots[key]
                if parent:
                    out.append((("snapshot", parent), flat))
                if not flat:
                    out += [(r, False) for r in self.label_refs(labels)]
            if not flat:
                out += [(r, False) for r in brefs.get((kind, key), [])]
            queue.extend(out)
        names = {"content": RT.CONTENT, "snapshot": RT.SNAPSHOT, "image": RT.IMAGE, "lease": RT.LEASE}
        return {Node(names[kind], NS, f"native/{key}" if kind == "snapshot" else key)
                for (kind, key), _ in seen}

    def forget(self, node: Node) -> None:
        if node.type == RT.CONTENT:
            del self.content[node.key]
        elif node.type == RT.SNAPSHOT:
            del self.snapshots[node.key.split("/", 1)[1]]
        elif node.type == RT.IMAGE:
            del self.images[node.key]
        elif node.type == RT.LEASE:
            del self.leases[node.key]


class GCMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        import tempfile

        self.tmp = tempfile.TemporaryDirectory(prefix="cargohold-model-")
        self.clock = Clock()
        self.db = cargohold.open(self.tmp.name, clock=self.clock)
        self.ns = self.db.namespace(NS)
        self.model = Model()
        self.active = set()  # snapshot keys that are active (cannot be parents)
        self.counter = 0

    def teardown(self):
        self.db.close()
        self.tmp.cleanup()

    def _next(self) -> int:
        self.counter += 1
        return self.counter

    def _stamp(self, hours: int) -> str:
        return self.clock.rfc3339(hours=hours)

    def _labels(self, data, allow_root=True, allow_bref=False) -> dict:
        labels = {}
        digests = sorted(self.model.content) + ["sha256:" + "0" * 64]
        snaps = sorted(self.model.snapshots) + ["missing"]
        for i in range(data.draw(st.integers(0, 2))):
            labels[f"{REF_CONTENT}{i}"] = data.draw(st.sampled_from(digests))
        if data.draw(st.booleans()):
            labels[f"{REF_SNAPSHOT}{self._next()}"] = data.draw(st.sampled_from(snaps))
        if allow_root and data.draw(st.integers(0, 5)) == 0:
            labels[ROOT] = "true"
        if allow_bref and self.model.content and data.draw(st.integers(0, 3)) == 0:
            labels[BREF_CONTENT] = data.draw(st.sampled_from(digests))
        return labels

    @rule(data=st.data())
    def add_content(self, data):
        labels = self._labels(data, allow_bref=True)
        d = blob(self.ns, b"blob-%d" % self._next(), labels=labels)
        self.model.content[d] = labels

    def _committed(self) -> list:
        return sorted(k for k in self.model.snapshots if k not in self.active)

    @rule(data=st.data())
    def add_snapshot(self, data):
        parent = data.draw(st.sampled_from([""] + self._committed()))
        labels = self._labels(data)
        key = f"s{self._next()}"
        sn = self.ns.snapshotter("native")
        sn.prepare(f"{key}-active", parent)
        sn.commit(key, f"{key}-active", labels=labels)
        self.model.snapshots[key] = (parent, labels)

    @rule(data=st.data())
    def add_image(self, data):
        target = data.draw(st.sampled_from(sorted(self.model.content) + ["sha256:" + "1" * 64]))
        labels = self._labels(data, allow_root=False)
        expiry = data.draw(st.sampled_from([None, -1, 1]))
        if expiry is not None:
            labels[EXPIRE] = self._stamp(expiry)
        name = f"img{self._next()}"
        image(self.ns, name, target, labels=labels)
        self.model.images[name] = (target, labels)

    @rule(data=st.data())
    def add_container(self, data):
        parent = data.draw(st.sampled_from([""] + self._committed()))
        key = f"rootfs{self._next()}"
        self.ns.snapshotter("native").prepare(key, parent)
        self.model.snapshots[key] = (parent, {})
        self.active.add(key)
        cid = f"c{self._next()}"
        container(self.ns, cid, key)
        self.model.containers[cid] = key

    @rule(data=st.data())
    def add_lease(self, data):
        labels = {}
        expiry = data.draw(st.sampled_from([None, -1, 1]))
        if expiry is not None:
            labels[EXPIRE] = self._stamp(expiry)
        if data.draw(st.booleans()):
            labels[FLAT] = "true"
        lease = f"l{self._next()}"
        self.ns.leases.create(lease, labels=labels)
        self.model.leases[lease] = (labels, set())

    @precondition(lambda self: self.model.leases)
    @rule(data=st.data())
    def lease_resource(self, data):
        lease = data.draw(st.sampled_from(sorted(self.model.leases)))
        choices = ([("content", d) for d in self.model.content]
                   + [("snapshot", k) for k in self.model.snapshots]
                   + [("image", n) for n in self.model.images])
        if not choices:
            return
        kind, key = data.draw(st.sampled_from(sorted(choices)))
        rtype = {"content": "content", "snapshot": "snapshots/native", "image": "images"}[kind]
        self.ns.leases.add_resource(lease, Resource(key, rtype))
        self.model.leases[lease][1].add((kind, key))

    @precondition(lambda self: self.model.images)
    @rule(data=st.data())
    def delete_image(self, data):
        name = data.draw(st.sampled_from(sorted(self.model.images)))
        self.ns.images.delete(name)
        del self.model.images[name]

    @precondition(lambda self: self.model.containers)
    @rule(data=st.data())
    def delete_container(self, data):
        cid = data.draw(st.sampled_from(sorted(self.model.containers)))
        self.ns.containers.delete(cid)
        del self.model.containers[cid]

    @precondition(lambda self: self.model.leases)
    @rule(data=st.data())
    def delete_lease(self, data):
        lease = data.draw(st.sampled_from(sorted(self.model.leases)))
        self.ns.leases.delete(lease)
        del self.model.leases[lease]

    @precondition(lambda self: self.model.content)
    @rule(data=st.data())
    def delete_content(self, data):
        d = data.draw(st.sampled_from(sorted(self.model.content)))
        self.ns.content.delete(d)
        del self.model.content[d]

    @precondition(lambda self: self.model.snapshots)
    @rule(data=st.data())
    def remove_leaf_snapshot(self, data):
        parents = {p for p, _ in self.model.snapshots.values()}
        leaves = sorted(k for k in self.model.snapshots if k not in parents)
        key = data.draw(st.sampled_from(leaves))
        self.ns.snapshotter("native").remove(key)  # a container using it keeps a dead reference
        del self.model.snapshots[key]
        self.active.discard(key)

    @rule(hours=st.sampled_from([1, 2]))
    def advance_clock(self, hours):
        self.clock.advance(hours=hours)

    @rule()
    def collect(self):
        now = self._stamp(0)
        expected = self.model.reachable(now) & self.model.existing()
        doomed = self.model.existing() - expected
        stats = self.db.garbage_collect()
        event(f"collected {min(len(doomed), 5)}+ nodes" if len(doomed) >= 5 else f"collected {len(doomed)} nodes")
        assert set(stats.removed) == doomed
        for node in doomed:
            self.model.forget(node)
        self.active &= set(self.model.snapshots)
        assert set(self.db.nodes()) == self.model.existing()
        blobs = {info.digest for info in self.db.content_store.walk()}
        assert blobs == set(self.model.content)
        assert len(list(self.db.snapshotters["native"].walk())) == len(self.model.snapshots)

    @invariant()
    def marking_matches_model(self):
        now = self._stamp(0)
        expected = self.model.reachable(now) & self.model.existing()
        marked = {n for n in self.db.mark() if n.type != RT.CONTAINER}
        assert marked == expected


GCMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)
TestGCModel = GCMachine.TestCase
