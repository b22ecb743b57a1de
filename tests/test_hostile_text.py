"""Filters, text and times from outside: they never hang, crash or corrupt.

* ``~=`` filters run in linear time (Go's RE2 semantics; the comparison with Go
  itself is in test_filters.py).
* Strings that are not UTF-8 text (lone surrogates, what Python makes of
  undecodable bytes) are InvalidArgument at every store's boundary, naming
  the value escaped, and nothing is written; on the command line they are a
  one-line error.
* Stored text reaches the terminal with its control characters escaped,
  while ``--json`` keeps it exact.
* Expiry and usedat times beyond the int64 nanosecond range are saturated,
  which keeps containerd's decisions; durations beyond it are refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from datetime import datetime, timezone

import pytest
from cliutil import IMAGE, NAME, fails, image_archive, invoke, layers, parsed, subprocess_run
from content_util import files_under
from gcutil import MANIFEST, Clock, blob, image
from oci_fixtures import Layout, tar_layout
from storeutil import record_count

import cargohold
from cargohold import (Container, Descriptor, Image, Info, Resource, ResourceType as RT, RuntimeInfo, Sandbox,
                       SnapshotInfo, errors, schema, transfer)
from cargohold.gc import index
from cargohold.timeutil import INT64_MAX, INT64_MIN, parse_go_duration, parse_rfc3339

from conftest import run_python

# -- regular expressions that backtrack in Python -------------------------------------------------


def test_catastrophic_regexes_finish(root):
    """Python's re needs 2^40 steps for these; Go's semantics (RE2) needs a linear scan."""
    proc = run_python(f"""
        import cargohold
        from cargohold import Descriptor, Image
        digest = "sha256:" + "ab" * 32
        with cargohold.open({str(root)!r}) as db:
            images = db.namespace("default").images
            images.create(Image("a" * 40 + "!", Descriptor("m", digest, 1), labels={{"k": "a" * 40 + "b"}}))
            images.create(Image("aaaa", Descriptor("m", digest, 1), labels={{"k": "aaaa"}}))
            print([i.name for i in images.list("name~=(a+)+$")])
            print([i.name for i in images.list("labels.k~=(a|aa)*$")])
            print([i.name for i in images.list("labels.k~=^(a|aa)*$")])
            print([i.name for i in images.list("name~=(x+x+)+y")])
    """, timeout=60)
    assert proc.stdout.splitlines() == [
        "['aaaa']", f"['aaaa', {'a' * 40 + '!'!r}]", "['aaaa']", "[]"]


def test_catastrophic_regex_through_the_cli(tmp_path):
    root = tmp_path / "r"
    with cargohold.open(root) as db:
        image(db.namespace("default"), "a" * 50 + "!", "sha256:" + "cd" * 32)
    proc = subprocess_run(root, "images", "ls", "-q", "name~=(a+)+$")
    assert proc.returncode == 0 and proc.stdout == b""


# -- text that is not text: every store refuses it before writing ---------------------------------

BAD = "bad\udcff"
"""What Python decodes the bytes b"bad\\xff" to with surrogateescape (argv, file names)."""

DIGEST = "sha256:" + "ef" * 32


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A namespace with one object of each kind to update or attach to, shared by the tests
    of calls that must change nothing (each checks that it did not)."""
    root = tmp_path_factory.mktemp("hostile") / "root"
    with cargohold.open(root) as db:
        ns = db.namespace("default")
        content = blob(ns, b"payload")
        image(ns, "img", content)
        ns.containers.create(Container("ctr", RuntimeInfo("io.containerd.runc.v2")))
        ns.sandboxes.create(Sandbox("sbx", RuntimeInfo("io.containerd.runc.v2")))
        ns.leases.create("lease")
        sn = ns.snapshotter("native")
        sn.prepare("active")
        sn.prepare("base-active")
        sn.commit("base", "base-active")
        db.namespaces.create("other")
        yield db, root, ns, content


