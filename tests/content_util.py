"""Helpers shared by the content tests: deterministic blobs and long-running child processes."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import textwrap

EMPTY_SHA256 = "sha256:" + hashlib.sha256(b"").hexdigest()


def blob(size: int, seed: int = 0) -> bytes:
    """`size` pseudo-random bytes, the same for the same seed."""
    return random.Random(seed).randbytes(size)


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


PERIOD = bytes(range(256)) * 256
"""A 64 KiB pattern: the byte at offset i of a periodic stream is PERIOD[i % len(PERIOD)]."""


def periodic(start: int, end: int) -> bytes:
    """Bytes [start, end) of the endless repetition of PERIOD."""
    size = len(PERIOD)
    first = start - start % size
    reps = (end - first + size - 1) // size
    return (PERIOD * reps)[start - first:end - first]


def spawn(code: str) -> subprocess.Popen:
    """Start a Python snippet in another process, with text pipes on stdin and stdout."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ))


def expect_line(proc: subprocess.Popen, wanted: str) -> None:
    """Wait for the child to print `wanted`; fail with its stderr if it prints anything else."""
    line = proc.stdout.readline().strip()
    if line != wanted:
        proc.kill()
        raise AssertionError(f"child printed {line!r}, expected {wanted!r}:\n{proc.stderr.read()}")


def files_under(path) -> set:
    """Every file and directory below `path`, as relative paths."""
    found = set()
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(top, name), path))
    return found
