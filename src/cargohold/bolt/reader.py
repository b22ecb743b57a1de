"""Read one consistent bbolt transaction into memory with pread, never taking a lock.

bbolt is copy-on-write: a committed transaction T never changes the pages it
can reach; T + 1 frees the ones it replaces, and T + 2 may overwrite them while
committing (before its meta is written). So a reader that finishes while the
newest meta still says T saw T whole. Otherwise it retries from the newest
meta; when that is T + 1, the pages already read that T + 1 still reaches are
kept, since no writer can touch them before T + 3 begins.

Only pages reachable from the chosen meta's root are read, in batches of
adjacent page ids, level by level (`BoltTx.walk`, compiled, with a pure-Python
twin); memory follows the live data, not the file size. Everything is
validated while reading: a damaged file raises Corrupted naming the page; no
input makes the walk recurse, loop or allocate past the file's size.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

from .._native import BoltBucket as Bucket
from .._native import BoltTx
from ..errors import Corrupted, Unavailable
from . import meta as metapage

MAX_ATTEMPTS = 10
MAX_RUN_BYTES = 4 << 20                # largest single pread of adjacent pages
_PROBE_READ = 0x1000


class Source:
    """The open file: positional reads only, so nothing we do moves, locks or maps it."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd
        self._scratch = bytearray()

    def read(self, offset: int, size: int) -> bytes:
        try:
            return os.pread(self.fd, size, offset)
        except OSError as exc:
            raise Unavailable(f"{self.path}: cannot read {size} bytes at offset {offset}: {exc}") from None

    def read_scratch(self, offset: int, size: int) -> memoryview:
        """Read into one reused buffer (valid until the next call): no fresh memory to fault in."""
        if len(self._scratch) < size:
            self._scratch = bytearray(size)
        view = memoryview(self._scratch)[:size]
        try:
            got = os.preadv(self.fd, [view], offset)
        except OSError as exc:
            raise Unavailable(f"{self.path}: cannot read {size} bytes at offset {offset}: {exc}") from None
        return view[:got]

    def size(self) -> int:
        try:
            return os.fstat(self.fd).st_size
        except OSError as exc:
            raise Unavailable(f"{self.path}: cannot stat: {exc}") from None


def _corrupted(src: Source, message: str) -> Corrupted:
    return Corrupted(f"{src.path}: {message}")


def find_page_size(src: Source) -> int:
    """The page size from meta 0, else from meta 1 found where bbolt probes for it."""
    size = src.size()
    if size == 0:
        raise _corrupted(src, "not a bbolt file: the file is empty")
    first = metapage.decode(src.read(0, _PROBE_READ), 0)
    if first.problem is None:
        return first.page_size
    for offset in metapage.PROBE_OFFSETS:
        if offset >= size - 1024:
            break
        probed = metapage.decode(src.read(offset, _PROBE_READ), 1)
        if probed.problem is None and probed.page_size == offset:
            return probed.page_size
    raise _corrupted(src, f"not a bbolt file: no valid meta page (meta page 0: {first.problem}; "
                          f"no valid meta page 1 at any page size from 1 KiB to 16 MiB)")


def read_metas(src: Source, page_size: int) -> tuple[metapage.Meta, metapage.Meta]:
    """Both meta pages; one whose page size disagrees with the file's is marked invalid."""
    metas = []
    for page in (0, 1):
        m = metapage.decode(src.read(page * page_size, min(page_size, _PROBE_READ)), page)
        if m.problem is None and m.page_size != page_size:
            m = metapage.Meta(page, m.page_size, m.flags, m.root, m.sequence, m.freelist, m.high_water,
                              m.txid, f"page size {m.page_size} differs from the file's {page_size}")
        metas.append(m)
    return metas[0], metas[1]


def current_meta(src: Source, page_size: int) -> metapage.Meta:
    """The meta bbolt would use now, or Corrupted when neither meta page is valid."""
    meta0, meta1 = read_metas(src, page_size)
    chosen = metapage.choose(meta0, meta1)
    if chosen is None:
        raise _corrupted(src, f"not a valid bbolt file: {metapage.describe_problems(meta0, meta1)}")
    return chosen


def assemble(src: Source, tx: BoltTx, meta: metapage.Meta) -> Bucket:
    """The root Bucket of a walked transaction, once the key order across leaves is checked."""
    try:
        return tx.bucket(meta.root, meta.sequence)
    except Corrupted as exc:
        if len(exc.args) != 2:
            raise _corrupted(src, str(exc)) from None
        pgid, message = exc.args
        raise _corrupted(src, f"page {pgid}: {message}") from None


@dataclass
class ReadStats:
    """How a File was read: attempts (1 unless a writer committed meanwhile), pages and bytes read."""

    attempts: int = 0
    pages_read: int = 0
    pages_reused: int = 0
    bytes_read: int = 0


def load(src: Source) -> tuple[metapage.Meta, Bucket, ReadStats]:
    """The newest consistent transaction of the file: its meta, root bucket, and how it was read."""
    page_size = find_page_size(src)
    meta = current_meta(src, page_size)
    stats = ReadStats()
    # the records and buckets hold no cycles: the collector would only rescan them, again and again
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _load(src, page_size, meta, stats)
    finally:
        if collecting:
            gc.enable()


def _load(src: Source, page_size: int, meta: metapage.Meta, stats: ReadStats) -> tuple:
    first_txid = meta.txid
    previous = None
    while stats.attempts < MAX_ATTEMPTS:
        stats.attempts += 1
        tx = BoltTx(src, page_size, meta.high_water, src.size(), previous, stats, MAX_RUN_BYTES)
        try:
            tx.walk(meta.root)
            root = assemble(src, tx, meta)
            failure = None
        except Corrupted as exc:
            failure = exc
        now = current_meta(src, page_size)
        if now == meta:
            if failure is not None:
                raise failure
            return meta, root, stats
        # the file moved on while we read: what we read may mix two transactions
        previous = tx if now.txid == meta.txid + 1 else None
        meta = now
    raise Unavailable(f"{src.path}: the database changed during {MAX_ATTEMPTS} consecutive reads "
                      f"(txid {first_txid} to {meta.txid}); no consistent snapshot could be read")
