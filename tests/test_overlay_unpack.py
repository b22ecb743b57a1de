"""Unpacking into the overlay snapshotter gives what the native one gives.

Each image is unpacked by both snapshotters of one real database. The fast
tests read the top layer's upper directory (whiteout devices,
``trusted.overlay.opaque``, modes, owners, times), mounting nothing; the
parity tests mount the overlay view (where this machine allows it) and
compare the merged tree with the native snapshotter's, the reference: it
applies each layer to a full copy of the tree below.
"""

from __future__ import annotations

import io
import os
import stat

import pytest
from oci_fixtures import Layer, Layout, tree
from snapshot_mounts import can_mount, layer_dirs, mounted  # noqa: F401

from cargohold import oci, transfer
from cargohold.errors import InvalidArgument

IS_ROOT = os.geteuid() == 0
pytestmark = pytest.mark.skipif(not IS_ROOT, reason="overlay whiteouts need root (mknod, trusted xattrs)")
NAME = "io.containerd.image.name"
OPAQUE = "trusted.overlay.opaque"
LOWER_TIME = 1_500_000_000
LAYER_TIMES = 1_700_000_000  # every time a layer gives is before this; an apply's "now" is after it


def unpack_both(tmp_path, db, layers: list) -> tuple[str, list, list]:
    """(the native snapshotter's tree of the top layer, the overlay view's mounts, its layer directories
    topmost first) of an image of `layers`."""
    layout = Layout(tmp_path / "layout")
    image = layout.image(layers)
    layout.write_index([(image.manifest, {NAME: "example.com/app:1"})])
    ns = db.namespace("default")
    transfer.import_archive(ns, layout.root, unpack=True, snapshotter="native")
    top = transfer.unpack_image(ns, "example.com/app:1", snapshotter="overlay")
    native = ns.snapshotter("native").view("native-view", top)[0].source
    mounts = ns.snapshotter("overlay").view("overlay-view", top)
    return native, mounts, layer_dirs(mounts)[0]


def opaque(path) -> bool:
    try:
        return os.getxattr(path, OPAQUE) == b"y"
    except OSError:
        return False


def whiteout(path) -> bool:
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# --- the layers ------------------------------------------------------------------------------------------

def recreated_directory() -> list:
    """A directory deleted and made again by one layer: it holds only the new entry."""
    return [Layer().dir("secrets", mode=0o700).file("secrets/key", b"PRIVATE KEY").bytes(),
            Layer().whiteout("secrets").dir("secrets", mode=0o700).file("secrets/new", b"public").bytes()]


def directory_replaced_by_a_file_then_a_directory() -> list:
    return [Layer().file("d/old", b"old").bytes(),
            Layer().file("d", b"a file").dir("d").file("d/new", b"new").bytes()]


def implicit_parents() -> list:
    """Entries whose parents only lower layers have (no directory entry in the layer)."""
    return [Layer(mtime=LOWER_TIME).dir("root", mode=0o700).dir("tmp", mode=0o1777)
            .dir("home", mode=0o751).dir("home/u", mode=0o750, uid=1000, gid=1001).dir("home/u/deep", mode=0o700)
            .bytes(),
            Layer().file("root/.profile", b"x").file("tmp/x", b"y").file("home/u/deep/f", b"z").bytes()]


def parents_deleted_or_hidden_by_a_middle_layer() -> list:
    """The nearest layer decides: a whiteout or an opaque directory there hides the bottom layer's modes."""
    return [Layer().dir("gone", mode=0o700).file("gone/a").dir("o").dir("o/e", mode=0o700).file("o/e/a").bytes(),
            Layer().whiteout("gone").dir("o").opaque("o").bytes(),
            Layer().file("gone/x", b"1").file("o/e/x", b"2").bytes()]


