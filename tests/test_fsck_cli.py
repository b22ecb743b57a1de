"""`cargohold fsck` as users run it: the table, --json, --repair, --verify-content, --prune-orphans
and the exit status (1 while a problem is left)."""

from __future__ import annotations

import os
import shutil

import pytest
from cliutil import fails, invoke, parsed, rows, subprocess_run
from fsckutil import GARBAGE_DIGEST, build

import cargohold
from cargohold.integrity import findings as f


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return build(tmp_path_factory.mktemp("fsck-cli"))


@pytest.fixture
def root(template, tmp_path):
    target = tmp_path / "root"
    shutil.copytree(template, target, symlinks=True)
    return target


def blob(root, digest: str) -> str:
    return os.path.join(root, "content", "blobs", "sha256", digest[7:])


def image_digest(root) -> str:
    return parsed(invoke(root, "images", "ls", "--json"))[0]["target"]["digest"]


def test_a_sound_root(root):
    result = invoke(root, "fsck")
    assert result.stdout.splitlines() == ["no findings"]
    report = parsed(invoke(root, "fsck", "--json", "--verify-content"))
    assert report["findings"] == [] and report["repairs"] == [] and report["summary"] == "no findings"
    assert report["schema"] == "v1" and report["checked"]["nodes"] == report["checked"]["records"] > 10


def test_problems_exit_1_and_repair_fixes_them(root):
    os.unlink(blob(root, GARBAGE_DIGEST))
    result = invoke(root, "fsck", ok=False)
    assert result.exit_code == 1
    table = rows(result)
    assert table[0] == ["PROBLEM", "NAMESPACE", "STORE", "KEY", "SIZE", "REPAIR", "PATH", "DETAIL"]
    assert table[1][:6] == [f.MISSING_BLOB, "default", "content", GARBAGE_DIGEST, "0", f.DROP]
    assert result.stdout.splitlines()[-1] == "1 finding(s), 0 bytes involved"
    report = parsed(invoke(root, "fsck", "--json", ok=False))
    assert [(x["kind"], x["key"], x["repair"]) for x in report["findings"]] == [
        (f.MISSING_BLOB, GARBAGE_DIGEST, f.DROP)]

    repaired = invoke(root, "fsck", "--repair")
    lines = repaired.stdout.splitlines()
    assert lines[-2].startswith(f"drop {f.MISSING_BLOB} default content {GARBAGE_DIGEST}: done: ")
    assert lines[-1] == "1 finding(s), 0 bytes involved; 1 repair(s) made"
    again = rows(invoke(root, "fsck"))  # exit 0: the record's drop left the next collection a cleanup
    assert [r[0] for r in again[1:-1]] == [f.DIRTY_BACKEND] and again[-1] == "no problems (1 note(s))".split()


def test_a_lost_record_is_left_and_the_exit_status_says_so(root):
    digest = image_digest(root)
    os.unlink(blob(root, digest))
    report = parsed(invoke(root, "fsck", "--repair", "--json", ok=False))
    assert [(x["kind"], x["key"], x["repair"]) for x in report["findings"]] == [(f.MISSING_BLOB, digest, "")]
    assert report["repairs"] == []
    assert subprocess_run(root, "fsck", "--repair").returncode == 1
    assert digest in {i["digest"] for i in parsed(invoke(root, "content", "ls", "--json"))}


def test_verify_content_and_quarantine(root):
    path = blob(root, GARBAGE_DIGEST)
    os.chmod(path, 0o644)
    with open(path, "r+b") as fh:
        fh.write(b"X")
    assert invoke(root, "fsck").exit_code == 0
    result = invoke(root, "fsck", "--verify-content", ok=False)
    assert result.exit_code == 1 and rows(result)[1][:6] == [
        f.BAD_DIGEST, "default", "content", GARBAGE_DIGEST, str(os.path.getsize(path)), f.QUARANTINE]
    invoke(root, "fsck", "--verify-content", "--repair")
    assert not os.path.exists(path)
    assert os.path.exists(os.path.join(root, "content", "quarantine", "sha256", GARBAGE_DIGEST[7:]))
    listed = rows(invoke(root, "fsck", "--verify-content"))
    assert [r[0] for r in listed[1:-1]] == [f.DIRTY_BACKEND, f.QUARANTINED]
    assert listed[-1] == "no problems (2 note(s))".split()


def test_prune_orphans(root):
    stray = blob(root, "sha256:" + "4" * 64)
    with open(stray, "wb") as fh:
        fh.write(b"d" * 99)
    result = invoke(root, "fsck", ok=False)
    assert rows(result)[1][:6] == [f.UNOWNED_BLOB, "-", "content", "sha256:" + "4" * 64, "99", f.PRUNE]
    assert invoke(root, "fsck", "--repair", ok=False).exit_code == 1 and os.path.exists(stray)
    assert "--prune-orphans needs --repair" in fails(root, "fsck", "--prune-orphans")
    invoke(root, "fsck", "--repair", "--prune-orphans")
    assert not os.path.exists(stray)
    with cargohold.open(root) as db:
        assert cargohold.fsck(db).findings == []
