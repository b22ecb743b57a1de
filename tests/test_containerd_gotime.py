"""Go's time.Time encodings, decoded as Go itself wrote them (a Go program built here, offline)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap

import pytest

from cargohold.containerd import gotime
from cargohold.errors import Corrupted

GO_PROGRAM = textwrap.dedent('''
    package main

    import (
        "encoding/hex"
        "encoding/json"
        "os"
        "time"
    )

    func main() {
        ams, _ := time.LoadLocation("Europe/Amsterdam")
        times := []time.Time{
            time.Date(2023, 11, 14, 22, 13, 20, 123456789, time.UTC),
            time.Date(2023, 11, 14, 22, 13, 20, 5, time.FixedZone("", 5*3600+30*60)),
            time.Date(1999, 12, 31, 23, 59, 59, 999999999, time.FixedZone("", -8*3600)),
            time.Date(1900, 6, 1, 12, 0, 0, 0, ams),
            time.Date(1969, 7, 20, 20, 17, 0, 0, time.UTC),
            {},
        }
        var out []map[string]interface{}
        for _, t := range times {
            b, _ := t.MarshalBinary()
            txt, _ := t.MarshalText()
            _, offset := t.Zone()
            var back time.Time
            back.UnmarshalText(txt)
            _, backOffset := back.Zone()
            out = append(out, map[string]interface{}{"binary": hex.EncodeToString(b), "text": string(txt),
                "unix_ns": t.UnixNano(), "offset": offset, "zero": t.IsZero(),
                "text_unix_ns": back.UnixNano(), "text_offset": backOffset})
        }
        json.NewEncoder(os.Stdout).Encode(out)
    }
''')


@pytest.fixture(scope="module")
def go_times(tmp_path_factory):
    go = shutil.which("go")
    if go is None:
        pytest.skip("no `go` on PATH (apt-get install golang-go)")
    directory = tmp_path_factory.mktemp("gotime")
    (directory / "main.go").write_text(GO_PROGRAM)
    env = dict(os.environ, GO111MODULE="off", GOPATH=str(directory / "gopath"), GOCACHE=str(directory / "cache"),
               GOFLAGS="")
    proc = subprocess.run([go, "run", "main.go"], cwd=directory, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_binary_versions_and_zones_as_go_writes_them(go_times):
    versions = set()
    for item in go_times:
        raw = bytes.fromhex(item["binary"])
        versions.add(raw[0])
        decoded = gotime.decode_binary(raw)
        if item["zero"]:
            assert decoded is None
            continue
        assert decoded == gotime.GoTime(item["unix_ns"], item["offset"])
        assert decoded.local().utcoffset().total_seconds() == item["offset"]
    assert versions == {1, 2}   # 1900 Amsterdam has an offset with seconds: version 2


def test_text_as_go_reads_it(go_times):
    """Text keeps whole minutes of offset only: what matters is reading it as Go's UnmarshalText does."""
    for item in go_times:
        if not item["zero"]:
            assert gotime.decode_text(item["text"]) == gotime.GoTime(item["text_unix_ns"], item["text_offset"])


@pytest.mark.parametrize("raw", [b"", b"\x03" + b"\0" * 14, b"\x01" + b"\0" * 13, b"\x02" + b"\0" * 14,
                                 b"\x01" + b"\x7f" * 8 + b"\0" * 6, b"\x01" + b"\0" * 8 + b"\xff" * 4 + b"\0\0"])
def test_malformed_binary_times(raw):
    with pytest.raises(Corrupted):
        gotime.decode_binary(raw)


def test_malformed_text_time():
    with pytest.raises(Corrupted, match="RFC 3339"):
        gotime.decode_text("yesterday")
