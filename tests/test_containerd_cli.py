"""`cargohold containerd ...` on a root a private containerd wrote: listings, GC plan, du, fsck, import."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import pytest

from cliutil import fails, invoke, parsed, rows
from containerd_daemon import image_archive, layer, needs_containerd, start_daemon

pytestmark = needs_containerd

GARBAGE = b"nobody references this blob"
GARBAGE_DIGEST = "sha256:" + hashlib.sha256(GARBAGE).hexdigest()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    d = start_daemon(str(base / "d"))
    try:
        image_archive(str(base / "a.tar"), "example.com/a:1", [layer({"a": b"1"}), layer({"b": b"2"})])
        for ns in ("default", "other"):
            d.ctr("images", "import", "--snapshotter", "native", str(base / "a.tar"), namespace=ns)
        d.ctr("containers", "create", "--snapshotter", "native", "example.com/a:1", "web")
        d.ctr("content", "ingest", "garbage", input=GARBAGE)
        d.ctr("leases", "create", "--id", "build", "purpose=test")
    finally:
        d.stop()
    return d.root


def run(root, *args, ok=True):
    """`cargohold [-n NS] containerd ARGS --root-dir ROOT` (the global --root is unused: a dummy)."""
    return invoke("/nonexistent-cargohold-root", "containerd", *args, "--root-dir", root, ok=ok)


def test_ls_tables_json_and_quiet(root):
    table = rows(run(root, "ls", "images"))
    assert table[0] == ["NAME", "TYPE", "DIGEST", "SIZE", "LABELS"]
    assert table[1][0] == "example.com/a:1" and len(table[1][2]) == 71   # a full digest
    assert run(root, "ls", "content", "-q").stdout.count("sha256:") == 6
    assert [c["id"] for c in parsed(run(root, "ls", "containers", "--json"))] == ["web"]
    assert parsed(run(root, "ls", "leases", "--json"))[0]["labels"]["purpose"] == "test"
    assert [r[0] for r in rows(run(root, "ls", "namespaces"))[1:]] == ["default", "other"]
    snapshots = parsed(run(root, "ls", "snapshots", "--json", "-n", "other"))
    assert {s["snapshotter"] for s in snapshots} == {"native"} and all(s["kind"] == "committed" for s in snapshots)
    assert rows(run(root, "ls", "ingests"))[0][0] == "REF"


KINDS = ("images", "containers", "sandboxes", "leases", "content", "snapshots", "ingests", "namespaces")


@pytest.mark.parametrize("kind", KINDS)
def test_ls_takes_quiet_filter_and_format_like_every_listing(root, kind):
    as_json = parsed(run(root, "ls", kind, "--json"))
    assert parsed(run(root, "ls", kind, "--format", "json")) == as_json
    quiet = run(root, "ls", kind, "-q").stdout.splitlines()
    assert len(quiet) == len(as_json) and all(len(line.split()) == 1 for line in quiet)
    table, wide = rows(run(root, "ls", kind, "--format", "table")), rows(run(root, "ls", kind, "--format", "wide"))
    assert len(table) == len(wide) == len(as_json) + 1 and len(wide[0]) >= len(table[0])
    assert run(root, "ls", kind, "-q", "--filter", "labels.nothing==here").stdout == ""
    assert "InvalidArgument" in fails("/nonexistent-cargohold-root", "containerd", "ls", kind, "--filter", "name==",
                                      "--root-dir", root)


def test_ls_filters_use_ctrs_fields(root):
    assert run(root, "ls", "images", "-q", "--filter", "name~=^example.com/").stdout == "example.com/a:1\n"
    assert run(root, "ls", "containers", "-q", "--filter", "image==example.com/a:1").stdout == "web\n"
    assert run(root, "ls", "leases", "-q", "--filter", "labels.purpose==test").stdout == "build\n"
    assert run(root, "ls", "content", "-q", "--filter", f"digest=={GARBAGE_DIGEST}").stdout == GARBAGE_DIGEST + "\n"
    assert run(root, "ls", "namespaces", "-q", "--filter", "name==other").stdout == "other\n"
    committed = run(root, "ls", "snapshots", "-q", "--filter", "kind==committed").stdout.split()
    assert "web" not in committed and len(committed) == 2
    assert run(root, "ls", "snapshots", "-q", "--filter", "kind==active").stdout == "web\n"


def test_ls_tables_show_sizes_for_people(root):
    (info,) = [i for i in parsed(run(root, "ls", "content", "--json")) if i["digest"] == GARBAGE_DIGEST]
    (row,) = [r for r in rows(run(root, "ls", "content")) if r[0] == GARBAGE_DIGEST]
    assert row[1:3] == [str(len(GARBAGE)), "B"] and info["size"] == len(GARBAGE)
    assert "ago" in " ".join(row)


def test_gc_needs_a_mode(root):
    line = fails("/nonexistent-cargohold-root", "containerd", "gc", "--root-dir", root)
    assert "--dry-run" in line


def test_gc_dry_run(root, tmp_path):
    lines = [line.split() for line in run(root, "gc", "--dry-run").stdout.splitlines()]
    assert ["content", "default", GARBAGE_DIGEST, str(len(GARBAGE))] in lines
    assert all(len(line) == 4 for line in lines)
    plan = parsed(run(root, "gc", "--dry-run", "--json"))
    assert [[n["type"], n["namespace"] or "-", n["key"], str(n["size"])] for n in plan] == lines
    copy = str(tmp_path / "copy")   # a blob no record owns is a leftover the cleanup deletes with the garbage
    subprocess.run(["cp", "-a", root, copy], check=True)
    with open(os.path.join(copy, "io.containerd.content.v1.content", "blobs", "sha256", "ab" * 32), "w") as f:
        f.write("orphan")
    assert ["blob", "-", "sha256:" + "ab" * 32, "6"] in [line.split() for line in
                                                          run(copy, "gc", "--dry-run").stdout.splitlines()]


def test_gc_explain(root):
    top = [s for s in parsed(run(root, "ls", "snapshots", "--json")) if s["name"] != "web"][0]["name"]
    out = run(root, "gc", "--explain", f"native/{top}").stdout.splitlines()
    assert out[0] == f"snapshot default native/{top} is kept by this chain of references, root first:"
    assert out[1].split() == ["container", "default", "web"]
    assert run(root, "gc", "--explain", top).stdout == "\n".join(out) + "\n"   # a bare key works too
    out = run(root, "gc", "--explain", GARBAGE_DIGEST).stdout
    assert "reachable from no root" in out
    assert run(root, "gc", "--explain", GARBAGE_DIGEST[:15]).stdout == out  # a digest prefix does too
    assert run(root, "gc", "--explain", GARBAGE_DIGEST[7:19]).stdout == out
    assert "NotFound" in fails("/nonexistent-cargohold-root", "containerd", "gc", "--explain", "nothing-here",
                               "--root-dir", root)


def test_du(root):
    usage = {(r["namespace"], r["store"]): r for r in parsed(run(root, "du", "--json"))}
    default, other = usage[("default", "content")], usage[("other", "content")]
    assert default["reclaimable"] >= len(GARBAGE)
    assert default["shared"] == other["shared"] == other["total"] > 0   # the image is in both namespaces
    assert usage[("-", "content")]["total"] == default["total"] + other["total"] - other["shared"]
    assert usage[("default", "snapshots/native")]["total"] > 0
    assert rows(run(root, "du"))[0] == ["NAMESPACE", "STORE", "COUNT", "TOTAL", "SHARED", "RECLAIMABLE"]


def test_fsck(root, tmp_path):
    assert run(root, "fsck").stdout == "no findings\n"
    copy = str(tmp_path / "copy")
    subprocess.run(["cp", "-a", root, copy], check=True)
    os.unlink(os.path.join(copy, "io.containerd.content.v1.content", "blobs", "sha256", GARBAGE_DIGEST[7:]))
    with open(os.path.join(copy, "io.containerd.content.v1.content", "blobs", "sha256", "stray"), "w") as f:
        f.write("x")
    result = run(copy, "fsck", ok=False)
    assert result.exit_code == 1
    found = [line.split()[:4] for line in result.stdout.splitlines()[1:-1]]
    assert ["missing-blob", "default", "content", GARBAGE_DIGEST] in found
    assert ["stray-file", "-", "content", "sha256:stray"] in found


def test_import(root, tmp_path):
    dest = tmp_path / "dest"
    out = run(root, "import", "--into", str(dest)).stdout
    assert out.startswith(f"imported {root} (db version 3) into {dest}: 2 namespace(s), 2 image(s)")
    assert json.loads(invoke(dest, "images", "ls", "--json").stdout)[0]["name"] == "example.com/a:1"
    assert "AlreadyExists" in fails("/nonexistent-cargohold-root", "containerd", "import", "--into", str(dest),
                                    "--root-dir", root)


def test_default_root_dir_is_var_lib_containerd():
    if os.path.exists("/var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db"):
        pytest.skip("this machine has a containerd root at /var/lib/containerd")
    assert "/var/lib/containerd" in fails("/nonexistent-cargohold-root", "containerd", "ls")
