"""Applying layers: file trees, whiteouts, links, compression, diff IDs, and escape attempts."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
import tracemalloc

import pytest
from oci_fixtures import (
    Layer,
    compress,
    needs_umoci,
    sha256,
    tree,
    umoci_image,
    umoci_rootfs,
)

from cargohold import oci
from cargohold.errors import FailedPrecondition, InvalidArgument, Unsupported
from cargohold.model import Descriptor

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (ownership, device nodes)")


def apply(root, tar: bytes, compression: str = "", **kw) -> oci.AppliedLayer:
    return oci.apply_layer(root, io.BytesIO(compress(tar, compression)), **kw)


@pytest.fixture
def target(tmp_path):
    path = tmp_path / "target"
    path.mkdir()
    return path


@pytest.fixture
def outside(tmp_path):
    """A directory beside the target that no layer may touch."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret").write_bytes(b"secret")
    return path


def test_files_dirs_modes_times_and_xattrs(target):
    layer = (Layer()
             .dir("etc", mode=0o750, mtime=1_000_000_000)
             .file("etc/conf", b"k=v\n", mode=0o640, mtime=1_100_000_000, xattrs={"user.origin": "layer1"})
             .file("usr/bin/suid", b"x", mode=0o4755)
             .symlink("usr/bin/rel", "suid")
             .symlink("abs", "/etc/conf")
             .fifo("run/pipe", mode=0o620)
             .file("precise", b"", mtime=1_200_000_000.25)  # a PAX time with a fraction
             .bytes())
    result = apply(target, layer)
    assert result == oci.AppliedLayer(sha256(layer), len(layer))
    conf = target / "etc" / "conf"
    assert conf.read_bytes() == b"k=v\n"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o640
    assert conf.stat().st_mtime == 1_100_000_000
    assert os.getxattr(conf, "user.origin") == b"layer1"
    assert stat.S_IMODE((target / "etc").stat().st_mode) == 0o750
    assert (target / "etc").stat().st_mtime == 1_000_000_000  # set after its content was written
    assert stat.S_IMODE((target / "usr/bin/suid").stat().st_mode) == 0o4755
    assert os.readlink(target / "usr/bin/rel") == "suid"
    assert os.readlink(target / "abs") == "/etc/conf"
    assert stat.S_ISFIFO((target / "run/pipe").lstat().st_mode)
    assert stat.S_IMODE((target / "run").stat().st_mode) == 0o755  # implied parent
    assert (target / "precise").stat().st_mtime_ns == 1_200_000_000_250_000_000


@needs_root
def test_ownership_and_device_nodes(target):
    layer = (Layer().dir("home", uid=1000, gid=1001).file("home/f", b"1", uid=1000, gid=1001)
             .symlink("home/l", "f", uid=1002, gid=1003).chardev("dev/null", 1, 3, mode=0o666).bytes())
    apply(target, layer)
    assert ((target / "home").stat().st_uid, (target / "home").stat().st_gid) == (1000, 1001)
    assert ((target / "home/f").stat().st_uid, (target / "home/f").stat().st_gid) == (1000, 1001)
    assert ((target / "home/l").lstat().st_uid, (target / "home/l").lstat().st_gid) == (1002, 1003)
    st = (target / "dev/null").lstat()
    assert stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)
    assert stat.S_IMODE(st.st_mode) == 0o666


def test_same_owner_false_keeps_the_callers_ownership(target):
    apply(target, Layer().file("f", b"1", uid=4242, gid=4343).bytes(), same_owner=False)
    assert (target / "f").stat().st_uid == os.geteuid()


def test_hard_links_share_an_inode(target):
    layer = Layer().file("a/orig", b"data", mode=0o600).hardlink("b/link", "a/orig").hardlink("./c", "./a/orig")
    apply(target, layer.bytes())
    orig = (target / "a/orig").stat()
    assert (target / "b/link").stat().st_ino == orig.st_ino == (target / "c").stat().st_ino
    assert orig.st_nlink == 3 and stat.S_IMODE(orig.st_mode) == 0o600


def test_hard_link_to_a_symlink_links_the_symlink_itself(target):
    apply(target, Layer().file("f", b"1").symlink("s", "f").hardlink("h", "s").bytes())
    assert os.path.islink(target / "h") and os.readlink(target / "h") == "f"
    assert (target / "h").lstat().st_ino == (target / "s").lstat().st_ino


def test_whiteouts_delete_files_directories_and_links(target):
    apply(target, Layer().file("a/x", b"x").file("a/y", b"y").file("d/sub/z", b"z").symlink("l", "a/y")
          .file("h1", b"h").hardlink("h2", "h1").bytes())
    apply(target, Layer().whiteout("a/x").whiteout("d").whiteout("l").whiteout("h2").whiteout("nothing").bytes())
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == ["a", "a/y", "h1"]
    assert (target / "h1").stat().st_nlink == 1


