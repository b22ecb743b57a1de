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
import os
import struct
from dataclasses import dataclass

from .._native import bolt_branch, bolt_leaf
from ..errors import Corrupted, Unavailable
from . import meta as metapage
from .bucket import Bucket

BRANCH_FLAG = 0x01
LEAF_FLAG = 0x02
_PAGE_TYPES = {0x01: "branch", 0x02: "leaf", 0x04: "meta", 0x10: "freelist"}
_HEADER = struct.Struct("<QHHI")       # id, flags, count, overflow
_BUCKET_HEADER = struct.Struct("<QQ")  # root pgid, sequence
_FIRST_DATA_PAGE = 2                   # pages 0 and 1 are the metas

MAX_ATTEMPTS = 10
MAX_RUN_BYTES = 4 << 20                # largest single pread of adjacent pages
_PROBE_READ = 0x1000

# A record per page read: (BRANCH, overflow, pgid, children) or (LEAF, overflow, pgid, keys, values, subs),
# subs listing (element index, root pgid, sequence, inline leaf record or None) per sub-bucket.
BRANCH, LEAF = 0, 1


def _page_type(flags: int) -> str:
    return _PAGE_TYPES.get(flags, f"unknown ({flags:#06x})")


class Source:
    """The open file: positional reads only, so nothing we do moves, locks or maps it."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd

    def read(self, offset: int, size: int) -> bytes:
        try:
            return os.pread(self.fd, size, offset)
        except OSError as exc:
            raise Unavailable(f"{self.path}: cannot read {size} bytes at offset {offset}: {exc}") from None

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
        m = metapage.decode(src.read(page * page_size, page_size), page)
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
        stats = self.stats
        while frontier:
            wanted = {}
            following = []
            for pgid, parent in frontier:
                if pgid in records or pgid in wanted:
                    raise self._bad(pgid, parent, "reached twice (a cycle or a shared page)")
                record = cache.get(pgid)
                if record is None:
                    wanted[pgid] = parent
                else:
                    stats.pages_reused += 1
                    self._add(record, following)
            for pgid, record in self._fetch(wanted):
                self._add(record, following)
            frontier = following
        self._check_spans()

    def _add(self, record: tuple, following: list) -> None:
        pgid = record[2]
        self.records[pgid] = record
        if record[1]:
            self.spans.append((pgid, pgid + record[1]))
        self._follow(record, following)

    @staticmethod
    def _follow(record: tuple, out: list) -> None:
        pgid = record[2]
        if record[0] == BRANCH:
            out.extend([(child, pgid) for child in record[3]])
        else:
            out.extend([(sub[1], pgid) for sub in record[5] if sub[1]])

    def _bad(self, pgid: int, parent: int, message: str) -> Corrupted:
        where = "the meta's root bucket" if parent < 0 else f"page {parent}"
        return _corrupted(self.src, f"page {pgid} (referenced by {where}): {message}")

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

    def _read(self, pgid: int, parent: int, pages: int) -> bytes:
        size = pages * self.page_size
        data = self.src.read(pgid * self.page_size, size)
        self.stats.pages_read += pages
        self.stats.bytes_read += len(data)
        if len(data) != size:
            raise self._bad(pgid, parent, f"truncated: read {len(data)} of {size} bytes")
        return data

    def _fetch(self, wanted: dict):
        """Yield (pgid, record) for the wanted pages, reading runs of adjacent ids at once."""
        ps = self.page_size
        max_run = max(1, MAX_RUN_BYTES // ps)
        ids = sorted(wanted)
        n = len(ids)
        i = 0
        while i < n:
            first = ids[i]
            self._check_range(first, wanted[first], 0)
            j = i + 1
            while j < n and ids[j] == ids[j - 1] + 1 and ids[j] - first < max_run:
                self._check_range(ids[j], wanted[ids[j]], 0)
                j += 1
            run = self._read(first, wanted[first], ids[j - 1] - first + 1)
            for pgid in ids[i:j]:
                yield pgid, self._page(run, (pgid - first) * ps, pgid, wanted[pgid])
            i = j

    def _page(self, run: bytes, offset: int, pgid: int, parent: int) -> tuple:
        ps = self.page_size
        page_id, flags, count, overflow = _HEADER.unpack_from(run, offset)
        if page_id != pgid:
            raise self._bad(pgid, parent, f"its header names page {page_id}")
        if flags != BRANCH_FLAG and flags != LEAF_FLAG:
            raise self._bad(pgid, parent, f"is a {_page_type(flags)} page where a branch or leaf page belongs")
        if overflow:
            self._check_range(pgid, parent, overflow)
            run = self._read(pgid, parent, overflow + 1)
            offset = 0
        end = offset + (overflow + 1) * ps
        try:
            if flags == BRANCH_FLAG:
                return (BRANCH, overflow, pgid, bolt_branch(run, offset, end, count))
            keys, values, buckets = bolt_leaf(run, offset, end, count)
            return (LEAF, overflow, pgid, keys, values, self._sub_buckets(run, keys, buckets))
        except Corrupted as exc:
            raise self._bad(pgid, parent, f"{_page_type(flags)} page: {exc}") from None

    @staticmethod
    def _sub_buckets(buf: bytes, keys: list, buckets: list) -> list:
        subs = []
        for n in range(0, len(buckets), 3):
            index, start, end = buckets[n], buckets[n + 1], buckets[n + 2]
            if end - start < _BUCKET_HEADER.size:
                raise Corrupted(f"bucket {keys[index]!r}: a value of {end - start} bytes is no bucket header")
            root, sequence = _BUCKET_HEADER.unpack_from(buf, start)
            inline = None
            if root == 0:
                inline = _inline_page(buf, start + _BUCKET_HEADER.size, end, keys[index])
            subs.append((index, root, sequence, inline))
        return subs

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


def _inline_page(buf: bytes, start: int, end: int, name: bytes) -> tuple:
    """The leaf page an inline bucket (root pgid 0) holds in its value."""
    if end - start < _HEADER.size:
        raise Corrupted(f"inline bucket {name!r}: {end - start} bytes cannot hold a page header")
    _, flags, count, _ = _HEADER.unpack_from(buf, start)
    if flags != LEAF_FLAG:
        raise Corrupted(f"inline bucket {name!r}: holds a {_page_type(flags)} page, not a leaf page")
    try:
        keys, values, buckets = bolt_leaf(buf, start, end, count)
    except Corrupted as exc:
        raise Corrupted(f"inline bucket {name!r}: {exc}") from None
    if buckets:
        raise Corrupted(f"inline bucket {name!r}: holds a sub-bucket (bbolt never inlines those)")
    return (LEAF, 0, 0, keys, values, ())


def assemble(src: Source, meta: metapage.Meta, records: dict) -> Bucket:
    """Build the root Bucket and every bucket under it from the records of one walk."""
    root = Bucket(meta.sequence)
    todo = [(root, meta.root, None)]
    while todo:
        bucket, pgid, inline = todo.pop()
        leaves = [inline] if inline is not None else _leaves(records, pgid)
        if len(leaves) == 1:
            keys, values = leaves[0][3], leaves[0][4]
        else:
            keys, values = [], []
            for leaf in leaves:
                if keys and leaf[3] and not keys[-1] < leaf[3][0]:
                    raise _corrupted(src, f"page {leaf[2]}: leaf key {leaf[3][0]!r} does not sort after "
                                          f"the previous page's last key {keys[-1]!r}")
                keys += leaf[3]
                values += leaf[4]
        subs = {}
        for leaf in leaves:
            leaf_keys = leaf[3]
            for index, child_root, sequence, child_inline in leaf[5]:
                child = Bucket(sequence)
                subs[leaf_keys[index]] = child
                todo.append((child, child_root, child_inline))
        bucket._fill(keys, values, subs)
    return root


def _leaves(records: dict, pgid: int) -> list:
    """The leaf records under page `pgid`, in key order."""
    out = []
    todo = [pgid]
    while todo:
        record = records[todo.pop()]
        if record[0] == BRANCH:
            todo.extend(reversed(record[3]))
        else:
            out.append(record)
    return out


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
    first_txid = meta.txid
    stats = ReadStats()
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
