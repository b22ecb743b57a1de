"""Test helpers: mount snapshot mounts for real (containerd's ``mount.All``)
where this machine allows it, and otherwise read what a mount would show from
its spec, saying clearly that the real mount was skipped and why.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import stat
import warnings
from contextlib import contextmanager
from typing import Iterator, Optional

import pytest

from cargohold.model import Mount

MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MNT_DETACH = 0x2
PAGE = 4096

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class MountSkipped(UserWarning):
    """A real mount was not possible here; only the mount spec was checked."""


def _encode(text: Optional[str]) -> Optional[bytes]:
    return None if text is None else os.fsencode(text)


def sys_mount(source: Optional[str], target: str, fstype: Optional[str], flags: int,
              data: Optional[str]) -> None:
    if _libc.mount(_encode(source), _encode(target), _encode(fstype), ctypes.c_ulong(flags), _encode(data)):
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype or 'bind'} {source} on {target}: {os.strerror(err)}")


def sys_umount(target: str) -> None:
    _libc.umount2(_encode(target), MNT_DETACH)


def _mount_overlay_compact(options: tuple, target: str) -> None:
    """Mount an overlay whose options exceed a page, as containerd does: in a forked
    child that changes into the layers' common parent and passes relative paths."""
    layered = ("lowerdir", "upperdir", "workdir")
    paths = [p for o in options if o.partition("=")[0] in layered for p in o.partition("=")[2].split(":")]
    common = os.path.commonpath(paths)
    relative = []
    for option in options:
        name, _, value = option.partition("=")
        if name in layered:
            option = f"{name}=" + ":".join(os.path.relpath(p, common) for p in value.split(":"))
        relative.append(option)
    target = os.path.abspath(target)
    pid = os.fork()
    if pid == 0:
        try:
            os.chdir(common)
            sys_mount("overlay", target, "overlay", 0, ",".join(relative))
            os._exit(0)
        except OSError as exc:
            os._exit(exc.errno or 1)
        finally:
            os._exit(1)
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if status:
        raise OSError(status, f"overlay mount on {target} failed: {os.strerror(status)}")


@contextmanager
def mounted(mounts: list, target: str) -> Iterator[str]:
    """Mount every mount on `target` in order; unmount all on exit."""
    os.makedirs(target, exist_ok=True)
    count = 0
    try:
        for mount in mounts:
            if mount.type == "bind":
                sys_mount(mount.source, target, None, MS_BIND | (MS_REC if "rbind" in mount.options else 0), None)
                count += 1
                if "ro" in mount.options:
                    sys_mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY, None)
            else:
                data = ",".join(mount.options)
                if len(data) < PAGE:
                    sys_mount(mount.source, target, mount.type, 0, data)
                else:
                    _mount_overlay_compact(mount.options, target)
                count += 1
        yield target
    finally:
        for _ in range(count):
            sys_umount(target)


def mount_problem(workdir: str) -> Optional[str]:
    """None when this process can bind-mount and mount overlayfs; otherwise why not."""
    layers = {name: os.path.join(workdir, name) for name in ("lower1", "lower2", "upper", "work", "merged")}
    for path in layers.values():
        os.makedirs(path, exist_ok=True)
    spec = [Mount("overlay", "overlay", (f"lowerdir={layers['lower2']}:{layers['lower1']}",
                                         f"upperdir={layers['upper']}", f"workdir={layers['work']}"))]
    try:
        with mounted(spec, layers["merged"]):
            pass
        with mounted([Mount("bind", layers["lower1"], ("ro", "rbind"))], layers["merged"]):
            pass
    except OSError as exc:
        return (f"this machine does not let the test process mount overlayfs ({exc}); "
                "that needs root (CAP_SYS_ADMIN) and the overlay filesystem")
    return None


@pytest.fixture(scope="session")
def can_mount(tmp_path_factory) -> Optional[str]:
    """None if real mounts work here, else the reason they do not (see `mount_problem`)."""
    return mount_problem(str(tmp_path_factory.mktemp("mount-probe")))


def report_skipped(what: str, reason: str) -> None:
    """Say loudly that a real mount was skipped (printed and in pytest's warnings summary)."""
    message = f"{what}: real mount skipped, mount spec checked instead: {reason}"
    print(message)
    warnings.warn(MountSkipped(message), stacklevel=2)


# -- what a mount shows, read from its spec ------------------------------------------------


def layer_dirs(mounts: list) -> tuple[list, Optional[str]]:
    """(directories stacked by the spec, topmost first; the writable one or None)."""
    assert len(mounts) == 1, mounts
    mount = mounts[0]
    if mount.type == "bind":
        return [mount.source], (None if "ro" in mount.options else mount.source)
    assert mount.type == "overlay" and mount.source == "overlay", mount
    options = dict(option.partition("=")[::2] for option in mount.options)
    lowers = options["lowerdir"].split(":")
    upper = options.get("upperdir")
    return ([upper] if upper else []) + lowers, upper


def read_layers(layers: list) -> dict:
    """Files seen through `layers` stacked as overlayfs stacks them (topmost wins;
    a 0:0 character device is a whiteout)."""
    seen: dict = {}
    hidden: set = set()
    for layer in layers:
        for path, data in read_tree(layer, whiteouts=True).items():
            if path in seen or path in hidden:
                continue
            if data is None:
                hidden.add(path)
            else:
                seen[path] = data
    return seen


def read_tree(root: str, whiteouts: bool = False) -> dict:
    """{relative path: bytes} of every regular file under root (whiteouts as None)."""
    files = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            rel = os.path.relpath(path, root)
            if whiteouts and stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
                files[rel] = None
            elif stat.S_ISREG(info.st_mode):
                with open(path, "rb") as f:
                    files[rel] = f.read()
    return files


def write_files(directory: str, files: dict) -> None:
    for rel, data in files.items():
        path = os.path.join(directory, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


class Mounter:
    """Reads and writes snapshots through their mounts: real mounts where possible,
    else the directories the spec names (and a loud notice that the mount was skipped)."""

    def __init__(self, problem: Optional[str], workdir: str) -> None:
        self.problem = problem
        self.workdir = workdir
        self._count = 0

    def _target(self) -> str:
        self._count += 1
        return os.path.join(self.workdir, f"mnt{self._count}")

    def write(self, mounts: list, files: dict) -> None:
        """Write files through the mounts (without a real mount: into the writable layer)."""
        if self.problem is None:
            with mounted(mounts, self._target()) as target:
                write_files(target, files)
            return
        writable = layer_dirs(mounts)[1]
        assert writable is not None, f"read-only mounts {mounts}"
        write_files(writable, files)

    def read(self, mounts: list, what: str) -> dict:
        """Every file the mounts show (without a real mount: the layers stacked from the spec)."""
        if self.problem is None:
            with mounted(mounts, self._target()) as target:
                return read_tree(target)
        layers = layer_dirs(mounts)[0]
        if mounts[0].type == "overlay":
            report_skipped(what, self.problem)
        return read_layers(layers)
