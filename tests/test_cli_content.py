"""`cargohold content ...`: ingest from stdin, get, ls, active, label, rm."""

from __future__ import annotations

import hashlib

from cliutil import fails, invoke, parsed, rows

import cargohold


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_ingest_get_ls_label_rm(tmp_path):
    root = tmp_path / "r"
    data = bytes(range(256)) * 1000
    digest = digest_of(data)
    out = invoke(root, "content", "ingest", "upload-1", "--expected", digest, "--size", len(data),
                 "--label", "team=infra", input=data)
    assert out.stdout == f"{digest}\n"
    assert invoke(root, "content", "get", digest).stdout_bytes == data
    assert parsed(invoke(root, "content", "ls", "--json"))[0] | {"created_at": None, "updated_at": None} == {
        "digest": digest, "size": len(data), "labels": {"team": "infra"}, "created_at": None, "updated_at": None}
    table = rows(invoke(root, "content", "ls"))
    assert table[0] == ["DIGEST", "SIZE", "CREATED", "LABELS"] and table[1][:3] == [digest, "256", "kB"]
    assert table[1][-1] == "team=infra" and table[1][-2] == "ago"  # a size and an age for people
    assert invoke(root, "content", "ls", "-q", "labels.team==infra").stdout == f"{digest}\n"
    assert invoke(root, "content", "ls", "-q", "labels.team==other").stdout == ""

    # the same bytes again: nothing stored twice, labels updated
    assert invoke(root, "content", "ingest", "upload-2", "--label", "x=1", input=data).stdout == f"{digest}\n"
    assert invoke(root, "content", "label", digest, "team=", "y=2").stdout == "x=1,y=2\n"
    assert parsed(invoke(root, "content", "label", digest, "y=3", "--json")) == {"x": "1", "y": "3"}

    assert "NotFound" in fails(root, "content", "rm", digest, digest_of(b"other"))  # all or none
    assert invoke(root, "content", "rm", digest).stdout == f"{digest}\n"
    assert parsed(invoke(root, "content", "ls", "--json")) == []
    assert "NotFound" in fails(root, "content", "get", digest)


def test_a_bad_ingest_is_refused_and_discarded(tmp_path):
    root = tmp_path / "r"
    message = fails(root, "content", "ingest", "bad", "--expected", digest_of(b"something else"), input=b"data")
    assert "FailedPrecondition" in message and digest_of(b"data") in message
    assert "size" in fails(root, "content", "ingest", "bad", "--size", 3, input=b"data")
    assert parsed(invoke(root, "content", "active", "--json")) == []
    assert parsed(invoke(root, "content", "ls", "--json")) == []
    assert "InvalidArgument" in fails(root, "content", "ingest", "bad", "--expected", "sha256:short", input=b"x")
    assert "InvalidArgument" in fails(root, "content", "get", "not-a-digest")


def test_active_lists_resumable_ingests_and_ingest_resumes_one(tmp_path):
    root = tmp_path / "r"
    data = b"0123456789" * 100
    with cargohold.open(root) as db:
        with db.namespace("default").content.writer("half", total=len(data)) as w:
            w.write(data[:400])  # left without commit: resumable
    active = parsed(invoke(root, "content", "active", "--json"))
    assert [(a["ref"], a["offset"], a["total"]) for a in active] == [("half", 400, len(data))]
    table = rows(invoke(root, "content", "active"))
    assert table[0] == ["REF", "OFFSET", "TOTAL", "EXPECTED", "UPDATED"]
    assert table[1][:6] == ["half", "400", "B", "1.0", "kB", "-"] and table[1][-1] == "ago"
    assert rows(invoke(root, "content", "active", "ref~=^other")) == [["REF", "OFFSET", "TOTAL", "EXPECTED", "UPDATED"]]
    out = invoke(root, "content", "ingest", "half", "--expected", digest_of(data), input=data)
    assert out.stdout == f"{digest_of(data)}\n"
    assert parsed(invoke(root, "content", "active", "--json")) == []
    assert invoke(root, "content", "get", digest_of(data)).stdout_bytes == data