def _image(name="img2", media_type=MANIFEST, annotations=None, labels=None) -> Image:
    return Image(name, Descriptor(media_type, DIGEST, 1, annotations), labels=labels)


def _container(**kw) -> Container:
    fields = {"id": "ctr2", "runtime": RuntimeInfo("io.containerd.runc.v2"), **kw}
    return Container(**fields)


HOSTILE_CALLS = {
    "namespace name": lambda db, ns, d: db.namespaces.create(BAD),
    "namespace label key": lambda db, ns, d: db.namespaces.create("n2", {BAD: "v"}),
    "namespace label value": lambda db, ns, d: db.namespaces.create("n2", {"k": BAD}),
    "namespace set_label key": lambda db, ns, d: db.namespaces.set_label("other", BAD, "v"),
    "namespace set_label value": lambda db, ns, d: db.namespaces.set_label("other", "k", BAD),
    "namespace handle": lambda db, ns, d: db.namespace(BAD),
    "leased handle": lambda db, ns, d: ns.with_lease(BAD),
    "image name": lambda db, ns, d: ns.images.create(_image(name=BAD)),
    "image media type": lambda db, ns, d: ns.images.create(_image(media_type=BAD)),
    "image annotation key": lambda db, ns, d: ns.images.create(_image(annotations={BAD: "v"})),
    "image annotation value": lambda db, ns, d: ns.images.create(_image(annotations={"k": BAD})),
    "image label key": lambda db, ns, d: ns.images.create(_image(labels={BAD: "v"})),
    "image label value": lambda db, ns, d: ns.images.create(_image(labels={"k": BAD})),
    "image digest": lambda db, ns, d: ns.images.create(Image("img2", Descriptor(MANIFEST, BAD, 1))),
    "image update label": lambda db, ns, d: ns.images.update(_image("img", labels={"k": BAD}), "labels.k"),
    "image update annotation": lambda db, ns, d: ns.images.update(
        _image("img", annotations={"k": BAD}), "annotations.k"),
    "image update field path": lambda db, ns, d: ns.images.update(_image("img", labels={"k": "v"}), BAD),
    "image get": lambda db, ns, d: ns.images.get(BAD),
    "image delete": lambda db, ns, d: ns.images.delete(BAD),
    "image filter": lambda db, ns, d: ns.images.list(f"name=={BAD}"),
    "container id": lambda db, ns, d: ns.containers.create(_container(id=BAD)),
    "container image": lambda db, ns, d: ns.containers.create(_container(image=BAD)),
    "container runtime name": lambda db, ns, d: ns.containers.create(_container(runtime=RuntimeInfo(BAD))),
    "container runtime options": lambda db, ns, d: ns.containers.create(
        _container(runtime=RuntimeInfo("r", {"k": BAD}))),
    "container snapshotter": lambda db, ns, d: ns.containers.create(_container(snapshotter=BAD)),
    "container snapshot key": lambda db, ns, d: ns.containers.create(
        _container(snapshotter="native", snapshot_key=BAD)),
    "container sandbox": lambda db, ns, d: ns.containers.create(_container(sandbox_id=BAD)),
    "container label": lambda db, ns, d: ns.containers.create(_container(labels={"k": BAD})),
    "container extension name": lambda db, ns, d: ns.containers.create(_container(extensions={BAD: 1})),
    "container extension value": lambda db, ns, d: ns.containers.create(_container(extensions={"x": [BAD]})),
    "container update label": lambda db, ns, d: ns.containers.update(_container(id="ctr", labels={BAD: "v"}),
                                                                     "labels"),
    "container update field path": lambda db, ns, d: ns.containers.update(_container(id="ctr"), BAD),
    "container filter": lambda db, ns, d: ns.containers.list(f"labels.{BAD}"),
    "sandbox sandboxer": lambda db, ns, d: ns.sandboxes.create(Sandbox("sbx2", sandboxer=BAD)),
    "sandbox runtime": lambda db, ns, d: ns.sandboxes.create(Sandbox("sbx2", RuntimeInfo(BAD))),
    "sandbox label": lambda db, ns, d: ns.sandboxes.create(Sandbox("sbx2", labels={BAD: "v"})),
    "sandbox extension": lambda db, ns, d: ns.sandboxes.create(Sandbox("sbx2", extensions={"x": {"y": BAD}})),
    "sandbox update": lambda db, ns, d: ns.sandboxes.update(Sandbox("sbx", labels={"k": BAD}), "labels.k"),
    "lease id": lambda db, ns, d: ns.leases.create(BAD),
    "lease label": lambda db, ns, d: ns.leases.create("l2", {"containerd.io/gc.expire": BAD}),
    "lease resource id": lambda db, ns, d: ns.leases.add_resource("lease", Resource(BAD, "images")),
    "lease resource type": lambda db, ns, d: ns.leases.add_resource("lease", Resource("x", BAD)),
    "lease resource snapshotter": lambda db, ns, d: ns.leases.add_resource(
        "lease", Resource("x", "snapshots/" + BAD)),
    "lease filter": lambda db, ns, d: ns.leases.list(f'labels."{BAD}"'),
    "ingest ref": lambda db, ns, d: ns.content.writer(BAD),
    "ingest expected": lambda db, ns, d: ns.content.writer("ref", expected=BAD),
    "ingest status": lambda db, ns, d: ns.content.status(BAD),
    "ingest abort": lambda db, ns, d: ns.content.abort(BAD),
    "ingest filter": lambda db, ns, d: ns.content.statuses(f"ref~={BAD}"),
    "content info": lambda db, ns, d: ns.content.info(BAD),
    "content update label": lambda db, ns, d: ns.content.update(Info(d, labels={"k": BAD})),
    "content update field path": lambda db, ns, d: ns.content.update(Info(d, labels={"k": "v"}), BAD),
    "content filter": lambda db, ns, d: list(ns.content.walk(f"labels.k!={BAD}")),
    "snapshotter name": lambda db, ns, d: ns.snapshotter(BAD),
    "snapshot key": lambda db, ns, d: ns.snapshotter("native").prepare(BAD),
    "snapshot parent": lambda db, ns, d: ns.snapshotter("native").prepare("new", BAD),
    "snapshot label": lambda db, ns, d: ns.snapshotter("native").prepare("new", "base", {"k": BAD}),
    "view label": lambda db, ns, d: ns.snapshotter("native").view("new", "base", {BAD: "v"}),
    "commit name": lambda db, ns, d: ns.snapshotter("native").commit(BAD, "active"),
    "commit label": lambda db, ns, d: ns.snapshotter("native").commit("done", "active", {"k": BAD}),
    "snapshot update": lambda db, ns, d: ns.snapshotter("native").update(SnapshotInfo("base", labels={"k": BAD})),
    "snapshot update field path": lambda db, ns, d: ns.snapshotter("native").update(SnapshotInfo("base"), BAD),
    "snapshot remove": lambda db, ns, d: ns.snapshotter("native").remove(BAD),
    "snapshot filter": lambda db, ns, d: list(ns.snapshotter("native").walk(f"name~={BAD}")),
}


