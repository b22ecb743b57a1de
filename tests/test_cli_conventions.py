"""ctr's and nerdctl's habits: aliases, -q/--filter/--format on every listing, sizes and ages,
PLATFORMS, digest prefixes, keys with spaces, and the commands ctr users look for."""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

import pytest
from cliutil import IMAGE, fails, image_archive, invoke, parsed, rows

import cargohold
from cargohold import Resource
from cargohold.cli.output import human_age, human_size, quote_token


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def host(tmp_path):
    """A root with an image (unpacked), a container on it, a lease holding a blob, and a namespace."""
    root = tmp_path / "r"
    archive, image = image_archive(tmp_path)
    invoke(root, "images", "import", "--unpack", archive)
    invoke(root, "containers", "create", IMAGE, "web", "--label", "app=web")
    invoke(root, "leases", "create", "--id", "hold", "--label", "team=ci")
    with cargohold.open(root) as db:
        db.namespace("default").leases.add_resource("hold", Resource(image.config.digest, "content"))
    invoke(root, "namespaces", "create", "dev", "team=infra")
    return SimpleNamespace(root=root, image=image)


@pytest.fixture
def root(host):
    return host.root


@pytest.mark.parametrize("alias,canonical", [
    (["i", "ls"], ["images", "ls"]), (["image", "list"], ["images", "ls"]),
    (["c", "ls"], ["containers", "ls"]), (["container", "list"], ["containers", "ls"]),
    (["ns", "ls"], ["namespaces", "ls"]), (["namespace", "list"], ["namespaces", "ls"]),
    (["snapshot", "ls"], ["snapshots", "ls"]), (["lease", "list"], ["leases", "ls"]),
    (["content", "list"], ["content", "ls"]),
])
def test_aliases_run_the_same_command(root, alias, canonical):
    assert invoke(root, *alias, "--json").stdout == invoke(root, *canonical, "--json").stdout


@pytest.mark.parametrize("verb", ["rm", "remove", "delete", "del"])
def test_every_rm_alias_removes(tmp_path, verb):
    root = tmp_path / "r"
    invoke(root, "ns", "create", "gone")
    assert invoke(root, "ns", verb, "gone").stdout == "gone\n"
    assert parsed(invoke(root, "ns", "ls", "--json")) == []


def test_help_lists_the_aliases(tmp_path):
    out = invoke(tmp_path / "r", "--help").stdout
    assert "images, image, i " in out and "containers, container, c " in out and "namespaces, namespace, ns " in out
    assert "ls, list " in invoke(tmp_path / "r", "images", "--help").stdout
    assert "rm, remove, delete, del " in invoke(tmp_path / "r", "images", "--help").stdout


# Every listing: (args, what -q prints for the fixture, a filter that keeps nothing, JSON key of an item)
LISTINGS = [
    (["images", "ls"], [IMAGE], "name==nothing"),
    (["content", "ls"], None, "digest==sha256:" + "0" * 64),
    (["content", "active"], [], "ref==nothing"),
    (["snapshots", "ls"], None, "kind==view"),
    (["snapshots", "usage"], None, "kind==view"),
    (["leases", "ls"], ["hold"], "id==nothing"),
    (["leases", "resources", "hold"], None, "type==images"),
    (["containers", "ls"], ["web"], "id==nothing"),
    (["namespaces", "ls"], ["default", "dev"], "name==nothing"),
]


@pytest.mark.parametrize("args,quiet,nothing", LISTINGS, ids=[" ".join(a) for a, _, _ in LISTINGS])
def test_every_listing_takes_quiet_filter_and_format(root, args, quiet, nothing):
    as_json = parsed(invoke(root, *args, "--json"))
    assert parsed(invoke(root, *args, "--format", "json")) == as_json
    lines = invoke(root, *args, "-q").stdout.splitlines()
    assert len(lines) == len(as_json) and all(len(line.split()) == 1 for line in lines)
    if quiet is not None:
        assert lines == quiet
    assert invoke(root, *args, "--filter", nothing, "-q").stdout == ""
    assert parsed(invoke(root, *args, "--filter", nothing, "--json")) == []
    table = rows(invoke(root, *args, "--format", "table"))
    wide = rows(invoke(root, *args, "--format", "wide"))
    assert len(table) == len(wide) == len(as_json) + 1 and len(wide[0]) >= len(table[0])
    assert "InvalidArgument" in fails(root, *args, "--filter", "name==")
    assert "InvalidArgument" in fails(root, *args, "--json", "--format", "wide")


