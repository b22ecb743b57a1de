"""`import_root` on a hostile containerd root: one whose writer (a compromised daemon, a
malicious image unpack) planted symlinks to host files and directories, or endless files.

Each attack damages a copy of a real containerd root (built by a private containerd in
`test_containerd_import`'s `source` fixture). The import must fail with a cargohold error
naming the planted path, read, link or copy nothing of the host, and leave nothing behind.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import stat
import subprocess
import sys

import pytest

import cargohold.containerd as ctrd
from cargohold.containerd.contentstore import SMALL_FILE_CAP
from cargohold.errors import Corrupted
from cargohold.model import Kind
from containerd_daemon import needs_containerd
from test_containerd_import import _copy_root, source  # noqa: F401  (the module-scoped fixture)

pytestmark = needs_containerd

SECRET = b"root:$6$a-host-secret:19000:0:99999:7:::\n"


def _host_secret(path) -> str:
    """A root-only (0600) host file outside the containerd root."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(SECRET)
    os.chmod(path, 0o600)
    return str(path)


def _nothing_left(tmp_path, *expected: str) -> None:
    """No destination, no work directory, and the secret's bytes nowhere but in the host's file."""
    assert sorted(os.listdir(tmp_path)) == sorted(["src", *expected])
    for directory, _, files in os.walk(tmp_path):
        for name in files:
            path = os.path.join(directory, name)
            if not stat.S_ISREG(os.lstat(path).st_mode) or os.path.relpath(path, tmp_path).startswith("host"):
                continue   # symlinks, fifos and devices of the copied trees; the host's own files
            with open(path, "rb") as f:
                assert SECRET not in f.read(), path


def _tree_dirs(root: str, ns: str, snapshotter: str) -> tuple[str, str]:
    """(snapshot directory, tree directory) of a committed or active snapshot."""
    with ctrd.open_root(root) as host:
        backend = host.backend(snapshotter)
        for record in host.snapshot_records(ns, snapshotter):
            found = backend.get(record.backend_key)
            if found.kind != Kind.VIEW:
                return backend.snapshot_dir(found.id), backend.tree_dir(found.id)
    raise AssertionError("no snapshot with a tree")


@pytest.mark.parametrize("component", ["snapshot", "fs", "snapshots"])
def test_a_symlinked_snapshot_directory_is_refused(source, tmp_path, component):
    """The snapshot's directory, its ``fs``, or the snapshotter's ``snapshots/`` is a symlink to a host
    directory (holding what the old tree held, and a root-only secret): nothing of it is imported."""
    copy = _copy_root(source, tmp_path)
    snapdir, treedir = _tree_dirs(copy, "other", "overlayfs")
    planted = {"snapshot": snapdir, "fs": treedir, "snapshots": os.path.dirname(snapdir)}[component]
    host = str(tmp_path / "host")
    shutil.move(planted, host)
    os.symlink(host, planted)
    _host_secret(os.path.join(treedir, "secret"))   # reached through the symlink: lands in the host dir
    assert os.path.exists(os.path.join(host, *os.path.relpath(treedir, planted).split(os.sep), "secret")) \
        if component != "fs" else os.path.exists(os.path.join(host, "secret"))
    with pytest.raises(Corrupted, match=re.escape(repr(planted))):
        ctrd.import_root(copy, str(tmp_path / "dest"))
    _nothing_left(tmp_path, "host")


@pytest.mark.parametrize("copy_mode", [False, True])
def test_a_symlinked_blob_is_refused(source, tmp_path, copy_mode):
    """A blob that is a symlink to a host file with the right bytes: neither linked nor copied."""
    copy = _copy_root(source, tmp_path)
    with ctrd.open_root(copy) as host:
        digest = host.content("default")[0].digest
        blob = host.content_dir.blob_path(digest)
    outside = str(tmp_path / "host-blob")
    shutil.copy(blob, outside)
    os.unlink(blob)
    os.symlink(outside, blob)
    with pytest.raises(Corrupted, match=re.escape(repr(blob))):
        ctrd.import_root(copy, str(tmp_path / "dest"), copy=copy_mode)
    assert os.stat(outside).st_nlink == 1
    _nothing_left(tmp_path, "host-blob")


def _ingest_dir(root: str) -> str:
    return sorted(glob.glob(os.path.join(root, "io.containerd.content.v1.content", "ingest", "*")))[0]


def test_a_symlinked_ingest_data_is_refused(source, tmp_path):
    """An ingest whose ``data`` is a symlink to a root-only host file: its bytes are not imported."""
    copy = _copy_root(source, tmp_path)
    data = os.path.join(_ingest_dir(copy), "data")
    secret = _host_secret(tmp_path / "host-secret")
    os.unlink(data)
    os.symlink(secret, data)
    with pytest.raises(Corrupted, match=re.escape(repr(data))):
        ctrd.import_root(copy, str(tmp_path / "dest"))
    _nothing_left(tmp_path, "host-secret")


@pytest.mark.parametrize("name", ["ref", "total", "startedat", "updatedat"])
def test_an_oversized_ingest_file_is_refused(source, tmp_path, name):
    """An ingest's small file holding more than the cap (refs and times are one short line)."""
    copy = _copy_root(source, tmp_path)
    path = os.path.join(_ingest_dir(copy), name)
    with open(path, "wb") as f:
        f.write(b"1" * (SMALL_FILE_CAP + 1))
    with pytest.raises(Corrupted, match=re.escape(repr(path)) + ".*more than"):
        ctrd.import_root(copy, str(tmp_path / "dest"))
    _nothing_left(tmp_path)


@pytest.mark.parametrize("name", ["ref", "total"])
def test_an_ingest_file_pointing_at_dev_zero_is_refused(source, tmp_path, name):
    """``ref`` (or ``total``) a symlink to /dev/zero: refused at once, not read until memory runs out
    (the import runs in a child limited to 1 GiB of address space and 120 s)."""
    copy = _copy_root(source, tmp_path)
    path = os.path.join(_ingest_dir(copy), name)
    os.unlink(path)
    os.symlink("/dev/zero", path)
    code = ("import resource, sys\n"
            "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
            "import cargohold.containerd as c, cargohold.errors as e\n"
            "try:\n"
            "    c.import_root(sys.argv[1], sys.argv[2])\n"
            "except e.Error as exc:\n"
            "    print(type(exc).__name__, exc)\n")
    proc = subprocess.run([sys.executable, "-c", code, copy, str(tmp_path / "dest")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("Corrupted "), (proc.stdout, proc.stderr[-2000:])
    assert repr(path) in proc.stdout
    _nothing_left(tmp_path)
