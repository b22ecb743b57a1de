"""`cargohold demo`: the README's first command."""

from __future__ import annotations

import re

from cliutil import invoke, parsed

import cargohold
from cargohold import Kind


def test_demo_reports_what_was_kept_removed_and_why(tmp_path):
    root = tmp_path / "demo"
    out = invoke(root, "demo").stdout
    assert out.startswith(f"cargohold demo under {root}\n")
    removed = out[out.index("Removed, because"):out.index("Kept, because")]
    assert sorted(re.findall(r"content (sha256:[0-9a-f]{64})  (\w+(?: \d)?)", removed), key=lambda m: m[1]) == \
        sorted(re.findall(r"content (sha256:[0-9a-f]{64})  (\w+(?: \d)?)\n", out[:out.index("3. Created")]),
               key=lambda m: m[1])
    assert {role for _, role in re.findall(r"content (sha256:\S+)  (\w+(?: \d)?)", removed)} == {
        "manifest", "config", "layer 1", "layer 2", "layer 3"}
    assert "is a hard link of bin/hello" in out and "'hello from layer 2'" in out
    kept = out[out.index("Kept, because"):].splitlines()
    assert kept[1].split() == ["container", "demo", "hello-1"]
    assert kept[2].split() == ["->", "snapshot", "demo", "native/hello-1"]
    assert len([line for line in kept if "-> snapshot demo native/sha256:" in line]) == 3
    assert re.search(r"removed 5 node\(s\); writers held off [\d.]+ ms", out)

    # what the report says is what the root holds
    with cargohold.open(root) as db:
        ns = db.namespace("demo")
        assert ns.images.list() == [] and list(ns.content.walk()) == [] and list(db.content_store.walk()) == []
        snapshots = {i.name: i.kind for i in ns.snapshotter("native").walk()}
        assert snapshots.pop("hello-1") == Kind.ACTIVE and list(snapshots.values()) == [Kind.COMMITTED] * 3
        assert [c.id for c in ns.containers.list()] == ["hello-1"] and db.unreachable() == []

    again = invoke(root, "demo").stdout  # a second run on the same root starts over
    assert "removed 5 node(s)" in again
    assert [c["id"] for c in parsed(invoke(root, "--namespace", "demo", "containers", "ls", "--json"))] == ["hello-1"]
