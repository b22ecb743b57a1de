"""`cargohold demo`: the README's first command."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from cliutil import fails, invoke, parsed

import cargohold
from cargohold import Kind

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
