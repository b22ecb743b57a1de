"""Validation helpers every store relies on: each bad value is named in the error."""

from __future__ import annotations

import pytest

from cargohold import errors
from cargohold.records import check_string_map
from cargohold.validation import (
    MAX_KEY_BYTES,
    escape_controls,
    require_str,
    utf8_size,
    validate_digest,
    validate_identifier,
    validate_key,
    validate_label,
    validate_labels,
    validate_size,
)

GOOD_IDS = ["a", "default", "k8s.io", "a-b_c.d", "A1", "x" * 76, "0", "a.b-c_d"]
BAD_IDS = ["", "-a", "a-", "a..b", "a b", "a/b", "x" * 77, ".a", "a_", "ü", "a\x00"]


@pytest.mark.parametrize("value", GOOD_IDS)
def test_identifier_ok(value):
    assert validate_identifier(value) == value


@pytest.mark.parametrize("value", BAD_IDS)
def test_identifier_bad(value):
    with pytest.raises(errors.InvalidArgument) as info:
        validate_identifier(value, "namespace")
    assert "namespace" in str(info.value)
    if value:
        assert repr(value)[:20] in str(info.value)


@pytest.mark.parametrize("value", [None, 3, b"abc"])
def test_identifier_not_a_string(value):
    with pytest.raises(errors.InvalidArgument, match="must be a string"):
        validate_identifier(value)


def test_label_size_limit():
    validate_label("k", "v" * 4095)  # 1 + 4095 == 4096 bytes: allowed
    with pytest.raises(errors.InvalidArgument, match="4097 bytes"):
        validate_label("k", "v" * 4096)
    with pytest.raises(errors.InvalidArgument, match="4097 bytes"):
        validate_label("k" * 4000, "é" * 48 + "x")  # bytes, not characters, count


@pytest.mark.parametrize("key,value", [("", "v"), ("k\x00", "v"), ("k", "v\x00"), (1, "v"), ("k", 2)])
def test_label_bad(key, value):
    with pytest.raises(errors.InvalidArgument):
        validate_label(key, value)


def test_labels_mapping():
    assert validate_labels(None) == {}
    labels = {"a": "1"}
    copy = validate_labels(labels)
    assert copy == labels and copy is not labels
    with pytest.raises(errors.InvalidArgument):
        validate_labels(["a"])
    with pytest.raises(errors.InvalidArgument, match="'big'"):
        validate_labels({"ok": "1", "big": "x" * 5000})


def test_key_rules():
    assert validate_key("docker.io/library/alpine:3.19") == "docker.io/library/alpine:3.19"
    validate_key("k" * MAX_KEY_BYTES)
    with pytest.raises(errors.InvalidArgument, match=f"{MAX_KEY_BYTES + 1} bytes"):
        validate_key("k" * (MAX_KEY_BYTES + 1))
    with pytest.raises(errors.InvalidArgument, match="NUL"):
        validate_key("a\x00b", "image name")
    with pytest.raises(errors.InvalidArgument, match="image name must not be empty"):
        validate_key("", "image name")
    with pytest.raises(errors.InvalidArgument):
        validate_key("\udc80")


SHA = "a" * 64


@pytest.mark.parametrize("value", [f"sha256:{SHA}", f"sha512:{'0' * 128}", f"sha384:{'f' * 96}"])
def test_digest_ok(value):
    assert validate_digest(value) == value


@pytest.mark.parametrize("value", [
    "", "sha256", f"sha256:{SHA[:-1]}", f"sha256:{SHA.upper()}", f"md5:{SHA[:32]}", f"sha256:{SHA}x",
    f"SHA256:{SHA}", f"sha256:{'g' * 64}", f" sha256:{SHA}", "sha256:../../etc/passwd",
])
def test_digest_bad(value):
    with pytest.raises(errors.InvalidArgument) as info:
        validate_digest(value)
    assert repr(value)[:30] in str(info.value)


def test_size():
    assert validate_size(0) == 0
    for bad in (-1, 1.0, "1", True, None):
        with pytest.raises(errors.InvalidArgument):
            validate_size(bad)


# -- text that is not UTF-8 (lone surrogates: undecodable bytes as Python decodes argv and file names) --

NOT_TEXT = ["\udcff", "a\ud800b", "ok\udc80", "\U0001F600\udfff"]


@pytest.mark.parametrize("value", NOT_TEXT)
def test_strings_must_be_utf8_text(value):
    checks = [
        lambda: require_str(value, "runtime name"),
        lambda: validate_key(value, "image name"),
        lambda: validate_identifier(value, "namespace"),
        lambda: validate_label(value, "v"),
        lambda: validate_label("k", value),
        lambda: validate_labels({"k": value}),
        lambda: check_string_map({value: "v"}, "annotation"),
        lambda: check_string_map({"k": value}, "annotation"),
    ]
    for check in checks:
        with pytest.raises(errors.InvalidArgument) as info:
            check()
        message = str(info.value)
        assert repr(value)[1:-1] in message  # named, escaped
        message.encode("utf-8")  # and the message itself is text


def test_text_checks_accept_any_unicode():
    for value in ("plain", "\u00e9t\u00e9", "\u65e5\u672c", "\U0001F600", "\ufffd", "tab\tnew\nline"):
        assert require_str(value, "x") == value
        validate_label("k", value)
        assert check_string_map({"k": value}, "annotation") == {"k": value}
    assert validate_key("\u00e9" * 127) and utf8_size("\u00e9" * 127, "key") == 254


def test_escape_controls():
    assert escape_controls("docker.io/library/alpine:3.19 \u00e9\u65e5") == "docker.io/library/alpine:3.19 \u00e9\u65e5"
    assert escape_controls("a\x1b]0;x\x07b\x7f\x85\x9b") == "a\\x1b]0;x\\x07b\\x7f\\x85\\x9b"
    assert escape_controls("\t\n\u2028\u202e\u2066\u2069\udcff") == "\\x09\\x0a\\u2028\\u202e\\u2066\\u2069\\udcff"
    assert escape_controls("back\\slash") == "back\\slash"
