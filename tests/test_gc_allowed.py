"""``garbage_collect(allowed=...)``: a collection that removes nothing outside the caller's set.

The check runs in the sweep's write transaction, so a write that lands after
the caller's dry run (here: by another process) is refused there, with nothing
changed; and the backend cleanup deletes only the data of the records it removed.
"""

from __future__ import annotations

import os
import textwrap

import pytest
from conftest import run_python

import cargohold
from cargohold import Node, ResourceType
from cargohold.errors import FailedPrecondition, InvalidArgument

from gcutil import blob, chain, content_node, digest_of, image, snap_node

UPLOAD = b"an upload the user gave up on"


def _garbage(db, root) -> dict:
    """In namespace a: two unreferenced blobs and a chain of two snapshots (with a file each), beside the
    user's image on a blob of theirs; and backend data of a that no record owns (an aborted upload, a
    snapshot whose record was lost). Namespace b: an unreferenced blob."""
    a = db.namespace("a")
    found = {"own": blob(a, b"own"), "own2": blob(a, b"own too"), "theirs": blob(a, b"the user's manifest")}
    image(a, "user/app:1", found["theirs"])
    sn = a.snapshotter("native")
    for key, parent in (("s1", ""), ("s2", "s1")):
        with open(os.path.join(sn.prepare(f"{key}-active", parent)[0].source, f"{key}.txt"), "w") as f:
            f.write(f"in {key}\n")
        sn.commit(key, f"{key}-active")
    w = db.content_store.writer("a-0123456789abcdef")  # an upload made for a whose record was lost
    w.write(UPLOAD)
    w.close()
    lost = db.snapshotter_backend("native").prepare("a/99/lost")[0].source
    with open(os.path.join(lost, "notes.txt"), "w") as f:
        f.write("a snapshot whose record was lost\n")
    found["b"] = blob(db.namespace("b"), b"b's own")
    return found


def _state(db, root) -> dict:
    """Every record (as the collector's nodes, reachable or not) and every backend file with its bytes."""
    files = {}
    for store in ("content", "snapshots"):
        for top, dirs, names in os.walk(os.path.join(root, store)):
            for entry in dirs + [name for name in names if not name.endswith(".lock")]:
                path = os.path.join(top, entry)
                data = open(path, "rb").read() if os.path.isfile(path) and not os.path.islink(path) else None
                files[os.path.relpath(path, root)] = (os.lstat(path).st_mode, data)
    return {"nodes": sorted(db.nodes()), "unreachable": sorted(db.unreachable()),
            "leftovers": sorted((x.type, x.key) for x in db.leftovers()), "files": files}


def _another_process(root, code: str) -> None:
    """Run `code` (with `ns`, namespace a of `root`) in another process: a real write on the same root."""
    run_python(f"import cargohold\nwith cargohold.open({str(root)!r}) as db:\n    ns = db.namespace('a')\n"
               + textwrap.indent(code, "    "))


WRITES = {
    "image deleted": ("ns.images.delete('user/app:1')", "theirs"),  # the user's blob is unreferenced now
    "blob written": ("with ns.content.writer('theirs') as w:\n    w.write(b'written meanwhile')\n    w.commit()",
                     None),
}


@pytest.mark.parametrize("concurrent", [True, False], ids=["concurrent", "stop-the-world"])
@pytest.mark.parametrize("what", sorted(WRITES))
def test_a_node_written_after_the_dry_run_refuses_the_collection_and_nothing_changes(root, what, concurrent):
    with cargohold.open(root) as db:
        found = _garbage(db, root)
        dry = db.unreachable(namespace="a")
        assert set(dry) == {content_node("a", found["own"]), content_node("a", found["own2"]),
                            snap_node("a", "s1"), snap_node("a", "s2")}
        code, name = WRITES[what]
        _another_process(root, code)
        theirs = found[name] if name else digest_of(b"written meanwhile")
        before = _state(db, root)
        assert content_node("a", theirs) in before["unreachable"]

        with pytest.raises(FailedPrecondition, match=f"would remove content a {theirs}, which allowed does not "
                                                     f"hold") as caught:
            if concurrent:
                db.garbage_collect(namespace="a", allowed=dry)
            else:
                db._collect("a", concurrent=False, allowed=dry)
        assert caught.value.node == content_node("a", theirs)
        assert _state(db, root) == before  # no record removed, no backend file deleted
        assert db.namespace("a").content.read(theirs)

        stats = db.garbage_collect(namespace="a", allowed=db.unreachable(namespace="a"))  # a new dry run: accepted
        assert set(stats.removed) == set(dry) | {content_node("a", theirs)} and stats.errors == []


