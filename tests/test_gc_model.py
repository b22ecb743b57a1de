"""Random operations against an independent reachability model.

Hypothesis drives images, containers, leases (expiring, flat) with resources,
content and snapshots carrying random reference labels, user deletions and the
clock; after each collection the surviving nodes must be exactly what the
model computes as reachable from containerd's roots.

`ConcurrentGCMachine` also runs writers (creations, deletions, relabels, lease
changes; in another thread or another process) at a chosen phase of a
collection: before its snapshot, while it loads it, after its mark, after a
round, and inside a transaction in flight while it waits to hold writers off.
The collection must then remove nothing reachable at its commit and nothing
created during it, and at least everything that was garbage before and after
and that no changed node leads to.
"""

from __future__ import annotations

import atexit
import copy
import json
import os
import subprocess
import sys
import threading
from collections import deque

import pytest
from hypothesis import event, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import cargohold
from cargohold import Node, Resource, ResourceType as RT
from gcutil import Clock, blob, container, image
import gcops

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

    def reachable(self, now: str, extra=()) -> set:
        """Nodes reachable at `now` from the roots and from the nodes `extra` (as roots)."""
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
        for node in extra:
            roots.append(((_KINDS[node.type], node.key.split("/", 1)[1] if node.type == RT.SNAPSHOT
                           else node.key), False))
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


_KINDS = {RT.CONTENT: "content", RT.SNAPSHOT: "snapshot", RT.IMAGE: "image", RT.LEASE: "lease"}


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

    def _labels(self, data, allow_root=True, allow_bref=False, model=None) -> dict:
        model = model or self.model
        labels = {}
        digests = sorted(model.content) + ["sha256:" + "0" * 64]
        snaps = sorted(model.snapshots) + ["missing"]
        for i in range(data.draw(st.integers(0, 2))):
            labels[f"{REF_CONTENT}{i}"] = data.draw(st.sampled_from(digests))
        if data.draw(st.booleans()):
            labels[f"{REF_SNAPSHOT}{self._next()}"] = data.draw(st.sampled_from(snaps))
        if allow_root and data.draw(st.integers(0, 5)) == 0:
            labels[ROOT] = "true"
        if allow_bref and model.content and data.draw(st.integers(0, 3)) == 0:
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


# -- writers during a collection ---------------------------------------------------------------

PHASES = ["marker", "snapshot", "marked", "remarked", "exclusive-wait"]
"""Where writers run: after the marker, before the snapshot; with the snapshot open; after the
first mark; after a round of re-marking; in a transaction in flight when the collector waits
for writers to finish (its changes commit during the wait)."""


class Worker:
    """Another process running `gcops` commands on the machine's root."""

    _proc = None

    @classmethod
    def send(cls, command: dict) -> str:
        if cls._proc is None or cls._proc.poll() is not None:
            script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gcops.py")
            cls._proc = subprocess.Popen([sys.executable, script], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, text=True)
            atexit.register(cls._proc.kill)
        cls._proc.stdin.write(json.dumps(command) + "\n")
        cls._proc.stdin.flush()
        return cls.reply()

    @classmethod
    def reply(cls) -> str:
        line = cls._proc.stdout.readline().strip()
        assert line and not line.startswith("error"), line or "the worker died"
        return line


def touched_by(op: list, model: Model) -> set:
    """The nodes whose entry or lease membership the operation changes (before it is applied)."""
    name, *args = op
    if name in ("content", "relabel_content", "delete_content"):
        digest = gcops.digest_of(args[0]) if name == "content" else args[0]
        return {Node(RT.CONTENT, NS, digest)}
    if name in ("image", "delete_image"):
        return {Node(RT.IMAGE, NS, args[0])}
    if name in ("snapshot", "relabel_snapshot", "remove_snapshot"):
        return {Node(RT.SNAPSHOT, NS, f"native/{args[0]}")}
    lease = Node(RT.LEASE, NS, args[0])
    if name == "lease":
        return {lease}
    if name == "delete_lease":
        return {lease} | {_node(kind, key) for kind, key in model.leases[args[0]][1]}
    return {lease, _node(args[1], args[2])}  # lease_add, lease_remove


def _node(kind: str, key: str) -> Node:
    rtype = {"content": RT.CONTENT, "snapshot": RT.SNAPSHOT, "image": RT.IMAGE}[kind]
    return Node(rtype, NS, f"native/{key}" if kind == "snapshot" else key)


def apply_to_model(op: list, model: Model) -> None:
    name, *args = op
    if name == "content":
        model.content[gcops.digest_of(args[0])] = args[1]
    elif name == "relabel_content":
        model.content[args[0]] = args[1]
    elif name == "delete_content":
        del model.content[args[0]]
    elif name == "image":
        model.images[args[0]] = (args[1], args[2])
    elif name == "delete_image":
        del model.images[args[0]]
    elif name == "snapshot":
        model.snapshots[args[0]] = (args[1], args[2])
    elif name == "relabel_snapshot":
        model.snapshots[args[0]] = (model.snapshots[args[0]][0], args[1])
    elif name == "remove_snapshot":
        del model.snapshots[args[0]]
    elif name == "lease":
        model.leases[args[0]] = (args[1], set())
    elif name == "delete_lease":
        del model.leases[args[0]]
    elif name == "lease_add":
        model.leases[args[0]][1].add((args[1], args[2]))
    elif name == "lease_remove":
        model.leases[args[0]][1].discard((args[1], args[2]))


