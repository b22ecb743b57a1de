"""The compiled core is really in use, and every compiled function has its twin."""

from __future__ import annotations

import os

import pytest

import cargohold._native as native
from cargohold import _fallback
from conftest import run_python


def test_compiled_core_loaded_unless_disabled():
    if os.environ.get("CARGOHOLD_PUREPYTHON"):
        assert native.COMPILED is False
    else:
        # the build must have compiled _ext: a silent fallback would hide a broken build
        assert native.COMPILED is True


def test_every_compiled_function_has_a_twin():
    core = pytest.importorskip("cargohold._core")
    public = {name for name in dir(core) if not name.startswith("_") and callable(getattr(core, name))}
    public.discard("InvalidArgument")
    missing = [name for name in sorted(public) if not hasattr(_fallback, name)]
    assert public and not missing


def test_purepython_switch_selects_fallback():
    proc = run_python(
        "import cargohold._native as n; print(n.COMPILED, n.encode_varint.__module__)",
        env={"CARGOHOLD_PUREPYTHON": "1"},
    )
    assert proc.stdout.split() == ["False", "cargohold._fallback"]
