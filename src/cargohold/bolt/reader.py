"""Read one consistent bbolt transaction into memory with pread, never taking a lock.

bbolt is copy-on-write: a committed transaction T never changes the pages it
can reach; T + 1 frees the ones it replaces, and T + 2 may overwrite them while
committing (before its meta is written). So a reader that finishes while the
newest meta still says T saw T whole. Otherwise it retries from the newest
meta; when that is T + 1, the pages already read that T + 1 still reaches are
kept, since no writer can touch them before T + 3 begins.

Only pages reachable from the chosen meta's root are read, in batches of
adjacent page ids, level by level; memory follows the live data, not the
file size. Everything is validated while reading: a damaged file raises
Corrupted naming the page; no input makes the walk recurse, loop or allocate
past the file's size.
"""

from __future__ import annotations

import bisect
import gc
import os
import struct
from dataclasses import dataclass

from .._native import BoltBucket as Bucket
from .._native import bolt_assemble, bolt_page, bolt_pages, bolt_referenced
from ..errors import Corrupted, Unavailable
from . import meta as metapage

_HEADER = struct.Struct("<QHHI")       # id, flags, count, overflow
_FIRST_DATA_PAGE = 2                   # pages 0 and 1 are the metas

MAX_ATTEMPTS = 10
MAX_RUN_BYTES = 4 << 20                # largest single pread of adjacent pages
_PROBE_READ = 0x1000

# Records (one per page read) are described in cargohold._fallback, beside their decoders.


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


class Walk:
    """Reads the pages reachable from one meta's root into `records` (pgid -> record)."""

    def __init__(self, src: Source, meta: metapage.Meta, records: dict, cache: dict | None,
                 stats: ReadStats) -> None:
        self.src = src
        self.stats = stats
        self.meta = meta
        self.page_size = meta.page_size
        self.records = records
        self.cache = cache or {}
        self.spans: list = []          # (first, last) page ids of multi-page records
        self.file_size = src.size()

    def run(self) -> None:
        frontier = [(self.meta.root, -1)]
        records = self.records
        cache = self.cache
        while frontier:
            wanted = {}
            following: list = []
            for pgid, parent in frontier:
                if pgid in records or pgid in wanted:
                    raise self._bad(pgid, parent, "reached twice (a cycle or a shared page)")
                record = cache.get(pgid)
                if record is None:
                    wanted[pgid] = parent
                else:
                    self.stats.pages_reused += 1
                    self._add(record, following)
            if wanted:
                self._fetch(wanted, following)
            frontier = following
        self._check_spans()

    def _add(self, record: tuple, following: list) -> None:
        pgid = record[2]
        self.records[pgid] = record
        if record[1]:
            self.spans.append((pgid, pgid + record[1]))
        following += [(child, pgid) for child in bolt_referenced(record)]

    def _bad(self, pgid: int, parent: int, message: str) -> Corrupted:
        where = "the meta's root bucket" if parent < 0 else f"page {parent}"
        return _corrupted(self.src, f"page {pgid} (referenced by {where}): {message}")

    def _named(self, exc: Corrupted, parents: dict) -> Corrupted:
        """A decoder's Corrupted(pgid, message), worded with the file and the referencing page."""
        if len(exc.args) != 2:
            return _corrupted(self.src, str(exc))
        pgid, message = exc.args
        return self._bad(pgid, parents.get(pgid, -1), message)

    def _check_range(self, pgid: int, parent: int, overflow: int) -> None:
        high_water = self.meta.high_water
        if pgid < _FIRST_DATA_PAGE:
            raise self._bad(pgid, parent, "is a meta page id")
        if pgid + overflow >= high_water:
            span = f"pages {pgid}-{pgid + overflow}" if overflow else "the page"
            raise self._bad(pgid, parent, f"{span} beyond the high-water mark {high_water}")
        end = (pgid + overflow + 1) * self.page_size
        if end > self.file_size:
            raise self._bad(pgid, parent, f"truncated: the page ends at byte {end}, the file has {self.file_size}")

    def _read(self, pgid: int, parent: int, pages: int, scratch: bool = False) -> bytes | memoryview:
        size = pages * self.page_size
        read = self.src.read_scratch if scratch else self.src.read
        data = read(pgid * self.page_size, size)
        self.stats.pages_read += pages
        self.stats.bytes_read += len(data)
        if len(data) != size:
            raise self._bad(pgid, parent, f"truncated: read {len(data)} of {size} bytes")
        return data

    def _fetch(self, wanted: dict, following: list) -> None:
        """Read and decode the wanted pages, reading runs of adjacent ids at once."""
        ps = self.page_size
        ids = sorted(wanted)
        lowest, highest = ids[0], ids[-1]
        if lowest < _FIRST_DATA_PAGE or highest >= self.meta.high_water or (highest + 1) * ps > self.file_size:
            for pgid in ids:
                self._check_range(pgid, wanted[pgid], 0)
        max_run = max(1, MAX_RUN_BYTES // ps)
        records = self.records
        n = len(ids)
        i = 0
        while i < n:
            first = ids[i]
            j = i + 1
            while j < n and ids[j] == ids[j - 1] + 1 and ids[j] - first < max_run:
                j += 1
            run = self._read(first, wanted[first], ids[j - 1] - first + 1, scratch=True)
            try:
                overflowing = bolt_pages(run, first, ps, ids, i, j, records, following)
            except Corrupted as exc:
                raise self._named(exc, wanted) from None
            for pgid in overflowing:
                self._overflow(pgid, wanted[pgid], run, (pgid - first) * ps, following)
            i = j

    def _overflow(self, pgid: int, parent: int, run: bytes, offset: int, following: list) -> None:
        """A page spanning overflow + 1 pages: read whole, then decoded."""
        overflow = _HEADER.unpack_from(run, offset)[3]
        self._check_range(pgid, parent, overflow)
        data = self._read(pgid, parent, overflow + 1)
        try:
            record = bolt_page(data, 0, len(data), pgid)
        except Corrupted as exc:
            raise self._named(exc, {pgid: parent}) from None
        self._add(record, following)

    def _check_spans(self) -> None:
        """No two records may share a page: a multi-page record must not cover another's id."""
        if not self.spans:
            return
        ids = sorted(self.records)
        for first, last in self.spans:
            i = bisect.bisect_right(ids, first)
            if i < len(ids) and ids[i] <= last:
                raise _corrupted(self.src, f"page {ids[i]} lies inside the {last - first + 1} pages "
                                           f"of page {first}")


def assemble(src: Source, meta: metapage.Meta, records: dict) -> Bucket:
    """Build the root Bucket and every bucket under it from the records of one walk."""
    try:
        return bolt_assemble(records, meta.root, meta.sequence)
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
    cache = None
    while stats.attempts < MAX_ATTEMPTS:
        stats.attempts += 1
        records: dict = {}
        walk = Walk(src, meta, records, cache, stats)
        try:
            walk.run()
            root = assemble(src, meta, records)
            failure = None
        except Corrupted as exc:
            failure = exc
        now = current_meta(src, page_size)
        if now == meta:
            if failure is not None:
                raise failure
            return meta, root, stats
        # the file moved on while we read: what we read may mix two transactions
        cache = records if now.txid == meta.txid + 1 else None
        meta = now
    raise Unavailable(f"{src.path}: the database changed during {MAX_ATTEMPTS} consecutive reads "
                      f"(txid {first_txid} to {meta.txid}); no consistent snapshot could be read")
