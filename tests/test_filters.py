"""containerd's filter language."""

from __future__ import annotations

import pytest

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
