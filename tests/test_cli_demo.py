"""`cargohold demo`: the README's first command."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import textwrap

import pytest
from cliutil import fails, invoke, parsed

import cargohold
from cargohold import Container, Descriptor, Image, Kind, RuntimeInfo, transfer
from cargohold.cli.demo import demo_layers
from cargohold.oci.digests import digest_bytes
from cargohold.oci.identity import chain_ids

ROLES = r"(the manifest|the config|layer \d)"


def _section(out: str, start: str, end: str) -> str:
    return out[out.index(start):out.index(end)]


def test_demo_reports_what_was_kept_removed_and_why(tmp_path):
    root = tmp_path / "demo"
    out = invoke(root, "demo").stdout
    assert out.startswith(f"cargohold demo, in namespace 'demo' of the root {root}\n")
    assert "node(s)" not in out
    stored = re.findall(r"(sha256:[0-9a-f]{64})  " + ROLES + "\n", _section(out, "2. Imported", "and unpacked into"))
    removed = re.findall(r"content demo (sha256:[0-9a-f]{64})  " + ROLES + "\n",
                         _section(out, "Removed, because", "6. Kept"))
    assert sorted(removed) == sorted(stored) and {role for _, role in removed} == {
        "the manifest", "the config", "layer 1", "layer 2", "layer 3"}
    assert "is a hard link of bin/hello" in out and "'hello from layer 2'" in out
    assert re.search(r"removed 5 records \(5 content\); freed [\d.]+ KiB \(5 blobs\); writers held off [\d.]+ ms",
                     out)

    kept = _section(out, "6. Kept", "Why the bottom").splitlines()
    assert kept[0].endswith("(5 things):")
    assert kept[1].split()[:3] == ["container", "demo", "hello-1"]
    assert kept[2].split()[:3] == ["snapshot", "demo", "native/hello-1"]
    assert len([line for line in kept if line.split()[:2] == ["snapshot", "demo"]]) == 4
    chain = _section(out, "Why the bottom", "The root stays").splitlines()[1:]
    assert chain[0].split() == ["container", "demo", "hello-1"]
    assert chain[1].split() == ["->", "snapshot", "demo", "native/hello-1"]
    assert len([line for line in chain if "-> snapshot demo native/sha256:" in line]) == 3

    # what the report says is what the root holds
    with cargohold.open(root) as db:
        ns = db.namespace("demo")
        assert ns.images.list() == [] and list(ns.content.walk()) == [] and list(db.content_store.walk()) == []
        snapshots = {i.name: i.kind for i in ns.snapshotter("native").walk()}
        assert snapshots.pop("hello-1") == Kind.ACTIVE and list(snapshots.values()) == [Kind.COMMITTED] * 3
        assert [c.id for c in ns.containers.list()] == ["hello-1"] and db.unreachable() == []

    again = invoke(root, "demo").stdout  # a second run on the same root starts over
    assert "removed 5 records (5 content)" in again
    assert [c["id"] for c in parsed(invoke(root, "--namespace", "demo", "containers", "ls", "--json"))] == ["hello-1"]


def test_demo_on_a_given_root_collects_nothing_it_did_not_create(tmp_path):
    """A user's unreferenced blob in another namespace, and data no record owns, survive the demo."""
    root = tmp_path / "r"
    precious = invoke(root, "content", "ingest", "keepme", input=b"precious\n").stdout.strip()
    with cargohold.open(root) as db:
        with db.content_store.writer("stray") as w:  # a backend leftover: belongs to no namespace
            w.write(b"stray bytes")
            stray = w.commit()
        db.snapshotter_backend("native").prepare("stray-snapshot")
    invoke(root, "demo")
    assert invoke(root, "content", "ls", "-q").stdout.split() == [precious]
    with cargohold.open(root) as db:
        assert stray in {info.digest for info in db.content_store.walk()}
        assert "stray-snapshot" in {info.name for info in db.snapshotter_backend("native").walk()}


