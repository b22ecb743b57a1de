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
contains dots. Stores match objects through an *adaptor*: a function from a
field path to ``(value, present)``; `adaptor` builds the usual one.
"""

from __future__ import annotations

import re
from typing import Callable, Mapping, Optional, Sequence

from .errors import InvalidArgument

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


def _unquote(token: str) -> str:
    """Go's strconv.Unquote, with / and | accepted as double quotes (containerd's variant)."""
    quote, body = token[0], token[1:-1]
    if len(token) < 2 or token[-1] != quote or "\n" in body:
        raise ValueError("quote syntax error")
    out = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == quote:
            raise ValueError("quote syntax error")
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        if i + 1 >= len(body):
            raise ValueError("quote syntax error")
        esc = body[i + 1]
        i += 2
        if esc in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[esc])
        elif esc in "xuU":
            n = {"x": 2, "u": 4, "U": 8}[esc]
            digits = body[i:i + n]
            if len(digits) < n or not re.fullmatch(r"[0-9a-fA-F]+", digits):
                raise ValueError("quote syntax error")
            code = int(digits, 16)
            if code > 0x10FFFF:
                raise ValueError("quote syntax error")
            out.append(chr(code))
            i += n
        elif esc in "01234567":
            digits = esc + body[i:i + 2]
            if len(digits) < 3 or not re.fullmatch(r"[0-7]{3}", digits) or int(digits, 8) > 255:
                raise ValueError("quote syntax error")
            out.append(chr(int(digits, 8)))
            i += 2
        elif esc in "'\"|/" and esc == quote:
            out.append(esc)
        else:
            raise ValueError("quote syntax error")
    return "".join(out)


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
        return self.regex.search(value) is not None


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
                regex = re.compile(value)
            except re.error as exc:
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
