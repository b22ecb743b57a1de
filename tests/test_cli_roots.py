"""Roots: a read-only root (a read-only mount, or a user without write access) lists and inspects
everything and refuses writes in one line; missing roots are made only by writes; --root '' and
foreign directories are refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
from cliutil import IMAGE, fails, image_archive, invoke, parsed

import cargohold
from cargohold import Resource
from cargohold.errors import FailedPrecondition, NotFound

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

READS = [
    ["images", "ls"], ["images", "ls", "-q"], ["images", "inspect", IMAGE], ["content", "ls", "--json"],
    ["content", "active"], ["snapshots", "ls"], ["snapshots", "tree", "--json"], ["snapshots", "usage", "--json"],
    ["snapshots", "info", "web"], ["snapshots", "mounts", "web", "--json"], ["containers", "ls"],
    ["containers", "info", "web"], ["leases", "ls", "--json"], ["leases", "resources", "hold"],
    ["namespaces", "ls"], ["info", "--json"], ["gc", "--dry-run", "--json"], ["gc", "--explain", "web", "--json"],
]

WRITES = [
    ["images", "rm", IMAGE], ["images", "label", IMAGE, "a=1"], ["images", "tag", IMAGE, "example.com/b:1"],
    ["content", "ingest", "new"], ["namespaces", "create", "other"], ["leases", "create"],
    ["containers", "rm", "web"], ["snapshots", "prepare", "another"], ["gc"],
    ["gc", "--namespace", "default"], ["gc", "--adopt-backends"], ["images", "import", "-"],
    ["images", "pull", "--plain-http", "127.0.0.1:9/example/app:1"], ["snapshots", "label", "web", "a=1"],
    ["containers", "create", IMAGE, "second"], ["leases", "rm", "hold"],
]


def _files(root) -> dict:
    """Every file and directory under `root` with its size and mtime: what a read must not change."""
    found = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(top, name)
            st = os.lstat(path)
            found[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
    return found


def _populate(tmp_path, root) -> None:
    archive, image = image_archive(tmp_path)
    invoke(root, "images", "import", archive)
    invoke(root, "containers", "create", IMAGE, "web")
    invoke(root, "leases", "create", "--id", "hold")
    with cargohold.open(root) as db:
        db.namespace("default").leases.add_resource("hold", Resource(image.config.digest, "content"))


class ReadOnly:
    """A populated root, as seen by `run` in one of two ways: through a read-only bind mount (as
    root), or as an unprivileged user who may read it but not write it."""

    def __init__(self, how: str, base: str) -> None:
        self.how = how
        self.writable = os.path.join(base, "root")
        self.path = os.path.join(base, "ro") if how == "mount" else self.writable
        self.expected: dict = {}

    def run(self, *args, input: bytes = b"") -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "CARGOHOLD_ROOT"}
        prefix = NOBODY if self.how == "nobody" else []
        return subprocess.run([*prefix, sys.executable, "-m", "cargohold.cli.main", "--root", self.path,
                               *map(str, args)], input=input, capture_output=True, env=env, timeout=120)


def _mount_read_only(source: str, target: str) -> bool:
    os.makedirs(target)
    if subprocess.run(["mount", "--bind", source, target], capture_output=True).returncode != 0:
        return False
    if subprocess.run(["mount", "-o", "remount,bind,ro", target], capture_output=True).returncode != 0:
        subprocess.run(["umount", target], capture_output=True)
        return False
    return True


@pytest.fixture(params=["mount", "nobody"])
def readonly(request, tmp_path):
    base = tempfile.mkdtemp(prefix="cargohold-ro-")  # outside pytest's 0700 tmp tree: nobody must read it
    os.chmod(base, 0o755)
    ro = ReadOnly(request.param, base)
    try:
        _populate(tmp_path, ro.writable)
        # what a writable open of the same root prints: a read-only one must print the same
        ro.expected = {tuple(args): invoke(ro.writable, *args).stdout for args in READS}
        if request.param == "mount":
            if os.geteuid() != 0 or not _mount_read_only(ro.writable, ro.path):
                pytest.skip("needs root and a working `mount --bind -o ro` to make a read-only root")
        else:
            subprocess.run(["chmod", "-R", "a+rX", ro.writable], check=True)
            probe = subprocess.run([*NOBODY, sys.executable, "-c", "import cargohold.cli.main"], capture_output=True)
            if probe.returncode != 0:
                pytest.skip("cannot run this interpreter as an unprivileged user (setpriv, or its files are not "
                            f"readable by nobody): {probe.stderr.decode().strip()[-200:]}")
        yield ro
    finally:
        if request.param == "mount" and os.path.ismount(ro.path):
            subprocess.run(["umount", ro.path], check=True)
        shutil.rmtree(base, ignore_errors=True)


def test_a_read_only_root_lists_and_inspects_everything(readonly):
    before = _files(readonly.writable)
    for args in READS:
        proc = readonly.run(*args)
        assert proc.returncode == 0 and proc.stderr == b"", (args, proc.stderr)
        got = proc.stdout.decode().replace(readonly.path, readonly.writable)  # mounts, info name the root
        want = readonly.expected[tuple(args)]
        if "--json" in args and args[0] in ("info", "gc"):
            assert json.loads(got) == json.loads(want), args
        else:
            assert got == want, args
    assert _files(readonly.writable) == before  # nothing written: no session, marker or lock file


@pytest.mark.parametrize("args", WRITES, ids=[" ".join(a) for a in WRITES])
def test_a_write_to_a_read_only_root_is_one_line_saying_so(readonly, args):
    before = _files(readonly.writable)
    proc = readonly.run(*args, input=b"data")
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, (args, proc.stderr)
    assert lines[0].startswith("cargohold: FailedPrecondition: ") and "read-only" in lines[0], lines
    assert proc.stdout == b""
    assert _files(readonly.writable) == before


@pytest.mark.parametrize("readonly", ["mount"], indirect=True)  # the library runs in this process: root
def test_a_library_open_of_a_read_only_root(readonly):
    with cargohold.open(readonly.path, readonly=True) as db:
        assert [i.name for i in db.namespace("default").images.list()] == [IMAGE]
        assert [s.name for s in db.namespace("default").snapshotter("native").walk() if s.name == "web"] == ["web"]
        with pytest.raises(FailedPrecondition, match="read-only"):
            db.namespace("default").images.delete(IMAGE)
    with pytest.raises(FailedPrecondition, match="read-only"):
        cargohold.open(readonly.path)


def test_a_read_only_open_of_a_writable_root_writes_nothing_and_refuses_writes(tmp_path):
    root = tmp_path / "r"
    _populate(tmp_path, root)
    with cargohold.open(root, readonly=True) as db:
        before = _files(root)
        ns = db.namespace("default")
        assert [i.name for i in ns.images.list()] == [IMAGE] and ns.containers.get("web").image == IMAGE
        with pytest.raises(FailedPrecondition, match="opened read-only"):
            ns.leases.create("x")
        with pytest.raises(FailedPrecondition, match="opened read-only"):
            with db.update():
                pass
        assert not any(name.endswith(".session") for name in os.listdir(root / "meta" / "sessions"))
        assert _files(root) == before
    with cargohold.open(root) as db:  # and the root is as good as before
        assert [i.name for i in db.namespace("default").images.list()] == [IMAGE]
    with pytest.raises(NotFound):
        cargohold.open(tmp_path / "missing", readonly=True)
    assert not (tmp_path / "missing").exists()


def test_reading_commands_do_not_create_a_missing_root(tmp_path):
    root = tmp_path / "missing"
    for args in (["images", "ls"], ["content", "ls", "-q"], ["snapshots", "ls", "--json"], ["leases", "ls"],
                 ["containers", "ls"], ["namespaces", "ls"], ["gc", "--dry-run"], ["snapshots", "tree"],
                 ["content", "active"], ["snapshots", "usage"]):
        result = invoke(root, *args)
        assert result.stderr == "" and "sha256" not in result.stdout, args
    assert parsed(invoke(root, "images", "ls", "--json")) == []
    assert "NotFound" in fails(root, "images", "inspect", IMAGE)
    assert "NotFound" in fails(root, "info")
    assert "NotFound" in fails(root, "snapshots", "--snapshotter", "zfs", "ls")
    assert not root.exists()
    invoke(root, "namespaces", "create", "x")  # a write makes it
    assert (root / "meta" / "data.mdb").exists()


def test_an_empty_root_is_refused():
    message = fails("", "images", "ls")  # --root ''
    assert message == fails("", "namespaces", "create", "x")
    assert message.startswith("cargohold: InvalidArgument: ") and "--root" in message and "empty" in message


def test_a_foreign_directory_is_refused_unless_init(tmp_path):
    foreign = tmp_path / "docs"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    message = fails(foreign, "namespaces", "create", "x")
    assert message.startswith("cargohold: FailedPrecondition: ") and "not a cargohold root" in message
    assert "--init" in message
    assert "not a cargohold root" in fails(foreign, "images", "ls")
    assert sorted(os.listdir(foreign)) == ["notes.txt"]
    result = invoke(tmp_path, "--root", foreign, "--init", "namespaces", "create", "x")
    assert result.stdout == "x\n" and (foreign / "meta" / "data.mdb").exists()
    assert parsed(invoke(foreign, "namespaces", "ls", "--json")) == [{"name": "x", "labels": {}}]
    empty = tmp_path / "empty"
    empty.mkdir()
    invoke(empty, "namespaces", "create", "y")  # an empty directory needs no --init
    moved = tmp_path / "moved"
    _populate(tmp_path, moved)
    shutil.rmtree(moved / "meta")  # still a root (content, snapshots): starting over needs no --init
    assert invoke(moved, "images", "ls", "-q").stdout == ""
    invoke(moved, "namespaces", "create", "z")
