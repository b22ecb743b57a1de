"""`cargohold gc` (collection, --dry-run, --explain) and `cargohold info`."""

from __future__ import annotations

from cliutil import IMAGE, fails, image_archive, invoke, parsed, rows


def test_dry_run_collection_and_explain(tmp_path):
    root = tmp_path / "r"
    archive, image = image_archive(tmp_path)
    invoke(root, "images", "import", "--unpack", archive)
    invoke(root, "containers", "create", IMAGE, "c1")
    snaps = {s["name"]: s for s in parsed(invoke(root, "snapshots", "ls", "--json"))}
    top = snaps["c1"]["parent"]
    bottom = snaps[top]["parent"]
    assert invoke(root, "gc", "--dry-run").stdout == ""

    explained = invoke(root, "gc", "--explain", image.layers[0].digest).stdout.splitlines()
    assert explained == [f"content default {image.layers[0].digest} is kept by this chain of references, root first:",
                         f"  image default {IMAGE}", f"  content default {image.manifest.digest}",
                         f"  content default {image.layers[0].digest}"]
    (why,) = parsed(invoke(root, "gc", "--explain", bottom, "--json"))
    assert why["node"] == {"type": "snapshot", "namespace": "default", "key": f"native/{bottom}"}
    assert [n["key"] for n in why["chain"]][-2:] == [f"native/{top}", f"native/{bottom}"]
    assert why["chain"][0]["type"] in ("image", "container")

    invoke(root, "images", "rm", IMAGE)
    doomed = invoke(root, "gc", "--dry-run").stdout.splitlines()
    expected = {f"content default {d.digest}" for d in (image.manifest, image.config, *image.layers)}
    assert set(doomed) == expected and len(doomed) == 4
    assert {(n["type"], n["key"]) for n in parsed(invoke(root, "gc", "--dry-run", "--json"))} == {
        ("content", line.split()[2]) for line in doomed}
    (gone,) = parsed(invoke(root, "gc", "--explain", image.config.digest, "--json"))
    assert gone["chain"] is None
    assert "the next collection removes it" in invoke(root, "gc", "--explain", image.config.digest).stdout
    (kept,) = parsed(invoke(root, "gc", "--explain", bottom, "--json"))
    assert [n["type"] for n in kept["chain"][:2]] == ["container", "snapshot"] and kept["chain"][0]["key"] == "c1"

    out = invoke(root, "gc")
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["TYPE", "NAMESPACE", "KEY"]
    assert {" ".join(line.split()) for line in lines[1:5]} == expected
    assert lines[5].startswith("removed 4 records (4 content); freed ")
    assert "(4 blobs); writers held off " in lines[5] and "node" not in out.stdout
    stats = parsed(invoke(root, "gc", "--json"))
    assert stats["removed"] == [] and {"removed", "meta_d", "content_d", "snapshot_d"} <= set(stats)
    assert invoke(root, "gc", "--dry-run").stdout == ""
    assert parsed(invoke(root, "content", "ls", "--json")) == []
    assert len(parsed(invoke(root, "snapshots", "ls", "--json"))) == 3  # the container keeps its chain

    assert "NotFound" in fails(root, "gc", "--explain", "sha256:" + "0" * 64)
    assert "cannot be combined" in fails(root, "gc", "--explain", "c1", "--dry-run")


def test_info_counts_and_bytes(tmp_path):
    root = tmp_path / "r"
    archive, image = image_archive(tmp_path)
    invoke(root, "images", "import", "--unpack", archive)
    invoke(root, "--namespace", "other", "leases", "create", "--id", "l1")
    report = parsed(invoke(root, "info", "--json"))
    blobs = (image.manifest, image.config, *image.layers)
    default = report["namespaces"]["default"]
    assert default["images"] == {"count": 1} and default["containers"] == {"count": 0}
    assert default["content"] == {"count": 4, "bytes": sum(d.size for d in blobs)}
    assert default["ingests"] == {"count": 0, "bytes": 0}
    assert default["snapshots/native"]["count"] == 2 and default["snapshots/native"]["bytes"] > 0
    assert default["snapshots/overlayfs"] == {"count": 0, "bytes": 0}
    assert report["namespaces"]["other"]["leases"] == {"count": 1}
    assert report["backends"]["content"] == default["content"]
    assert report["backends"]["snapshots/native"]["count"] == 2
    assert report["root"] == str(root) and report["schema_version"] >= 1
    table = rows(invoke(root, "info"))
    assert table[1] == ["NAMESPACE", "STORE", "COUNT", "BYTES"]
    assert ["default", "content", "4", str(sum(d.size for d in blobs))] in table
    assert ["other", "leases", "1", "-"] in table and ["-", "backend:content", "4", str(sum(d.size for d in blobs))] in table


