"""`fsck` after a real crash: the `cargohold` command killed (SIGKILL, through strace) at the
fsyncs, renames, unlinks and rmdirs of an image import with unpack, of a snapshot commit and of
a collection. After each kill:

* fsck reports exactly what the crash left: only data no record owns (blobs, ingest and
  snapshot directories, backend snapshots); each unowned item is there (a file or directory, or a
  backend snapshot in its metastore: a cleanup deletes the directory before the row);
* ``--repair --prune-orphans`` leaves the disk holding exactly what the records own (nothing
  unowned is missed, nothing owned is touched: the listings are unchanged), and a second
  check finds nothing at all;
* a collection afterwards removes nothing a root reaches.

One kill per command in the default run; every kill point with ``-m slow``.
"""

from __future__ import annotations

import os
import shutil

import pytest
from cliutil import image_archive, invoke, parsed
from crashutil import backend_files, check_records, describe, kill_points, run_killed
from fsckutil import collects_nothing_reachable, fsck, state

import cargohold
from cargohold import schema
from cargohold.integrity import findings as f

IMPORT = ("images", "import", "--unpack")
COMMIT = ("snapshots", "commit", "done", "work")

CRASH_KINDS = {f.UNOWNED_BLOB, f.UNOWNED_INGEST, f.UNOWNED_BACKEND_SNAPSHOT, f.UNOWNED_SNAPSHOT_DIR}
"""What a kill can leave: debris. A content commit keeps its ingest's data until the metadata
transaction that records the blob has committed, so no ingest record loses its data."""


def owned_on_disk(root) -> dict:
    """What the records own, named as `backend_files` names what is on disk."""
    with cargohold.open(root) as db:
        store = db.content_store
        blobs, ingests, snapshots = set(), set(), {name: 0 for name in db.snapshotters}
        with db.view() as tx:
            for ns in db.namespaces.list():
                blobs.update(os.path.relpath(store.blob_path(i.digest), os.path.join(store.root, "blobs"))
                             for i in db.namespace(ns).content.walk())
                for _, raw in tx.kv.scan(schema.T_OBJECTS, schema.object_prefix(ns, schema.K_INGEST)):
                    ingests.add(os.path.basename(store.ingest_dir(schema.unpack(raw)["b"])))
                for name in db.snapshotters:
                    snapshots[name] += len(list(db.namespace(ns).snapshotter(name).walk()))
        backends = {name: len(list(backend.walk())) for name, backend in db.snapshotters.items()}
    return {"blobs": sorted(blobs), "ingests": ingests, "snapshots": snapshots, "backends": backends}


def backend_keys(root) -> dict:
    """snapshots/<name> → the keys of the backend snapshots its metastore holds."""
    with cargohold.open(root) as db:
        return {f"snapshots/{name}": {i.name for i in backend.walk()} for name, backend in db.snapshotters.items()}


def young_debris(root, name: str) -> bool:
    """An ingest directory a killed writer left before writing its meta: too young to call abandoned
    (a writer may be about to lock it), so neither fsck nor a collection touches it yet."""
    return not os.path.exists(os.path.join(root, "content", "ingest", name, "meta"))


def after_kill(root, point) -> list[str]:
    """The invariants broken after a kill at `point` (empty: none)."""
    where = describe(point)
    check_records(root)
    before = state(root)
    report = fsck(root)
    broken = [f"{where}: unexpected {x.kind} {x.store} {x.key}: {x.detail}"
              for x in report.problems if x.kind not in CRASH_KINDS]
    keys = backend_keys(root)
    for x in report.findings:
        if x.kind == f.UNOWNED_BACKEND_SNAPSHOT:  # its directory may be gone already: a cleanup deletes it first
            if x.key not in keys[x.store]:
                broken.append(f"{where}: {x.kind} {x.key} is not in the backend")
        elif x.kind.startswith("unowned") and not os.path.lexists(x.path):
            broken.append(f"{where}: {x.kind} {x.key} names {x.path}, which does not exist")
    repaired = fsck(root, repair=True, prune_orphans=True)
    broken += [f"{where}: repair failed: {r.message}" for r in repaired.repairs if not r.done]
    again = fsck(root)
    broken += [f"{where}: left after repair: {x.kind} {x.key}" for x in again.findings if x.kind != f.DIRTY_BACKEND]
    disk, owned = backend_files(root), owned_on_disk(root)
    if disk["blobs"] != owned["blobs"]:
        broken.append(f"{where}: blobs {disk['blobs']} on disk, records own {owned['blobs']}")
    stray = {name for name in disk["ingests"] if name not in owned["ingests"] and not young_debris(root, name)}
    if stray or not owned["ingests"] <= set(disk["ingests"]):
        broken.append(f"{where}: ingests {disk['ingests']} on disk, records own {owned['ingests']}")
    for name, count in owned["snapshots"].items():
        if not len(disk[name]) == owned["backends"][name] == count:
            broken.append(f"{where}: {name}: {disk[name]} on disk, {owned['backends'][name]} backend snapshots, "
                          f"{count} records")
    if state(root) != before:
        broken.append(f"{where}: the repair changed the listings")
    collects_nothing_reachable(root, before)
    return broken


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return image_archive(tmp_path_factory.mktemp("fsck-crash"))[0]