def test_filters_given_twice_match_either(root):
    names = invoke(root, "ns", "ls", "-q", "--filter", "name==dev", "--filter", "labels.team==infra").stdout
    assert names == "dev\n"
    both = invoke(root, "ns", "ls", "-q", "--filter", "name==dev", "--filter", "name==default").stdout
    assert both.split() == ["default", "dev"]
    assert invoke(root, "images", "ls", "-q", "--filter", "name~=^example").stdout == f"{IMAGE}\n"


def test_tables_show_sizes_and_ages_json_exact_values(root):
    listing = parsed(invoke(root, "images", "ls", "--json"))
    (row,) = rows(invoke(root, "images", "ls"))[1:]
    assert " ".join(row[3:5]) == human_size(listing[0]["size"]) and listing[0]["size"] > 1000
    assert row[5] == "linux/amd64" and listing[0]["platforms"] == ["linux/amd64"]
    wide = invoke(root, "images", "ls", "--format", "wide").stdout.splitlines()
    assert wide[0].split() == ["NAME", "TYPE", "DIGEST", "SIZE", "PLATFORMS", "CREATED", "UPDATED", "LABELS"]
    assert "ago" in wide[1]
    info = parsed(invoke(root, "content", "ls", "--json"))
    assert all(isinstance(i["size"], int) and i["created_at"].endswith("+00:00") for i in info)


def test_human_sizes_and_ages():
    from datetime import datetime, timedelta, timezone

    assert [human_size(n) for n in (0, 999, 1000, 1434, 99_949, 99_950, 999_499, 999_500, 1_400_000, 2 * 10**12)] == [
        "0 B", "999 B", "1.0 kB", "1.4 kB", "99.9 kB", "100 kB", "999 kB", "1.0 MB", "1.4 MB", "2.0 TB"]
    now = datetime(2030, 1, 10, tzinfo=timezone.utc)
    ages = [timedelta(seconds=0.2), timedelta(seconds=30), timedelta(minutes=1, seconds=5), timedelta(minutes=59),
            timedelta(minutes=70), timedelta(hours=30), timedelta(days=3), timedelta(days=20), timedelta(days=100),
            timedelta(days=800)]
    assert [human_age(now - d, now) for d in ages] == [
        "less than a second ago", "30 seconds ago", "about a minute ago", "59 minutes ago", "about an hour ago",
        "30 hours ago", "3 days ago", "2 weeks ago", "3 months ago", "2 years ago"]
    assert human_age(now + timedelta(hours=5), now) == "5 hours from now"


def test_keys_with_spaces_stay_one_token(tmp_path):
    root = tmp_path / "r"
    invoke(root, "snapshots", "prepare", "my key")
    invoke(root, "snapshots", "prepare", "it's")
    assert invoke(root, "snapshots", "ls", "-q").stdout.splitlines() == ["'it'\"'\"'s'", "'my key'"]
    assert rows(invoke(root, "snapshots", "ls"))[2][0] == "'my"  # the table quotes it too...
    assert "'my key'" in invoke(root, "snapshots", "ls").stdout  # ...as one shell token
    assert quote_token("plain") == "plain" and quote_token("") == "''"
    assert [s["name"] for s in parsed(invoke(root, "snapshots", "ls", "--json"))] == ["it's", "my key"]  # exact


