"""`df` (bytes per namespace and store, shared, reclaimable now) and `prune` (images no container
uses, then a collection) on real roots: every figure is checked against the files on disk and
against what the collection then really frees."""

from __future__ import annotations

import hashlib
import os

import pytest
from cliutil import IMAGE, image_archive, invoke, parsed, rows
from oci_fixtures import Layer, Layout, tar_layout

import cargohold
from cargohold import Container, RuntimeInfo
from cargohold.df import prune
from cargohold.errors import FailedPrecondition, InvalidArgument

OTHER = "example.com/other:2"
GARBAGE = b"bytes no root reaches" * 10
GARBAGE_DIGEST = "sha256:" + hashlib.sha256(GARBAGE).hexdigest()


def other_archive(tmp_path) -> str:
    """An image `OTHER` with layers of its own (nothing shared with `IMAGE`)."""
    layout = Layout(tmp_path / "other.layout")
    image = layout.image([Layer().file("srv/other", b"other bytes\n" * 50).bytes()])
    layout.write_index([(image.manifest, {"io.containerd.image.name": OTHER})])
    return str(tar_layout(layout.root, tmp_path / "other.tar"))


def blob_bytes(root) -> int:
    """Bytes of every blob file on disk."""
    top = os.path.join(root, "content", "blobs")
    return sum(os.path.getsize(os.path.join(d, name)) for d, _, files in os.walk(top) for name in files)


def table(root) -> dict:
    """(namespace, store) → df row."""
    return {(r.namespace, r.store): r for r in _df(root)}


def _df(root) -> list:
    with cargohold.open(root) as db:
        return db.df()


def snapshot_bytes(root, ns: str) -> int:
    with cargohold.open(root) as db:
        sn = db.namespace(ns).snapshotter("native")
        return sum(sn.usage(info.name).size for info in sn.walk())


@pytest.fixture
def root(tmp_path):
    """The same image in namespaces default and two, a blob only default records and no root reaches,
    and a stray blob file no record owns."""
    archive, _ = image_archive(tmp_path)
    root = tmp_path / "root"
    invoke(root, "images", "import", "--unpack", archive)
    invoke(root, "-n", "two", "images", "import", "--unpack", archive)
    with cargohold.open(root) as db:
        with db.namespace("default").content.writer("garbage") as w:
            w.write(GARBAGE)
            w.commit(len(GARBAGE), GARBAGE_DIGEST)
        with open(db.content_store.blob_path("sha256:" + "5" * 64), "wb") as fh:
            fh.write(b"s" * 77)
    return root


def test_df_counts_shared_bytes_and_what_a_collection_frees(root):
    image_blobs = blob_bytes(root) - len(GARBAGE) - 77
    usage = table(root)
    default, two = usage[("default", "content")], usage[("two", "content")]
    assert (default.count, default.total, default.shared) == (5, image_blobs + len(GARBAGE), image_blobs)
    assert (two.count, two.total, two.shared, two.reclaimable) == (4, image_blobs, image_blobs, 0)
    assert default.reclaimable == len(GARBAGE)  # the shared blobs stay: the other namespace holds them
    whole = usage[("-", "content")]
    assert (whole.count, whole.total) == (6, blob_bytes(root))  # the stray file counts, once per blob
    assert whole.reclaimable == len(GARBAGE) + 77
    assert usage[("two", "snapshots/native")].total == snapshot_bytes(root, "two") > 0
    assert usage[("two", "snapshots/native")].reclaimable == 0

    invoke(root, "-n", "two", "images", "rm", IMAGE)
    usage = table(root)
    assert usage[("two", "content")].reclaimable == 0  # default still records every blob
    assert usage[("two", "snapshots/native")].reclaimable == snapshot_bytes(root, "two")
    predicted = sum(r.reclaimable for r in usage.values() if r.namespace == "-")
    on_disk = sum(r.total for r in usage.values() if r.namespace == "-")
    with cargohold.open(root) as db:
        stats = db.garbage_collect()
    assert stats.freed_bytes == predicted == len(GARBAGE) + 77 + usage[("two", "snapshots/native")].total
    after = table(root)
    assert sum(r.total for r in after.values() if r.namespace == "-") == on_disk - predicted
    assert ("two", "content") not in after and all(r.reclaimable == 0 for r in after.values())