@pytest.fixture(scope="module")
def imported(archive, tmp_path_factory):
    """A root holding the unpacked image."""
    root = tmp_path_factory.mktemp("imported") / "root"
    invoke(root, *IMPORT, archive)
    return root


@pytest.fixture(scope="module")
def committing(imported, tmp_path_factory):
    """A root with active snapshot `work` (three files) on the image's top layer, ready to commit."""
    root = tmp_path_factory.mktemp("committing") / "root"
    shutil.copytree(imported, root, symlinks=True)
    with cargohold.open(root) as db:
        sn = db.namespace("default").snapshotter("native")
        infos = list(sn.walk())
        top = next(i.name for i in infos if i.name not in {i.parent for i in infos})
        source = sn.prepare("work", top)[0].source
        for i in range(3):
            with open(os.path.join(source, f"file{i}"), "w") as fh:
                fh.write("x" * 1000)
    return root


def killed_runs(tmp_path, template, args, choose=lambda points: points) -> list[str]:
    """Run ``cargohold ARGS`` on a copy of `template` (a fresh root when None) killed at each chosen point."""
    clean = tmp_path / "clean-run"
    if template is not None:
        shutil.copytree(template, clean, symlinks=True)
    points = choose(kill_points(clean, *args))
    assert points, "no such kill point"
    root, broken = tmp_path / "root", []
    for point in points:
        shutil.rmtree(root, ignore_errors=True)
        if template is not None:
            shutil.copytree(template, root, symlinks=True)
        run_killed(root, point, *args)
        broken += after_kill(root, point)
    return broken


def first(predicate):
    return lambda points: [next(p for p in points if predicate(p))]


# -- one kill per command -------------------------------------------------------------------------


def after_a_blob_link(points):
    """The first database flush after a blob appeared in blobs/: its metadata commit."""
    linked = next(p.index for p in points if p.syscall.startswith(("link", "rename")) and "/content/blobs/" in p.line)
    return [next(p for p in points[linked:] if p.syscall == "fdatasync")]


def test_an_import_killed_inside_a_blob_commit(tmp_path, archive):
    """Killed after the blob was linked into place, before the metadata commit: the blob has no
    record yet and the ingest record still has its data."""
    broken = killed_runs(tmp_path, None, (*IMPORT, archive), after_a_blob_link)
    assert broken == [], "\n".join(broken)


def test_an_import_killed_discarding_a_committed_ingest(tmp_path, archive):
    broken = killed_runs(tmp_path, None, (*IMPORT, archive),
                         first(lambda p: p.syscall == "rmdir" and "/content/ingest/" in p.line))
    assert broken == [], "\n".join(broken)


def test_an_import_killed_while_unpacking_a_layer(tmp_path, archive):
    broken = killed_runs(tmp_path, None, (*IMPORT, archive),
                         first(lambda p: p.syscall.startswith("rename") and "/snapshots/" in p.line))
    assert broken == [], "\n".join(broken)


def test_a_snapshot_commit_killed(tmp_path, committing):
    broken = killed_runs(tmp_path, committing, COMMIT, first(lambda p: p.syscall.startswith("rename")))
    assert broken == [], "\n".join(broken)


def test_a_collection_killed_in_its_snapshot_cleanup(tmp_path, imported):
    template = tmp_path / "template"
    shutil.copytree(imported, template, symlinks=True)
    invoke(template, "images", "rm", *[i["name"] for i in parsed(invoke(template, "images", "ls", "--json"))])
    broken = killed_runs(tmp_path, template, ("gc",),
                         first(lambda p: p.syscall in ("rmdir", "unlink", "unlinkat") and "/snapshots/native/" in p.line))
    assert broken == [], "\n".join(broken)


# -- every kill point -----------------------------------------------------------------------------


@pytest.mark.slow
def test_an_import_killed_at_every_point(tmp_path, archive):
    broken = killed_runs(tmp_path, None, (*IMPORT, archive))
    assert broken == [], "\n".join(broken)


@pytest.mark.slow
def test_a_snapshot_commit_killed_at_every_point(tmp_path, committing):
    broken = killed_runs(tmp_path, committing, COMMIT)
    assert broken == [], "\n".join(broken)


@pytest.mark.slow
def test_a_collection_killed_at_every_point(tmp_path, imported):
    template = tmp_path / "template"
    shutil.copytree(imported, template, symlinks=True)
    invoke(template, "images", "rm", *[i["name"] for i in parsed(invoke(template, "images", "ls", "--json"))])
    broken = killed_runs(tmp_path, template, ("gc",))
    assert broken == [], "\n".join(broken)