def test_dry_run_lists_backend_leftovers_and_gc_reports_what_it_freed(tmp_path):
    import os

    import cargohold

    root = tmp_path / "r"
    archive, image = image_archive(tmp_path)
    invoke(root, "images", "import", "--unpack", archive)
    with cargohold.open(root) as db:  # data in the backends that no record owns
        with db.content_store.writer("stray") as w:
            w.write(b"stray")
            stray = w.commit()
        with db.content_store.writer("lost") as w:
            w.write(b"abc")
        db.snapshotter_backend("native").prepare("stray")
        ingest = next(p for p in (root / "content" / "ingest").iterdir())
        ingest_bytes = sum(f.stat().st_size for f in ingest.iterdir())
        stray_dir = {str(i) for i in range(1, 10)} & set(os.listdir(root / "snapshots" / "native" / "snapshots"))
    assert invoke(root, "gc", "--dry-run").stdout.splitlines()[:2] == [
        f"blob - {stray} 5", f"ingest-dir - lost {ingest_bytes}"]
    (snapshot_line,) = invoke(root, "gc", "--dry-run").stdout.splitlines()[2:]
    kind, dash, key, size = snapshot_line.split()
    assert (kind, dash) == ("snapshot-dir", "-") and key.split("/")[1] in stray_dir and int(size) > 0
    dry = parsed(invoke(root, "gc", "--dry-run", "--json"))
    assert dry == [{"type": "blob", "namespace": None, "key": stray, "size": 5},
                   {"type": "ingest-dir", "namespace": None, "key": "lost", "size": ingest_bytes},
                   {"type": "snapshot-dir", "namespace": None, "key": key, "size": int(size)}]

    invoke(root, "images", "rm", IMAGE)  # deletions: both backends get cleaned, leftovers with them
    report = parsed(invoke(root, "gc", "--json"))
    blobs = (image.manifest, image.config, *image.layers)
    assert report["removed_records"] == {"content": 4, "snapshot": 2}
    assert report["freed"]["blobs"] == {"count": 5, "bytes": sum(d.size for d in blobs) + 5}
    assert report["freed"]["ingests"] == {"count": 1, "bytes": ingest_bytes}
    assert report["freed"]["snapshot_dirs"]["native"]["count"] == 3
    assert report["freed_bytes"] == (report["freed"]["blobs"]["bytes"] + ingest_bytes
                                     + report["freed"]["snapshot_dirs"]["native"]["bytes"])
    assert report["writers_blocked_s"] == report["meta_d"] and report["removed_nodes"] == report["removed"]
    assert 0 < report["writers_blocked_s"] <= report["total_s"] and report["mark_s"] > 0 and report["sweep_s"] > 0
    assert report["content_cleanup_s"] == report["content_d"] and report["snapshot_cleanup_s"] == report["snapshot_d"]
    assert report["errors"] == []
    assert parsed(invoke(root, "gc", "--dry-run", "--json")) == []
    summary = invoke(root, "gc").stdout.splitlines()
    assert summary == ["removed 0 records; freed 0 B; writers held off " + summary[0].split("held off ")[1],
                       "cleanup took no time: no backend needed cleaning"]


def test_gc_namespace_collects_one_namespace_only(tmp_path):
    root = tmp_path / "r"
    mine = invoke(root, "--namespace", "a", "content", "ingest", "x", input=b"a's garbage").stdout.strip()
    theirs = invoke(root, "--namespace", "b", "content", "ingest", "y", input=b"b's garbage").stdout.strip()
    assert invoke(root, "gc", "--dry-run", "--namespace", "a").stdout.splitlines() == [f"content a {mine}"]
    assert parsed(invoke(root, "gc", "--dry-run", "--namespace", "a", "--json")) == [
        {"type": "content", "namespace": "a", "key": mine}]
    out = invoke(root, "gc", "--namespace", "a").stdout
    assert "removed 1 record (1 content); freed 11 B (1 blob)" in out
    assert invoke(root, "--namespace", "a", "content", "ls", "-q").stdout == ""
    assert invoke(root, "--namespace", "b", "content", "ls", "-q").stdout.split() == [theirs]
    assert invoke(root, "gc", "--dry-run").stdout.splitlines() == [f"content b {theirs}"]
    assert "cannot be combined" in fails(root, "gc", "--explain", theirs, "--namespace", "b")
    assert "namespace" in fails(root, "gc", "--namespace", "not a namespace")