def test_demo_refuses_a_demo_namespace_holding_garbage_it_did_not_make(tmp_path):
    root = tmp_path / "r"
    digest = invoke(root, "--namespace", "demo", "content", "ingest", "mine", input=b"not the demo's").stdout.strip()
    line = fails(root, "demo")
    assert line.startswith("cargohold: FailedPrecondition: namespace 'demo' of this root already holds 1 thing")
    assert digest in line
    assert invoke(root, "--namespace", "demo", "content", "ls", "-q").stdout.split() == [digest]


def _run_demo(tmp_path, *args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CARGOHOLD_ROOT"}
    env["TMPDIR"] = str(tmp_path)
    return subprocess.run([sys.executable, "-m", "cargohold.cli.main", "demo", *args], capture_output=True,
                          text=True, env=env, timeout=300, check=True)


def test_demo_without_a_root_removes_its_temporary_root_unless_asked_to_keep_it(tmp_path):
    out = _run_demo(tmp_path).stdout
    (root,) = re.findall(r"of a new temporary root (\S+)\n", out)
    assert os.path.dirname(root) == str(tmp_path)
    assert f"Removed the temporary root {root}" in out and os.listdir(tmp_path) == []

    kept = _run_demo(tmp_path, "--keep").stdout
    (root,) = re.findall(r"of a new temporary root (\S+)\n", kept)
    assert os.listdir(tmp_path) == [os.path.basename(root)]
    assert f"try `cargohold --root {root} --namespace demo snapshots tree`" in kept
    with cargohold.open(root) as db:
        assert [c.id for c in db.namespace("demo").containers.list()] == ["hello-1"]


# -- what the demo did not create ------------------------------------------------------------------

MARK = "cargohold.demo"


def _objects(root) -> dict:
    """Every record of every namespace, and every file of the backends (with its bytes): the root's objects.

    Empty lock files are left out: taking a lock (as a look at the backends' leftovers does) makes one.
    """
    found = {}
    with cargohold.open(root) as db:
        for name in db.namespaces.list():
            ns = db.namespace(name)
            found[name] = {
                "images": ns.images.list(), "containers": ns.containers.list(),
                "content": sorted(ns.content.walk(), key=lambda info: info.digest),
                "leases": [(lease, sorted(map(repr, ns.leases.list_resources(lease.id))))
                           for lease in ns.leases.list()],
                "snapshots": {sn: sorted(ns.snapshotter(sn).walk(), key=lambda info: info.name)
                              for sn in sorted(db.snapshotters)},
            }
    files = {}
    for store in ("content", "snapshots"):
        for top, dirs, names in os.walk(os.path.join(root, store)):
            for entry in dirs + [name for name in names if not name.endswith(".lock")]:
                path = os.path.join(top, entry)
                st = os.lstat(path)
                data = (os.readlink(path) if os.path.islink(path) else
                        open(path, "rb").read() if os.path.isfile(path) else None)
                files[os.path.relpath(path, root)] = (st.st_mode, st.st_size, st.st_mtime_ns, data)
    return {"records": found, "files": files}


def _refused(root, start: str) -> str:
    """The demo's refusal: one FailedPrecondition line starting with `start`, naming the way out;
    nothing in the root changed."""
    before = _objects(root)
    line = fails(root, "demo")
    assert line.startswith(f"cargohold: FailedPrecondition: {start}"), line
    assert "another root" in line and "--namespace" in line
    assert _objects(root) == before
    return line


def test_demo_refuses_to_delete_a_container_hello_1_it_did_not_create(tmp_path):
    """The audit's reproduction: the user's container hello-1 in namespace demo, on the user's own snapshot
    chain, was deleted (and its chain collected); now the demo refuses and the user's data stays."""
    root = tmp_path / "r"
    with cargohold.open(root) as db:
        ns = db.namespace("demo")
        sn = ns.snapshotter("native")
        src = sn.prepare("base-active")[0].source
        with open(os.path.join(src, "precious.txt"), "w") as f:
            f.write("user data\n")
        sn.commit("user-base", "base-active")
        rw = sn.prepare("hello-1", "user-base")[0].source
        with open(os.path.join(rw, "work.txt"), "w") as f:
            f.write("user's container writes\n")
        ns.containers.create(Container("hello-1", RuntimeInfo("io.containerd.runc.v2"), snapshotter="native",
                                       snapshot_key="hello-1", image="my/own:image"))
    _refused(root, "container 'hello-1' in namespace 'demo' was not created by the demo (it has no label "
                   "cargohold.demo)")
    with cargohold.open(root) as db:
        ns = db.namespace("demo")
        assert ns.containers.get("hello-1").image == "my/own:image"
        sn = ns.snapshotter("native")
        assert {info.name for info in sn.walk()} == {"user-base", "hello-1"}
        with open(os.path.join(sn.mounts("hello-1")[0].source, "precious.txt")) as f:
            assert f.read() == "user data\n"

    # the way out it names works, and still leaves the user's namespace alone
    before = _objects(root)["records"]["demo"]
    assert "in namespace 'tour' of the root" in invoke(root, "--namespace", "tour", "demo").stdout
    assert _objects(root)["records"]["demo"] == before


def test_demo_refuses_to_replace_an_image_it_did_not_create(tmp_path):
    """The audit's reproduction: the user's image named like the demo's was replaced, then deleted, and the
    demo's collection took the user's manifest blob; now the demo refuses."""
    root = tmp_path / "r"
    with cargohold.open(root) as db:
        ns = db.namespace("demo")
        with ns.content.writer("m") as w:
            w.write(b'{"user": "manifest"}')
            info = w.commit()
        ns.images.create(Image("example.com/cargohold/hello:1.0",
                               Descriptor("application/vnd.oci.image.manifest.v1+json", info.digest, info.size)))
    _refused(root, "image 'example.com/cargohold/hello:1.0' in namespace 'demo' was not created by the demo")
    with cargohold.open(root) as db:
        assert db.namespace("demo").images.get("example.com/cargohold/hello:1.0").target.digest == info.digest
        assert db.content_store.exists(info.digest)


def _chain_id_of_layer_1() -> str:
    tar, _ = demo_layers()[0]
    return chain_ids([digest_bytes(tar)])[0]


@pytest.mark.parametrize("what", ["snapshot hello-1", "snapshot of layer 1", "lease"])
def test_demo_refuses_a_snapshot_key_or_lease_it_did_not_create(tmp_path, what):
    """The user's snapshot named as the demo's container snapshot or unpacked layer, or lease named as the
    demo's, held by the user (so no garbage): the demo would reuse or delete it, so it refuses."""
    root = tmp_path / "r"
    with cargohold.open(root) as db:
        ns = db.namespace("demo")
        if what == "lease":
            ns.leases.create("cargohold-demo", {"mine": "yes"})
            start = "lease 'cargohold-demo' in namespace 'demo' was not created by the demo"
        else:
            held = ns.with_lease(ns.leases.create("users-own").id).snapshotter("native")
            if what == "snapshot hello-1":
                held.prepare("hello-1")
                start = "snapshot 'hello-1' in namespace 'demo' was not created by the demo"
            else:
                chain = _chain_id_of_layer_1()
                with open(os.path.join(held.prepare("extract")[0].source, "mine"), "w") as f:
                    f.write("not the demo's layer\n")
                held.commit(chain, "extract")
                start = f"snapshot {chain!r} (the demo's layer, unpacked) in namespace 'demo' was not created"
    _refused(root, start)


def test_user_garbage_in_namespace_demo_survives_the_demo(tmp_path):
    """An unreferenced blob and snapshot the user made in namespace demo: the demo's collection would take
    them, so it refuses, and they stay, byte for byte."""
    root = tmp_path / "r"
    with cargohold.open(root) as db:
        ns = db.namespace("demo")
        with ns.content.writer("mine") as w:
            w.write(b"the user's unreferenced blob")
            w.commit()
        sn = ns.snapshotter("native")
        with open(os.path.join(sn.prepare("work")[0].source, "notes.txt"), "w") as f:
            f.write("the user's unreferenced snapshot\n")
        sn.commit("user-snapshot", "work")
        assert len(db.unreachable(namespace="demo")) == 2
    _refused(root, "namespace 'demo' of this root already holds 2 things no root references")


def _user_data_in_namespace_demo(root) -> None:
    """The user's image, container (on a chain of the user's snapshots) and leased blob in namespace demo,
    under other names than the demo's: all referenced, so nothing in the demo's way."""
    with cargohold.open(root) as db:
        ns = db.namespace("demo")
        with ns.content.writer("manifest") as w:
            w.write(b'{"user": "manifest"}')
            manifest = w.commit()
        ns.images.create(Image("example.com/user/app:2", Descriptor(
            "application/vnd.oci.image.manifest.v1+json", manifest.digest, manifest.size)))
        leased = ns.with_lease(ns.leases.create("uploads").id)
        with leased.content.writer("upload") as w:
            w.write(b"a leased upload")
            w.commit()
        sn = ns.snapshotter("native")
        with open(os.path.join(sn.prepare("base")[0].source, "precious.txt"), "w") as f:
            f.write("user data\n")
        sn.commit("user-base", "base")
        sn.prepare("web", "user-base")
        ns.containers.create(Container("web", RuntimeInfo("io.containerd.runc.v2"), snapshotter="native",
                                       snapshot_key="web", image="example.com/user/app:2"))
        assert db.unreachable() == []


def test_demo_twice_next_to_the_users_data_in_its_namespace(tmp_path):
    """The demo runs, and runs again on its own output, in a namespace holding the user's data: it changes
    and collects none of it, marks what it made, and leaves no lease."""
    root = tmp_path / "r"
    _user_data_in_namespace_demo(root)
    before = _objects(root)
    for _ in range(2):
        assert "removed 5 records (5 content)" in invoke(root, "demo").stdout
        after = _objects(root)
        users = after["records"]["demo"]
        for kind, records in before["records"]["demo"].items():
            if kind == "snapshots":
                assert {i.name: i for i in users[kind]["native"]} | {i.name: i for i in records["native"]} == {
                    i.name: i for i in users[kind]["native"]}
            else:
                assert [r for r in records if r not in users[kind]] == []
        kept = {path: entry for path, entry in before["files"].items() if entry[3] is not None}  # not directories
        assert kept.items() <= after["files"].items()
    with cargohold.open(root) as db:
        ns = db.namespace("demo")
        assert [lease.id for lease in ns.leases.list()] == ["uploads"]
        assert [c.id for c in ns.containers.list() if MARK in c.labels] == ["hello-1"]
        marked = {i.name for i in ns.snapshotter("native").walk() if MARK in (i.labels or {})}
        assert len(marked) == 4 and "hello-1" in marked and "user-base" not in marked
        assert [i.name for i in ns.images.list()] == ["example.com/user/app:2"]


def test_demo_again_and_again_leaves_no_backend_data_behind(tmp_path, engine):
    """Each re-run collects what the run before left (its container's snapshot; its lease holds the unpacked
    layers for the import to reuse) through its own restricted collection, backend directory included:
    nothing is left for the next run to refuse."""
    root = tmp_path / "r"
    layers = []
    for _ in range(3):
        assert "removed 5 records (5 content)" in invoke(root, "demo").stdout
        with cargohold.open(root) as db:
            assert db.leftovers() == [] and db.unreachable() == []
            keys = sorted(info.name for info in db.snapshotter_backend("native").walk())
            assert len(keys) == 4
            layers.append([key for key in keys if not key.endswith("/hello-1")])
    assert layers[0] == layers[1] == layers[2]  # the unpacked layers are reused, as the import finds them


def test_demo_starts_over_after_an_interrupted_run(tmp_path, monkeypatch):
    """A run stopped right after the import leaves its lease, its image and unpacked layers not yet marked
    (the lease holds them): the next run knows them as its own and starts over."""
    root = tmp_path / "r"
    real = transfer.import_archive

    def import_then_stop(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt  # ^C

    monkeypatch.setattr(transfer, "import_archive", import_then_stop)
    assert invoke(root, "demo", ok=False).exit_code != 0
    monkeypatch.setattr(transfer, "import_archive", real)
    with cargohold.open(root) as db:
        ns = db.namespace("demo")
        assert [lease.id for lease in ns.leases.list()] == ["cargohold-demo"]
        assert [MARK in (i.labels or {}) for i in ns.snapshotter("native").walk()] == [False] * 3
    assert "removed 5 records (5 content)" in invoke(root, "demo").stdout
    with cargohold.open(root) as db:
        assert db.namespace("demo").leases.list() == [] and db.unreachable() == []


def test_demo_collects_nothing_when_someone_else_left_garbage_meanwhile(tmp_path, monkeypatch):
    """Another writer puts an unreferenced blob into namespace demo while the demo runs: the demo's
    collection would take it, so the demo stops before collecting, and the blob stays."""
    root = tmp_path / "r"
    real = transfer.import_archive
    written = []

    def import_while_someone_writes(leased, *args, **kwargs):
        images = real(leased, *args, **kwargs)
        with leased.db.namespace("demo").content.writer("theirs") as w:
            w.write(b"written by someone else meanwhile")
            written.append(w.commit().digest)
        return images

    monkeypatch.setattr(transfer, "import_archive", import_while_someone_writes)
    line = fails(root, "demo")
    assert line.startswith(f"cargohold: FailedPrecondition: a collection of namespace 'demo' would now delete "
                           f"content demo {written[0]}, which the demo did not create"), line
    with cargohold.open(root) as db:
        assert db.content_store.exists(written[0])
        assert written[0] in {info.digest for info in db.namespace("demo").content.walk()}


@pytest.mark.parametrize("what", ["ingest", "snapshot"])
def test_demo_leaves_backend_data_of_its_namespace_that_no_record_owns(tmp_path, what):
    """The bytes of an upload, or a snapshot directory, of namespace demo whose record was lost (backend ref
    ``demo-<hex>``, backend key ``demo/<id>/<key>``): the namespace's collection would delete them, so the
    demo refuses and they stay (on a root holding an earlier run's output: a re-run removes snapshots, so its
    collection cleans the snapshotter)."""
    root = tmp_path / "r"
    invoke(root, "demo")
    with cargohold.open(root) as db:
        if what == "ingest":
            w = db.content_store.writer("demo-0123456789abcdef")
            w.write(b"half an upload whose record was lost")
            w.close()
            name = "ingest demo-0123456789abcdef"
        else:
            source = db.snapshotter_backend("native").prepare("demo/99/work")[0].source
            with open(os.path.join(source, "notes.txt"), "w") as f:
                f.write("written into a snapshot whose record was lost\n")
            name = "native snapshot demo/99/work"
        leftovers = db.leftovers()
        assert len(leftovers) == 1
    _refused(root, f"namespace 'demo' of this root has 1 thing in the backends that no record owns (such as {name})")
    with cargohold.open(root) as db:
        assert db.leftovers() == leftovers


# -- a write by another process between the demo's last check and its collection -------------------

_BETWEEN = {
    # what another process does to the root right after the demo's last check
    "image deleted": """
        ns.images.delete("example.com/user/app:2")  # the user's manifest blob is unreferenced now
    """,
    "blob written": """
        with ns.content.writer("theirs") as w:
            w.write(b"written by someone else meanwhile")
            w.commit()
    """,
    "ingest left": """
        w = db.content_store.writer("demo-0123456789abcdef")  # the bytes of an upload whose record was lost
        w.write(b"half an upload whose record was lost")
        w.close()
    """,
}


def _write_between_check_and_collection(monkeypatch, root, what: str) -> list:
    """Make the demo's last check (`_require_own`) return only once another process has done `what` to
    the root: a real write, at the one moment the check cannot see."""
    from conftest import run_python

    from cargohold.cli import demo

    real, done = demo._require_own, []

    @functools.wraps(real)
    def check_then_someone_writes(*args, **kwargs):
        real(*args, **kwargs)
        run_python(f"import cargohold\nwith cargohold.open({str(root)!r}) as db:\n    ns = db.namespace('demo')\n"
                   + textwrap.indent(textwrap.dedent(_BETWEEN[what]).strip(), "    "))
        done.append(what)

    monkeypatch.setattr(demo, "_require_own", check_then_someone_writes)
    return done


_THEIRS = {"image deleted": b'{"user": "manifest"}', "blob written": b"written by someone else meanwhile"}
"""The bytes of the user's blob each write leaves unreferenced."""


@pytest.mark.parametrize("what", sorted(_THEIRS))
def test_a_write_between_the_demos_last_check_and_its_collection_is_not_collected(tmp_path, monkeypatch, what,
                                                                                   engine):
    """Another process deletes the user's image in namespace demo (its manifest blob is garbage now), or
    writes an unreferenced blob there, right after the demo's last check: the collector refuses in the
    transaction that sweeps, so the demo stops with one line, and the user's blob and the demo's own
    garbage are all still there, records and bytes."""
    root = tmp_path / "r"
    _user_data_in_namespace_demo(root)
    done = _write_between_check_and_collection(monkeypatch, root, what)
    line = fails(root, "demo")
    assert done == [what]
    theirs = digest_bytes(_THEIRS[what])
    assert line == (f"cargohold: FailedPrecondition: a collection of namespace 'demo' would now delete "
                    f"content demo {theirs}, which the demo did not create (something else wrote there "
                    f"while it ran), so it collects nothing: run it on another root (or without --root), "
                    f"or in another namespace (--namespace NAME)")
    with cargohold.open(root) as db:
        ns = db.namespace("demo")
        assert db.content_store.exists(theirs) and theirs in {info.digest for info in ns.content.walk()}
        assert ns.content.read(theirs) == _THEIRS[what]
        # nothing was collected: the five blobs of the demo's deleted image are still garbage, beside the user's
        garbage = db.unreachable(namespace="demo")
        assert len(garbage) == 6 and theirs in {n.key for n in garbage}
        assert all(db.content_store.exists(n.key) for n in garbage)
        assert db.leftovers() == []
    from cargohold.cli import demo

    monkeypatch.setattr(demo, "_require_own", demo._require_own.__wrapped__)
    # a next run refuses before it changes anything, as after any run stopped there
    _refused(root, "namespace 'demo' of this root already holds 6 things no root references")


def test_an_upload_left_between_the_demos_last_check_and_its_collection_stays(tmp_path, monkeypatch, engine):
    """Another process leaves the bytes of an upload of namespace demo without a record (backend ref
    ``demo-<hex>``) right after the demo's last check: the demo's collection goes on, removes its own five
    blobs, and its cleanup leaves that upload alone (a namespace's cleanup would have deleted it)."""
    root = tmp_path / "r"
    done = _write_between_check_and_collection(monkeypatch, root, "ingest left")
    assert "removed 5 records (5 content)" in invoke(root, "demo").stdout
    assert done == ["ingest left"]
    with cargohold.open(root) as db:
        (left,) = db.leftovers()
        assert (left.type, left.key) == ("ingest-dir", "demo-0123456789abcdef")
        assert db.unreachable() == []
