"""`images ls` without click (`cargohold.cli.fast`) prints, fails and exits exactly as the click command
does: both run as processes on the same roots, and their stdout, stderr and exit codes are compared
byte for byte. Arguments the fast path does not take go to click (they are compared all the same).
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone

import pytest
from cliutil import image_archive, invoke

import cargohold
from cargohold.cli import fast
from cargohold.cli.groups import COMMAND_ALIASES
from cargohold.cli.root import GROUPS

MAIN = "from cargohold.cli.main import main; main()"  # as the console script runs it
CLICK = "import sys; from cargohold.cli.main import run_click; run_click(sys.argv[1:])"


def run(code: str, args: list, env: dict = None, close_stdout: bool = False):
    env = {k: v for k, v in (env or os.environ).items() if k not in ("CARGOHOLD_ROOT", "CARGOHOLD_METADATA")}
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**env, "COLUMNS": "80"})
    if close_stdout:
        proc.stdout.close()
        stderr = proc.stderr.read()
        proc.wait(timeout=120)
        return proc.returncode, b"", stderr
    stdout, stderr = proc.communicate(timeout=120)
    return proc.returncode, stdout, stderr


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("fast")
    stored = base / "stored"
    archive, _ = image_archive(base)
    invoke(stored, "images", "import", archive)
    invoke(stored, "images", "tag", "example.com/app:1", "example.com/my app:2")  # a name to quote
    invoke(stored, "images", "label", "example.com/app:1", "env=prod")
    invoke(stored, "namespaces", "create", "other")
    old = base / "old"  # times years ago: its ages stay the same from one process to the next
    with cargohold.open(old, clock=lambda: datetime(2020, 1, 2, tzinfo=timezone.utc)) as db:
        target = cargohold.Descriptor("application/vnd.oci.image.manifest.v1+json", "sha256:" + "ab" * 32, 123)
        db.namespace("default").images.create(cargohold.Image("example.com/old:1", target, {"k": "v"}))
    empty = base / "empty"
    cargohold.open(empty).close()
    foreign = base / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a root")
    lost = base / "lost"
    (lost / "meta").mkdir(parents=True)
    (lost / "meta" / "lock.mdb").write_bytes(b"")
    file = base / "file"
    file.write_text("a file")
    return {"stored": stored, "old": old, "empty": empty, "missing": base / "missing", "foreign": foreign, "lost": lost,
            "file": file}


FAST = [
    ("stored", ["images", "ls"]),
    ("stored", ["i", "list", "-q"]),
    ("old", ["image", "ls", "--format", "wide"]),
    ("old", ["images", "ls", "--json"]),
    ("stored", ["images", "ls", "--json"]),
    ("stored", ["images", "ls", "--format=json", "--json"]),
    ("stored", ["images", "ls", "-q", "name==example.com/app:1", "--filter", "labels.env==prod"]),
    ("stored", ["images", "ls", "--quiet", "--filter=name~=^example", "--filter", "name==nothing"]),
    ("stored", ["images", "ls", "name~=("]),  # a bad filter: InvalidArgument
    ("stored", ["-n", "other", "images", "ls"]),
    ("stored", ["--namespace=bad name", "images", "ls", "-q"]),  # InvalidArgument
    ("stored", ["--init", "--namespace", "nowhere", "images", "ls", "--format", "table"]),
    ("empty", ["images", "ls"]),
    ("empty", ["images", "ls", "-q", "--json"]),
    ("missing", ["images", "ls"]),
    ("missing", ["images", "ls", "--json"]),
    ("foreign", ["images", "ls"]),  # FailedPrecondition: not a cargohold root
    ("lost", ["images", "ls"]),  # Corrupted: the database was lost
]

CLICKS = [  # what the fast path leaves to click (click's own messages)
    ("stored", ["images", "ls", "--format", "yaml"]),
    ("stored", ["images", "ls", "--json", "--format", "wide"]),
    ("stored", ["images", "ls", "--bogus"]),
    ("stored", ["images", "ls", "-qn", "x"]),
    ("stored", ["images", "ls", "--filter"]),
    ("stored", ["images", "-q", "ls"]),
    ("stored", ["images", "ls", "--", "-x"]),
    ("file", ["images", "ls"]),  # --root is a file
    ("stored", ["images", "ls", "-h"]),
]


def _args(roots, root: str, args: list) -> list:
    return ["--root", str(roots[root]), *args] if root != "default" else args


@pytest.mark.parametrize("root,args", FAST + CLICKS, ids=[" ".join([r, *a]) for r, a in FAST + CLICKS])
def test_the_fast_path_answers_as_click_does(roots, root, args):
    argv = _args(roots, root, args)
    assert (fast.parse(argv) is not None) == ((root, args) in FAST)
    expected = run(CLICK, argv)
    assert run(MAIN, argv) == expected
    if (root, args) in FAST[:2]:
        assert expected[0] == 0 and expected[1]  # it did list something


def test_a_closed_pipe_ends_both_quietly(roots):
    argv = _args(roots, "old", ["images", "ls", "--format", "wide"])
    expected = run(CLICK, argv, close_stdout=True)
    assert expected == (141, b"", b"")
    assert run(MAIN, argv, close_stdout=True) == expected


def test_the_default_root_and_the_root_empty_string(roots, tmp_path):
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    for argv in (["images", "ls"], ["--root=", "images", "ls"], ["--root", "", "i", "ls"]):
        assert run(MAIN, argv, env) == run(CLICK, argv, env)
    assert not (tmp_path / "data").exists()  # a listing creates no root


def test_an_engine_url_goes_to_click(roots, monkeypatch):
    argv = _args(roots, "stored", ["images", "ls"])
    monkeypatch.setenv("CARGOHOLD_METADATA", "etcd://127.0.0.1:1/x")
    assert fast.parse(argv) is None
    assert fast.parse(["--metadata", "etcd://127.0.0.1:1/x", *argv]) is None


def test_the_fast_path_knows_the_names_click_resolves():
    """The names of the group and the command are those of `root.GROUPS` and `groups.COMMAND_ALIASES`."""
    from cargohold.cli.images import command

    assert set(fast.GROUP_NAMES) == {"images", *GROUPS["images"].aliases}
    assert set(fast.COMMAND_NAMES) == {"ls", *(alias for alias, name in COMMAND_ALIASES.items() if name == "ls")}
    assert not command.aliases
