"""Hostile layers and archives: host changes through replaced directories, tar headers that hang or eat
memory, deep JSON, special files in place of layout files, decompression and sparse bombs, and the
containerd details of unpack (whiteout devices, the uncompressed label).

Everything is real: layers and archives built byte by byte or by GNU tar, real directories under tmp_path
(a host directory beside the target stands for the host), a real database and snapshotters. A call that
could hang without its fix runs in a fresh interpreter with a timeout.
"""

from __future__ import annotations

import functools
import gzip
import io
import os
import shutil
import socket
import stat
import subprocess
import tarfile
import textwrap

import pytest
import zstandard
from cliutil import fails, invoke
from conftest import run_python
from oci_fixtures import OCI_CONFIG, OCI_MANIFEST, Layer, Layout, descriptor_json, sha256, tar_layout

from cargohold import oci, transfer
from cargohold.errors import InvalidArgument
from cargohold.model import Descriptor
from cargohold.oci.limits import DEFAULT_FLOOR, default_limit
from cargohold.oci.tarheaders import MAX_EXTENSIONS, MAX_RECORD, SafeTarFile
from cargohold.transfer.unpacker import UNCOMPRESSED_LABEL

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (overlay whiteouts: mknod, trusted xattrs)")
GNU_TAR = shutil.which("tar")
needs_gnu_tar = pytest.mark.skipif(GNU_TAR is None, reason="GNU tar is not installed")
NAME = "io.containerd.image.name"
END = bytes(1024)


def apply(root, data: bytes, **kw) -> oci.AppliedLayer:
    return oci.apply_layer(root, io.BytesIO(data), **kw)


@pytest.fixture
def target(tmp_path):
    path = tmp_path / "target"
    path.mkdir()
    return path


def bounded(code: str, timeout: float = 60) -> str:
    """The output of `code` run in a fresh interpreter, which must finish within `timeout` seconds."""
    try:
        return run_python(textwrap.dedent(code), timeout=timeout).stdout
    except subprocess.TimeoutExpired:
        pytest.fail(f"did not finish within {timeout} s: it hangs")


# --- raw tar building ---------------------------------------------------------------------------------

def header(name: str, kind: bytes, size: int = 0, **fields) -> bytes:
    """One ustar header block."""
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mtime = kind, size, 1_600_000_000
    for key, value in fields.items():
        setattr(info, key, value)
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


def pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return str(length).encode() + body


def pax(records: bytes, kind: bytes = tarfile.XHDTYPE) -> bytes:
    """A PAX extended (or global) header carrying `records`."""
    return header("pax", kind, len(records)) + pad(records)


def regular(name: str, data: bytes = b"", **fields) -> bytes:
    return header(name, tarfile.REGTYPE, len(data), **fields) + pad(data)


def host_state(path) -> dict:
    """Everything a layer could change about a host tree: modes, owners, times, xattrs, contents."""
    out = {}
    for p in [path, *sorted(path.rglob("*"))]:
        st = os.lstat(p)
        out[os.path.relpath(p, path)] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns,
                                         sorted(os.listxattr(p, follow_symlinks=False)),
                                         p.read_bytes() if p.is_file() else None)
    return out


# --- 1. a layer must never change the host -----------------------------------------------------------

@pytest.fixture
def outside(tmp_path):
    """A host tree beside the target: outside/p/d and outside/f, with their own modes and times."""
    root = tmp_path / "outside"
    (root / "p" / "d").mkdir(parents=True)
    (root / "f").write_bytes(b"host file")
    for path, mode in ((root / "p" / "d", 0o750), (root / "p", 0o751), (root / "f", 0o640), (root, 0o755)):
        os.chmod(path, mode)
        os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    return root


def _dir(layer: Layer, name: str) -> Layer:
    """A directory entry whose deferred metadata must not land anywhere but on itself."""
    return layer.dir(name, mode=0o4777, uid=4321, gid=4321, mtime=5)


