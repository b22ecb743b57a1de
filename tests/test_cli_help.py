"""Help as ctr users expect it: printed (exit 0) when no command is given, descriptions never cut,
an example for every command, the real default root."""

from __future__ import annotations

import os

import click
import pytest
from cliutil import invoke, subprocess_run

from cargohold.cli.groups import Context, Group, first_paragraph
from cargohold.cli.main import cli
from cargohold.cli.root import GROUPS


def commands(command: click.Command, path: tuple = ()):
    yield path, command
    if isinstance(command, click.Group):
        for name in command.list_commands(click.Context(command)):
            yield from commands(command.commands[name], path + (name,))


def groups():
    return [path for path, command in commands(cli) if isinstance(command, click.Group)]


def test_every_command_has_an_example(tmp_path):
    found = 0
    for path, command in commands(cli):
        out = invoke(tmp_path / "r", *path, "--help").stdout
        examples = out.partition("Examples:\n")[2].splitlines()
        lines = [line.strip() for line in examples if line.strip()]
        assert lines and all(line.startswith("cargohold ") or line.startswith("echo ") or "| cargohold" in line
                             or line.startswith("skopeo ") for line in lines), (path, out)
        found += 1
    assert found > 50 and not (tmp_path / "r").exists()


def _listed(help_text: str) -> dict:
    """The Commands section of a help text: {first name: description as one line}."""
    section = help_text.partition("\nCommands:\n")[2].partition("\n\n")[0]
    listed: dict = {}
    name = None
    for line in section.splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            names, _, text = line.strip().partition("  ")
            name = names.split(",")[0]
            listed[name] = text.strip()
        elif name is not None:
            listed[name] += " " + line.strip()
    return listed


@pytest.mark.parametrize("path", groups(), ids=lambda p: " ".join(p) or "cargohold")
def test_no_description_is_cut(tmp_path, path):
    group = cli
    for name in path:
        group = group.commands[name]
    listed = _listed(invoke(tmp_path / "r", *path, "--help").stdout)
    assert set(listed) == set(group.commands)
    for name, text in listed.items():
        whole = first_paragraph(group.commands[name].help or "")
        assert text == whole and not text.endswith("..."), (path, name)


def test_the_lazy_listing_says_what_each_group_says():
    for name, entry in GROUPS.items():
        assert first_paragraph(entry.help) == first_paragraph(cli.commands[name].help), name


@pytest.mark.parametrize("path", [(), *groups()], ids=lambda p: " ".join(p) or "cargohold")
def test_no_command_prints_the_help_and_exits_0(tmp_path, path):
    result = invoke(tmp_path / "r", *path)
    assert result.stdout.startswith("Usage: ") and "Commands:" in result.stdout and result.stderr == ""
    assert not (tmp_path / "r").exists()


def test_no_arguments_at_all_prints_the_help_from_the_program(tmp_path):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "CARGOHOLD_ROOT"}
    for args in ([], ["images"], ["containerd"], ["--namespace", "x"]):
        proc = subprocess.run([sys.executable, "-m", "cargohold.cli.main", *args], capture_output=True, env=env)
        assert proc.returncode == 0 and proc.stdout.startswith(b"Usage: ") and proc.stderr == b"", args
    proc = subprocess_run(tmp_path / "r", "snapshots", "--snapshotter", "overlayfs")
    assert proc.returncode == 0 and b"Commands:" in proc.stdout


def test_help_shows_the_real_default_root(tmp_path, monkeypatch):
    monkeypatch.delenv("CARGOHOLD_ROOT", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    out = invoke(tmp_path / "r", "--help").stdout
    assert f"\nDefault root: {tmp_path / 'xdg' / 'cargohold'}\n" in out  # whole, on a line of its own
    monkeypatch.setenv("CARGOHOLD_ROOT", str(tmp_path / "env-root"))
    assert f"\nDefault root: {tmp_path / 'env-root'}\n" in invoke(tmp_path / "r", "--help").stdout


def test_every_group_is_a_cargohold_group():
    """Plain click groups (such as containerd's) are adopted: aliases and whole descriptions there too."""
    for path in groups():
        group = cli
        for name in path:
            group = group.commands[name]
        assert isinstance(group, Group), path
    assert "ls, list " in click.testing.CliRunner().invoke(cli, ["containerd", "--help"]).stdout


@pytest.mark.parametrize("columns", [None, "20", "55", "79", "100", "300", "junk"])
def test_help_is_as_wide_as_clicks_own(monkeypatch, columns):
    """The help formatter takes the width click's would (without importing shutil for it)."""
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    for path in [(), ("images",), ("images", "ls"), ("gc",)]:
        command = cli
        for name in path:
            command = command.commands[name]
        ours = Context(command, info_name="cargohold").get_help()
        assert ours == click.Context(command, info_name="cargohold").get_help(), (columns, path)
        assert type(command.make_context("cargohold", ["--help"], resilient_parsing=True)) is Context


def test_help_says_what_metadata_takes(tmp_path):
    """--metadata names its forms (LMDB by default, etcd://, etcds:// with cacert, cert and key),
    each URL form whole on a line of its own."""
    out = invoke(tmp_path / "r", "--help").stdout
    option = " ".join(out.partition("--metadata URL")[2].partition("\n  -n,")[0].split())
    assert all(word in option for word in ("LMDB", "etcd://", "etcds://", "cacert", "cert", "key",
                                           "$CARGOHOLD_METADATA")), option
    section = out.partition("\nMetadata (--metadata URL, $CARGOHOLD_METADATA):\n")[2].partition("\n\n")[0]
    lines = [line.strip() for line in section.splitlines()]
    assert "etcd://host:port[,host:port...]/<prefix>" in lines, section
    assert "etcds://host:port[,host:port...]/<prefix>[?cacert=<file>][&cert=<file>&key=<file>]" in lines, section
    assert lines[0].startswith("(not given)") and "LMDB in <root>/meta" in lines[0], section
    assert not (tmp_path / "r").exists()
