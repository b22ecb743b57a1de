"""Every command has --help; every error is one line on stderr with exit code 1, in process and as a program."""

from __future__ import annotations

import click
import pytest
from cliutil import fails, invoke, parsed, subprocess_run

from cargohold.cli.main import cli

GROUPS = {"namespaces": {"ls", "create", "rm", "label"},
          "images": {"ls", "import", "export", "pull", "push", "rm", "label", "inspect", "tag"},
          "content": {"ls", "get", "ingest", "rm", "active", "label", "info"},
          "snapshots": {"ls", "tree", "prepare", "view", "commit", "rm", "usage", "mounts", "label", "info"},
          "leases": {"ls", "create", "rm", "resources"},
          "containers": {"ls", "create", "rm", "info"}}


def all_commands(command: click.Command, path: tuple = ()):
    yield path
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from all_commands(sub, path + (name,))


def test_the_issue_lists_every_group_and_command():
    for group, commands in GROUPS.items():
        assert set(cli.commands[group].commands) == commands, group
    assert {"gc", "info", "demo", "version"} <= set(cli.commands)


def test_help_everywhere(tmp_path):
    paths = list(all_commands(cli))
    assert len(paths) > 40
    for path in paths:
        out = invoke(tmp_path / "r", *path, "--help").stdout
        assert out.startswith("Usage: ") and "--help" in out, path
        assert len(out.splitlines()) > 3, path
    assert not (tmp_path / "r").exists()  # help opens no database


ERRORS = [
    (["nosuchgroup"], "No such command"),
    (["images", "nosuchcommand"], "No such command"),
    (["images", "import"], "Missing argument"),
    (["images", "ls", "--bogus"], "No such option"),
    (["images", "ls", "name=="], "InvalidArgument"),
    (["images", "rm", "missing"], "NotFound"),
    (["content", "get", "sha256:nope"], "InvalidArgument"),
    (["content", "ingest", "r", "--size", "-1"], "--size"),
    (["snapshots", "--snapshotter", "zfs", "ls"], "NotFound"),
    (["leases", "rm", "missing"], "NotFound"),
    (["containers", "rm", "missing"], "NotFound"),
    (["namespaces", "create", "bad name"], "InvalidArgument"),
    (["gc", "--explain", "nothing"], "NotFound"),
    (["--namespace", "bad ns", "images", "ls"], "InvalidArgument"),
]


@pytest.mark.parametrize("args,needle", ERRORS)
def test_errors_are_one_line_and_exit_1(tmp_path, args, needle):
    assert needle in fails(tmp_path / "r", *args)


@pytest.mark.parametrize("args,needle", ERRORS[::3])
def test_errors_are_one_line_and_exit_1_from_the_program(tmp_path, args, needle):
    proc = subprocess_run(tmp_path / "r", *args)
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("cargohold: ") and needle in lines[0]
    assert proc.stdout == b""


BAD_METADATA = ["bogus", "mysql://127.0.0.1:3306/x", "etcd://127.0.0.1/x", "etcd://127.0.0.1:2379/x?cacert=/ca.pem",
                "etcds://127.0.0.1:2379/x?ttl=3", "etcds://127.0.0.1:2379/x?cacert=/no/such/ca.pem"]


@pytest.mark.parametrize("url", BAD_METADATA)
@pytest.mark.parametrize("args", [["images", "ls"], ["namespaces", "create", "x"]], ids=["read", "write"])
def test_a_bad_metadata_url_is_one_line_naming_it_and_creates_nothing(tmp_path, url, args):
    line = fails(tmp_path / "r", "--metadata", url, *args)
    assert "InvalidArgument" in line and f"metadata URL {url!r}" in line, line
    assert not (tmp_path / "r").exists()


def test_a_bad_metadata_url_from_the_environment_is_one_line_from_the_program(tmp_path, monkeypatch):
    monkeypatch.setenv("CARGOHOLD_METADATA", BAD_METADATA[0])
    proc = subprocess_run(tmp_path / "r", "images", "ls")
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and proc.stdout == b"", proc.stderr
    assert lines[0].startswith("cargohold: InvalidArgument: ") and repr(BAD_METADATA[0]) in lines[0]
    assert not (tmp_path / "r").exists()


def test_an_unwritable_root_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = subprocess_run(blocker / "root", "images", "ls")
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "root" in lines[0], proc.stderr


def test_namespaces_rm_is_all_or_none(tmp_path):
    root = tmp_path / "r"
    invoke(root, "namespaces", "create", "a")
    invoke(root, "namespaces", "create", "b")
    assert "NotFound" in fails(root, "namespaces", "rm", "a", "missing")
    assert [n["name"] for n in parsed(invoke(root, "namespaces", "ls", "--json"))] == ["a", "b"]
    assert invoke(root, "namespaces", "rm", "a", "b").stdout.split() == ["a", "b"]