class ConcurrentGCMachine(GCMachine):
    def _draw_op(self, data, model: Model, active: set) -> list:
        committed = sorted(k for k in model.snapshots if k not in active)
        parents = {p for p, _ in model.snapshots.values()}
        leaves = sorted(k for k in model.snapshots if k not in parents)
        choices = ["content", "image", "snapshot", "lease"]
        choices += ["relabel_content", "delete_content"] if model.content else []
        choices += ["delete_image"] if model.images else []
        choices += ["relabel_snapshot"] if model.snapshots else []
        choices += ["remove_snapshot"] if leaves else []
        choices += ["delete_lease", "lease_add"] if model.leases else []
        choices += ["lease_remove"] if any(r for _, r in model.leases.values()) else []
        name = data.draw(st.sampled_from(choices))
        if name == "content":
            return [name, f"written {self._next()}", self._labels(data, allow_bref=True, model=model)]
        if name == "relabel_content":
            return [name, data.draw(st.sampled_from(sorted(model.content))),
                    self._labels(data, allow_bref=True, model=model)]
        if name == "delete_content":
            return [name, data.draw(st.sampled_from(sorted(model.content)))]
        if name == "image":
            target = data.draw(st.sampled_from(sorted(model.content) + ["sha256:" + "1" * 64]))
            return [name, f"img{self._next()}", target, self._labels(data, allow_root=False, model=model)]
        if name == "delete_image":
            return [name, data.draw(st.sampled_from(sorted(model.images)))]
        if name == "snapshot":
            return [name, f"s{self._next()}", data.draw(st.sampled_from([""] + committed)),
                    self._labels(data, model=model)]
        if name == "relabel_snapshot":
            return [name, data.draw(st.sampled_from(sorted(model.snapshots))), self._labels(data, model=model)]
        if name == "remove_snapshot":
            return [name, data.draw(st.sampled_from(leaves))]
        if name == "lease":
            labels = {FLAT: "true"} if data.draw(st.booleans()) else {}
            return [name, f"l{self._next()}", labels]
        lease = data.draw(st.sampled_from(sorted(model.leases)))
        if name == "delete_lease":
            return [name, lease]
        if name == "lease_remove":
            lease = data.draw(st.sampled_from(sorted(k for k, (_, r) in model.leases.items() if r)))
            return [name, lease, *data.draw(st.sampled_from(sorted(model.leases[lease][1])))]
        resources = ([("content", d) for d in model.content] + [("snapshot", k) for k in model.snapshots]
                     + [("image", n) for n in model.images])
        if not resources:
            return ["lease", f"l{self._next()}", {}]
        return [name, lease, *data.draw(st.sampled_from(sorted(resources)))]

    def _runner(self, where: str, phase: str, ops: list):
        """The collection hook that runs `ops` at `phase` (from a thread or the worker process)."""
        state = {}
        if where == "process":
            Worker.send({"open": self.tmp.name, "namespace": NS})
        if phase != "exclusive-wait":
            def hook(name):
                if name == phase and "done" not in state:
                    state["done"] = True
                    if where == "process":
                        Worker.send({"ops": ops})
                    else:
                        thread = threading.Thread(target=lambda: [gcops.apply(self.ns, op) for op in ops])
                        thread.start()
                        thread.join()
            return hook, state, lambda: None
        go = threading.Event()
        inside = threading.Event()

        def in_flight():
            with self.db.update():
                inside.set()
                go.wait(60)
                for op in ops:
                    gcops.apply(self.ns, op)

        def hook(name):
            if name == "pre-exclusive":
                if where == "process":
                    Worker._proc.stdin.write(json.dumps({"begin": True}) + "\n")
                    Worker._proc.stdin.flush()
                    assert Worker.reply() == "inside"
                else:
                    state["thread"] = threading.Thread(target=in_flight)
                    state["thread"].start()
                    assert inside.wait(60)
            elif name == "exclusive-wait" and "done" not in state:
                state["done"] = True
                if where == "process":
                    Worker._proc.stdin.write(json.dumps({"go": ops}) + "\n")
                    Worker._proc.stdin.flush()
                else:
                    go.set()

        def finish():
            if where == "process":
                assert Worker.reply() == "done"
            else:
                state["thread"].join(60)
        return hook, state, finish

    @rule(data=st.data(), phase=st.sampled_from(PHASES), where=st.sampled_from(["thread", "process"]))
    def collect_with_writers(self, data, phase, where):
        now = self._stamp(0)
        before = copy.deepcopy(self.model)
        after = copy.deepcopy(self.model)
        touched = set()
        ops = []
        for _ in range(data.draw(st.integers(1, 4))):
            op = self._draw_op(data, after, self.active)
            touched |= touched_by(op, after)
            apply_to_model(op, after)
            ops.append(op)
        hook, state, finish = self._runner(where, phase, ops)
        self.db._gc_hook = hook
        try:
            stats = self.db.garbage_collect()
        finally:
            self.db._gc_hook = None
        finish()
        if where == "process":
            Worker.send({"close": True})
        assert state.get("done"), f"the collection never reached {phase}"
        event(f"writers at {phase} in a {where}")
        existing = after.existing()
        created = existing - before.existing()
        must_keep = (after.reachable(now) & existing) | created
        removed = set(stats.removed)
        assert not removed & must_keep, (ops, removed & must_keep)
        assert removed <= existing
        leads = (before.reachable(now) | after.reachable(now) | touched
                 | after.reachable(now, touched) | before.reachable(now, touched))
        assert existing - leads <= removed, (ops, existing - leads - removed)
        self.model = after
        for node in removed:
            self.model.forget(node)
        self.active &= set(self.model.snapshots)
        assert set(self.db.nodes()) == self.model.existing()


ConcurrentGCMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=25, deadline=None)
TestConcurrentGCModel = ConcurrentGCMachine.TestCase


class LongConcurrentGCMachine(ConcurrentGCMachine):
    pass


LongConcurrentGCMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)
TestLongConcurrentGCModel = pytest.mark.slow(LongConcurrentGCMachine.TestCase)
