"""Packaging: a wheel runs without Cython, and a machine without a C compiler still installs
(the pure-Python fallback). Builds run pip in isolated environments (minutes, not seconds)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("CARGOHOLD_PUREPYTHON")) or not (REPO / "setup.py").exists(),
    reason="packaging does not depend on the core in use: checked once, in the compiled run")

PROBE = """
import sys
sys.modules["Cython"] = None  # prove the installed package never needs Cython
import cargohold, cargohold._native as n
with cargohold.open(sys.argv[1]) as db:
    db.namespaces.create("ok")
print(n.COMPILED, cargohold.__file__)
"""


def _clean_source(tmp_path: Path) -> Path:
    """A copy of the source tree without build leftovers (pip builds in the tree)."""
    src = tmp_path / "src-tree"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        "build", "dist", ".venv", "*.so", "*.egg-info", "_core.c", ".git", "__pycache__", ".hypothesis",
        ".pytest_cache", ".benchmarks"))
    return src


def _pip(*args, env=None):
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _probe(target: Path, root: Path) -> list:
    proc = subprocess.run([sys.executable, "-c", PROBE, str(root)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(target), "CARGOHOLD_PUREPYTHON": ""})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_wheel_is_compiled_and_needs_no_cython(tmp_path):
    _pip("wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(_clean_source(tmp_path)))
    wheel = next((tmp_path / "dist").glob("cargohold-*.whl"))
    _pip("install", "--no-deps", "--target", str(tmp_path / "site"), str(wheel))
    compiled, location = _probe(tmp_path / "site", tmp_path / "root")
    assert compiled == "True" and location.startswith(str(tmp_path / "site"))


def test_install_without_a_compiler_falls_back(tmp_path):
    _pip("install", "--no-deps", "--target", str(tmp_path / "site"), str(_clean_source(tmp_path)),
         env={"CC": "/bin/false"})
    compiled, location = _probe(tmp_path / "site", tmp_path / "root")
    assert compiled == "False" and location.startswith(str(tmp_path / "site"))
