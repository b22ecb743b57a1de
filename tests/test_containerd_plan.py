"""The plan's node table is, entry for entry, what cargohold's own index functions give the same objects.

`plan.graph` builds most entries on a fast path over raw keys; this checks it
against the entry functions of `cargohold.gc.index` fed the decoded objects, on
a root a private containerd wrote (objects with and without labels), under both
rule sets.
"""

from __future__ import annotations

import pytest

import cargohold.containerd as ctrd
from cargohold import schema
from cargohold.containerd import plan
from cargohold.gc import index
from cargohold.gc import labels as gclabels
from cargohold.model import ResourceType
from containerd_daemon import image_archive, layer, needs_containerd, start_daemon

pytestmark = needs_containerd


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("plan")
    d = start_daemon(str(base / "d"))
    try:
        image_archive(str(base / "a.tar"), "example.com/a:1", [layer({"a": b"1"}), layer({"b": b"2"})])
        image_archive(str(base / "b.tar"), "example.com/b:1", [layer({"c": b"3"})])
        d.ctr("images", "import", "--snapshotter", "native", str(base / "a.tar"))
        d.ctr("images", "import", "--snapshotter", "overlayfs", str(base / "b.tar"))
        d.ctr("images", "label", "example.com/b:1", "containerd.io/gc.ref.content.extra=sha256:" + "1" * 64)
        d.ctr("containers", "create", "--snapshotter", "native", "example.com/a:1", "labelled")
        d.ctr("containers", "create", "--snapshotter", "overlayfs", "example.com/b:1", "plain")
        d.ctr("containers", "label", "plain", "io.containerd.image.config.stop-signal=")
        d.ctr("snapshots", "--snapshotter", "native", "prepare", "scratch")
    finally:
        d.stop()
    return d.root


def _reference(host, rules: str) -> dict:
    """packed key → entry, built from the decoded objects with the index entry functions."""
    parse = plan.parse_1x if rules == "1.x" else gclabels.parse
    out = {}
    for ns in host.namespaces():
        for info in host.content(ns):
            out[schema.pack_node(ResourceType.CONTENT, ns, info.digest)] = index.content_entry(ns, info.labels, parse)
        for snapshotter in host.snapshotters(ns):
            for record in host.snapshot_records(ns, snapshotter):
                out[schema.pack_node(ResourceType.SNAPSHOT, ns, f"{snapshotter}/{record.key}")] = \
                    index.snapshot_entry(ns, snapshotter, record.parent, record.labels, parse)
        for image in host.images(ns):
            if rules == "1.x":
                entry = index.encode(root=True, hidden=True, refs=parse(ns, image.labels),
                                     strong=[schema.pack_node(ResourceType.CONTENT, ns, image.target.digest)])
            else:
                entry = index.image_entry(ns, image.target.digest, image.labels)
            out[schema.pack_node(ResourceType.IMAGE, ns, image.name)] = entry
        for c in host.containers(ns):
            out[schema.pack_node(ResourceType.CONTAINER, ns, c.id)] = \
                index.container_entry(ns, c.snapshotter, c.snapshot_key, c.labels, parse)
        for lease in host.leases(ns):
            out[schema.pack_node(ResourceType.LEASE, ns, lease.id)] = index.lease_entry(lease.labels)
    return out


@pytest.mark.parametrize("rules", ["1.x", "2.x"])
def test_fast_path_entries_equal_the_index_functions(root, rules):
    with ctrd.open_root(root, rules=rules) as host:
        graph = dict(host.graph().nodes)
        reference = _reference(host, rules)
        assert graph == reference
        labelled = [key for key, value in graph.items() if value not in (b"\x00", b"\x09", b"\x01")]
        kinds = {key[0] for key in labelled}
        assert {ResourceType.CONTENT, ResourceType.SNAPSHOT, ResourceType.IMAGE, ResourceType.CONTAINER} <= kinds
