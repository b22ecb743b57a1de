"""Shared fixtures: real LMDB environments and real directories under tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import cargohold
from cargohold import _fallback

try:
    from cargohold import _core
except ImportError:  # the extension did not build: only the fallback can be tested
    _core = None

IMPLEMENTATIONS = {"fallback": _fallback}
if _core is not None:
    IMPLEMENTATIONS["compiled"] = _core


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def impl(request):
    """Each implementation of the core: the compiled one and its pure-Python twin."""
    return IMPLEMENTATIONS[request.param]


@pytest.fixture
def root(tmp_path):
    return tmp_path / "root"


@pytest.fixture
def db(root):
    with cargohold.open(root) as database:
        yield database


def run_python(code: str, *, env: dict | None = None, timeout: float = 120, check: bool = True
               ) -> subprocess.CompletedProcess:
    """Run a Python snippet in a fresh interpreter (another process on the same files)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=full_env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
