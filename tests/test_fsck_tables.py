"""fsck's table pass: the compiled `TableCheck` and its pure-Python twin find the same problems,
in the same order, on a real root whose records are varied (labels that are and are not
references, text that is not ASCII, every kind) and damaged byte by byte."""

from __future__ import annotations

import random
import shutil

import msgpack
import pytest
from conftest import IMPLEMENTATIONS
from fsckutil import build

import cargohold
from cargohold import Container, Descriptor, Image, Resource, RuntimeInfo, Sandbox, schema
from cargohold.integrity import tables

TARGET = Descriptor("application/vnd.oci.image.manifest.v1+json", "sha256:" + "cd" * 32, 10)


@pytest.fixture(scope="module")
def varied(tmp_path_factory):
    """The fsck fixture root, plus records of every kind with every sort of label."""
    root = build(tmp_path_factory.mktemp("tables"))
    with cargohold.open(root) as db:
        for name in ("default", "other-ns", "ünïcode"[:0] or "x1"):
            ns = db.namespace(name)
            ns.images.create(Image("plain", TARGET))
            ns.images.create(Image("labelled", TARGET, {"containerd.io/gc.ref.content.l.0": "sha256:" + "ef" * 32,
                                                       "org.example/é": "ü"}))
            ns.images.create(Image("expiring", TARGET, {"containerd.io/gc.expire": "2030-01-01T00:00:00Z"}))
            ns.images.create(Image("ascii-labels", TARGET, {"a": "b", "containerd.io/gc": "not a gc label"}))
            ns.containers.create(Container("bare", runtime=RuntimeInfo("r")))
            ns.containers.create(Container("lab", runtime=RuntimeInfo("r"), labels={"containerd.io/gc.ref.image": "plain"}))
            ns.sandboxes.create(Sandbox("sb", runtime=RuntimeInfo("r"), labels={"x": "y"}))
            ns.sandboxes.create(Sandbox("sb-ref", runtime=RuntimeInfo("r"),
                                        labels={"containerd.io/gc.ref.content": "sha256:" + "ef" * 32}))
            lease = ns.leases.create("l1", labels={"containerd.io/gc.flat": ""})
            ns.leases.add_resource(lease.id, Resource("plain", "images"))
            sn = ns.snapshotter("native")
            sn.prepare("a-1", labels={"containerd.io/gc.root": "x"})
            sn.commit("a", "a-1")
            sn.prepare("b-1", "a", labels={"ünï": "cødé"})
            sn.view("v", "a")
            data = b"blob of " + name.encode()
            digest = "sha256:" + __import__("hashlib").sha256(data).hexdigest()
            with ns.content.writer(f"w-{name}") as w:
                w.write(data)
                w.commit(len(data), digest, {"containerd.io/gc.ref.snapshot.native": "a"})
    return root


def run(root, impl) -> dict:
    """Everything one implementation's pass reports about the root."""
    with cargohold.open(root) as db:
        check = impl.TableCheck(tables.entry_of, tables.backend_of, [])
        for name, backend in sorted(db.snapshotters.items()):
            backend.layout(lambda rows, entries, name=name: check.backend(
                name, rows, {int(e) for e in entries if e.isdigit()}))
        with db.view() as tx:
            scan = tables.scan(tx.kv, check)
        return {"problems": check.problems, "blobs": check.blobs, "others": check.others,
                "max_ids": check.max_ids, "records": check.records, "matched": check.matched,
                "unreferenced": {name: check.unreferenced(name) for name in sorted(db.snapshotters)},
                "ids": {name: sorted(check.backend_ids(name)) for name in sorted(db.snapshotters)},
                "namespaces": scan.namespaces}


def both(root) -> dict:
    results = {name: run(root, impl) for name, impl in sorted(IMPLEMENTATIONS.items())}
    first = next(iter(results.values()))
    for name, result in results.items():
        assert result == first, f"{name} differs from {next(iter(results))}"
    return first


def test_a_varied_sound_root_has_no_problems_in_either(varied):
    result = both(varied)
    assert result["problems"] == []
    assert result["records"] == result["matched"] > 40
    assert {ns for ns, _, _ in result["blobs"]} == {"default", "other-ns", "x1"}


def _records(root) -> list[tuple[bytes, bytes]]:
    with cargohold.open(root) as db:
        with db.view() as tx:
            return list(tx.kv.scan(schema.T_OBJECTS))


def _rewrite(root, changes: dict) -> None:
    with cargohold.open(root) as db:
        with db._env.write() as txn:
            for key, value in changes.items():
                if value is None:
                    txn.delete(schema.T_OBJECTS, key)
                else:
                    txn.put(schema.T_OBJECTS, key, value)