def test_control_characters_stay_escaped_in_new_listings(tmp_path):
    root = tmp_path / "r"
    invoke(root, "snapshots", "prepare", "evil\x1b]0;owned\x07")
    for args in (["snapshots", "ls"], ["snapshots", "ls", "-q"], ["snapshots", "usage"], ["snapshots", "tree"]):
        out = invoke(root, *args).stdout
        assert "\x1b" not in out and "\x07" not in out and "\\x1b" in out, args
    assert parsed(invoke(root, "snapshots", "ls", "--json"))[0]["name"] == "evil\x1b]0;owned\x07"


def test_digest_prefixes_wherever_a_digest_is(host, tmp_path):
    root, image = host.root, host.image
    digest = image.config.digest
    data = invoke(root, "content", "get", digest).stdout_bytes
    for prefix in (digest[:14], digest[7:15], digest[7:]):
        assert invoke(root, "content", "get", prefix).stdout_bytes == data
    assert parsed(invoke(root, "content", "info", digest[:12]))[0]["digest"] == digest
    assert "x=1" in invoke(root, "content", "label", digest[:12], "x=1").stdout.strip().split(",")
    explained = invoke(root, "gc", "--explain", digest[:12]).stdout
    assert explained.startswith(f"content default {digest} is kept")
    assert "NotFound" in fails(root, "content", "get", "sha256:" + "f" * 10)
    chain = next(s["name"] for s in parsed(invoke(root, "snapshots", "ls", "--json")) if not s["parent"])
    assert parsed(invoke(root, "snapshots", "info", chain[:13]))["name"] == chain  # a chain ID is a digest too
    assert rows(invoke(root, "snapshots", "usage", chain[7:15]))[1][0] == chain
    assert "NotFound" in fails(root, "snapshots", "info", "sha256:" + "f" * 10)
    top = parsed(invoke(root, "snapshots", "info", "web"))["parent"]  # the image's top layer: a chain ID
    invoke(root, "snapshots", "prepare", "on-top", top[:14])  # a parent is a digest, so a prefix does
    invoke(root, "snapshots", "view", "look", top[7:17])
    assert parsed(invoke(root, "snapshots", "info", "on-top"))["parent"] == top
    assert parsed(invoke(root, "snapshots", "info", "look"))["parent"] == top
    assert "NotFound" in fails(root, "snapshots", "prepare", "orphan", "sha256:" + "f" * 10)


