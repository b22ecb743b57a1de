"""containerd's filter language."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cargohold import errors, filters

OBJ = filters.adaptor(
    {"name": "docker.io/library/alpine:3.19", "target.digest": "sha256:abc", "target.mediatype": "m",
     "empty": ""},
    {"labels": {"a": "1", "a.b": "dotted", "with space": "v v", "empty": ""}},
)

CASES = [
    ("", True),
    ("name", True),
    ("empty", False),
    ("missing", False),
    ("name==docker.io/library/alpine:3.19", True),
    ('name=="docker.io/library/alpine:3.19"', True),
    ("name==alpine", False),
    ("name!=alpine", True),
    ("missing!=x", True),
    ("name~=alpine", True),
    ("name~=^alpine", False),
    ("name~=/^docker\\.io/", None),  # \. is not a legal escape in containerd's quoting
    ("name~=|alpine:3\\.1[0-9]|", None),
    ("name~=/alpine:3.1[0-9]$/", True),
    ("target.digest==sha256:abc", True),
    ("target.mediatype==m,target.digest==sha256:abc", True),
    ("target.mediatype==m,target.digest==nope", False),
    ("labels.a==1", True),
    ("labels.a", True),
    ("labels.a.b==dotted", True),  # containerd joins the rest of the path with dots
    ('labels."a.b"==dotted', True),
    ('labels."with space"=="v v"', True),
    ("labels.empty", True),
    ("labels.empty==", None),
    ("labels", False),
    ("  name  ==  docker.io/library/alpine:3.19  ", True),
]


@pytest.mark.parametrize("expr,expected", CASES)
def test_table(expr, expected):
    if expected is None:
        with pytest.raises(errors.InvalidArgument):
            filters.parse(expr)
        return
    assert filters.parse(expr).match(OBJ) is expected


def test_arguments_are_or():
    assert filters.parse("name==x", "labels.a==1").match(OBJ)
    assert not filters.parse("name==x", "labels.a==2").match(OBJ)
    assert filters.parse().match(OBJ)
    assert filters.parse("name==x", "").match(OBJ)


@pytest.mark.parametrize("expr,position", [
    ("name==", 6),
    ("name=foo", 4),
    ("==x", 0),
    ("name==foo,", 10),
    ("name==foo bar", 10),
    ('name=="unterminated', 6),
    ("name~=/[/", 6),
    ("labels.", 7),
    ('name=="bad\\q"', 6),
    ("na$me", 2),
])
def test_syntax_errors_name_the_position(expr, position):
    with pytest.raises(errors.InvalidArgument) as info:
        filters.parse(expr)
    assert f"position {position}" in str(info.value)
    assert repr(expr) in str(info.value)


def test_quoted_escapes():
    obj = filters.adaptor({"name": 'a"b\n'})
    assert filters.parse('name=="a\\"b\\n"').match(obj)
    assert filters.parse('name=="\\x61\\u0022b\\012"').match(obj)


def test_non_string_filter():
    with pytest.raises(errors.InvalidArgument):
        filters.parse(3)


def test_go_quoting_builds_bytes():
    """\\x and octal escapes are bytes, \\u a code point (a surrogate reads as U+FFFD), as containerd unquotes."""
    assert filters.parse('name=="\\xc3\\xa9"').match(filters.adaptor({"name": "\u00e9"}))
    assert filters.parse('name=="\\303\\251"').match(filters.adaptor({"name": "\u00e9"}))
    assert not filters.parse('name=="\\xc3\\xa9"').match(filters.adaptor({"name": "\u00c3\u00a9"}))
    assert filters.parse('name=="\\ud800"').match(filters.adaptor({"name": "\ufffd"}))
    assert filters.parse('name=="\\xff"').match(filters.adaptor({"name": "\udcff"}))  # the byte itself
    assert not filters.parse('name=="\\xff"').match(filters.adaptor({"name": "\u00ff"}))


def test_regex_matches_as_go():
    """`~=` is Go's regexp, not Python's: $ is the end of the text, \\Z and lookarounds are errors."""
    obj = filters.adaptor({"name": "ab\n"})

    def regex(pattern: str) -> filters.Filter:
        return filters.parse("name~=" + filter_value(pattern.encode()))

    assert not regex("b$").match(obj)  # Python's $ also matches before a final newline
    assert regex("(?m)b$").match(obj)
    assert regex("\\z").match(obj)
    assert regex("\\pL").match(obj)  # Python's re has no \\pL
    assert regex("(?P<x>a)b").match(obj)
    for pattern in ("b\\Z", "(?=a)", "(a)\\1", "a{1001}", "(?<x>a)", "\\C"):
        expr = "name~=" + filter_value(pattern.encode())
        with pytest.raises(errors.InvalidArgument, match="bad regular expression") as info:
            filters.parse(expr)
        assert repr(expr) in str(info.value)


def test_filter_text_must_be_utf8():
    with pytest.raises(errors.InvalidArgument, match="filter") as info:
        filters.parse("name==\udcff")
    assert "\\udcff" in str(info.value)
    with pytest.raises(errors.InvalidArgument, match="invalid UTF-8"):
        filters.parse('name~="\\xff"')  # Go's regexp refuses a pattern that is not UTF-8


# -- comparison with Go's regexp package --------------------------------------------------

GOREGEX = Path(__file__).parent / "goregex"


class GoRegexp:
    """The Go oracle (tests/goregex/main.go): regexp.Compile and MatchString, one question per line."""

    def __init__(self, exe: Path) -> None:
        self.proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, pattern: bytes, subjects: list) -> Optional[str]:
        """None when Go refuses the pattern, else one digit per subject (1: it matches)."""
        fields = ["x" + field.hex() for field in (pattern, *subjects)]
        self.proc.stdin.write(" ".join(fields) + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().split()
        assert answer, "the Go oracle died"
        return None if answer[0] == "err" else (answer[1] if len(answer) > 1 else "")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="session")
def go_regexp(tmp_path_factory):
    go = shutil.which("go")
    if go is None:
        pytest.skip("the Go toolchain ('go') is not installed: cannot compare the filters with Go's regexp")
    out = tmp_path_factory.mktemp("goregex")
    env = {**os.environ, "GO111MODULE": "off", "GOFLAGS": "", "GOPATH": str(out / "gopath"),
           "GOCACHE": str(out / "cache")}
    subprocess.run([go, "build", "-o", str(out / "goregex"), "main.go"], cwd=GOREGEX, env=env, check=True,
                   capture_output=True, timeout=600)
    oracle = GoRegexp(out / "goregex")
    yield oracle
    oracle.close()


def filter_value(pattern: bytes) -> str:
    """A quoted filter value that unquotes to exactly these bytes."""
    return '"' + "".join(chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else f"\\x{b:02x}" for b in pattern) + '"'


def ours(pattern: bytes, subjects: list) -> Optional[str]:
    """cargohold's answer to the oracle's question, through the filter language."""
    expr = "name~=" + filter_value(pattern)
    try:
        flt = filters.parse(expr)
    except errors.InvalidArgument as exc:
        assert "bad regular expression" in str(exc) and repr(expr) in str(exc)
        return None
    return "".join("1" if flt.match(filters.adaptor({"name": s.decode("utf-8", "surrogateescape")})) else "0"
                   for s in subjects)


SUBJECTS = [s.encode("utf-8") for s in (
    "", "a", "aaa", "abc", "A", "\n", "a\n", "ab\nc", "\u00e9", "\u0391", "x y", "\ufffd", "_", "1", "9",
    "a" * 40 + "b", "\u212a", "k", "K", "\u017f", "s", "S", "\u00df", "\u03c3\u03c2\u03a3", "\u65e5\u672c",
    "\U0001F600", "\x00", "a\x00b", "\t", "a\u00e9a", "\u00e9\u00e9", "a\u65e5b",
)] + [b"\xff", b"\xc3", b"\xc3\xa9", b"\xe2\x82", b"\xed\xa0\x80", b"a\xffb", b"\x80\x80"]
"""Subjects, some not UTF-8: Go reads each invalid byte as U+FFFD, and so does cargohold's matcher."""