@pytest.mark.parametrize("what", sorted(HOSTILE_CALLS))
def test_text_that_is_not_utf8_is_refused_before_anything_is_written(world, what):
    db, root, ns, content = world
    before = record_count(db), files_under(root)
    with pytest.raises(errors.InvalidArgument) as info:
        HOSTILE_CALLS[what](db, ns, content)
    assert "\\udcff" in str(info.value)  # the value, escaped
    assert (record_count(db), files_under(root)) == before


def test_a_commit_with_a_bad_label_stores_nothing_and_can_be_retried(db, root):
    """It used to store the blob and then fail to record it (a raw UnicodeEncodeError)."""
    ns = db.namespace("default")
    data = b"some content"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    writer = ns.content.writer("ref", total=len(data), expected=digest)
    writer.write(data)
    blobs_before = files_under(root / "content" / "blobs")
    with pytest.raises(errors.InvalidArgument, match="udcff"):
        writer.commit(len(data), digest, labels={"note": BAD})
    assert files_under(root / "content" / "blobs") == blobs_before
    assert list(ns.content.walk()) == [] and ns.content.status("ref").offset == len(data)
    assert writer.commit(len(data), digest, labels={"note": "fine"}).labels == {"note": "fine"}


def test_an_archive_with_names_that_are_not_text_imports_nothing(tmp_path, db):
    ns = db.namespace("default")
    for entry in ({NAME: "example.com/app:\udcff"}, {NAME: IMAGE, "note": "x\ud800"}):
        layout = Layout(tmp_path / f"layout-{len(entry)}")
        built = layout.image(layers())
        layout.write_index([(built.manifest, entry)])  # json.dumps writes a lone surrogate as \udcff
        archive = tar_layout(layout.root, tmp_path / f"archive-{len(entry)}.tar")
        with pytest.raises(errors.InvalidArgument, match=r"\\ud(cff|800)"):
            transfer.import_archive(ns, archive)
        assert ns.images.list() == []


