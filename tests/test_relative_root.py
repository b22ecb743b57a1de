"""A root given as a relative path stays that root after the process changes its directory.

Its locks, session files, clean-close marker, compaction copy and lazily
opened backends are all opened after `cargohold.open` returns; each must still
be the first root's, never those of another root that the same relative path
names from the new directory.
"""

from __future__ import annotations

import hashlib

import cargohold


def _two_roots(tmp_path, monkeypatch):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        with cargohold.open("root") as db:
            db.namespaces.create(f"only-in-{name}")
    monkeypatch.chdir(tmp_path / "a")


def _namespaces(path) -> list:
    with cargohold.open(str(path)) as db:
        return sorted(db.namespaces.list())


def test_compaction_after_a_chdir_replaces_only_its_own_database(tmp_path, monkeypatch):
    _two_roots(tmp_path, monkeypatch)
    db = cargohold.open("root")
    monkeypatch.chdir(tmp_path / "b")
    try:
        db.compact()
        db.namespace("later").images.list()
    finally:
        db.close()
    assert _namespaces(tmp_path / "a" / "root") == ["only-in-a"]
    assert _namespaces(tmp_path / "b" / "root") == ["only-in-b"]


def test_writes_and_a_clean_close_after_a_chdir_stay_in_their_root(tmp_path, monkeypatch):
    _two_roots(tmp_path, monkeypatch)
    with cargohold.open("root") as db:
        monkeypatch.chdir(tmp_path / "b")
        db.namespaces.create("written-after-chdir")
        db.garbage_collect()
        assert db.wlock.path == str(tmp_path / "a" / "root" / "meta" / "gc.lock")
    assert _namespaces(tmp_path / "a" / "root") == ["only-in-a", "written-after-chdir"]
    assert _namespaces(tmp_path / "b" / "root") == ["only-in-b"]


def test_a_read_only_open_reads_its_own_content_after_a_chdir(tmp_path, monkeypatch):
    _two_roots(tmp_path, monkeypatch)
    data = b"in root a"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with cargohold.open("root") as db:
        ns = db.namespace("only-in-a")
        with ns.content.writer("ref", total=len(data), expected=digest) as w:
            w.write(data)
            w.commit(len(data), digest)
    with cargohold.open("root", readonly=True) as db:  # its backends open on first use
        monkeypatch.chdir(tmp_path / "b")
        assert db.namespace("only-in-a").content.read(digest) == data