def test_opaque_directory_hides_lower_content_but_keeps_its_own_layer(target):
    apply(target, Layer().file("o/old", b"1").file("o/sub/old", b"2").file("o/sub/kept-name", b"lower")
          .file("other/x", b"3").bytes())
    upper = (Layer().dir("o").file("o/before", b"b").dir("o/sub").file("o/sub/kept-name", b"upper")
             .opaque("o").file("o/after", b"a").opaque("o").bytes())
    apply(target, upper)
    assert tree(target, owners=False) == tree_of({
        "o": "d", "o/before": b"b", "o/after": b"a", "o/sub": "d", "o/sub/kept-name": b"upper",
        "other": "d", "other/x": b"3"}, target)


def tree_of(spec: dict, target) -> dict:
    """What `tree` shows for files and directories with default modes (0644, 0755)."""
    out = {}
    for rel, value in spec.items():
        out[rel] = ("d", 0o755, None) if value == "d" else ("f", 0o644, value)
    return out


def test_entries_replace_what_lower_layers_had(target, tmp_path):
    host_file = tmp_path / "host-file"
    host_file.write_bytes(b"host")
    apply(target, Layer().file("f2d", b"file").dir("d2f").file("d2f/inner", b"i").symlink("l2f", str(host_file))
          .dir("keep").file("keep/lower", b"lower").bytes())
    apply(target, Layer().dir("f2d").file("f2d/now", b"n").file("d2f", b"now a file").file("l2f", b"replaced")
          .dir("keep", mode=0o700).file("keep/upper", b"upper").bytes())
    assert (target / "f2d/now").read_bytes() == b"n"
    assert (target / "d2f").read_bytes() == b"now a file"
    assert not os.path.islink(target / "l2f") and (target / "l2f").read_bytes() == b"replaced"
    assert host_file.read_bytes() == b"host"  # the old symlink was replaced, not written through
    assert sorted(os.listdir(target / "keep")) == ["lower", "upper"]  # directories merge
    assert stat.S_IMODE((target / "keep").stat().st_mode) == 0o700


def test_root_entry_is_skipped(target):
    os.chmod(target, 0o711)
    apply(target, Layer().dir(".", mode=0o700).dir("./a").bytes())
    assert stat.S_IMODE(target.stat().st_mode) == 0o711 and (target / "a").is_dir()


@pytest.mark.parametrize("compression", ["", "gzip", "zstd"])
def test_compressions_give_the_same_tree_and_diff_id(tmp_path, compression):
    layer = Layer().file("a", b"A" * 100_000).dir("b").symlink("b/c", "../a").bytes()
    root = tmp_path / (compression or "plain")
    root.mkdir()
    result = apply(root, layer, compression, diff_id=sha256(layer))
    assert result.diff_id == sha256(layer) and result.size == len(layer)
    assert (root / "a").read_bytes() == b"A" * 100_000


def test_concatenated_gzip_members_are_one_stream(target):
    layer = Layer().file("a", b"1").file("b", b"2").bytes()
    blob = gzip.compress(layer[:1024], mtime=0) + gzip.compress(layer[1024:], mtime=0)
    assert oci.apply_layer(target, io.BytesIO(blob)).diff_id == sha256(layer)
    assert (target / "b").read_bytes() == b"2"


def test_diff_id_covers_trailing_bytes_after_the_archive(target):
    layer = Layer().file("a", b"1").bytes() + b"\0" * 4096
    assert apply(target, layer, "gzip").diff_id == sha256(layer)


def test_diff_id_mismatch_is_detected(target):
    layer = Layer().file("a", b"1").bytes()
    wrong = sha256(b"something else")
    with pytest.raises(InvalidArgument, match=f"diff ID mismatch, expected {wrong}.*{sha256(layer)}"):
        apply(target, layer, "gzip", diff_id=wrong)


def test_blob_digest_and_size_are_checked_when_a_descriptor_is_given(target):
    blob = compress(Layer().file("a", b"1").bytes(), "gzip")
    good = Descriptor(oci.mediatypes.OCI_LAYER_GZIP, sha256(blob), len(blob))
    assert oci.apply_layer(target, io.BytesIO(blob), descriptor=good).size > 0
    with pytest.raises(InvalidArgument, match="digest mismatch"):
        oci.apply_layer(target, io.BytesIO(blob), descriptor=Descriptor(good.media_type, sha256(b"x"), len(blob)))
    with pytest.raises(InvalidArgument, match="larger than"):
        oci.apply_layer(target, io.BytesIO(blob + b"extra"), descriptor=good)
    with pytest.raises(Unsupported, match="application/x-unknown"):
        oci.apply_layer(target, io.BytesIO(blob), descriptor=Descriptor("application/x-unknown", good.digest, 1))
    with pytest.raises(Unsupported, match="encrypted"):
        oci.apply_layer(target, io.BytesIO(blob), descriptor=Descriptor(
            oci.mediatypes.OCI_LAYER_GZIP + "+encrypted", good.digest, len(blob)))


