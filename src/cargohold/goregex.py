"""Regular expressions with the syntax and matching of Go's ``regexp`` (what
containerd's ``~=`` filters use), run by RE2 in time linear in the subject.

Python's ``re`` backtracks (``(a+)+$`` takes exponential time) and reads a
different syntax; Go's regexp is RE2 syntax, so the C++ RE2 engine (the
``google-re2`` binding) matches as Go does. Where they part, this module
follows Go 1.19 (compared with Go itself in tests/test_filters.py):

* C++ RE2 accepts what Go refuses: ``\\C``, ``(?<name>...)`` (Go 1.22 syntax),
  capture names that are not ASCII letters, digits and ``_``, the Unicode
  scripts added after Unicode 13, captures nested 1000 deep. `compile`
  refuses them.
* RE2's unanchored search may start inside a multi-byte character, where
  ``\\B`` holds; a pattern using ``\\B`` is searched from character starts.
* A subject that is not UTF-8 (surrogate escapes of raw bytes) is matched as
  Go matches those bytes: each invalid byte reads as U+FFFD. (Stored text is
  always UTF-8: `cargohold.validation` refuses anything else.)

Known differences left, all about limits: RE2 bounds each automaton by
memory (`MAX_MEM`) where Go counts instructions (a Unicode class is one), so
a pattern like ``\\pL{1000}`` that Go accepts is refused here; Go's limit on
the depth of the parse tree is followed for nested captures only; and code
points assigned after Unicode 13 are classified by RE2's newer tables.
"""

from __future__ import annotations

import codecs
import threading
from typing import Optional

import re2
from re2 import _re2  # the engine itself: re2's Python wrapper adds a global cache and per-call overhead

MAX_MEM = 8 << 20
"""Bytes RE2 may use for one compiled pattern (its default)."""

_CACHE_SIZE = 256
_CACHE_PROGRAM_LIMIT = 4096
"""Only patterns whose program has at most this many instructions are cached,
so hostile patterns cannot pin memory."""

_MAX_CAPTURE_DEPTH = 1000
"""Go refuses a parse tree more than 1000 deep; nested captures are its nodes."""

_NEWER_SCRIPTS = frozenset((
    # Unicode 14
    "Cypro_Minoan", "Old_Uyghur", "Tangsa", "Toto", "Vithkuqi",
    # Unicode 15
    "Kawi", "Nag_Mundari",
    # Unicode 16
    "Garay", "Gurung_Khema", "Kirat_Rai", "Ol_Onal", "Sunuwar", "Todhri", "Tulu_Tigalari",
    # Unicode 17
    "Beria_Erfe", "Chisoi", "Sidetic", "Tai_Yo", "Tolong_Siki",
))
"""Scripts newer than Go 1.19's Unicode 13 tables (a newer RE2 knows them)."""

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False
_OPTIONS.never_capture = True
_OPTIONS.max_mem = MAX_MEM

_RUNE_ERROR = "cargohold.go-rune-error"
codecs.register_error(_RUNE_ERROR, lambda exc: ("\ufffd" * (exc.end - exc.start), exc.end))


_UNANCHORED = _re2.RE2.Anchor.UNANCHORED
_ANCHOR_START = _re2.RE2.Anchor.ANCHOR_START
_NO_MATCH = (-1, -1)


class Regexp:
    """A compiled pattern; `search` is Go's ``MatchString``."""

    __slots__ = ("pattern", "_regexp", "_anchor")

    def __init__(self, pattern: str, regexp: "_re2.RE2", anchor: "_re2.RE2.Anchor") -> None:
        self.pattern = pattern
        self._regexp = regexp
        self._anchor = anchor

    def search(self, text: str) -> bool:
        """Whether the pattern matches anywhere in `text`."""
        try:
            subject = text.encode("utf-8")
        except UnicodeEncodeError:
            subject = go_bytes(text)
        return self._regexp.Match(self._anchor, subject, 0, len(subject))[0] != _NO_MATCH


