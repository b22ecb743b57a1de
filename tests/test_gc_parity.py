"""A whole collection gives the same result with the compiled core and with the fallback."""

from __future__ import annotations

import json

from conftest import IMPLEMENTATIONS, run_python

SCENARIO = """
import json, sys
from datetime import datetime, timezone
import cargohold
from cargohold import Descriptor, Image, Resource
sys.path.insert(0, {tests!r})
from gcutil import blob, chain, container

clock = lambda: datetime(2030, 1, 1, tzinfo=timezone.utc)
with cargohold.open({root!r}, clock=clock) as db:
    ns = db.namespace("p")
    layers = [blob(ns, b"layer %d" % i) for i in range(5)]
    chain(ns, ["s0", "s1", "s2"], labels={{"containerd.io/gc.ref.content": layers[4]}})
    config = blob(ns, b"config", labels={{"containerd.io/gc.ref.snapshot.native": "s1",
                                          **{{f"containerd.io/gc.ref.content.l.{{i}}": d for i, d in enumerate(layers[:2])}}}})
    manifest = blob(ns, b"manifest", labels={{"containerd.io/gc.ref.content.config": config}})
    ns.images.create(Image("app", Descriptor("m", manifest, 8)))
    ns.leases.create("flat", labels={{"containerd.io/gc.flat": "true"}})
    ns.leases.add_resource("flat", Resource("s2", "snapshots/native"))
    ns.snapshotter("native").prepare("rootfs", "s2")
    container(ns, "c", "rootfs")
    blob(ns, b"attached", labels={{"containerd.io/gc.bref.content": layers[2]}})
    orphan_nodes = sorted(map(list, db.unreachable()))
    chains = {{d: db.explain(cargohold.Node(1, "p", d)) for d in layers + [config]}}
    marked = sorted(map(list, db.mark()))
    stats = db.garbage_collect()
    print(json.dumps({{"compiled": cargohold._native.COMPILED, "unreachable": orphan_nodes,
                      "chains": {{k: v and [list(n) for n in v] for k, v in chains.items()}},
                      "marked": marked, "removed": sorted(map(list, stats.removed)),
                      "left": sorted(map(list, db.nodes()))}}))
"""


def test_compiled_and_fallback_collect_alike(tmp_path):
    import os

    tests = os.path.dirname(__file__)
    results = []
    for mode, env in (("compiled", {}), ("fallback", {"CARGOHOLD_PUREPYTHON": "1"})):
        code = SCENARIO.format(root=str(tmp_path / mode), tests=tests)
        if not env:
            env = {"CARGOHOLD_PUREPYTHON": ""}
        results.append(json.loads(run_python(code, env=env).stdout))
    compiled, fallback = results
    assert fallback.pop("compiled") is False
    assert compiled.pop("compiled") is ("compiled" in IMPLEMENTATIONS)
    assert compiled == fallback
    assert compiled["removed"] and compiled["chains"]
