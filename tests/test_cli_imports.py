"""Start-up: each command imports only what it uses (the figures are in benchmarks/test_cli_bench.py).

The modules a process imported are read from ``python -X importtime``'s report.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from cliutil import IMAGE, image_archive, invoke

import cargohold

HEAVY = ("rich", "httpx", "zstandard", "re2", "cargohold.oci", "cargohold.transfer", "cargohold.transfer.registry",
         "cargohold.containerd", "cargohold.goregex")
"""What no listing, help or version pays for."""

DATABASE = ("lmdb", "msgpack", "cargohold.db", "cargohold.kv")

UNUSED_BY_READS = ("logging", "secrets", "cargohold.events")
"""Loaded when something logs (`cargohold.logs`), a random name is made or a write publishes an event, never by a
read that does none of these."""


def imported(*args, ok: bool = True) -> set:
    env = {k: v for k, v in os.environ.items() if k != "CARGOHOLD_ROOT"}
    code = "from cargohold.cli.main import main; main()"  # as the console script runs it
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code, *map(str, args)],
                          capture_output=True, env=env, timeout=120)
    assert (proc.returncode == 0) == ok, proc.stderr[-2000:]
    found = set()
    for line in proc.stderr.decode().splitlines():
        if line.startswith("import time:") and "|" in line:
            found.add(line.rsplit("|", 1)[1].strip())
    assert "cargohold.cli.main" in found
    return found


@pytest.fixture(scope="module")
def empty_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("empty") / "r"
    cargohold.open(root).close()
    return root


@pytest.mark.parametrize("args", [["--help"], ["images", "--help"], ["images", "ls", "--help"], ["--version"]])
def test_help_and_version_import_no_database_and_no_command(args):
    found = imported(*args)
    assert not found & set(HEAVY + DATABASE)
    assert not {m for m in found if m.startswith("cargohold.cli.") and m != "cargohold.cli.main"} - {
        "cargohold.cli.root", "cargohold.cli.context", "cargohold.cli.missing", "cargohold.cli.groups", "cargohold.cli.output",
        "cargohold.cli.images"}
    assert "shutil" not in found  # click's help takes the terminal's width from it; ours does not need it
    if args == ["--version"]:
        assert "click" not in found


@pytest.mark.parametrize("args", [["images", "ls"], ["images", "ls", "-q"], ["containers", "ls"], ["leases", "ls"],
                                  ["namespaces", "ls"], ["content", "ls"], ["snapshots", "ls"]])
def test_listings_import_only_what_they_use(empty_root, args):
    found = imported("--root", empty_root, *args)
    assert set(DATABASE) <= found
    assert not found & set(HEAVY + UNUSED_BY_READS)
    if args[0] not in ("content", "snapshots"):  # a read-only open opens the backends a command uses
        assert "cargohold.snapshots" not in found and "cargohold.content.local" not in found


CLICK_PATH = ("click", "cargohold.cli.root", "cargohold.cli.groups", "cargohold.cli.images")
"""What `images ls` runs without (`cargohold.cli.fast`): click and the click commands."""

OPENED_LAZILY = ("ctypes", "uuid", "platform", "dataclasses", "inspect", "cargohold.gc.context", "cargohold.gc.index",
                 "cargohold.gc.labels", "cargohold.gc.scope", "cargohold.leases")
"""Loaded when something needs them, not by an open and an empty listing: madvise (`kv.Env.release_pages`), a new
database's identity, the first data class built (`cargohold.deferred`), the collector and the node table (a write
or a collection)."""


@pytest.mark.parametrize("args", [["images", "ls"], ["i", "list", "-q"], ["images", "ls", "--format", "wide"],
                                  ["images", "ls", "--json", "name==x"]])
def test_images_ls_imports_no_click_and_nothing_an_open_does_not_use(empty_root, tmp_path, args):
    for root in (empty_root, tmp_path / "missing"):
        found = imported("--root", root, *args)
        assert not found & set(CLICK_PATH + OPENED_LAZILY + HEAVY + UNUSED_BY_READS), root
        assert "cargohold.cli.fast" in found and "cargohold.cli.imagelist" in found
        assert set(DATABASE) <= found or root != empty_root
    assert "click" in imported("--root", empty_root, "images", "ls", "--format", "yaml", ok=False)  # click's message


def test_a_regex_filter_loads_the_engine_only_then(empty_root):
    assert "re2" in imported("--root", empty_root, "images", "ls", "name~=^app")
    assert "re2" not in imported("--root", empty_root, "images", "ls", "name==app")


def test_listing_stored_images_reads_their_documents(tmp_path):
    root = tmp_path / "r"
    archive, _ = image_archive(tmp_path)
    invoke(root, "images", "import", archive)
    found = imported("--root", root, "images", "ls")
    assert "cargohold.oci.walk" in found  # SIZE and PLATFORMS come from the documents...
    assert not found & {"rich", "httpx", "cargohold.transfer.registry", "cargohold.containerd"}
    assert imported("--root", root, "images", "ls", "-q").isdisjoint({"cargohold.oci.walk"})  # ...not for -q
    assert IMAGE