def test_an_unexpected_exception_is_still_one_line(root, monkeypatch):
    import cargohold.cli.output as output

    def broken(size: int) -> str:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(output, "human_size", broken)
    message = fails(root, "images", "ls")
    assert message.startswith("cargohold: Error: internal error") and "ZeroDivisionError: a bug" in message
    monkeypatch.setenv("CARGOHOLD_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        invoke(root, "images", "ls")


def test_an_ambiguous_prefix_is_refused_naming_the_matches(tmp_path):
    root = tmp_path / "r"
    seen: dict = {}
    i = 0
    while True:  # two blobs whose digests share their first hex digit (17 at most)
        data = b"blob %d" % i
        first = seen.setdefault(digest_of(data)[7], data)
        if first is not data:
            second = data
            break
        i += 1
    for data in (first, second):
        invoke(root, "content", "ingest", f"ref-{data.decode()}", input=data)
    shared = digest_of(first)[7]
    message = fails(root, "content", "get", shared)
    assert "InvalidArgument" in message and "ambiguous" in message
    assert digest_of(first) in message and digest_of(second) in message
    assert "InvalidArgument" in fails(root, "content", "rm", f"sha256:{shared}")
    assert len(parsed(invoke(root, "content", "ls", "--json"))) == 2  # nothing removed


def test_snapshots_tree_json(root):
    tree = parsed(invoke(root, "snapshots", "tree", "--json"))
    snaps = {s["name"]: s for s in parsed(invoke(root, "snapshots", "ls", "--json"))}

    def walk(nodes, parent=""):
        for node in nodes:
            assert snaps[node["name"]]["parent"] == parent and snaps[node["name"]]["kind"] == node["kind"]
            yield node["name"]
            yield from walk(node["children"], node["name"])

    assert sorted(walk(tree)) == sorted(snaps) and len(tree) == 1
    assert invoke(tmp_missing := root.parent / "missing", "snapshots", "tree", "--json").stdout == "[]\n"
    assert not tmp_missing.exists()


def test_images_inspect(host):
    root, image = host.root, host.image
    (found,) = parsed(invoke(root, "images", "inspect", IMAGE))
    assert found["name"] == IMAGE and found["target"]["digest"] == image.manifest.digest
    assert found["platforms"] == ["linux/amd64"]
    assert [c["digest"] for c in found["content"]] == [image.manifest.digest, image.config.digest,
                                                       *(d.digest for d in image.layers)]
    assert all(c["stored"] for c in found["content"])
    assert found["size"] == sum(c["size"] for c in found["content"])
    assert "NotFound" in fails(root, "images", "inspect", "nope")


def test_images_tag(host):
    root, image = host.root, host.image
    invoke(root, "images", "label", IMAGE, "env=prod")
    assert invoke(root, "images", "tag", IMAGE, "example.com/app:latest", "example.com/other:2").stdout.split() == [
        "example.com/app:latest", "example.com/other:2"]
    listing = {i["name"]: i for i in parsed(invoke(root, "images", "ls", "--json"))}
    assert {n: (i["target"]["digest"], i["labels"]) for n, i in listing.items()} == {
        n: (image.manifest.digest, {"env": "prod"}) for n in (IMAGE, "example.com/app:latest", "example.com/other:2")}
    assert "AlreadyExists" in fails(root, "images", "tag", IMAGE, "example.com/new:1", "example.com/app:latest")
    assert "example.com/new:1" not in invoke(root, "images", "ls", "-q").stdout  # all or none
    assert "NotFound" in fails(root, "images", "tag", "nope", "example.com/x:1")
    invoke(root, "images", "label", "example.com/other:2", "env=dev")
    invoke(root, "images", "tag", "--force", IMAGE, "example.com/other:2")
    assert parsed(invoke(root, "images", "inspect", "example.com/other:2"))[0]["labels"] == {"env": "prod"}


def test_version(tmp_path):
    out = invoke(tmp_path / "r", "version").stdout
    assert out.startswith(f"cargohold {cargohold.__version__}\n") and "python: " in out and "lmdb: " in out
    found = parsed(invoke(tmp_path / "r", "version", "--json"))
    assert found["cargohold"] == cargohold.__version__ and found["core"] in ("compiled", "pure-python")
    assert invoke(tmp_path / "r", "--version").stdout == f"cargohold, version {cargohold.__version__}\n"
    assert not (tmp_path / "r").exists()


def test_containers_info_and_snapshots_info(host, tmp_path):
    root = host.root
    spec = tmp_path / "spec.json"
    spec.write_text('{"ociVersion": "1.1.0"}')
    invoke(root, "containers", "create", IMAGE, "with-spec", "--spec", spec)
    info = parsed(invoke(root, "containers", "info", "with-spec"))
    assert info["id"] == "with-spec" and info["image"] == IMAGE and info["spec"] == {"ociVersion": "1.1.0"}
    assert parsed(invoke(root, "c", "info", "web"))["labels"] == {"app": "web"}
    assert "NotFound" in fails(root, "containers", "info", "nope")
    snap = parsed(invoke(root, "snapshots", "info", "web"))
    assert snap["name"] == "web" and snap["kind"] == "active" and snap["parent"]
    assert "NotFound" in fails(root, "snapshots", "info", "nope")


def test_content_info_is_exact_json(host):
    root, image = host.root, host.image
    (info,) = parsed(invoke(root, "content", "info", image.config.digest))
    assert info["size"] == image.config.size and info["digest"] == image.config.digest
    assert json.loads(invoke(root, "content", "ls", "--json", f"digest=={image.config.digest}").stdout)[0] == info