def _cargohold(root, *args) -> subprocess.CompletedProcess:
    """The command in a new interpreter with raw bytes in argv (Python decodes them with surrogateescape)."""
    env = {k: v for k, v in os.environ.items() if k != "CARGOHOLD_ROOT"}
    argv = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    return subprocess.run([sys.executable, "-m", "cargohold.cli.main", "--root", str(root), *argv],
                          capture_output=True, env=env, timeout=120)


def _in_process(root, *args) -> tuple[int, bytes, bytes]:
    """The command through click's runner, argv decoded as Python decodes it: (exit code, stdout, stderr)."""
    argv = [a.decode("utf-8", "surrogateescape") if isinstance(a, bytes) else str(a) for a in args]
    result = invoke(root, *argv, ok=False)
    return result.exit_code, result.stdout_bytes, result.stderr_bytes


def _one_line_error(code: int, stdout: bytes, stderr: bytes, kind: str = "InvalidArgument") -> str:
    lines = stderr.decode("utf-8").splitlines()
    assert code == 1 and not stdout and len(lines) == 1 and lines[0].startswith(f"cargohold: {kind}: "), stderr
    return lines[0]


CLI_CASES = [
    ("leases", "create", "--label", b"k=\xff"),
    ("leases", "create", "--label", b"\xff=v"),
    ("leases", "create", "--id", b"\xff"),
    ("images", "label", IMAGE, b"note=\xff"),
    ("images", "rm", b"\xff"),
    ("images", "ls", b"name==\xff"),
    ("namespaces", "create", b"ns\xff"),
    ("namespaces", "create", "ns2", b"k=\xff"),
    ("namespaces", "label", "default", b"k=\xff"),
    ("--namespace", b"n\xff", "images", "ls"),
    ("snapshots", "prepare", b"key\xff"),
    ("snapshots", "prepare", "key", "--label", b"k=\xff"),
    ("snapshots", "--snapshotter", b"native\xff", "ls"),
    ("containers", "create", IMAGE, "c1", "--runtime", b"r\xff"),
    ("containers", "create", IMAGE, "c1", "--label", b"k=\xff"),
    ("content", "active", b"ref~=\xff"),
    ("content", "ingest", "ref", "--label", b"k=\xff"),
]