def _pack(record) -> bytes:
    return msgpack.packb(record, use_bin_type=True)


def test_damaged_records_are_judged_alike(varied, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(varied, root, symlinks=True)
    changes = {}
    for key, raw in _records(root):
        kind = key.split(b"\x00")[1]
        if kind == b"snapchild":
            continue
        record = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        name = key.split(b"\x00")[-1]
        if name == b"plain" and key.startswith(b"default"):
            changes[key] = raw + b"\x00"  # trailing bytes
        elif name == b"plain" and key.startswith(b"other-ns"):
            changes[key] = _pack({**record, "l": {"k": b"bytes"}})  # a label value that is not text
        elif name == b"ascii-labels" and key.startswith(b"default"):
            changes[key] = raw[:-1]  # truncated
        elif name == b"bare" and key.startswith(b"default"):
            changes[key] = _pack({**record, "k": 5})  # a snapshot key that is a number
        elif name == b"bare" and key.startswith(b"other-ns"):
            changes[key] = _pack({**record, "sn": "native", "k": "a"})  # now references a snapshot: entry differs
        elif name == b"sb":
            changes[key] = _pack({**record, "extra": [1, 2.5, None, True, {"deep": [[[]]]}], 7: "int key"})
        elif name == b"a" and key.startswith(b"default"):
            changes[key] = _pack({**record, "i": 2 ** 64 - 1})  # an id beyond int64
        elif name == b"b-1" and key.startswith(b"default"):
            changes[key] = _pack({**record, "p": "gone"})  # a parent that has no record
        elif name == b"v" and key.startswith(b"other-ns"):
            changes[key] = _pack({**record, "k": 2, "pi": 99})  # another kind, a wrong parent id
        elif name == b"b-1" and key.startswith(b"x1"):
            changes[key] = _pack({**record, "b": "x1/999/missing"})  # a backend key the backend lacks
        elif name == b"expiring" and key.startswith(b"x1"):
            changes[key] = None  # its entry stays: an orphan
        elif kind == b"blob" and key.startswith(b"x1"):
            changes[key] = raw.replace(b"\xa1s", b"\xa1s\xa1s", 1)[:0] + _pack({**record, "s": True})
    changes[b"default\x00image\x00bad\xff"] = _pack({"t": {"d": TARGET.digest}, "l": {}, "c": 1, "u": 1})
    changes[b"default\x00image\x00two\x00parts"] = _pack({})
    changes[b"default\x00mystery\x00x"] = b""
    _rewrite(root, changes)
    result = both(root)
    codes = [p[0] for p in result["problems"]]
    for code in ("damaged-record", "wrong-node", "missing-parent", "wrong-parent-id", "missing-backend-snapshot",
                 "orphan-node", "unknown-record", "backend-kind"):
        assert code in codes, code


@pytest.mark.parametrize("seed", range(4))
def test_random_byte_damage_is_judged_alike(varied, tmp_path, seed):
    """Flip, drop and insert bytes in a fifth of the records: both twins agree on every one."""
    root = tmp_path / "root"
    shutil.copytree(varied, root, symlinks=True)
    rng = random.Random(seed)
    changes = {}
    for key, raw in _records(root):
        if not raw or rng.random() > 0.2:
            continue
        data = bytearray(raw)
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(data))
            action = rng.choice(("flip", "drop", "insert", "byte"))
            if action == "flip":
                data[pos] ^= 1 << rng.randrange(8)
            elif action == "drop":
                del data[pos]
            elif action == "insert":
                data.insert(pos, rng.randrange(256))
            else:
                data[pos] = rng.choice((0xc0, 0xc2, 0xc4, 0xd4, 0xdc, 0xde, 0xcf, 0xd3, 0xa1, 0x81, 0xff))
        changes[key] = bytes(data)
    _rewrite(root, changes)
    both(root)


def test_damaged_backend_records_are_judged_alike(varied, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(varied, root, symlinks=True)
    with cargohold.open(root) as db:
        backend = db.snapshotters["native"]
        with backend._store.write() as txn:
            rows = list(txn.scan("snapshots"))
            txn.put("snapshots", rows[0][0], rows[0][1][:-2])
            record = msgpack.unpackb(rows[1][1], raw=False)
            txn.put("snapshots", rows[1][0], _pack({**record, "parent": "elsewhere"}))
            txn.put("snapshots", rows[2][0], _pack({**record, "kind": "active"}))
    result = both(root)
    assert [p[0] for p in result["problems"]].count("damaged-backend-record") == 2