HOST_CASES = {
    # name: (layer built against the host tree, whiteouts used, error expected)
    "dir replaced by a symlink": (lambda out: _dir(Layer(), "a").symlink("a", str(out / "p")), False, None),
    "parent replaced by a symlink": (
        lambda out: _dir(Layer().dir("p"), "p/d").symlink("p", str(out / "p")), False, None),
    "grandparent replaced by a symlink": (
        lambda out: _dir(Layer(), "g/p/d").symlink("g", str(out)), False, None),
    "parent replaced by a relative symlink through an absolute one": (
        lambda out: _dir(Layer().symlink("l", "/").dir("p"), "p/d").symlink("p", "l" + str(out / "p")),
        False, None),
    "whiteout then symlink": (
        lambda out: _dir(Layer().dir("p"), "p/d").whiteout("p").symlink("p", str(out / "p")), True, None),
    "opaque directory then symlink": (
        lambda out: _dir(Layer(), "p/d").opaque("p").symlink("p", str(out / "p")), True, None),
    "opaque directory through a symlink": (
        lambda out: _dir(Layer().symlink("p", str(out / "p")).opaque("p"), "p/d"), True, None),
    "device node through a replaced parent": (
        lambda out: Layer().dir("p").symlink("p", str(out / "p")).fifo("p/pipe"), False, None),
    "hard link named through a symlink": (
        lambda out: Layer().file("f", b"1").symlink("p", str(out / "p")).hardlink("p/h", "f"), False, None),
    "hard link to a host file through a symlink": (
        lambda out: Layer().symlink("p", str(out)).hardlink("h", "p/f"), False, "does not exist"),
    "hard link to a host file through a replaced parent": (
        lambda out: Layer().dir("p").file("p/f", b"inner").symlink("p", str(out)).hardlink("h", "p/f"),
        False, "does not exist"),
}


@pytest.mark.parametrize("overlay", [False, True], ids=["native", "overlay"])
@pytest.mark.parametrize("case", sorted(HOST_CASES))
def test_no_ordering_of_entries_changes_the_host(target, outside, case, overlay):
    build, whiteouts, error = HOST_CASES[case]
    if overlay and whiteouts and not IS_ROOT:
        pytest.skip("overlay whiteouts need root")
    before = host_state(outside)
    layer = build(outside).bytes()
    if error:
        with pytest.raises(InvalidArgument, match=error):
            apply(target, layer, overlay_whiteouts=overlay)
    else:
        apply(target, layer, overlay_whiteouts=overlay)
    assert host_state(outside) == before


@needs_root
@pytest.mark.parametrize("case", sorted(HOST_CASES))
def test_no_ordering_of_entries_changes_the_host_or_the_lower_layers(tmp_path, target, outside, case):
    """The same layers into an upper directory over a lower one that has their paths (as directories,
    a file, symlinks out of the root): copied up, followed, never written."""
    build, _, error = HOST_CASES[case]
    lower = tmp_path / "lower"
    lower.mkdir()
    apply(lower, Layer().dir("p/d", mode=0o700).dir("g/p/d").dir("q/d").dir("a").file("f", b"lower")
          .symlink("l", str(outside)).symlink("s", "l/..").bytes())
    before, lower_before = host_state(outside), host_state(lower)
    layer = build(outside).bytes()
    if error:
        with pytest.raises(InvalidArgument, match=error):
            apply(target, layer, overlay_whiteouts=True, lower_dirs=[lower])
    else:
        apply(target, layer, overlay_whiteouts=True, lower_dirs=[lower])
    assert host_state(outside) == before
    assert host_state(lower) == lower_before


@needs_root
def test_writes_through_a_lower_symlink_out_of_the_root_stay_inside(tmp_path, target, outside):
    lower = tmp_path / "lower"
    lower.mkdir()
    apply(lower, Layer().symlink("l", str(outside)).symlink("s", "l/..").dir("u").symlink("u/up", "../l").bytes())
    before, lower_before = host_state(outside), host_state(lower)
    apply(target, _dir(Layer(), "l/p/d").file("l/f", b"x").whiteout("l/p").file("s/y", b"y")
          .file("u/up/z", b"z").bytes(), overlay_whiteouts=True, lower_dirs=[lower])
    assert host_state(outside) == before
    assert host_state(lower) == lower_before
    inside = target / str(outside).lstrip("/")
    assert (inside / "f").read_bytes() == b"x" and (inside / "z").read_bytes() == b"z"
    assert stat.S_ISCHR((inside / "p").lstat().st_mode)
    assert (target / str(outside.parent).lstrip("/") / "y").read_bytes() == b"y"


