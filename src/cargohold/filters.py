"""containerd's filter language, for every ``list``/``walk``.

A filter is comma-separated selectors, all of which must match (AND);
several filter arguments match when any of them does (OR)::

    selectors := selector ("," selector)*
    selector  := fieldpath (operator value)?
    fieldpath := field ("." field)*
    field     := quoted | [A-Za-z0-9_-]+
    operator  := "==" | "!=" | "~="
    value     := quoted | [^\\s,]+
    quoted    := "..." | /.../ | |...|   (Go string escapes)

A bare field path tests for presence. ``labels."a.b"==x`` quotes a key that
contains dots. ``~=`` takes a regular expression in Go's syntax, matched as Go
matches it and in linear time (`cargohold.goregex`). Stores match objects through an *adaptor*: a function from a
field path to ``(value, present)``; `adaptor` builds the usual one.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

from .errors import InvalidArgument
from .validation import escape_controls, require_str

Adaptor = Callable[[Sequence[str]], "tuple[str, bool]"]

_EOF = "EOF"
_QUOTED, _VALUE, _FIELD, _SEP, _OP, _ILLEGAL = "quoted", "value", "field", "separator", "operator", "illegal"
_QUOTES = '/|"'
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def _is_field(ch: str) -> bool:
    return ch == "-" or ch == "_" or ("A" <= ch <= "Z") or ("a" <= ch <= "z") or ("0" <= ch <= "9")


def _is_value(ch: str) -> bool:
    return ch != "," and not ch.isspace() and ch.isprintable()


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.value = False

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else _EOF

    def scan(self) -> tuple[int, str, str]:
        text = self.text
        while self.pos < len(text) and text[self.pos].isspace():
            self.pos += 1
        start = self.pos
        if start >= len(text):
            return start, _EOF, ""
        ch = text[start]
        self.pos += 1
        if ch == "\x00":
            return start, _ILLEGAL, ch
        if ch in _QUOTES:
            end = self._scan_quoted(ch)
            if end is None:
                return start, _ILLEGAL, text[start:self.pos]
            return start, _QUOTED, text[start:self.pos]
        if ch in ",.":
            self.value = False
            return start, _SEP, ch
        if ch in "=!~":
            while self.peek() in ("=", "!", "~"):
                self.pos += 1
            self.value = True
            return start, _OP, text[start:self.pos]
        if self.value:
            while self.pos < len(text) and _is_value(text[self.pos]):
                self.pos += 1
            self.value = False
            return start, _VALUE, text[start:self.pos]
        if _is_field(ch):
            while self.pos < len(text) and _is_field(text[self.pos]):
                self.pos += 1
            return start, _FIELD, text[start:self.pos]
        return start, ch, ch

    def _scan_quoted(self, quote: str) -> Optional[int]:
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            if ch == "\n":
                return None
            self.pos += 1
            if ch == "\\":
                self.pos += 1
            elif ch == quote:
                return self.pos
        return None


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_ESCAPE_WIDTH = {"x": 2, "u": 4, "U": 8}


def _unquote(token: str) -> str:
    """containerd's unquote (Go's strconv.Unquote with / and | as double quotes).

    As in Go, ``\\x`` and octal escapes stand for bytes and ``\\u``/``\\U``
    for code points (a surrogate becomes U+FFFD); bytes that are not UTF-8
    come back as surrogate escapes, which match no stored text.
    """
    quote, body = token[0], token[1:-1]
    if len(token) < 2 or token[-1] != quote or "\n" in body:
        raise ValueError("quote syntax error")
    if "\\" not in body:
        if quote in body:
            raise ValueError("quote syntax error")
        return body
    out = bytearray()
    i, n = 0, len(body)
    while i < n:
        slash = body.find("\\", i)
        plain = body[i:] if slash < 0 else body[i:slash]
        if quote in plain:
            raise ValueError("quote syntax error")
        out += plain.encode("utf-8")
        if slash < 0:
            break
        if slash + 1 >= n:
            raise ValueError("quote syntax error")
        esc = body[slash + 1]
        i = slash + 2
        if esc in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[esc].encode()
        elif esc in _ESCAPE_WIDTH:
            width = _ESCAPE_WIDTH[esc]
            digits = body[i:i + width]
            if len(digits) < width or not _HEX_DIGITS.issuperset(digits):
                raise ValueError("quote syntax error")
            code = int(digits, 16)
            i += width
            if esc == "x":
                out.append(code)
                continue
            if code > 0x10FFFF:
                raise ValueError("quote syntax error")
            out += ("\ufffd" if 0xD800 <= code <= 0xDFFF else chr(code)).encode("utf-8")
        elif esc in "01234567":
            digits = body[slash + 1:slash + 4]
            if len(digits) < 3 or not all("0" <= d <= "7" for d in digits) or int(digits, 8) > 255:
                raise ValueError("quote syntax error")
            out.append(int(digits, 8))
            i = slash + 4
        elif esc in "\"|/" and esc == quote:
            out += esc.encode()
        else:
            raise ValueError("quote syntax error")
    return out.decode("utf-8", "surrogateescape")


class _Selector:
    __slots__ = ("fieldpath", "op", "value", "regex")

    def __init__(self, fieldpath: list, op: Optional[str], value: str = "", regex=None) -> None:
        self.fieldpath = fieldpath
        self.op = op
        self.value = value
        self.regex = regex

    def match(self, adaptor: Adaptor) -> bool:
        value, present = adaptor(self.fieldpath)
        if self.op is None:
            return present
        if self.op == "==":
            return present and value == self.value
        if self.op == "!=":
            return value != self.value
        return self.regex.search(value)


class Filter:
    """A parsed filter: ``match(adaptor)`` is True when the object passes."""

    def __init__(self, alternatives: list) -> None:
        self._alternatives = alternatives  # OR of ANDs; empty means "match everything"

    def match(self, adaptor: Adaptor) -> bool:
        if not self._alternatives:
            return True
        return any(all(s.match(adaptor) for s in sels) for sels in self._alternatives)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.scanner = _Scanner(text)

    def error(self, pos: int, msg: str) -> InvalidArgument:
        text = self.text
        if pos < len(text):
            where = f"[{text[:pos]} >|{text[pos]}|< {text[pos + 1:]}]"
        else:
            where = f"[{text}]"
        where = escape_controls(where)
        return InvalidArgument(f"invalid filter {text!r}: parse error at position {pos}: {where}: {msg}")

    def peek_token(self) -> str:
        sc = self.scanner
        saved = sc.pos, sc.value
        _, tok, text = sc.scan()
        sc.pos, sc.value = saved
        return text if tok == _SEP else tok

    def parse(self) -> list:
        selectors = [self.selector()]
        while True:
            tok = self.peek_token()
            if tok == ",":
                self.scanner.scan()
                selectors.append(self.selector())
            elif tok == _EOF:
                return selectors
            else:
                pos, _, text = self.scanner.scan()
                raise self.error(pos, f"unexpected input: {text}")

    def selector(self) -> _Selector:
        fieldpath = self.fieldpath()
        if self.peek_token() in (",", _EOF):
            return _Selector(fieldpath, None)
        pos, tok, text = self.scanner.scan()
        if tok != _OP:
            raise self.error(pos, 'expected an operator ("=="|"!="|"~=")')
        if text not in ("==", "!=", "~="):
            raise self.error(pos, f"unsupported operator {text!r}")
        vpos, vtok, vtext = self.scanner.scan()
        if vtok in (_VALUE, _FIELD):
            value = vtext
        elif vtok == _QUOTED:
            value = self.unquote(vpos, vtext)
        elif vtok == _EOF:
            raise self.error(vpos, "unexpected end of filter: expected a value")
        else:
            raise self.error(vpos, "expected value or quoted")
        regex = None
        if text == "~=":
            try:
                from . import goregex  # the regex engine loads only for a ~= filter

                regex = goregex.compile(value)
            except ValueError as exc:
                raise self.error(vpos, f"bad regular expression {value!r}: {exc}") from None
        return _Selector(fieldpath, text, value, regex)

    def fieldpath(self) -> list:
        fields = [self.field()]
        while self.peek_token() == ".":
            self.scanner.scan()
            fields.append(self.field())
        return fields

    def field(self) -> str:
        pos, tok, text = self.scanner.scan()
        if tok == _FIELD:
            return text
        if tok == _QUOTED:
            return self.unquote(pos, text)
        raise self.error(pos, "expected field or quoted")

    def unquote(self, pos: int, text: str) -> str:
        try:
            return _unquote(text)
        except ValueError as exc:
            raise self.error(pos, f"unquoting failed: {exc}") from None


def parse(*filters: str) -> Filter:
    """Parse filter arguments (OR of them); none, or an empty string, matches everything."""
    alternatives = []
    for text in filters:
        if not isinstance(text, str):
            raise InvalidArgument(f"filter must be a string, not {text!r}")
        require_str(text, "filter")
        if text == "":
            return Filter([])
        alternatives.append(_Parser(text).parse())
    return Filter(alternatives)


def check_map(fieldpath: Sequence[str], mapping: Optional[Mapping[str, str]]) -> tuple[str, bool]:
    """Look a key up in a label-like map; the rest of the path joined by dots is the key,
    so ``labels.a.b`` and ``labels."a.b"`` both find the label ``a.b`` (as containerd)."""
    if not mapping:
        return "", False
    value = mapping.get(".".join(fieldpath))
    return ("", False) if value is None else (value, True)


def adaptor(fields: Mapping[str, str], maps: Optional[Mapping[str, Mapping[str, str]]] = None) -> Adaptor:
    """An adaptor over plain fields (``{"name": ..., "target.digest": ...}``) and
    maps (``{"labels": {...}}``); a field is present when non-empty."""

    def lookup(fieldpath: Sequence[str]) -> tuple[str, bool]:
        if not fieldpath:
            return "", False
        if maps and fieldpath[0] in maps:
            return check_map(fieldpath[1:], maps[fieldpath[0]])
        value = fields.get(".".join(fieldpath))
        return ("", False) if not value else (value, True)

    return lookup