def lower_symlinked_directory() -> list:
    """A merged-/usr base: lib -> usr/lib (and an absolute bin -> /usr/bin); the next layer writes through them."""
    return [Layer().dir("usr", mode=0o755).dir("usr/lib", mode=0o750).file("usr/lib/libc.so", b"libc")
            .file("usr/lib/libm.so", b"libm").dir("usr/bin").symlink("lib", "usr/lib").symlink("bin", "/usr/bin")
            .bytes(),
            Layer().file("lib/newlib.so", b"new").file("bin/tool", b"#!", mode=0o755).bytes()]


def whiteout_under_a_lower_symlink() -> list:
    return [lower_symlinked_directory()[0],
            Layer().file("usr/lib/x", b"x").whiteout("lib/libc.so").bytes()]


def symlink_of_a_middle_layer() -> list:
    """The symlink and its target come from different lower layers; a hard link is named through it."""
    return [Layer().dir("usr/lib/sub", mode=0o700).file("usr/lib/sub/a", b"a").bytes(),
            Layer().symlink("lib", "usr/lib").symlink("usr/lib/up", "../lib/sub").bytes(),
            Layer().file("lib/up/b", b"b").file("usr/lib/c", b"c").hardlink("lib/d", "lib/c").bytes()]


CASES = {
    "recreated directory": recreated_directory,
    "directory replaced by a file then a directory": directory_replaced_by_a_file_then_a_directory,
    "implicit parents": implicit_parents,
    "parents deleted or hidden by a middle layer": parents_deleted_or_hidden_by_a_middle_layer,
    "lower symlinked directory": lower_symlinked_directory,
    "whiteout under a lower symlink": whiteout_under_a_lower_symlink,
    "symlink of a middle layer": symlink_of_a_middle_layer,
}


# --- the upper directory, nothing mounted -----------------------------------------------------------------

def test_a_directory_made_again_after_its_whiteout_is_opaque(tmp_path, db):
    native, _, (upper, _) = unpack_both(tmp_path, db, recreated_directory())
    assert sorted(os.listdir(os.path.join(native, "secrets"))) == ["new"]
    assert os.path.isdir(os.path.join(upper, "secrets")) and opaque(os.path.join(upper, "secrets"))
    assert sorted(os.listdir(os.path.join(upper, "secrets"))) == ["new"]


def test_a_directory_replacing_a_file_of_its_layer_is_opaque(tmp_path, db):
    _, _, (upper, _) = unpack_both(tmp_path, db, directory_replaced_by_a_file_then_a_directory())
    assert opaque(os.path.join(upper, "d")) and os.listdir(os.path.join(upper, "d")) == ["new"]


def test_a_directory_entry_merging_with_a_lower_directory_is_not_opaque(tmp_path, db):
    layers = [Layer().file("d/old", b"old").bytes(), Layer().dir("d", mode=0o700).file("d/new").bytes()]
    _, _, (upper, _) = unpack_both(tmp_path, db, layers)
    assert not opaque(os.path.join(upper, "d")) and mode(os.path.join(upper, "d")) == 0o700


def test_a_parent_made_where_the_layer_put_a_whiteout_is_opaque(tmp_path, db):
    layers = [Layer().file("d/old", b"old").bytes(), Layer().whiteout("d").file("d/sub/new", b"n").bytes()]
    native, _, (upper, _) = unpack_both(tmp_path, db, layers)
    assert os.listdir(os.path.join(native, "d")) == ["sub"]
    assert opaque(os.path.join(upper, "d")) and mode(os.path.join(upper, "d")) == 0o755
    assert not opaque(os.path.join(upper, "d/sub"))


def test_implicit_parents_are_copied_up_with_the_lower_directory_s_metadata(tmp_path, db):
    _, _, (upper, lower) = unpack_both(tmp_path, db, implicit_parents())
    assert mode(os.path.join(upper, "root")) == 0o700
    assert mode(os.path.join(upper, "tmp")) == 0o1777
    for rel in ("home", "home/u", "home/u/deep"):
        up, low = os.lstat(os.path.join(upper, rel)), os.lstat(os.path.join(lower, rel))
        assert (stat.S_IMODE(up.st_mode), up.st_uid, up.st_gid) == (stat.S_IMODE(low.st_mode), low.st_uid,
                                                                    low.st_gid), rel
        assert not opaque(os.path.join(upper, rel))
    # a copied-up directory only gained what was copied up into it: its time stays the lower one's
    assert os.lstat(os.path.join(upper, "home")).st_mtime == LOWER_TIME
    assert os.lstat(os.path.join(upper, "home/u")).st_mtime == LOWER_TIME
    assert os.lstat(os.path.join(upper, "home/u/deep")).st_mtime != LOWER_TIME  # f was written into it