@pytest.mark.parametrize("overlay", [False, True], ids=["native", "overlay"])
def test_deferred_directory_metadata_lands_only_on_the_inode_it_was_read_for(target, overlay):
    layer = (Layer().dir("q/d", mode=0o700, mtime=7)
             .dir("p/d", mode=0o4777, mtime=5).symlink("p", "q")  # p/d now reaches q/d: not its inode
             .file("f", b"1", mode=0o600, mtime=9).dir("a", mode=0o4777, mtime=5).hardlink("a", "f")
             .dir("kept", mode=0o711, mtime=3).bytes())
    apply(target, layer, overlay_whiteouts=overlay)
    assert stat.S_IMODE((target / "q/d").stat().st_mode) == 0o700 and (target / "q/d").stat().st_mtime == 7
    assert stat.S_IMODE((target / "f").stat().st_mode) == 0o600 and (target / "a").stat().st_mtime == 9
    assert stat.S_IMODE((target / "kept").stat().st_mode) == 0o711 and (target / "kept").stat().st_mtime == 3


@pytest.mark.parametrize("snapshotter", ["native", "overlay"])
def test_import_and_unpack_of_such_layers_leave_the_host_alone(tmp_path, db, outside, snapshotter):
    if snapshotter == "overlay" and not IS_ROOT:
        pytest.skip("overlay whiteouts need root")
    ns = db.namespace("default")
    attack = (_dir(Layer().dir("p"), "p/d").whiteout("p").symlink("p", str(outside / "p"))
              .dir("g/p/d", mode=0o4777).symlink("g", str(outside)).bytes())
    layout = Layout(tmp_path / "layout")
    image = layout.image([Layer().file("base", b"b").bytes(), attack])  # the second goes to an upper directory
    layout.write_index([(image.manifest, {NAME: "example.com/evil:1"})])
    before = host_state(outside)
    transfer.import_archive(ns, layout.root, unpack=True, snapshotter=snapshotter)
    assert host_state(outside) == before
    assert len(list(ns.snapshotter(snapshotter).walk())) == 2


def test_a_directory_listed_twice_takes_its_last_entry(target):
    apply(target, Layer().dir("d", mode=0o700, mtime=1).file("d/x").dir("d", mode=0o751, mtime=2).bytes())
    assert stat.S_IMODE((target / "d").stat().st_mode) == 0o751 and (target / "d").stat().st_mtime == 2


# --- 2. tar headers that hang the standard library or eat memory ----------------------------------------

# Valid PAX: a comment that is a long run of digits. CPython 3.11.7's header regex scans it in quadratic time
# (about half an hour for this one); ours reads it in one pass.
SLOW_PAX = pax(pax_record(b"comment", b"1" * (512 << 10))) + regular("f", b"applied") + END


def test_a_pax_header_that_hangs_the_stdlib_parser_applies_at_once(tmp_path, target):
    layer = tmp_path / "layer.tar"
    layer.write_bytes(SLOW_PAX)
    out = bounded(f"""
        from cargohold import oci
        with open({str(layer)!r}, "rb") as f:
            print(oci.apply_layer({str(target)!r}, f).size)
    """)
    assert out.split() == [str(len(SLOW_PAX))]
    assert (target / "f").read_bytes() == b"applied"


def test_a_pax_header_that_hangs_the_stdlib_parser_is_read_at_once_in_an_archive(tmp_path):
    archive = tmp_path / "image.tar"
    archive.write_bytes(SLOW_PAX)
    out = bounded(f"""
        from cargohold import oci
        from cargohold.errors import InvalidArgument
        try:
            oci.open_archive({str(archive)!r})
        except InvalidArgument as exc:
            print(exc)
    """)
    assert "not an OCI image layout: oci-layout is missing" in out