def test_cli_arguments_that_are_not_utf8_are_one_line_errors(tmp_path):
    root = tmp_path / "r"
    archive, _ = image_archive(tmp_path)
    invoke(root, "images", "import", archive)
    before = files_under(root / "content"), files_under(root / "snapshots")
    for args in CLI_CASES:
        assert "\\udcff" in _one_line_error(*_in_process(root, *args)), args
    for args in CLI_CASES[0], CLI_CASES[-1]:  # and through a real argv
        proc = _cargohold(root, *args)
        assert "\\udcff" in _one_line_error(proc.returncode, proc.stdout, proc.stderr), args
    assert (files_under(root / "content"), files_under(root / "snapshots")) == before
    assert parsed(invoke(root, "content", "active", "--json")) == []
    assert [image["name"] for image in parsed(invoke(root, "images", "ls", "--json"))] == [IMAGE]


# -- stored text with terminal control characters ----------------------------------------------------

EVIL = "evil\x1b]0;pwned\x07\x9b31m\u202eoops\x85end"
SNAP = "snap\x1b[2J\u2066x"
KEPT = "kept\x1b]8;;http://x\x07\x7f"
NOTE = "x\x1b[31my\tz\nw\u2028v"

FORBIDDEN = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]|\xe2\x80[\xa8-\xae]|\xe2\x81[\xa6-\xa9]")
"""What must not reach a terminal: C0 (but the newline ending each line), DEL, C1, U+2028/9, bidi controls."""


def _terminal_safe(data: bytes) -> bytes:
    assert not FORBIDDEN.search(data), data
    return data


def test_control_characters_are_escaped_in_listings_but_exact_in_json(tmp_path):
    root = tmp_path / "r"
    with cargohold.open(root) as db:
        ns = db.namespace("default")
        sn = ns.snapshotter("native")
        sn.prepare("kept-active")
        sn.commit(KEPT, "kept-active")
        sn.prepare(SNAP, labels={"note": NOTE})
        ns.images.create(Image(EVIL, Descriptor(MANIFEST, DIGEST, 1, {"a": NOTE}),
                               labels={"note": NOTE, "containerd.io/gc.ref.snapshot.native": KEPT}))
        ns.leases.create("lease", {"note": NOTE})
        ns.content.writer(EVIL).close()  # a resumable ingest named EVIL
        db.namespaces.set_label("default", "note", NOTE)

    escaped = b"evil\\x1b]0;pwned\\x07\\x9b31m\\u202eoops\\x85end"
    listings = {
        ("images", "ls"): escaped, ("images", "ls", "-q"): escaped + b"\n",
        ("images", "label", EVIL, "x=1"): b"note=x\\x1b[31my\\x09z\\x0aw\\u2028v",
        ("snapshots", "ls"): b"snap\\x1b[2J\\u2066x", ("snapshots", "tree"): b"kept\\x1b]8;;http://x\\x07\\x7f",
        ("gc", "--dry-run"): b"snapshot default native/snap\\x1b[2J\\u2066x\n",
        ("gc", "--explain", KEPT): b"image default " + escaped + b"\n",
        ("leases", "ls"): b"note=x\\x1b[31my", ("namespaces", "ls"): b"note=x\\x1b[31my",
        ("content", "active"): escaped,
    }
    for args, wanted in listings.items():
        code, stdout, stderr = _in_process(root, *args)
        assert code == 0, (args, stderr)
        assert wanted in _terminal_safe(stdout), (args, stdout)
    for args in ("images", "ls"), ("gc", "--dry-run"):  # the bytes a real process writes
        proc = subprocess_run(root, *args)
        assert proc.returncode == 0 and listings[args] in _terminal_safe(proc.stdout)

    (listed,) = json.loads(subprocess_run(root, "images", "ls", "--json").stdout)
    assert listed["name"] == EVIL and listed["labels"]["note"] == NOTE
    assert listed["target"]["annotations"] == {"a": NOTE}
    assert {s["name"] for s in parsed(invoke(root, "snapshots", "ls", "--json"))} == {SNAP, KEPT}
    assert parsed(invoke(root, "gc", "--dry-run", "--json")) == [
        {"type": "snapshot", "namespace": "default", "key": f"native/{SNAP}"}]

    code, _, stderr = _in_process(root, "gc", "--dry-run", EVIL)  # click names the stray argument
    assert code == 1 and b"evil\\x1b]0;pwned" in _terminal_safe(stderr)
    code, stdout, _ = _in_process(root, "images", "rm", EVIL)
    assert code == 0 and _terminal_safe(stdout) == escaped + b"\n"


