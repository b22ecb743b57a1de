"""Directory listings of the snapshot trees (`_ext/fsdir.pxi`'s `list_dir` and its twin
`cargohold._fallback_fsdir`): the compiled listing reads a descriptor's names straight from the
kernel and gives os.listdir's names, in its order, decoded as it decodes them, from the start of
the directory whatever was read of it before; and fails as os.listdir fails."""

from __future__ import annotations

import os

import pytest

from cargohold import _fallback
from cargohold.snapshots import fsutil

try:
    from cargohold import _core
except ImportError:  # the extension did not build: the twin alone
    _core = None

LISTERS = {"fallback": _fallback.list_dir}
if _core is not None:
    LISTERS["compiled"] = _core.list_dir


@pytest.fixture
def tree(tmp_path):
    for i in range(1500):  # more than one 32 KiB getdents64 buffer of names
        (tmp_path / f"file-{i:04d}-{'x' * 40}").write_bytes(b"")
    os.mkdir(tmp_path / "sub")
    os.symlink("nowhere", tmp_path / "link")
    os.close(os.open(os.fsencode(tmp_path) + b"/not-utf8-\xff\xfe", os.O_CREAT | os.O_WRONLY, 0o600))
    (tmp_path / "caf\u00e9").write_bytes(b"")
    return tmp_path


@pytest.mark.parametrize("name", sorted(LISTERS))
def test_list_dir_is_listdir(tree, name):
    fd = fsutil.open_dir(str(tree))
    try:
        expected = os.listdir(fd)
        assert LISTERS[name](fd) == expected
        assert LISTERS[name](fd) == expected  # again: from the start, not where the last one stopped
        assert "not-utf8-\udcff\udcfe" in expected and "caf\u00e9" in expected and len(expected) == 1504
    finally:
        os.close(fd)


@pytest.mark.parametrize("name", sorted(LISTERS))
def test_list_dir_of_an_empty_directory(tmp_path, name):
    fd = fsutil.open_dir(str(tmp_path))
    try:
        assert LISTERS[name](fd) == []
    finally:
        os.close(fd)


@pytest.mark.parametrize("name", sorted(LISTERS))
def test_list_dir_fails_as_listdir_does(tmp_path, name):
    path = tmp_path / "file"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(NotADirectoryError):
            LISTERS[name](fd)
    finally:
        os.close(fd)
    with pytest.raises(OSError):
        LISTERS[name](fd)  # closed


def test_walk_lists_through_list_dir(tree):
    """copy_tree and disk_usage see every entry, the non-UTF-8 name too."""
    target = tree.parent / "copy"
    os.mkdir(target)
    assert fsutil.copy_tree(str(tree), str(target)) == 1504
    assert sorted(os.listdir(os.fsencode(target))) == sorted(os.listdir(os.fsencode(tree)))
    assert fsutil.disk_usage(str(target)).inodes == 1505
