"""Reading tar headers from untrusted archives: bounded, linear, and as Go's archive/tar reads them.

The standard library's reader trusts the archive: it reads a GNU long name or
a PAX header of whatever size the header declares into memory, parses PAX
records with regular expressions that take quadratic time on crafted input
in the Python releases we support, and follows a chain of extension headers
by recursion. `SafeTarFile` (and its `SafeTarInfo`) replaces that header
processing, for layers and image archives alike, with the rules of Go's
archive/tar, the reader containerd uses:

- a GNU long name or link, a PAX extended or global header and a sparse map
  are each at most `MAX_RECORD` bytes, refused before they are read;
- PAX records are parsed in one linear pass and validated (lengths, framing,
  no NUL in a key or a name, numbers that are numbers);
- at most `MAX_EXTENSIONS` extension headers precede an entry;
- the last PAX extended header before an entry applies to it, a GNU long
  name or link overrides its path; global headers are checked and ignored,
  as containerd ignores them;
- a sparse member (old GNU, PAX 0.0, 0.1 and 1.0) gets a map that must be in
  order, inside the file, and cover exactly the data the archive stores.

A damaged header raises InvalidArgument naming the archive where the
standard library would take it for the end of the archive.
"""

from __future__ import annotations

import tarfile
from tarfile import BLOCKSIZE
from typing import Optional

from ..errors import InvalidArgument

MAX_RECORD = 1 << 20
"""Largest GNU long name or link, PAX header or sparse map read (Go's limit too)."""

MAX_EXTENSIONS = 16
"""Most extension headers (GNU long names and links, PAX headers) before one entry."""

_MAX_INT64 = (1 << 63) - 1
_LONG_TYPES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
_PAX_TYPES = (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE)
_HEADER_ONLY_TYPES = (tarfile.LNKTYPE, tarfile.SYMTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.DIRTYPE,
                      tarfile.FIFOTYPE)
_GNU_MAGIC = b"ustar  \0"
_SPARSE_MAP = "GNU.sparse.map"
_SPARSE_0_0 = (b"GNU.sparse.offset", b"GNU.sparse.numbytes")