def test_df_cli(root):
    listed = parsed(invoke(root, "df", "--json"))
    assert {(r["namespace"], r["store"]): r["reclaimable"] for r in listed} == {
        (r.namespace, r.store): r.reclaimable for r in _df(root)}
    out = rows(invoke(root, "df"))
    assert out[0] == ["NAMESPACE", "STORE", "COUNT", "TOTAL", "SHARED", "RECLAIMABLE"]
    assert ["default", "content", "5", str(blob_bytes(root) - 77), str(blob_bytes(root) - 77 - len(GARBAGE)),
            str(len(GARBAGE))] in out
    assert out[-1][:2] == ["on", "disk"]


# -- prune ----------------------------------------------------------------------------------------------


@pytest.fixture
def used_and_unused(tmp_path):
    """Namespace default: IMAGE used by a container, OTHER used by none; namespace two: OTHER."""
    archive, _ = image_archive(tmp_path)
    other = other_archive(tmp_path)
    root = tmp_path / "prune"
    invoke(root, "images", "import", "--unpack", archive)
    invoke(root, "images", "import", "--unpack", other)
    invoke(root, "-n", "two", "images", "import", "--unpack", other)
    with cargohold.open(root) as db:
        db.namespace("default").containers.create(Container("web", runtime=RuntimeInfo("io.containerd.runc.v2"),
                                                            image=IMAGE))
    return root


def listing(root) -> dict:
    out = {}
    for ns in ("default", "two"):
        out[ns] = {kind: parsed(invoke(root, "-n", ns, kind, "ls", "--json")) for kind in ("images", "containers")}
        out[ns]["content"] = parsed(invoke(root, "-n", ns, "content", "ls", "--json"))
    out["blobs"] = blob_bytes(root)
    return out


def test_prune_dry_run_changes_nothing_and_says_what_the_prune_frees(used_and_unused):
    root = used_and_unused
    before = listing(root)
    with cargohold.open(root) as db:
        dry = prune(db, "default", dry_run=True)
    assert dry.images == [("default", OTHER)] and dry.stats is None
    assert listing(root) == before
    with cargohold.open(root) as db:
        done = prune(db, "default")
    assert done.images == dry.images
    assert sorted(map(str, done.removed)) == sorted(map(str, dry.removed)) and dry.removed
    assert done.freed == dry.freed == done.stats.freed_bytes > 0
    after = listing(root)
    assert [i["name"] for i in after["default"]["images"]] == [IMAGE]
    assert after["default"]["containers"] == before["default"]["containers"]
    assert after["two"] == before["two"]  # the same image in another namespace is untouched
    assert after["blobs"] == before["blobs"]  # its blobs stay: namespace two records them
    with cargohold.open(root) as db:
        assert prune(db, "default").images == [] and db.garbage_collect().removed == []


def test_prune_every_namespace_from_the_cli(used_and_unused):
    root = used_and_unused
    before = listing(root)
    dry = parsed(invoke(root, "prune", "--dry-run", "-A", "--json"))
    assert dry["dry_run"] and sorted((i["namespace"], i["name"]) for i in dry["images"]) == [
        ("default", OTHER), ("two", OTHER)]
    assert listing(root) == before
    out = invoke(root, "prune", "--dry-run", "-A").stdout.splitlines()
    assert out[-1] == f"would remove 2 image(s) and free {dry['freed_bytes'] / 1024:.1f} KiB"
    done = parsed(invoke(root, "prune", "-A", "--json"))
    assert done["freed_bytes"] == dry["freed_bytes"] == before["blobs"] - blob_bytes(root) + sum(
        d["bytes"] for d in done["collection"]["freed"]["snapshot_dirs"].values())
    after = listing(root)
    assert [i["name"] for i in after["default"]["images"]] == [IMAGE] and after["two"]["images"] == []


def test_prune_refuses_bad_calls(used_and_unused):
    with cargohold.open(used_and_unused) as db:
        for args, kwargs in (((), {"dry_run": "yes"}), (("bad/namespace",), {}), ((7,), {})):
            with pytest.raises(InvalidArgument):
                prune(db, *args, **kwargs)
        with db.view():
            with pytest.raises(FailedPrecondition):
                prune(db)
    assert [i["name"] for i in parsed(invoke(used_and_unused, "images", "ls", "--json"))] == [IMAGE, OTHER]