class _LongNameStream(io.RawIOBase):
    """A GNU long-name header declaring `size` bytes, then that many bytes made on demand (never held),
    then a file. Reading far into the name means the reader tried to hold it."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self._head = header("././@LongLink", tarfile.GNUTYPE_LONGNAME, size)
        self._size = size
        self.served = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.served < len(self._head):
            n = min(len(buffer), len(self._head) - self.served)
            buffer[:n] = self._head[self.served:self.served + n]
        else:
            assert self.served < 64 << 20, "the reader is reading the whole long name into memory"
            n = min(len(buffer), len(self._head) + self._size - self.served)
            buffer[:n] = b"a" * n
        self.served += n
        return n


def test_a_gigabyte_gnu_long_name_is_refused_before_it_is_read(target):
    stream = _LongNameStream(1 << 30)
    with pytest.raises(InvalidArgument, match=f"GNU long name of {1 << 30} bytes .* limit of {MAX_RECORD} bytes"):
        oci.apply_layer(target, stream)
    assert stream.served < 2 * MAX_RECORD and os.listdir(target) == []


def test_a_gigabyte_gnu_long_link_in_a_sparse_archive_file_is_refused(tmp_path):
    archive = tmp_path / "image.tar"
    with open(archive, "wb") as f:
        f.write(header("././@LongLink", tarfile.GNUTYPE_LONGLINK, 1 << 30))
        f.truncate(512 + (1 << 30) + 4096)  # a hole: nothing is materialised on disk either
    with pytest.raises(InvalidArgument, match=f"image archive .* GNU long link name of {1 << 30} bytes "
                                              f".* limit of {MAX_RECORD}"):
        oci.open_archive(archive)


def test_a_pax_header_over_the_limit_is_refused(target):
    records = pax_record(b"comment", b"x" * MAX_RECORD)
    with pytest.raises(InvalidArgument, match=f"PAX header of {len(records)} bytes .* limit of {MAX_RECORD}"):
        apply(target, pax(records) + regular("f") + END)
    with pytest.raises(InvalidArgument, match="PAX global header of .* limit"):
        apply(target, pax(records, tarfile.XGLTYPE) + regular("f") + END)


def test_a_long_pax_record_and_many_records_within_the_limit_are_read(target):
    long = pax_record(b"comment", b"y" * (MAX_RECORD - 100))
    many = b"".join(pax_record(f"k{i}".encode(), b"v") for i in range(50_000))
    layer = pax(long) + regular("long") + pax(many) + regular("many", b"m") + END
    with SafeTarFile.open(fileobj=io.BytesIO(layer), mode="r|") as tar:
        first, second = tar.next(), tar.next()
        assert first.name == "long" and len(first.pax_headers["comment"]) == MAX_RECORD - 100
        assert second.name == "many" and len(second.pax_headers) == 50_000 and len(many) < MAX_RECORD
    apply(target, layer)
    assert (target / "many").read_bytes() == b"m"


def test_a_chain_of_extension_headers_is_refused(target):
    # The standard library follows such a chain by recursion (RecursionError); a chain is bounded here.
    chain = pax(pax_record(b"path", b"x")) * 2000
    with pytest.raises(InvalidArgument, match=f"more than {MAX_EXTENSIONS} extension headers"):
        apply(target, chain + regular("f") + END)


@pytest.mark.parametrize("records, message", [
    (b"9 path\n", "malformed PAX record"),  # no '='
    (b"99 path=x\n", "malformed PAX record"),  # longer than the header
    (b"6 path=x", "malformed PAX record"),  # no newline
    (b"x path=x\n", "malformed PAX record"),
    (pax_record(b"path", b"a\0b"), "NUL"),
    (pax_record(b"size", b"-1"), "not a valid number"),
    (pax_record(b"uid", b"1e3"), "not a valid number"),
    (pax_record(b"mtime", b"nan"), "not a valid time"),
    (pax_record(b"mtime", b"1" * 40), "not a valid time"),
])
def test_malformed_pax_records_are_refused(target, records, message):
    with pytest.raises(InvalidArgument, match=message):
        apply(target, pax(records) + regular("f") + END)


def test_out_of_range_owners_and_times_are_handled(target):
    with pytest.raises(InvalidArgument, match="invalid owner"):
        apply(target, pax(pax_record(b"uid", b"99999999999")) + regular("f") + END)
    # times outside what a timespec holds become the epoch, as containerd's boundTime makes them
    apply(target, pax(pax_record(b"mtime", b"99999999999999999.5")) + regular("g") + END)
    assert (target / "g").stat().st_mtime_ns == 0


def test_headers_apply_as_gos_reader_applies_them(target):
    """The last PAX header before an entry applies, a GNU long name wins over a PAX path, and global
    headers are ignored, as containerd (Go's archive/tar) reads them."""
    layer = (pax(pax_record(b"mtime", b"1234"), tarfile.XGLTYPE)
             + pax(pax_record(b"path", b"first")) + pax(pax_record(b"path", b"second")) + regular("ustar", b"1")
             + pax(pax_record(b"path", b"pax-name"))
             + header("././@LongLink", tarfile.GNUTYPE_LONGNAME, 9) + pad(b"gnu-name\0") + regular("u2", b"2")
             + END)
    apply(target, layer)
    assert sorted(os.listdir(target)) == ["gnu-name", "second"]
    assert (target / "second").stat().st_mtime == 1_600_000_000  # not the global header's time


def test_an_archive_ending_after_an_extension_header_is_refused(target):
    with pytest.raises(InvalidArgument, match="ends after an extension header"):
        apply(target, pax(pax_record(b"path", b"x")) + END)


# --- sparse members: correct, bounded, validated ---------------------------------------------------------

def _sparse_source(path, size: int, regions: int) -> bytes:
    with open(path, "wb") as f:
        f.truncate(size)
        for i in range(regions):
            f.seek(i * (size // regions))
            f.write(os.urandom(700))
    return path.read_bytes() if size <= 64 << 20 else b""


@needs_gnu_tar
@pytest.mark.parametrize("form", ["gnu", "pax-0.0", "pax-0.1", "pax-1.0"])
def test_gnu_tar_sparse_members_apply_exactly(tmp_path, target, form):
    source = tmp_path / "src"
    source.mkdir()
    content = _sparse_source(source / "sparse.bin", 40 << 20, 300)  # > 4 regions: GNU extension blocks
    fmt = ["--format=gnu"] if form == "gnu" else ["--format=pax", f"--sparse-version={form[4:]}"]
    subprocess.run([GNU_TAR, "--sparse", *fmt, "-cf", str(tmp_path / "layer.tar"), "-C", str(source),
                    "sparse.bin"], check=True)
    data = (tmp_path / "layer.tar").read_bytes()
    assert len(data) < 2 << 20
    apply(target, data)
    assert (target / "sparse.bin").read_bytes() == content
    small = target.parent / "small"
    small.mkdir()
    with pytest.raises(InvalidArgument, match=f"entry 'sparse.bin' of {40 << 20} bytes .* limit of {1 << 20}"):
        apply(small, data, max_size=1 << 20)
    assert os.listdir(small) == []


@needs_gnu_tar
def test_a_gnu_tar_sparse_file_of_64_gib_is_stopped_by_the_default_limit(tmp_path, target):
    source = tmp_path / "src"
    source.mkdir()
    _sparse_source(source / "huge.bin", 64 << 30, 3)
    subprocess.run([GNU_TAR, "--sparse", "--format=pax", "-cf", str(tmp_path / "layer.tar"), "-C", str(source),
                    "huge.bin"], check=True)
    data = (tmp_path / "layer.tar").read_bytes()
    assert len(data) < 1 << 20
    with pytest.raises(InvalidArgument, match=f"of {64 << 30} bytes .* limit of {DEFAULT_FLOOR} bytes "
                                              r"\(the default.*max_layer_size"):
        apply(target, data)
    assert os.listdir(target) == []


def _pax_sparse(name: str, real_size: int, sparse_map: str, stored: bytes, **extra) -> bytes:
    records = b"".join(pax_record(k.encode(), v.encode()) for k, v in {
        "GNU.sparse.major": "0", "GNU.sparse.minor": "1", "GNU.sparse.name": name,
        "GNU.sparse.size": str(real_size), "GNU.sparse.map": sparse_map, **extra}.items())
    return pax(records) + regular(f"GNUSparseFile.0/{name}", stored)


def test_a_terabyte_sparse_member_from_a_tiny_tar_writes_nothing(target):
    layer = _pax_sparse("big", 1 << 40, f"{(1 << 40) - 512},512", b"x" * 512) + END
    assert len(layer) < 4096
    with pytest.raises(InvalidArgument, match=f"entry 'big' of {1 << 40} bytes"):
        apply(target, layer)
    assert os.listdir(target) == []


@pytest.mark.parametrize("sparse_map, stored, message", [
    ("0,512,256,512", b"x" * 1024, "invalid GNU sparse map"),  # overlapping
    ("512,512,0,512", b"x" * 1024, "invalid GNU sparse map"),  # out of order
    ("0,512,4000,512", b"x" * 1024, "invalid GNU sparse map"),  # past the end
    ("0,512", b"x" * 1024, "does not match the 1024 bytes stored"),
    ("0,512,1", b"x" * 1024, "invalid GNU sparse map"),
    ("0,-5", b"", "invalid GNU sparse map"),
])
def test_invalid_sparse_maps_are_refused(target, sparse_map, stored, message):
    with pytest.raises(InvalidArgument, match=message):
        apply(target, _pax_sparse("s", 4096, sparse_map, stored) + END)


# --- 3. JSON documents and special files in an archive ---------------------------------------------------

def good_layout(root) -> Layout:
    layout = Layout(root)
    image = layout.image([Layer().file("a", b"1").bytes()])
    layout.write_index([(image.manifest, {NAME: "example.com/app:1"})])
    layout.built = image
    return layout


@pytest.mark.parametrize("document", ["index.json", "oci-layout", "manifest", "config"])
def test_deeply_nested_json_is_refused_naming_the_document(tmp_path, document):
    layout = Layout(tmp_path / "layout")
    deep = b"[" * 100_000
    if document in ("index.json", "oci-layout"):
        good_layout(layout.root)
        layout.write_file(document, deep)
        expected = document
    else:
        config = layout.document({"rootfs": {"type": "layers", "diff_ids": []}}, OCI_CONFIG)
        if document == "config":
            config = layout.blob(b'{"a":' * 100_000, OCI_CONFIG)
        manifest = layout.document({"schemaVersion": 2, "config": descriptor_json(config), "layers": []},
                                   OCI_MANIFEST)
        if document == "manifest":
            manifest = layout.blob(b'{"a":' * 100_000, OCI_MANIFEST)
        layout.write_index([(manifest, {NAME: "example.com/app:1"})])
        expected = f"{document} {(manifest if document == 'manifest' else config).digest}"
    with pytest.raises(InvalidArgument, match=f"{expected} nests arrays and objects deeper than 100 levels"):
        with oci.open_archive(layout.root) as archive:
            archive.plan()


def _probe(path) -> str:
    return bounded(f"""
        from cargohold import oci
        try:
            with oci.open_archive({str(path)!r}) as archive:
                archive.plan()
            print("opened")
        except Exception as exc:
            print(type(exc).__name__, exc)
    """)


def _fifo(path) -> None:
    os.unlink(path)
    os.mkfifo(path)


@pytest.mark.parametrize("name", ["index.json", "oci-layout", "layer blob", "blob symlink to a FIFO"])
def test_a_fifo_in_a_layout_directory_is_refused_without_waiting_on_it(tmp_path, name):
    layout = good_layout(tmp_path / "layout")
    blob = layout.blob_file(layout.built.layers[0].digest)
    if name == "layer blob":
        _fifo(blob)
    elif name == "blob symlink to a FIFO":
        os.mkfifo(tmp_path / "layout" / "pipe")
        os.unlink(blob)
        os.symlink("../../pipe", blob)
    else:
        _fifo(os.path.join(layout.root, name))
    out = _probe(layout.root)
    assert out.startswith("InvalidArgument") and "is not a regular file" in out, out


@pytest.mark.skipif(not IS_ROOT, reason="making a device node needs root")
def test_a_device_node_in_place_of_a_blob_is_refused_unopened(tmp_path):
    layout = good_layout(tmp_path / "layout")
    blob = layout.blob_file(layout.built.layers[0].digest)
    os.unlink(blob)
    os.mknod(blob, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero
    out = _probe(layout.root)
    assert out.startswith("InvalidArgument") and "is not a regular file" in out, out


def test_a_socket_in_place_of_index_json_is_refused(tmp_path, monkeypatch):
    layout = good_layout(tmp_path / "layout")
    os.unlink(os.path.join(layout.root, "index.json"))
    monkeypatch.chdir(layout.root)  # a socket path must be short
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind("index.json")
        with pytest.raises(InvalidArgument, match="index.json is not a regular file"):
            oci.open_archive(layout.root)


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_an_archive_path_that_is_a_fifo_or_a_device_is_refused(tmp_path, kind):
    if kind == "fifo":
        path = tmp_path / "image.tar"
        os.mkfifo(path)
    else:
        path = "/dev/zero"
    out = _probe(path)
    assert out.startswith("InvalidArgument") and "neither a directory nor a regular file" in out, out


# --- 4. decompression and sparse bombs -----------------------------------------------------------------

UNIT = 4 << 20


@functools.lru_cache(maxsize=None)
def _zeros(kind: str) -> bytes:
    """UNIT zero bytes, compressed as one gzip member or zstd frame."""
    return gzip.compress(bytes(UNIT), compresslevel=9, mtime=0) if kind == "gzip" else \
        zstandard.ZstdCompressor().compress(bytes(UNIT))


def _compress(kind: str, data: bytes) -> bytes:
    return gzip.compress(data, mtime=0) if kind == "gzip" else zstandard.ZstdCompressor().compress(data)


def bomb(kind: str, files: int = 1, units: int = 1, trailing_units: int = 0) -> bytes:
    """A compressed layer of `files` files of `units` x UNIT zero bytes, then `trailing_units` of zeros past
    the end of the archive; built from concatenated members/frames, so it is cheap to make."""
    out = b"".join(_compress(kind, header(f"zeros{i}", tarfile.REGTYPE, units * UNIT)) + _zeros(kind) * units
                   for i in range(files))
    return out + _compress(kind, END) + _zeros(kind) * trailing_units


def _written(root) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_a_bomb_is_stopped_at_the_header_by_the_default_limit(target, kind):
    layer = bomb(kind, units=1024)  # one file of 4 GiB of zeros
    assert len(layer) < 8 << 20
    descriptor = Descriptor(f"application/vnd.oci.image.layer.v1.tar+{kind}", sha256(layer), len(layer))
    expected = default_limit(len(layer))
    assert expected == DEFAULT_FLOOR
    for kw in ({}, {"descriptor": descriptor}):
        with pytest.raises(InvalidArgument, match=f"entry 'zeros0' of {4 << 30} bytes .* limit of {expected} "
                                                  r"bytes \(the default, .*max_layer_size"):
            apply(target, layer, **kw)
        assert os.listdir(target) == []


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_a_bomb_past_the_end_of_the_archive_is_stopped_at_the_limit(target, kind):
    with pytest.raises(InvalidArgument, match=f"its uncompressed content .* limit of {4 * UNIT} bytes"):
        apply(target, bomb(kind, trailing_units=16), max_size=4 * UNIT)


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_a_bomb_of_many_files_leaves_at_most_the_limit_in_the_target(target, kind):
    with pytest.raises(InvalidArgument, match=f"limit of {4 * UNIT} bytes \\(max_size\\)"):
        apply(target, bomb(kind, files=10), max_size=4 * UNIT)
    assert 2 * UNIT <= _written(target) <= 4 * UNIT
    assert apply(target.parent, bomb(kind, files=10), max_size=0).size > 10 * UNIT  # 0: no limit


@pytest.mark.slow
def test_a_bomb_past_the_end_of_the_archive_is_stopped_at_the_default_limit(target):
    with pytest.raises(InvalidArgument, match=f"its uncompressed content .* limit of {DEFAULT_FLOOR} bytes"):
        apply(target, bomb("gzip", trailing_units=1024))


def test_default_limit_and_bad_limits():
    assert default_limit(0) == DEFAULT_FLOOR and default_limit(50 << 20) == 100 * (50 << 20)
    for bad in (-1, 1.5, "1G", True):
        with pytest.raises(InvalidArgument, match="max_size must be a non-negative number of bytes"):
            apply(os.getcwd(), b"", max_size=bad)


@pytest.fixture
def ns(db):
    return db.namespace("default")


def big_layer_layout(root, size: int = 2 << 20) -> Layout:
    layout = Layout(root)
    image = layout.image([Layer().file("big", os.urandom(size)).bytes()])
    layout.write_index([(image.manifest, {NAME: "example.com/app:1"})])
    return layout


def test_import_and_unpack_take_max_layer_size(tmp_path, db, ns):
    layout = big_layer_layout(tmp_path / "layout")
    with pytest.raises(InvalidArgument, match=r"limit of 1048576 bytes \(max_size\); raise it with max_layer_size"):
        transfer.import_archive(ns, layout.root, unpack=True, max_layer_size=1 << 20)
    assert ns.images.list() == [] and list(ns.snapshotter("native").walk()) == []
    for bad in (-1, "1M"):
        with pytest.raises(InvalidArgument, match="max_layer_size must be"):
            transfer.import_archive(ns, layout.root, unpack=True, max_layer_size=bad)
        with pytest.raises(InvalidArgument, match="max_layer_size must be"):
            transfer.unpack_image(ns, "example.com/app:1", max_layer_size=bad)
    (image,) = transfer.import_archive(ns, layout.root)
    with pytest.raises(InvalidArgument, match="limit of 1048576 bytes"):
        transfer.unpack_image(ns, image, max_layer_size=1 << 20)
    assert transfer.unpack_image(ns, image, max_layer_size=0)


def test_the_cli_takes_max_layer_size(tmp_path):
    layout = big_layer_layout(tmp_path / "layout")
    root = tmp_path / "r"
    assert "limit of 1048576 bytes" in fails(root, "images", "import", "--unpack", "--max-layer-size", "1M",
                                             layout.root)
    assert "'12Q' is not a size" in fails(root, "images", "import", "--max-layer-size", "12Q", layout.root)
    invoke(root, "images", "import", layout.root)
    assert "limit of 1024 bytes" in fails(root, "containers", "create", "--max-layer-size", "1KiB",
                                          "example.com/app:1", "c1")
    invoke(root, "containers", "create", "--max-layer-size", "0", "example.com/app:1", "c1")
    invoke(root, "images", "import", "--unpack", "--max-layer-size", "3MB", layout.root)


# --- 5. what containerd's unpack does ------------------------------------------------------------------

@needs_root
def test_overlay_whiteout_devices_have_mode_0000_as_containerd_makes_them(target):
    apply(target, Layer().file("x", b"1").whiteout("x").whiteout("never-there").bytes(), overlay_whiteouts=True)
    for name in ("x", "never-there"):
        st = (target / name).lstat()
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0) and stat.S_IMODE(st.st_mode) == 0


def _labels(ns, digest) -> dict:
    return ns.content.info(digest).labels or {}


def _drop_label(ns, digest) -> None:
    from cargohold.model import Info
    ns.content.update(Info(digest, labels={}), f"labels.{UNCOMPRESSED_LABEL}")


@pytest.mark.parametrize("compression", ["", "gzip", "zstd"])
def test_unpack_labels_each_layer_it_applied_with_its_diff_id(tmp_path, ns, compression):
    layout = Layout(tmp_path / "layout")
    tars = [Layer().file("a", b"1").bytes(), Layer().file("b", b"2").bytes()]
    image = layout.image(tars, compression=compression)
    layout.write_index([(image.manifest, {NAME: "example.com/app:1"})])
    transfer.import_archive(ns, layout.root)
    assert all(UNCOMPRESSED_LABEL not in _labels(ns, d.digest) for d in image.layers)  # only unpack labels
    transfer.unpack_image(ns, "example.com/app:1")
    for layer, diff_id in zip(image.layers, image.diff_ids):
        assert _labels(ns, layer.digest) == {UNCOMPRESSED_LABEL: diff_id}
    # as in containerd, a layer whose snapshot already exists is skipped and not labelled again
    _drop_label(ns, image.layers[0].digest)
    transfer.unpack_image(ns, "example.com/app:1")
    assert _labels(ns, image.layers[0].digest) == {}
    # ... and a layer applied again (into another snapshotter) is
    transfer.unpack_image(ns, "example.com/app:1", snapshotter="overlay")
    assert _labels(ns, image.layers[0].digest) == {UNCOMPRESSED_LABEL: image.diff_ids[0]}


def test_a_failed_unpack_labels_nothing(tmp_path, ns):
    layout = Layout(tmp_path / "layout")
    image = layout.image([Layer().file("a", b"1").bytes(), Layer().file("b", os.urandom(64 << 10)).bytes()])
    layout.write_index([(image.manifest, {NAME: "example.com/app:1"})])
    transfer.import_archive(ns, layout.root)
    with pytest.raises(InvalidArgument, match="limit of 20000 bytes"):  # the first layer is a 10240-byte tar
        transfer.unpack_image(ns, "example.com/app:1", max_layer_size=20000)
    assert _labels(ns, image.layers[0].digest) == {UNCOMPRESSED_LABEL: image.diff_ids[0]}  # it was committed
    assert _labels(ns, image.layers[1].digest) == {}


def test_import_with_unpack_labels_the_layers_of_a_tar_archive(tmp_path, ns):
    layout = Layout(tmp_path / "layout")
    image = layout.image([Layer().file("a", b"1").bytes()])
    layout.write_index([(image.manifest, {NAME: "example.com/app:1"})])
    transfer.import_archive(ns, tar_layout(layout.root, tmp_path / "image.tar"), unpack=True)
    assert _labels(ns, image.layers[0].digest) == {UNCOMPRESSED_LABEL: image.diff_ids[0]}