# -- times beyond the int64 nanosecond range ------------------------------------------------------

FAR_FUTURE = ["9999-12-31T23:59:59Z", "2262-04-12T00:00:00Z", "2262-04-11T23:47:16.854775808Z"]
FAR_PAST = ["0001-01-01T00:00:00Z", "0000-01-01T00:00:00Z", "1677-09-21T00:12:43.145224191Z"]


@pytest.mark.parametrize("stamp", FAR_FUTURE + FAR_PAST)
def test_out_of_range_expiries_are_saturated(db, stamp):
    ns = db.namespace("default")
    expire = {"containerd.io/gc.expire": stamp}
    ns.leases.create("lease", expire)
    image(ns, "img", DIGEST, labels=expire)
    with db.view() as tx:
        entries = [index.decode(tx.kv.get(schema.T_GC, schema.pack_node(rtype, "default", key)))
                   for rtype, key in ((RT.LEASE, "lease"), (RT.IMAGE, "img"))]
    saturated = INT64_MAX if stamp in FAR_FUTURE else INT64_MIN
    assert [e.expire for e in entries] == [saturated, saturated]


@pytest.mark.parametrize("stamp,kept", [(s, True) for s in FAR_FUTURE] + [(s, False) for s in FAR_PAST])
def test_out_of_range_expiries_decide_as_containerd(root, stamp, kept):
    """containerd compares Go times: an expiry in 9999 has not passed, one in year 1 has."""
    with cargohold.open(root, clock=Clock()) as db:
        ns = db.namespace("default")
        expire = {"containerd.io/gc.expire": stamp}
        held = blob(ns, b"held by the lease")
        ns.leases.create("lease", expire)
        ns.leases.add_resource("lease", Resource(held, "content"))
        target = blob(ns, b"target of the image")
        image(ns, "img", target, labels=expire)
        db.garbage_collect()
        assert bool(ns.leases.list()) is kept
        assert bool(ns.images.list()) is kept
        assert {i.digest for i in ns.content.walk()} == ({held, target} if kept else set())


@pytest.mark.parametrize("usedat,condition,kept", [
    ("9999-12-31T23:59:59Z", "usedat<1h", True),     # Go: time.Since(9999) is the minimum duration
    ("9999-12-31T23:59:59Z", "usedat>1h", False),
    ("0001-01-01T00:00:00Z", "usedat<1h", False),    # ... and time.Since(0001) the maximum
    ("0001-01-01T00:00:00Z", "usedat>1h", True),
    ("0001-01-01T00:00:00Z", "usedat>2562047h", True),
])
def test_out_of_range_usedat_decides_as_containerd(root, usedat, condition, kept):
    with cargohold.open(root, clock=Clock()) as db:
        ns = db.namespace("default")
        sn = ns.snapshotter("native")
        sn.prepare("s-active")
        sn.commit("s", "s-active", {"containerd.io/gc.cond.value-usedat": usedat})
        image(ns, "img", DIGEST, labels={"containerd.io/gc.cond.snapshot.native": f"{condition}|s"})
        db.garbage_collect()
        assert [i.name for i in sn.walk()] == (["s"] if kept else [])


@pytest.mark.parametrize("clock", [datetime(2262, 4, 11, 23, 0, tzinfo=timezone.utc),
                                   datetime(9999, 1, 1, tzinfo=timezone.utc)])
