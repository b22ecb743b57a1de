"""`cargohold leases ...`: create, ls, resources, rm."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from cliutil import IMAGE, fails, image_archive, invoke, parsed, rows

import cargohold
from cargohold import Resource
from cargohold.timeutil import parse_rfc3339, to_ns


def test_lease_lifecycle(tmp_path):
    root = tmp_path / "r"
    assert invoke(root, "leases", "create", "--id", "build-1", "--label", "team=ci").stdout == "build-1\n"
    generated = invoke(root, "leases", "create", "--expires", "1h30m").stdout.strip()
    leases = {le["id"]: le for le in parsed(invoke(root, "leases", "ls", "--json"))}
    assert set(leases) == {"build-1", generated} and leases["build-1"]["labels"] == {"team": "ci"}
    expire = parse_rfc3339(leases[generated]["labels"]["containerd.io/gc.expire"])
    expected = to_ns(datetime.now(timezone.utc) + timedelta(hours=1, minutes=30))
    assert abs(expire - expected) < 60 * 10**9
    (row,) = rows(invoke(root, "leases", "ls", "id==build-1"))[1:]
    assert (row[0], row[-2:]) == ("build-1", ["ago", "team=ci"])  # CREATED as an age

    with cargohold.open(root) as db:
        db.namespace("default").leases.add_resource("build-1", Resource("sha256:" + "ab" * 32, "content"))
    assert parsed(invoke(root, "leases", "resources", "build-1", "--json")) == [
        {"id": "sha256:" + "ab" * 32, "type": "content"}]
    assert rows(invoke(root, "leases", "resources", "build-1")) == [["TYPE", "ID"], ["content", "sha256:" + "ab" * 32]]

    assert "NotFound" in fails(root, "leases", "rm", "build-1", "missing")  # all or none
    assert invoke(root, "leases", "rm", "build-1", generated).stdout.split() == ["build-1", generated]
    assert parsed(invoke(root, "leases", "ls", "--json")) == []


def test_expiry_takes_any_go_duration(tmp_path):
    root = tmp_path / "r"
    invoke(root, "leases", "create", "--id", "short", "--expires", "1.5h")
    (lease,) = parsed(invoke(root, "leases", "ls", "--json"))
    expire = parse_rfc3339(lease["labels"]["containerd.io/gc.expire"])
    assert abs(expire - to_ns(datetime.now(timezone.utc) + timedelta(minutes=90))) < 60 * 10**9


def test_lease_errors(tmp_path):
    root = tmp_path / "r"
    assert "InvalidArgument" in fails(root, "leases", "create", "--id", "bad id")
    assert "24h" in fails(root, "leases", "create", "--expires", "tomorrow")
    assert "24h" in fails(root, "leases", "create", "--expires", "-1h")
    invoke(root, "leases", "create", "--id", "x")
    assert "AlreadyExists" in fails(root, "leases", "create", "--id", "x")
    assert "NotFound" in fails(root, "leases", "resources", "nope")


def test_removing_a_lease_with_sync_collects_what_it_held(tmp_path):
    root = tmp_path / "r"
    archive, image = image_archive(tmp_path)
    invoke(root, "images", "import", archive)
    invoke(root, "leases", "create", "--id", "hold")
    with cargohold.open(root) as db:
        db.namespace("default").leases.add_resource("hold", Resource(image.config.digest, "content"))
    invoke(root, "images", "rm", IMAGE)
    invoke(root, "gc")
    assert [c["digest"] for c in parsed(invoke(root, "content", "ls", "--json"))] == [image.config.digest]
    invoke(root, "leases", "rm", "--sync", "hold")
    assert parsed(invoke(root, "content", "ls", "--json")) == []