def test_implicit_parents_keep_the_lower_directory_s_xattrs_but_not_overlayfs_own(tmp_path, db):
    probe = tmp_path / "probe"
    probe.mkdir()
    try:
        os.setxattr(probe, "user.probe", b"1")
    except OSError:
        pytest.skip("this filesystem has no user xattrs")
    layers = [Layer().dir("d", xattrs={"user.note": "kept"}).dir("d/e").file("d/e/old").bytes(),
              Layer().opaque("d/e").bytes(), Layer().file("d/e/f").bytes()]
    _, _, (upper, lower, _) = unpack_both(tmp_path, db, layers)
    assert opaque(os.path.join(lower, "d/e"))
    assert os.getxattr(os.path.join(lower, "d"), "user.note") == b"kept"  # copied up by the middle layer
    assert os.getxattr(os.path.join(upper, "d"), "user.note") == b"kept"
    assert not opaque(os.path.join(upper, "d/e"))  # not copied: it would hide nothing more


def test_implicit_parents_honour_the_whiteouts_and_opaque_directories_of_nearer_layers(tmp_path, db):
    _, _, (upper, _, _) = unpack_both(tmp_path, db, parents_deleted_or_hidden_by_a_middle_layer())
    assert mode(os.path.join(upper, "gone")) == 0o755  # deleted by the middle layer: made afresh
    assert mode(os.path.join(upper, "o/e")) == 0o755  # hidden by the middle layer's opaque o


def test_an_entry_under_a_lower_symlinked_directory_goes_where_the_symlink_points(tmp_path, db):
    native, _, (upper, lower) = unpack_both(tmp_path, db, lower_symlinked_directory())
    assert sorted(os.listdir(os.path.join(native, "usr/lib"))) == ["libc.so", "libm.so", "newlib.so"]
    assert sorted(os.listdir(upper)) == ["usr"]  # no lib or bin directory hiding the lower symlinks
    assert os.listdir(os.path.join(upper, "usr/lib")) == ["newlib.so"]
    assert os.listdir(os.path.join(upper, "usr/bin")) == ["tool"]
    assert mode(os.path.join(upper, "usr/lib")) == mode(os.path.join(lower, "usr/lib")) == 0o750


def test_a_whiteout_under_a_lower_symlinked_directory_deletes_only_that_file(tmp_path, db):
    _, _, (upper, _) = unpack_both(tmp_path, db, whiteout_under_a_lower_symlink())
    assert sorted(os.listdir(upper)) == ["usr"]
    assert sorted(os.listdir(os.path.join(upper, "usr/lib"))) == ["libc.so", "x"]
    assert whiteout(os.path.join(upper, "usr/lib/libc.so"))


def test_a_lower_symlink_out_of_the_root_resolves_inside_it(tmp_path, db):
    """An absolute target is the container's path, as the native unpack reads it: nothing is
    written at the host path it names."""
    host = tmp_path / "host"
    host.mkdir()
    base = Layer().symlink("escape", str(host)).symlink("top", "/").symlink("up", "top/..").bytes()
    native, _, (upper, _) = unpack_both(tmp_path, db, [base, Layer().file("escape/f", b"inside").bytes()])
    assert list(host.iterdir()) == []
    inside = str(host).lstrip("/")
    assert open(os.path.join(native, inside, "f"), "rb").read() == b"inside"
    assert open(os.path.join(upper, inside, "f"), "rb").read() == b"inside"
    assert not os.path.lexists(os.path.join(upper, "escape"))
    # a relative target that climbs above the root is refused, as the native unpack refuses it
    layout = Layout(tmp_path / "climbing")
    image = layout.image([base, Layer().file("up/f", b"x").bytes()])
    layout.write_index([(image.manifest, {NAME: "example.com/climb:1"})])
    ns = db.namespace("default")
    transfer.import_archive(ns, layout.root)
    for snapshotter in ("native", "overlay"):
        with pytest.raises(InvalidArgument, match="leads outside the target"):
            transfer.unpack_image(ns, "example.com/climb:1", snapshotter=snapshotter)
    assert list(host.iterdir()) == []