def test_corrupt_streams_fail_clearly(target):
    layer = Layer().file("a", b"1" * 5000).file("b", b"2").bytes()
    gz = compress(layer, "gzip")
    with pytest.raises(InvalidArgument, match="corrupt gzip data"):
        oci.apply_layer(target, io.BytesIO(gz[:-12]))
    flipped = bytearray(gz)
    flipped[len(gz) // 2] ^= 0xFF
    with pytest.raises(InvalidArgument, match="gzip"):
        oci.apply_layer(target, io.BytesIO(bytes(flipped)))
    with pytest.raises(InvalidArgument, match="corrupt zstd data"):
        oci.apply_layer(target, io.BytesIO(compress(layer, "zstd")[:-9]))
    with pytest.raises(InvalidArgument, match="not a valid tar stream"):
        oci.apply_layer(target, io.BytesIO(layer[:512 + 100]))  # a file's data cut short
    damaged = bytearray(layer)
    damaged[512 + 5120 + 10] ^= 0xFF  # inside the second header: its checksum no longer matches
    with pytest.raises(InvalidArgument, match="invalid tar header"):
        oci.apply_layer(target, io.BytesIO(bytes(damaged)))


def test_empty_stream_is_an_empty_layer(target):
    assert oci.apply_layer(target, io.BytesIO(b"")) == oci.AppliedLayer(sha256(b""), 0)
    assert os.listdir(target) == []


def test_unsupported_entry_type_is_refused(target):
    info = tarfile.TarInfo("volume")
    info.type = b"V"  # a GNU volume header
    with pytest.raises(InvalidArgument, match="unsupported tar type"):
        apply(target, Layer().add(info).bytes())


def test_target_must_be_a_directory(tmp_path):
    with pytest.raises(InvalidArgument, match="not a directory"):
        oci.apply_layer(tmp_path / "missing", io.BytesIO(b""))


@needs_root
def test_filesystem_refusals_are_failed_preconditions(target):
    # The kernel rejects a malformed capability set even for root (EINVAL).
    layer = Layer().file("f", b"1", xattrs={"security.capability": "bogus"}).bytes()
    with pytest.raises(FailedPrecondition, match="cannot apply layer into"):
        apply(target, layer)


def snapshot(path) -> dict:
    return {p.relative_to(path).as_posix(): p.read_bytes() if p.is_file() else None
            for p in sorted(path.rglob("*"))}


ESCAPES = {
    "dotdot": (Layer().file("../outside/pwned", b"x"), "contains '..'"),
    "inner dotdot": (Layer().file("a/../../outside/pwned", b"x"), "contains '..'"),
    "absolute": (Layer().file("/outside/pwned", b"x"), "absolute path"),
    "symlink out": (Layer().symlink("evil", "../outside"), "points outside"),
    "nested symlink out": (Layer().symlink("sub/evil", "../../outside"), "points outside"),
    "symlink dotdot only": (Layer().symlink("evil", ".."), "points outside"),
    "hard link out": (Layer().hardlink("h", "../outside/secret"), "contains '..'"),
    "hard link absolute": (Layer().hardlink("h", "/etc/passwd"), "absolute path"),
    "whiteout of parent": (Layer().file("a/.wh...", b""), "invalid whiteout"),
    "whiteout of dot": (Layer().file(".wh..", b""), "invalid whiteout"),
}


@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_escaping_entries_are_refused_and_nothing_is_written_outside(tmp_path, target, outside, case):
    layer, message = ESCAPES[case]
    before = snapshot(outside)
    with pytest.raises(InvalidArgument, match=message):
        apply(target, layer.bytes(), "gzip")
    assert snapshot(outside) == before
    assert sorted(os.listdir(tmp_path)) == ["outside", "target"]


@pytest.mark.parametrize("entry", [
    Layer().file("evil/pwned", b"x"),
    Layer().hardlink("h", "evil/secret"),
    Layer().whiteout("evil/secret"),
    Layer().opaque("evil"),
    Layer().dir("evil/newdir"),
    Layer().symlink("evil/s", "x"),
])
def test_writing_through_a_symlink_that_points_out_is_refused(tmp_path, target, outside, entry):
    os.symlink("../outside", target / "evil")  # left by a lower layer (or planted in the snapshot)
    before = snapshot(outside)
    with pytest.raises(InvalidArgument, match="leads outside the target"):
        apply(target, entry.bytes())
    assert snapshot(outside) == before
    assert sorted(os.listdir(tmp_path)) == ["outside", "target"]


def test_absolute_symlinks_resolve_inside_the_target(target, outside):
    os.symlink(str(outside), target / "abs")
    apply(target, Layer().symlink("etc", "/real-etc").file("etc/new", b"n").file("abs/pwned", b"x")
          .hardlink("h", "etc/new").bytes())
    assert (target / "real-etc/new").read_bytes() == b"n"
    assert (target / "h").stat().st_ino == (target / "real-etc/new").stat().st_ino
    assert (target / str(outside).lstrip("/") / "pwned").read_bytes() == b"x"
    assert sorted(os.listdir(outside)) == ["secret"]


def test_symlinks_inside_the_target_are_followed(target):
    apply(target, Layer().dir("usr/lib").symlink("lib", "usr/lib").symlink("usr/up", "..").bytes())
    apply(target, Layer().file("lib/libc.so", b"c").file("usr/up/usr/lib/libm.so", b"m").bytes())
    assert sorted(os.listdir(target / "usr/lib")) == ["libc.so", "libm.so"]


def test_symlink_loops_are_refused(target):
    with pytest.raises(InvalidArgument, match="too many levels of symlinks"):
        apply(target, Layer().symlink("a", "b").symlink("b", "a").file("a/x", b"1").bytes())


def test_hard_link_to_missing_target_or_directory_is_refused(target):
    with pytest.raises(InvalidArgument, match="does not exist"):
        apply(target, Layer().hardlink("h", "nothing").bytes())
    with pytest.raises(InvalidArgument, match="is a directory"):
        apply(target, Layer().dir("d").hardlink("h", "d").bytes())


def test_entry_below_a_file_is_refused(target):
    with pytest.raises(InvalidArgument, match="f is not a directory"):
        apply(target, Layer().file("f", b"1").file("f/x", b"2").bytes())


@needs_root
def test_overlay_whiteouts(target):
    apply(target, Layer().whiteout("gone").dir("o").opaque("o").file("o/new", b"n").bytes(),
          overlay_whiteouts=True)
    st = (target / "gone").lstat()
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert os.getxattr(target / "o", "trusted.overlay.opaque") == b"y"
    assert (target / "o/new").read_bytes() == b"n"


class _ZeroLayer(io.RawIOBase):
    """A gzip layer holding one file of `size` zero bytes, produced lazily."""

    def __init__(self, path, size: int) -> None:
        super().__init__()
        with gzip.open(path, "wb") as out:
            info = tarfile.TarInfo("big")
            info.size = size
            out.write(info.tobuf(format=tarfile.PAX_FORMAT))
            chunk = bytes(1 << 20)
            for _ in range(size >> 20):
                out.write(chunk)
            out.write(bytes(1024))
        self._file = open(path, "rb")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self._file.readinto(buffer)


def test_memory_stays_bounded_for_a_large_layer(tmp_path, target):
    size = 64 << 20
    stream = _ZeroLayer(tmp_path / "big.gz", size)
    tracemalloc.start()
    try:
        result = oci.apply_layer(target, stream)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        stream._file.close()
    assert (target / "big").stat().st_size == size
    expected = hashlib.sha256()
    info = tarfile.TarInfo("big")
    info.size = size
    expected.update(info.tobuf(format=tarfile.PAX_FORMAT))
    for _ in range(size >> 20):
        expected.update(bytes(1 << 20))
    expected.update(bytes(1024))
    assert result.diff_id == "sha256:" + expected.hexdigest()
    assert peak < 8 << 20, f"peak traced memory {peak} bytes for a {size}-byte layer"


@needs_umoci
def test_unpack_matches_umoci(tmp_path):
    layout, tag = umoci_image(tmp_path / "build")
    reference = umoci_rootfs(layout, tag, tmp_path)
    ours = tmp_path / "ours"
    ours.mkdir()
    with oci.open_archive(layout) as archive:
        (ref,) = [r for r in archive.plan(base_name="x").images if r.name == f"x:{tag}"]
        _, manifest = oci.resolve_manifest(ref.target, archive.read_blob, oci.platforms.default())
        config = oci.parse_config(archive.read_blob(manifest.config), "config")
        layers = oci.rootfs_layers(manifest, config)
        assert len(layers) == 3
        for layer in layers:
            with archive.open_blob(layer.descriptor) as blob:
                oci.apply_layer(ours, blob, descriptor=layer.descriptor, diff_id=layer.diff_id)
    expected = tree(reference, owners=IS_ROOT, mtimes=True)
    assert tree(ours, owners=IS_ROOT, mtimes=True) == expected
    assert "data/gone" not in expected and "cache/a" not in expected and "cache/c" in expected
    assert expected["tmp/later-a-dir/inside"][2] == b"now a directory\n"
    assert expected["usr/bin/suid"][1] == 0o4755
