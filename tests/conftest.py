"""Shared fixtures: real LMDB environments, a real etcd cluster and real directories under tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid

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


ENGINES = ("lmdb", "etcd")

ENGINE_MODULES = {
    # the store, GC and CLI tests: each runs on both metadata engines with the same assertions
    "test_namespaces", "test_images", "test_containers", "test_leases", "test_sandboxes",
    "test_content_store", "test_snapshots_store", "test_gc", "test_gc_labels", "test_gc_scoped", "test_gc_allowed",
    "test_cli", "test_cli_images", "test_cli_containers", "test_cli_content", "test_cli_gc",
    "test_cli_leases", "test_cli_snapshots",
}
"""Test modules run on both engines (`engine`): whatever opens a root there uses the engine."""


def pytest_generate_tests(metafunc):
    if metafunc.module.__name__.rpartition(".")[2] in ENGINE_MODULES and "engine" not in metafunc.fixturenames:
        metafunc.fixturenames.append("engine")
    if "engine" in metafunc.fixturenames:
        metafunc.parametrize("engine", ENGINES, indirect=True)


@pytest.fixture(scope="session")
def etcd_cluster():
    """A real etcd cluster on loopback ports ($CARGOHOLD_TEST_ETCD_MEMBERS members, default 3)."""
    from etcd_cluster import Cluster

    cluster = Cluster(int(os.environ.get("CARGOHOLD_TEST_ETCD_MEMBERS", "3"))).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def etcd_url(etcd_cluster):
    """A metadata URL on the test cluster with a prefix of this test's own."""
    return etcd_cluster.url(f"test-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def engine(request, monkeypatch):
    """The metadata engine of this test: "lmdb", or "etcd" with $CARGOHOLD_METADATA pointing at the cluster."""
    if request.param == "etcd":
        monkeypatch.setenv("CARGOHOLD_METADATA", request.getfixturevalue("etcd_url"))
    else:
        monkeypatch.delenv("CARGOHOLD_METADATA", raising=False)
    return request.param


@pytest.fixture(autouse=True)
def _engine_first(request):
    """Set up a parametrised `engine` before every other fixture: those that open a root read
    $CARGOHOLD_METADATA, and a test that does not ask for `engine` itself would not get it at all."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and "engine" in callspec.params:
        request.getfixturevalue("engine")


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
