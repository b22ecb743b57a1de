"""The `cargohold` command, run as users run it: a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

# the console script installed beside this interpreter (a venv's bin/), else on PATH
CLI = shutil.which("cargohold", path=os.path.dirname(sys.executable)) or shutil.which("cargohold") or ""


def cargohold(*args, root=None, env=None, check=True):
    full_env = dict(os.environ)
    full_env.pop("CARGOHOLD_ROOT", None)
    full_env.update(env or {})
    argv = [sys.executable, "-m", "cargohold.cli.main"]
    if root is not None:
        argv += ["--root", str(root)]
    proc = subprocess.run(argv + list(args), capture_output=True, text=True, env=full_env, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_console_script_installed():
    assert CLI, "the cargohold console script is not on PATH"
    proc = subprocess.run([CLI, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "namespaces" in proc.stdout


def test_namespaces_commands(tmp_path):
    root = tmp_path / "r"
    assert cargohold("namespaces", "create", "dev", "team=a", root=root).stdout.strip() == "dev"
    cargohold("namespaces", "create", "prod", root=root)
    cargohold("namespaces", "label", "dev", "tier=1", "team=", root=root)
    listing = json.loads(cargohold("namespaces", "ls", "--json", root=root).stdout)
    assert listing == [{"name": "dev", "labels": {"tier": "1"}}, {"name": "prod", "labels": {}}]
    table = cargohold("namespaces", "ls", root=root).stdout.split()
    assert table[:2] == ["NAME", "LABELS"] and "dev" in table and "tier=1" in table
    assert cargohold("namespaces", "rm", "prod", root=root).stdout.strip() == "prod"
    assert [n["name"] for n in json.loads(cargohold("namespaces", "ls", "--json", root=root).stdout)] == ["dev"]


def test_namespace_label_sets_all_or_none(tmp_path):
    root = tmp_path / "r"
    cargohold("namespaces", "create", "dev", "team=a", root=root)
    failed = cargohold("namespaces", "label", "dev", "tier=1", "big=" + "x" * 5000, root=root, check=False)
    assert failed.returncode == 1 and "InvalidArgument" in failed.stderr
    listing = json.loads(cargohold("namespaces", "ls", "--json", root=root).stdout)
    assert listing == [{"name": "dev", "labels": {"team": "a"}}]


def opened_root(meta, engine) -> bool:
    """Whether a command opened the root whose metadata directory is `meta` (on etcd it keeps
    only this host's session and lock files)."""
    if engine == "lmdb":
        return (meta / "data.mdb").exists()
    return (meta / "sessions").is_dir() and not (meta / "data.mdb").exists()


def test_root_defaults_to_environment(tmp_path, engine):
    root = tmp_path / "from-env"
    cargohold("namespaces", "create", "x", env={"CARGOHOLD_ROOT": str(root)})
    assert opened_root(root / "meta", engine)


def test_root_defaults_to_user_data_dir(tmp_path, engine):
    cargohold("namespaces", "create", "x", env={"XDG_DATA_HOME": str(tmp_path / "xdg")})
    assert opened_root(tmp_path / "xdg" / "cargohold" / "meta", engine)


@pytest.mark.parametrize("args,needle", [
    (["namespaces", "create", "bad name"], "InvalidArgument"),
    (["namespaces", "rm", "missing"], "NotFound"),
    (["namespaces", "create", "x", "novalue"], "KEY=VALUE"),
    (["nosuchgroup"], "No such command"),
])
def test_errors_are_one_line_and_non_zero(tmp_path, args, needle):
    proc = cargohold(*args, root=tmp_path / "r", check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_non_empty_namespace_rm_fails(tmp_path):
    import cargohold as ch
    from cargohold import schema

    root = tmp_path / "r"
    with ch.open(root) as db:
        with db.update() as tx:
            tx.ensure_namespace("busy")
            tx.kv.put(schema.T_OBJECTS, schema.object_key("busy", schema.K_IMAGE, "img"), schema.pack({}))
    proc = cargohold("namespaces", "rm", "busy", root=root, check=False)
    assert proc.returncode == 1 and "FailedPrecondition" in proc.stderr


def test_help_everywhere(tmp_path):
    for args in (["--help"], ["namespaces", "--help"], ["namespaces", "ls", "--help"], ["demo", "--help"]):
        assert "Usage" in cargohold(*args, root=tmp_path).stdout


def test_demo_runs_on_a_temporary_root(tmp_path):
    proc = cargohold("demo", env={"TMPDIR": str(tmp_path)})
    assert f"of a new temporary root {tmp_path}/cargohold-demo-" in proc.stdout
    assert os.listdir(tmp_path) == []  # removed at the end


def test_demo_uses_given_root(tmp_path, engine):
    cargohold("demo", root=tmp_path / "d")
    assert opened_root(tmp_path / "d" / "meta", engine)