def test_a_hard_link_to_a_lower_layer_s_file_is_still_refused(tmp_path, db):
    layers = [Layer().symlink("lib", "usr/lib").file("usr/lib/a", b"a").bytes(),
              Layer().hardlink("b", "lib/a").bytes()]
    with pytest.raises(InvalidArgument, match="entry 'b': usr/lib is only in a lower layer"):
        unpack_both(tmp_path, db, layers)


def test_lower_directories_are_only_for_an_overlay_upper_directory(tmp_path):
    layer = Layer().file("f").bytes()
    (tmp_path / "upper").mkdir()
    (tmp_path / "lower").mkdir()
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(InvalidArgument, match="only for an overlay upper directory"):
        oci.apply_layer(tmp_path / "upper", io.BytesIO(layer), lower_dirs=[tmp_path / "lower"])
    with pytest.raises(InvalidArgument, match="is not a directory"):
        oci.apply_layer(tmp_path / "upper", io.BytesIO(layer), overlay_whiteouts=True,
                        lower_dirs=[tmp_path / "file"])
    assert os.listdir(tmp_path / "upper") == []


# --- the merged view, mounted -----------------------------------------------------------------------------

@pytest.mark.parametrize("case", sorted(CASES))
def test_the_mounted_overlay_shows_what_the_native_unpack_made(tmp_path, db, can_mount, case):  # noqa: F811
    if can_mount is not None:
        pytest.skip(can_mount)
    native, mounts, _ = unpack_both(tmp_path, db, CASES[case]())
    with mounted(mounts, str(tmp_path / "mnt")) as merged:
        assert tree(merged, mtimes=True) == tree(native, mtimes=True)
        for directory, dirs, _ in os.walk(native):
            for name in dirs:  # directory times too, but where a new entry made both "now"
                rel = os.path.relpath(os.path.join(directory, name), native)
                there, here = os.lstat(os.path.join(native, rel)), os.lstat(os.path.join(merged, rel))
                if min(there.st_mtime, here.st_mtime) < LAYER_TIMES:
                    assert here.st_mtime_ns == there.st_mtime_ns, rel


def test_the_lower_layers_are_only_read(tmp_path, db):
    """Copy-ups, whiteouts and writes through lower symlinks all land in the upper directory."""
    base = lower_symlinked_directory()[0]
    layout = Layout(tmp_path / "layout")
    first = layout.image([base])
    second = layout.image([base, Layer().file("lib/new", b"n").whiteout("lib/libm.so").opaque("usr/bin")
                           .dir("usr/lib", mode=0o700).file("bin/t", b"t").bytes()])
    layout.write_index([(first.manifest, {NAME: "example.com/base:1"}), (second.manifest, {NAME: "example.com/app:1"})])
    ns = db.namespace("default")
    transfer.import_archive(ns, layout.root)
    bottom = transfer.unpack_image(ns, "example.com/base:1", snapshotter="overlay")
    lower = ns.snapshotter("overlay").view("bottom", bottom)[0].source

    def state() -> dict:
        out = {}
        for directory, dirs, files in os.walk(lower):
            for name in ["", *dirs, *files]:
                path = os.path.join(directory, name)
                st = os.lstat(path)
                out[os.path.relpath(path, lower)] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns,
                                                     st.st_ino, sorted(os.listxattr(path, follow_symlinks=False)))
        return out

    before = state()
    transfer.unpack_image(ns, "example.com/app:1", snapshotter="overlay")
    assert state() == before