def go_bytes(text: str) -> bytes:
    """UTF-8 that reads as Go reads the bytes `text` stands for: each byte of an
    invalid sequence (a surrogate escape) becomes U+FFFD."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", _RUNE_ERROR).encode("utf-8")


_cache: dict[str, Regexp] = {}
_cache_lock = threading.Lock()


def compile(pattern: str) -> Regexp:
    """The compiled pattern; ValueError saying why when Go's regexp.Compile would refuse it."""
    hit = _cache.get(pattern)
    if hit is not None:
        return hit
    try:
        encoded = pattern.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("invalid UTF-8") from None
    scan = _Scan(pattern)
    if scan.refusal is not None:
        raise ValueError(scan.refusal)
    regexp = _re2.RE2(encoded, _OPTIONS)
    if not regexp.ok():
        raise ValueError(regexp.error().decode("utf-8", "replace"))
    anchor = _UNANCHORED
    if scan.not_word_boundary:
        # RE2's unanchored search may start inside a multi-byte character, where \B
        # holds; Go starts only between characters. A leading lazy (?s:.) loop does too.
        regexp = _re2.RE2(b"(?s:.)*?(?:" + encoded + (b"\\E)" if scan.open_quote else b")"), _OPTIONS)
        if not regexp.ok():
            raise ValueError(regexp.error().decode("utf-8", "replace"))
        anchor = _ANCHOR_START
    compiled = Regexp(pattern, regexp, anchor)
    if regexp.ProgramSize() <= _CACHE_PROGRAM_LIMIT:
        with _cache_lock:
            if len(_cache) >= _CACHE_SIZE:
                _cache.pop(next(iter(_cache)), None)
            _cache[pattern] = compiled
    return compiled


def go_refusal(pattern: str) -> Optional[str]:
    """Why Go 1.19 refuses `pattern` although C++ RE2 may accept it, or None.

    Only the constructs listed in the module docstring are looked at; RE2
    reports every other error.
    """
    return _Scan(pattern).refusal


class _Scan:
    """One pass over a pattern: what Go refuses, whether it uses ``\\B``, whether it ends inside ``\\Q``."""

    __slots__ = ("refusal", "not_word_boundary", "open_quote")

    def __init__(self, pattern: str) -> None:
        self.not_word_boundary = False
        self.open_quote = False
        self.refusal = self._scan(pattern)

    def _scan(self, pattern: str) -> Optional[str]:
        i, n = 0, len(pattern)
        groups: list[bool] = []  # one per open parenthesis: is it a capture?
        depth = 0
        in_class = False
        while i < n:
            ch = pattern[i]
            if ch == "\\":
                nxt = pattern[i + 1:i + 2]
                if nxt == "Q" and not in_class:
                    end = pattern.find("\\E", i + 2)
                    if end < 0:
                        self.open_quote = True  # literal text to the end
                        return None
                    i = end + 2
                    continue
                if nxt == "C":
                    return r"invalid escape sequence: \C"
                if nxt == "B" and not in_class:
                    self.not_word_boundary = True
                if nxt in ("p", "P") and pattern.startswith("{", i + 2):
                    end = pattern.find("}", i + 3)
                    name = pattern[i + 3:end].lstrip("^") if end >= 0 else ""
                    if name in _NEWER_SCRIPTS:
                        return f"invalid character class range: \\{nxt}{{{pattern[i + 3:end]}}}"
                i += 2
                continue
            if in_class:
                if ch == "]":
                    in_class = False
                elif pattern.startswith("[:", i):
                    end = pattern.find(":]", i + 2)
                    if end >= 0:
                        i = end + 2
                        continue
                i += 1
                continue
            if ch == "[":
                in_class = True
                i += 1
                if pattern.startswith("^", i):
                    i += 1
                if pattern.startswith("]", i):
                    i += 1  # a leading ] is a literal
                continue
            if ch == "(":
                capture = True
                if pattern.startswith("(?", i):
                    capture = False
                    if pattern.startswith("(?P<", i):
                        end = pattern.find(">", i + 4)
                        name = pattern[i + 4:end] if end >= 0 else ""
                        if end >= 0 and not _capture_name(name):
                            return f"invalid named capture: {pattern[i:end + 1]}"
                        capture = True
                    elif pattern.startswith("(?<", i) and not pattern.startswith(("(?<=", "(?<!"), i):
                        return "invalid or unsupported Perl syntax: (?< (Go 1.19 names groups (?P<name>...))"
                    else:
                        j = i + 2
                        while j < n and pattern[j] not in ":)":
                            j += 1
                        if pattern.startswith(")", j):
                            i = j + 1  # (?flags) opens no group
                            continue
                groups.append(capture)
                if capture:
                    depth += 1
                    if depth >= _MAX_CAPTURE_DEPTH:
                        return "expression nests too deeply"
            elif ch == ")" and groups:
                if groups.pop():
                    depth -= 1
            i += 1
        return None


def _capture_name(name: str) -> bool:
    return bool(name) and name.isascii() and all(c == "_" or c.isalnum() for c in name)