CORPUS = [
    # linear-time versions of Python's catastrophic cases
    "a+$", "(a+)+$", "(a|aa)*$", "(\\w+\\s*)+$", "(x+x+)+y",
    # Go syntax Python lacks, or reads differently
    "\\pL", "\\p{L}", "\\PL", "\\pN", "\\p{Greek}", "\\p{^Greek}", "\\P{Greek}", "[\\p{Greek}\\d]", "\\p{Lu}",
    "\\p{Any}", "\\pZ", "\\pC", "[[:alpha:]]", "[[:^alpha:]]", "[[:word:]]", "(?P<n>a)", "(?P<n>a)(?P<n>b)",
    "(?P<1a>a)", "(?i)a", "(?i)k", "(?i)s", "(?i)\u03c3", "(?s).", "(?m)^a$", "(?U)a+", "(?i-s:a.)", "(?i)(?-i)a",
    "\\z", "\\A", "\\b", "\\B", "\\B\\B", "\\Ba*", "(\\B|x)", "(?:\\B)?", "a\\B", "\\Q\\B",
    "\\Q.*\\E", "\\Qab", "a{1000}", "a{2,1000}", "(a{10}){100}",
    "((a{10}){10}){10}", "a{,5}", "a{5,}", "x{0}", "a*?", "^*", "$+", "|", "()", "(?)", "(?i-i)a",
    ".", "^.$", "^..$", "[^a]", "[^\\n]", "[]a]", "[^]a]", "\\x41", "\\x{41}", "\\x{D800}", "\\101", "\\0",
    "\\a", "\\f", "\\t", "\\v", "\\n", "\\r", "\\d", "\\D", "\\s", "\\S", "\\w", "\\W", "\\x{FFFD}",
    "\\p{Common}", "\\p{Han}", "[\\x00-\\x{10FFFF}]", "a\\.b", "\u00e9", "\U0001F600", "[\u00e9-\u00ff]",
    # what one accepts and the other refuses
    "\\Z", "(?=a)", "(?!a)", "(?<=a)", "(?<!a)", "(a)\\1", "\\1", "(?<n>a)", "(?P<\u00e9>a)", "(?P<a-b>a)",
    "(?P<>a)", "(?P<a", "\\C", "\\X", "\\R", "\\h", "\\e", "\\cA", "\\o{101}", "\\N{LATIN SMALL LETTER A}",
    "\\G", "\\K", "\\u0041", "\\U00000041", "\\8", "\\x{110000}", "(?#c)", "(?x) a", "(?a)a", "(?P=n)",
    "(?>a)", "(?|a)", "a**", "a++", "a?+", "a*+", "a{1001}", "a{2,1001}", "(a{2}){1001}", "(a{100}){100}",
    "((a{10}){10}){11}", "a{5,3}", "x{1000}{2}", "x{2}{3}", "[[:foo:]]", "[z-a]", "[a", "(", ")", "\\p",
    "\\pX", "\\p{", "\\p{L", "\\p{Cn}", "\\p{L&}", "\\p{greek}", "\\p{IsGreek}", "\\p{Kawi}", "\\p{Toto}",
    "\\p{Nag_Mundari}", "(?ii)a", "(?-)a", "(?i-)a", "(?--i)a", "\\", "a\\",
    # nesting
    "(" * 999 + "a" + ")" * 999, "(" * 1000 + "a" + ")" * 1000, "(?:" * 1001 + "a" + ")" * 1001,
    "(?:(" * 999 + "a" + "))" * 999, "[(]" * 1500,
]


