"""Mutation fuzzing of cargohold.bolt on real bbolt files, run as a child process by test_bolt.py
(so that a hang shows as the parent's subprocess timeout, never as a stuck test run).

    python bolt_fuzz.py SPEC.json   with SPEC: {"files": [{"path", "ranges"}], "examples", "workdir"}

Each example applies a few mutations (bit flips, zeroed or random ranges, truncation, meta fields
rewritten with a valid checksum) to one file, mostly inside its live pages (`ranges`), and opens
it: the only acceptable outcomes are Corrupted or a read that is consistent with itself.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cargohold import bolt, errors

META = struct.Struct("<IIIIQQQQQQ")
META_FIELDS = {"root": 4, "freelist": 6, "pgid": 7, "txid": 8, "page_size": 2, "flags": 3}


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) % 2**64
    return h


def check_consistent(f: bolt.File) -> int:
    """Walk every bucket; lookups must agree with iteration. Returns the number of keys seen."""
    seen = 0
    todo = [f.root]
    while todo:
        b = todo.pop()
        keys = list(b.keys())
        assert keys == sorted(set(keys)) and len(b) == len(keys)
        subs = dict(b.buckets())
        for key, value in b.items():
            seen += 1
            if value is None:
                assert b.bucket(key) is subs[key] and b.get(key) is None
                todo.append(subs[key])
            else:
                assert b.get(key) == value and b.bucket(key) is None and key not in subs
    return seen


def mutations(size: int, ranges: list, page_size: int):
    """A strategy of mutation lists for a file of `size` bytes."""
    def offset():
        in_live = st.sampled_from(ranges).flatmap(lambda r: st.integers(r[0], r[1] - 1))
        anywhere = st.integers(0, size - 1)
        return st.one_of(in_live, in_live, in_live, anywhere)

    flip = st.tuples(st.just("flip"), offset(), st.integers(0, 7))
    zero = st.tuples(st.just("zero"), offset(), st.integers(1, 4096))
    noise = st.tuples(st.just("noise"), offset(), st.binary(min_size=1, max_size=32))
    small = st.tuples(st.just("small"), offset(), st.sampled_from([0, 1, 2, 3, 0xFF, 0xFFFF, 0xFFFFFFFF]),
                      st.sampled_from([1, 2, 4, 8]))
    truncate = st.tuples(st.just("truncate"), st.integers(0, size - 1))
    meta = st.tuples(st.just("meta"), st.integers(0, 1), st.sampled_from(sorted(META_FIELDS)),
                     st.one_of(st.integers(0, 2**64 - 1), st.integers(0, size // page_size + 4)))
    return st.lists(st.one_of(flip, flip, zero, noise, small, small, truncate, meta), min_size=1, max_size=6)


def apply(data: bytearray, mutation: tuple, page_size: int) -> bytearray:
    kind = mutation[0]
    if kind == "flip":
        _, at, bit = mutation
        if at < len(data):
            data[at] ^= 1 << bit
    elif kind == "zero":
        _, at, length = mutation
        data[at:at + length] = bytes(len(data[at:at + length]))
    elif kind == "noise":
        _, at, noise = mutation
        data[at:at + len(noise)] = noise[:max(0, len(data) - at)]
    elif kind == "small":
        _, at, value, width = mutation
        raw = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
        data[at:at + width] = raw[:max(0, len(data) - at)]
    elif kind == "truncate":
        del data[mutation[1]:]
    elif kind == "meta":
        _, page, field, value = mutation
        start = page * page_size + 16
        if start + META.size <= len(data):
            fields = list(META.unpack_from(data, start))
            fields[META_FIELDS[field]] = value % 2**(32 if field in ("page_size", "flags") else 64)
            raw = META.pack(*fields)
            data[start:start + META.size] = raw[:-8] + struct.pack("<Q", fnv1a64(raw[:-8]))
    return data


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    workdir = Path(spec["workdir"])
    files = [(Path(f["path"]).read_bytes(), [tuple(r) for r in f["ranges"]], f["page_size"])
             for f in spec["files"]]
    outcomes = {"corrupted": 0, "read": 0}
    target = workdir / "mutated.db"

    @settings(max_examples=spec["examples"], deadline=None, database=None, derandomize=spec.get("derandomize", False),
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def run(draw):
        original, ranges, page_size = draw.draw(st.sampled_from(files))
        data = bytearray(original)
        for mutation in draw.draw(mutations(len(original), ranges, page_size)):
            data = apply(data, mutation, page_size)
        target.write_bytes(data)
        try:
            f = bolt.open(target)
        except errors.Corrupted:
            outcomes["corrupted"] += 1
            return
        check_consistent(f)
        outcomes["read"] += 1

    run()
    print(json.dumps(outcomes))


if __name__ == "__main__":
    main(sys.argv[1])
