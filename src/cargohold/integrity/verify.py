"""Hash blobs to check their digests (``fsck --verify-content``), several files at a time.

Reading and hashing release the interpreter lock (hashlib does for every buffer it is
given beyond a few KiB), so one thread per core keeps the disk and the cores busy.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Iterator, Optional

from ..content.local import _hash_file


def digest_of(path: str, algorithm: str) -> tuple[Optional[str], int]:
    """(``alg:hex`` of the file's bytes, its length); (None, 0) when it is gone."""
    hasher = hashlib.new(algorithm)
    try:
        size = _hash_file(path, hasher)
    except (FileNotFoundError, IsADirectoryError):
        return None, 0
    return f"{algorithm}:{hasher.hexdigest()}", size


def verify_files(items: Iterable[tuple[str, str]], workers: Optional[int] = None
                 ) -> Iterator[tuple[str, Optional[str], int]]:
    """(digest, actual digest or None if the file is gone, bytes read) for each (digest, path), in order."""
    items = list(items)
    workers = workers or min(4, os.cpu_count() or 1)

    def one(item: tuple[str, str]) -> tuple[str, Optional[str], int]:
        digest, path = item
        actual, size = digest_of(path, digest.partition(":")[0])
        return digest, actual, size

    if workers <= 1 or len(items) <= 1:
        yield from map(one, items)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cargohold-verify") as pool:
        yield from pool.map(one, items)
