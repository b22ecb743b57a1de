"""Running the `cargohold` command in tests: in process with click's runner, or as a subprocess as users run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from click.testing import CliRunner, Result
from oci_fixtures import Layer, Layout, tar_layout

from cargohold.cli.main import cli

NAME = "io.containerd.image.name"
IMAGE = "example.com/app:1"


def invoke(root, *args, input=None, ok: bool = True) -> Result:
    """Run `cargohold --root ROOT ARGS...` in this process."""
    result = CliRunner().invoke(cli, ["--root", str(root), *map(str, args)], input=input, catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, f"exit {result.exit_code}: {result.stderr}"
    return result


def fails(root, *args, input=None) -> str:
    """Run a command that must fail: exit code 1 and exactly one line on stderr, which is returned."""
    result = invoke(root, *args, input=input, ok=False)
    lines = result.stderr.splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("cargohold: "), (
        result.exit_code, result.stderr)
    return lines[0]


def subprocess_run(root, *args, input: bytes = b"") -> subprocess.CompletedProcess:
    """Run the command in a new interpreter, through the console script's entry point."""
    env = {k: v for k, v in os.environ.items() if k != "CARGOHOLD_ROOT"}
    return subprocess.run([sys.executable, "-m", "cargohold.cli.main", "--root", str(root), *map(str, args)],
                          input=input, capture_output=True, env=env, timeout=120)


def parsed(result: Result):
    return json.loads(result.stdout)


def rows(result: Result) -> list[list[str]]:
    """A table's lines split on whitespace, header first."""
    return [line.split() for line in result.stdout.splitlines()]


def layers() -> list:
    """A base layer with a hard link, and one with a whiteout and a new file."""
    return [Layer().file("etc/motd", b"one\n").file("bin/tool", b"t", mode=0o755).hardlink("bin/tool2", "bin/tool")
            .file("usr/doc/README", b"r").bytes(),
            Layer().whiteout("usr/doc").file("etc/motd", b"two\n").file("app/x", b"x").bytes()]


def image_archive(tmp_path, name: str = IMAGE, filename: str = "image.tar"):
    """An OCI layout tar holding one image `name`; returns (path, BuiltImage)."""
    layout = Layout(tmp_path / f"{filename}.layout")
    image = layout.image(layers())
    layout.write_index([(image.manifest, {NAME: name})])
    return tar_layout(layout.root, tmp_path / filename), image