def test_the_allowed_set_is_collected_and_its_cleanup_deletes_only_the_data_of_its_records(root):
    """A node of the set that is referenced again by the time of the collection stays; the others go, with
    their blobs and snapshot directories, while the namespace's backend data that no record owns (which a
    plain collection of the namespace deletes) and the other namespace's garbage stay."""
    with cargohold.open(root) as db:
        found = _garbage(db, root)
        dry = db.unreachable(namespace="a")
        _another_process(root, "from cargohold import Descriptor, Image\n"
                               f"ns.images.create(Image('again', Descriptor('x/y', {found['own']!r}, 3)))")
        leftovers = sorted((x.type, x.key) for x in db.leftovers())
        kinds = {kind for kind, _ in leftovers}
        assert {"ingest-dir", "snapshot-dir"} <= kinds
        backend = db.snapshotter_backend("native")
        dirs = {info.name: backend.snapshot_dir(backend.snapshot_id(info.name)) for info in backend.walk()}
        assert len(dirs) == 3  # s1, s2 and the lost one

        stats = db.garbage_collect(namespace="a", allowed=dry)
        assert set(stats.removed) == set(dry) - {content_node("a", found["own"])} and stats.errors == []
        blobs = {info.digest for info in db.content_store.walk()}
        assert found["own2"] not in blobs and {found["own"], found["theirs"], found["b"]} <= blobs
        assert [info.name for info in backend.walk()] == ["a/99/lost"]
        assert {key: os.path.exists(path) for key, path in dirs.items()} == {
            key: key == "a/99/lost" for key in dirs}
        assert sorted((x.type, x.key) for x in db.leftovers()) == leftovers  # the same, to the byte count
        assert db.unreachable() == [content_node("b", found["b"])]

        db.garbage_collect(namespace="a")  # what a plain collection of the namespace would have deleted
        assert {kind for kind, _ in ((x.type, x.key) for x in db.leftovers())} & {"ingest-dir", "snapshot-dir"} \
            == set()


def test_a_whole_collection_with_allowed_leaves_every_leftover(root):
    """Without a namespace: every namespace's garbage in the set goes, but no backend data no record owns
    (a whole collection deletes it)."""
    with cargohold.open(root) as db:
        found = _garbage(db, root)
        with db.content_store.writer("stray") as w:
            w.write(b"a blob no namespace records")
            stray = w.commit()
        leftovers = sorted((x.type, x.key) for x in db.leftovers())
        assert ("blob", stray) in leftovers

        with pytest.raises(FailedPrecondition, match=f"would remove content b {found['b']}"):
            db.garbage_collect(allowed=db.unreachable(namespace="a"))  # b's garbage is not in a's dry run
        stats = db.garbage_collect(allowed=db.unreachable())
        assert {n.namespace for n in stats.removed} == {"a", "b"} and db.unreachable() == []
        assert sorted((x.type, x.key) for x in db.leftovers()) == leftovers
        assert db.content_store.exists(stray)

        db.garbage_collect()
        assert not db.content_store.exists(stray)


@pytest.mark.parametrize("bad", [7, "content a sha256:00", b"nodes", iter([]), [("x", "a", "k")], [7],
                                 [Node(ResourceType.CONTENT, "a", "sha256:00"), "a"]])
def test_a_bad_allowed_is_refused_naming_it_before_anything_is_removed(root, bad):
    with cargohold.open(root) as db:
        _garbage(db, root)
        before = _state(db, root)
        with pytest.raises(InvalidArgument, match="allowed") as caught:
            db.garbage_collect(namespace="a", allowed=bad)
        shown = repr(bad if not isinstance(bad, list) else bad[-1])
        assert shown in str(caught.value)
        assert _state(db, root) == before


def test_a_collectors_node_outside_allowed_refuses_before_the_collector_removes_anything(root):
    """A registered collector's unreachable node is part of the sweep set too: one missing from `allowed`
    refuses the collection before any record goes or the collector is told to remove anything."""
    from test_gc import STREAM, Streams

    with cargohold.open(root) as db:
        found = _garbage(db, root)
        streams = Streams()
        db.register_collectible_resource(STREAM, streams)
        dry = db.unreachable(namespace="a")
        streams.streams = {("a", "idle"): False}
        before = _state(db, root)
        with pytest.raises(FailedPrecondition, match="would remove type8 a idle"):
            db.garbage_collect(namespace="a", allowed=dry)
        assert streams.removed == [] and streams.events[-1] == "cancel"
        assert _state(db, root) == before and content_node("a", found["own"]) in db.unreachable()
        stats = db.garbage_collect(namespace="a", allowed=dry + [Node(STREAM, "a", "idle")])
        assert streams.removed == [Node(STREAM, "a", "idle")] and set(stats.removed) == set(dry) | set(streams.removed)