def test_regex_corpus_against_go(go_regexp):
    patterns = [p.encode("utf-8") for p in CORPUS] + [b"\xff", b"a\xc3", b"(\xed\xa0\x80)"]
    differ = [(p, go, mine) for p in patterns
              if (go := go_regexp.ask(p, SUBJECTS)) != (mine := ours(p, SUBJECTS))]
    assert not differ


def test_known_differences_with_go(go_regexp):
    """The limits cargohold.goregex documents: RE2 budgets memory where Go counts instructions,
    and Go's tree height is followed for nested captures only."""
    for pattern in ("\\pL{1000}", "(?:\\pL{10}){100}", "(" * 999 + "a*" + ")" * 999):
        assert (go_regexp.ask(pattern.encode(), []) is None) != (ours(pattern.encode(), []) is None)


ATOMS = [
    "a", "b", "k", "\u00e9", "\u03a3", ".", "\\d", "\\w", "\\s", "\\W", "\\b", "\\B", "\\A", "\\z", "\\Z", "^", "$",
    "\\pL", "\\p{Greek}", "\\PL", "\\p{Kawi}", "[a-c]", "[^a]", "[[:alpha:]]", "[[:^space:]]", "[]a]",
    "[\\d\\pL]", "\\x{41}", "\\x41", "\\.", "\\Q.*\\E", "\\n", "\\C", "\\1", "\\v", "\\e", "\\X", "(?i)", "(?s)", "(?m)",
    "(?U)", "(?-i)", "(?i:", "(?=", "(?<n>", "(?P<n>", "(?P<\u00e9>", "(?:", "(", ")", "|", "*", "+", "?",
    "*?", "+?", "??", "{2}", "{1,3}", "{0,}", "{,2}", "{1001}", "{2,1}", "[", "]", "\\",
]
PIECES = [b"a", b"b", b"k", b"K", b"\n", b" ", "\u00e9".encode(), "\u03c3".encode(), "\u212a".encode(),
          "\u017f".encode(), b"1", b"_", b"\xff", b"\xc3", b"\xa9", b"\x80", b"\xe2\x82", b"\xed\xa0\x80"]


@settings(max_examples=300, deadline=None)
@given(pattern=st.one_of(st.lists(st.sampled_from(ATOMS), min_size=1, max_size=8).map("".join),
                         st.text(alphabet="ab()[]{}|*+?.^$\\:-=!<>PpQEdwsbBAzC0123,iUsm\u00e9", max_size=12)),
       subjects=st.lists(st.lists(st.sampled_from(PIECES), max_size=6).map(b"".join), min_size=1, max_size=5))
def test_generated_regexes_against_go(go_regexp, pattern, subjects):
    encoded = pattern.encode("utf-8")
    assert ours(encoded, subjects) == go_regexp.ask(encoded, subjects)