def _block(size: int) -> int:
    return -(-size // BLOCKSIZE) * BLOCKSIZE


def parse_pax(data: bytes, what: str) -> list:
    """The (keyword, value) byte pairs of PAX records ``"<length> <keyword>=<value>\\n"``, in one pass.

    Parsing stops at a NUL where a record would start (padding), as the
    standard library does. InvalidArgument naming `what` for a malformed record.
    """
    records = []
    pos, end = 0, len(data)
    while pos < end and data[pos] != 0:
        space = data.find(b" ", pos, min(end, pos + 21))
        digits = data[pos:space] if space > pos else b""
        stop = pos + int(digits) if digits.isdigit() else -1
        if stop <= space + 1 or stop > end or data[stop - 1] != 0x0A:
            raise InvalidArgument(f"{what}: malformed PAX record at byte {pos} of its header")
        keyword, equals, value = data[space + 1:stop - 1].partition(b"=")
        if not keyword or not equals or b"\0" in keyword:
            raise InvalidArgument(f"{what}: malformed PAX record at byte {pos} of its header")
        records.append((keyword, value))
        pos = stop
    return records


def _number(value: str, what: str, key: str) -> int:
    if not (value.isascii() and value.isdigit() and len(value) <= 19) or int(value) > _MAX_INT64:
        raise InvalidArgument(f"{what}: PAX record {key}={value[:40]!r} is not a valid number")
    return int(value)


def _time_ns(value: str, what: str, key: str) -> int:
    """A PAX time ("[-]seconds[.fraction]") in nanoseconds, exactly (digits past the ninth are dropped)."""
    sign, body = (-1, value[1:]) if value.startswith("-") else (1, value)
    seconds, _, fraction = body.partition(".")
    if not (seconds.isascii() and seconds.isdigit() and len(seconds) <= 19) or not (
            fraction == "" or (fraction.isascii() and fraction.isdigit())):
        raise InvalidArgument(f"{what}: PAX record {key}={value[:40]!r} is not a valid time")
    return sign * (int(seconds) * 1_000_000_000 + int((fraction[:9] or "0").ljust(9, "0")))


def _sparse_entries(block: bytes, start: int, count: int, what: str) -> list:
    """Old GNU sparse entries (12-byte offset, 12-byte length) from `block`, up to the first empty one."""
    entries = []
    for i in range(count):
        pos = start + 24 * i
        if block[pos] == 0:
            break
        try:
            entries.append((tarfile.nti(block[pos:pos + 12]), tarfile.nti(block[pos + 12:pos + 24])))
        except tarfile.HeaderError:
            raise InvalidArgument(f"{what}: invalid GNU sparse header") from None
    return entries


class SafeTarInfo(tarfile.TarInfo):
    """A TarInfo read by the rules above; `mtime_ns` is its exact modification time in nanoseconds."""

    mtime_ns = 0

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> "SafeTarInfo":
        what = getattr(tar, "what", "tar archive")
        source = tar.fileobj
        records: Optional[list] = None
        long_name = long_link = None
        start: Optional[int] = None
        for _ in range(MAX_EXTENSIONS + 1):
            offset = source.tell()
            header, buf = cls._header(tar, what, offset, pending=start is not None)
            if header.type not in _LONG_TYPES + _PAX_TYPES + (tarfile.XGLTYPE,):
                break
            data = cls._record(source, header, what, offset)
            if header.type == tarfile.XGLTYPE:
                parse_pax(data, what)  # checked, then ignored; what came before it no longer applies
                records, long_name, long_link, start = None, None, None, None
                continue
            if header.type == tarfile.GNUTYPE_LONGNAME:
                long_name = tarfile.nts(data, tar.encoding, tar.errors)
            elif header.type == tarfile.GNUTYPE_LONGLINK:
                long_link = tarfile.nts(data, tar.encoding, tar.errors)
            else:
                records = parse_pax(data, f"{what}: PAX header at offset {offset}")
            if start is None:
                start = offset
        else:
            raise InvalidArgument(f"{what}: more than {MAX_EXTENSIONS} extension headers in a row at offset "
                                  f"{offset}")
        header.offset = offset if start is None else start
        header._complete(tar, what, buf, cls._pax_headers(tar, what, records or []), long_name, long_link)
        return header

    @classmethod
    def _header(cls, tar: tarfile.TarFile, what: str, offset: int, pending: bool) -> tuple:
        buf = tar.fileobj.read(BLOCKSIZE)
        try:
            header = cls.frombuf(buf, tar.encoding, tar.errors)
        except (tarfile.TruncatedHeaderError, tarfile.InvalidHeaderError) as exc:
            raise InvalidArgument(f"{what}: invalid tar header at offset {offset}: {exc}") from None
        except tarfile.HeaderError:
            if pending:
                raise InvalidArgument(f"{what}: the archive ends after an extension header, "
                                      f"at offset {offset}") from None
            raise  # the end of the archive
        if buf[257:265] == _GNU_MAGIC and header.type not in _LONG_TYPES + (tarfile.GNUTYPE_SPARSE,):
            # GNU headers keep times where ustar has a name prefix: the name is the first field alone
            header.name = tarfile.nts(buf[0:100], tar.encoding, tar.errors)
            if header.isdir():
                header.name = header.name.rstrip("/")
        if header.size < 0:
            raise InvalidArgument(f"{what}: tar header at offset {offset} has a negative size")
        return header, buf

    @staticmethod
    def _record(source, header: tarfile.TarInfo, what: str, offset: int) -> bytes:
        kinds = {tarfile.GNUTYPE_LONGNAME: "GNU long name", tarfile.GNUTYPE_LONGLINK: "GNU long link name",
                 tarfile.XGLTYPE: "PAX global header"}
        kind = kinds.get(header.type, "PAX header")
        if header.size > MAX_RECORD:
            raise InvalidArgument(f"{what}: {kind} of {header.size} bytes at offset {offset} is larger than "
                                  f"the limit of {MAX_RECORD} bytes for a tar header record")
        data = source.read(header.size)
        padding = _block(header.size) - header.size
        if len(data) != header.size or len(source.read(padding)) != padding:
            raise InvalidArgument(f"{what}: the archive ends inside the {kind} at offset {offset}")
        return data

    @staticmethod
    def _pax_headers(tar: tarfile.TarFile, what: str, records: list) -> dict:
        """Decoded PAX records (as the standard library decodes them); PAX 0.0 sparse pairs become a map."""
        binary = next((value for key, value in records if key == b"hdrcharset"), None) == b"BINARY"
        headers: dict = {}
        sparse: list = []
        for raw_key, raw_value in records:
            key = _decode(raw_key, "utf-8", "utf-8", tar.errors)
            if key in tarfile.PAX_NAME_FIELDS:
                value = _decode(raw_value, tar.encoding if binary else "utf-8", tar.encoding, tar.errors)
                if "\0" in value:
                    raise InvalidArgument(f"{what}: PAX record {key!r} holds a NUL byte")
            else:
                value = _decode(raw_value, "utf-8", "utf-8", tar.errors)
            if raw_key in _SPARSE_0_0:
                if _SPARSE_0_0.index(raw_key) != len(sparse) % 2:
                    raise InvalidArgument(f"{what}: PAX sparse records out of order")
                sparse.append(value)
                continue
            headers[key] = value
        if sparse:
            headers[_SPARSE_MAP] = ",".join(sparse)
        return headers

    def _complete(self, tar: tarfile.TarFile, what: str, buf: bytes, headers: dict, long_name: Optional[str],
                  long_link: Optional[str]) -> None:
        """Apply the extension headers, read a sparse map, and place the archive at the next header."""
        what = f"{what}: entry {self.name!r}"
        stored = self.size
        self.mtime_ns = self.mtime * 1_000_000_000
        for key, value in headers.items():
            if key == "path":
                self.name = value
            elif key == "linkpath":
                self.linkname = value
            elif key in ("uname", "gname"):
                setattr(self, key, value)
            elif key in ("uid", "gid"):
                setattr(self, key, _number(value, what, key))
            elif key == "size":
                stored = _number(value, what, key)
            elif key == "mtime":
                self.mtime_ns = _time_ns(value, what, key)
                self.mtime = self.mtime_ns / 1_000_000_000
        if long_name is not None:
            self.name = long_name
        if long_link is not None:
            self.linkname = long_link
        if self.type == tarfile.AREGTYPE and self.name.endswith("/"):
            self.type = tarfile.DIRTYPE
        if self.isdir():
            self.name = self.name.rstrip("/")
        self.pax_headers = headers
        source = tar.fileobj
        data_start = source.tell()
        has_data = self.type not in _HEADER_ONLY_TYPES
        tar.offset = data_start + (_block(stored) if has_data else 0)
        sparse = self._sparse(source, what, buf, headers, stored)
        if sparse is None:
            self.size = stored
            self.offset_data = data_start
            return
        self.sparse, self.size, data_size = sparse
        if self.type == tarfile.GNUTYPE_SPARSE:  # extension blocks come before the data, outside its size
            tar.offset = source.tell() + _block(stored)
        self.offset_data = source.tell()
        _check_sparse(self.sparse, self.size, data_size, what)

    def _sparse(self, source, what: str, buf: bytes, headers: dict, stored: int) -> Optional[tuple]:
        """(map, real size, bytes of data stored) of a sparse member, None for any other."""
        if self.type == tarfile.GNUTYPE_SPARSE:
            entries = _sparse_entries(buf, 386, 4, what)
            extended = buf[482] != 0
            try:
                real_size = tarfile.nti(buf[483:495])
            except tarfile.HeaderError:
                raise InvalidArgument(f"{what}: invalid GNU sparse header") from None
            read = 0
            while extended:
                read += BLOCKSIZE
                block = source.read(BLOCKSIZE)
                if read > MAX_RECORD or len(block) != BLOCKSIZE:
                    raise InvalidArgument(f"{what}: the GNU sparse map is truncated or larger than "
                                          f"{MAX_RECORD} bytes")
                entries += _sparse_entries(block, 0, 21, what)
                extended = block[504] != 0
            return entries, real_size, stored
        major, minor = headers.get("GNU.sparse.major"), headers.get("GNU.sparse.minor")
        if (major, minor) == ("1", "0"):
            entries, map_size = _sparse_map_1_0(source, what)
            data_size = stored - map_size
            if data_size < 0:
                raise InvalidArgument(f"{what}: the GNU sparse map is larger than the entry")
        elif (major == "0" and minor in ("0", "1")) or (major is None and minor is None and _SPARSE_MAP in headers):
            entries, data_size = _sparse_map_0_x(headers, what), stored
        else:
            return None  # not sparse, or a GNU sparse version Go does not know either
        if headers.get("GNU.sparse.name"):
            self.name = headers["GNU.sparse.name"]
        size = headers.get("GNU.sparse.size", headers.get("GNU.sparse.realsize"))
        return entries, stored if size is None else _number(size, what, "GNU.sparse.size"), data_size


def _decode(raw: bytes, encoding: str, fallback: str, errors: str) -> str:
    try:
        return raw.decode(encoding, "strict")
    except UnicodeDecodeError:
        return raw.decode(fallback, errors)


def _numbers(tokens: list, what: str) -> list:
    if not all(t.isascii() and t.isdigit() and len(t) <= 19 for t in tokens):
        raise InvalidArgument(f"{what}: invalid GNU sparse map")
    return [int(t) for t in tokens]


def _sparse_map_0_x(headers: dict, what: str) -> list:
    text = headers.get(_SPARSE_MAP, "")
    numbers = _numbers(text.split(",") if text else [], what)
    count = headers.get("GNU.sparse.numblocks")
    if len(numbers) % 2 or (count is not None and _number(count, what, "GNU.sparse.numblocks") * 2 != len(numbers)):
        raise InvalidArgument(f"{what}: invalid GNU sparse map")
    return list(zip(numbers[::2], numbers[1::2]))


def _sparse_map_1_0(source, what: str) -> tuple:
    """The map PAX 1.0 sparse files keep at the start of their data (newline-separated numbers), and its size."""
    data = bytearray()
    lines, wanted = 0, None
    while wanted is None or lines < wanted:
        block = source.read(BLOCKSIZE)
        if len(data) + BLOCKSIZE > MAX_RECORD or len(block) != BLOCKSIZE:
            raise InvalidArgument(f"{what}: the GNU sparse map is truncated or larger than {MAX_RECORD} bytes")
        data += block
        lines += block.count(b"\n")
        if wanted is None and lines:
            count = _numbers([bytes(data[:data.index(b"\n")]).decode("ascii", "replace")], what)[0]
            wanted = 1 + 2 * count
    numbers = _numbers([t.decode("ascii", "replace") for t in bytes(data).split(b"\n", wanted)[1:wanted]], what)
    return list(zip(numbers[::2], numbers[1::2])), len(data)


def _check_sparse(entries: list, size: int, data_size: int, what: str) -> None:
    """Entries in order, not overlapping, inside the file, and together exactly the data stored."""
    if size < 0:
        raise InvalidArgument(f"{what}: invalid GNU sparse map")
    end = 0
    for offset, length in entries:
        if offset < end or length < 0 or offset + length > size:
            raise InvalidArgument(f"{what}: invalid GNU sparse map")
        end = offset + length
    if sum(length for _, length in entries) != data_size:
        raise InvalidArgument(f"{what}: the GNU sparse map does not match the {data_size} bytes stored")


class SafeTarFile(tarfile.TarFile):
    """A TarFile that reads headers with `SafeTarInfo`; `what` names the archive in its errors.

    Open it as a TarFile: ``SafeTarFile.open(fileobj=f, mode="r|", what="layer ...")``.
    """

    tarinfo = SafeTarInfo

    def __init__(self, *args, what: str = "tar archive", **kwargs) -> None:
        self.what = what
        super().__init__(*args, **kwargs)