def test_ingests_near_the_end_of_int64_time(root, clock):
    """An unleased ingest expires 24 h after it was opened: past 2262 that is saturated too."""
    with cargohold.open(root, clock=lambda: clock) as db:
        ns = db.namespace("default")
        ns.content.writer("ref").close()
        db.garbage_collect()
        assert [s.ref for s in ns.content.statuses()] == ["ref"]


@pytest.mark.parametrize("text,ns", [
    ("9223372036854775807ns", INT64_MAX), ("9223372036854775808ns", None), ("-9223372036854775808ns", INT64_MIN),
    ("-9223372036854775809ns", None), ("2562047h47m16.854775807s", INT64_MAX), ("2562047h47m16.854775808s", None),
    ("2562048h", None), ("-2562047h", -2562047 * 3600 * 10**9), ("1" * 5000 + "s", None),
    ("0" * 5000 + "1s", 10**9), ("1." + "9" * 5000 + "s", 2_000_000_000), ("9223372036854775807ns1ns", None),
    ("\u0661s", None), ("1\u0661s", None),  # Go takes ASCII digits only
    ("0.3333333333h", 1_199_999_999_880), ("1.0000000001s", 1_000_000_000),
])
def test_go_duration_limits(text, ns):
    """Expected values are what Go 1.19's time.ParseDuration gives (fractions in float64, as Go)."""
    assert parse_go_duration(text) == ns


@pytest.mark.parametrize("text,ns", [
    ("0000-01-01T00:00:00Z", -62167219200 * 10**9),
    ("9999-12-31T23:59:59Z", 253402300799 * 10**9),
    ("2262-04-12T00:00:00Z", 9223372800 * 10**9),
    ("2024-01-01T0:00:00Z", 1704067200 * 10**9),  # Go reads a one-digit hour
    ("2024-01-01T00:00:00,5Z", 1704067200 * 10**9 + 500_000_000),
    ("2024-01-01T00:00:00.1234567891Z", 1704067200 * 10**9 + 123456789),
    ("2024-01-01T00:00:00+99:99", 1703704860 * 10**9),  # Go does not range-check offsets
    ("2024-02-29T00:00:00Z", 1709164800 * 10**9),
    ("2024-01-02t03:04:05Z", None), ("2024-01-02T03:04:05z", None), ("2023-02-29T00:00:00Z", None),
    ("2024-01-01T24:00:00Z", None), ("2024-01-01T23:59:60Z", None), ("2024-01-01T00:00:00.Z", None),
    ("2024-01-01T00:00:00+0100", None), ("\uff12\uff10\uff12\uff14-01-01T00:00:00Z", None),
    ("10000-01-01T00:00:00Z", None), ("2024-01-01T00:00:00Z ", None),
])
def test_rfc3339_as_go_parses_it(text, ns):
    """Expected values are what Go 1.19's time.Parse(time.RFC3339, ...) gives."""
    assert parse_rfc3339(text) == ns


def test_cli_refuses_durations_beyond_int64(tmp_path):
    root = tmp_path / "r"
    for duration in ("99999999999999h", "2562048h", "9223372036854775808ns"):
        line = fails(root, "leases", "create", "--expires", duration)
        assert duration in line and "292 years" in line
    lease = invoke(root, "leases", "create", "--expires", "2562047h").stdout.strip()
    (listed,) = parsed(invoke(root, "leases", "ls", "--json"))
    assert listed["id"] == lease and listed["labels"]["containerd.io/gc.expire"].startswith("23")
    invoke(root, "gc")
    assert [le["id"] for le in parsed(invoke(root, "leases", "ls", "--json"))] == [lease]


def test_escaping_keeps_the_layout_of_narrative_output(tmp_path):
    """The demo's blank lines are its own, not data: they stay newlines, not \\x0a."""
    result = invoke(tmp_path / "r", "demo")
    assert "\\x0a" not in result.stdout and "\n\n1. Built the image" in result.stdout
