"""Input validation shared by every store.

Each check raises InvalidArgument with a message that names the bad value,
before anything is written, so a rejected call changes nothing. Every string
must be text that encodes as UTF-8: a lone surrogate (what Python makes of
undecodable bytes in argv, file names or archives) is refused here, never
left to fail half-way through a write. Messages show values through
``repr``, which escapes control characters.
"""

from __future__ import annotations

import re
from typing import Mapping, Optional

from .errors import InvalidArgument

MAX_IDENTIFIER_LENGTH = 76
"""containerd's limit for namespaces, container, lease and sandbox ids."""

MAX_LABEL_SIZE = 4096
"""Maximum bytes of one label's key plus value."""

MAX_KEY_BYTES = 255
"""Maximum UTF-8 bytes of an image name, snapshot key or ingest ref.

LMDB keys are at most 511 bytes; the composite keys that hold an object and
its garbage-collection edges need the rest."""

_IDENTIFIER = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*\Z")

DIGEST_ALGORITHMS = {"sha256": 64, "sha384": 96, "sha512": 128}
_DIGEST = re.compile(r"([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)\Z")
_HEX = re.compile(r"[a-f0-9]+\Z")


_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
"""What `escape_controls` escapes: C0 controls, DEL, C1 controls, line and
paragraph separators, bidi embeddings/overrides/isolates, lone surrogates."""


def _escape(match: "re.Match[str]") -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """`text` fit for a terminal: what could move the cursor, retitle the window, reorder the
    line or fail to encode becomes ``\\xNN`` or ``\\uNNNN``; everything else is kept."""
    return text if text.isprintable() else _CONTROLS.sub(_escape, text)


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _not_text(value: str, what: str) -> InvalidArgument:
    return InvalidArgument(f"{what} {_short(value)} is not valid UTF-8 text (it holds a lone surrogate)")


def utf8_size(value: str, what: str) -> int:
    """Bytes of `value` in UTF-8; InvalidArgument naming `what` if it cannot be encoded."""
    if value.isascii():
        return len(value)
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise _not_text(value, what) from None


def require_str(value: object, what: str) -> str:
    """`value` if it is a string of UTF-8-encodable text; InvalidArgument naming `what` otherwise."""
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a string, not {type(value).__name__}: {_short(value)}")
    if not value.isascii():
        utf8_size(value, what)
    return value


def validate_identifier(value: object, what: str = "identifier") -> str:
    """containerd's identifier rule: `[A-Za-z0-9]+([._-][A-Za-z0-9]+)*`, at most 76 characters."""
    require_str(value, what)
    if not value:
        raise InvalidArgument(f"{what} must not be empty")
    if len(value) > MAX_IDENTIFIER_LENGTH:
        raise InvalidArgument(
            f"{what} {_short(value)} is longer than {MAX_IDENTIFIER_LENGTH} characters"
        )
    if not _IDENTIFIER.match(value):
        raise InvalidArgument(f"{what} {_short(value)} must match [A-Za-z0-9]+([._-][A-Za-z0-9]+)*")
    return value


def validate_key(value: object, what: str = "key", limit: int = MAX_KEY_BYTES) -> str:
    """A free-form key (image name, snapshot key, ingest ref): non-empty text, no NUL, at most `limit` bytes."""
    if not isinstance(value, str):
        require_str(value, what)
    if not value:
        raise InvalidArgument(f"{what} must not be empty")
    if "\x00" in value:
        raise InvalidArgument(f"{what} {_short(value)} must not contain a NUL character")
    size = len(value) if value.isascii() else utf8_size(value, what)
    if size > limit:
        raise InvalidArgument(f"{what} {_short(value)} is {size} bytes, more than the {limit}-byte limit")
    return value


def validate_digest(value: object, what: str = "digest") -> str:
    """An OCI digest `algorithm:encoded` with a supported algorithm and a lowercase hex encoding."""
    require_str(value, what)
    m = _DIGEST.match(value)
    if m is None:
        raise InvalidArgument(f"invalid {what} {_short(value)}: expected <algorithm>:<hex>")
    algorithm, encoded = m.groups()
    length = DIGEST_ALGORITHMS.get(algorithm)
    if length is None:
        raise InvalidArgument(f"invalid {what} {_short(value)}: unsupported algorithm {algorithm!r}")
    if len(encoded) != length or not _HEX.match(encoded):
        raise InvalidArgument(
            f"invalid {what} {_short(value)}: {algorithm} needs {length} lowercase hex characters"
        )
    return value


def validate_label(key: object, value: object) -> None:
    """One label: a non-empty key and a value, both text without NUL, at most 4096 bytes together."""
    if not isinstance(key, str):
        require_str(key, "label key")
    if not isinstance(value, str):
        require_str(value, f"value of label {_short(key)}")
    if not key:
        raise InvalidArgument("label key must not be empty")
    if "\x00" in key or "\x00" in value:
        raise InvalidArgument(f"label {_short(key)} must not contain a NUL character")
    size = utf8_size(key, "label key")
    size += len(value) if value.isascii() else utf8_size(value, f"value of label {_short(key)}")
    if size > MAX_LABEL_SIZE:
        raise InvalidArgument(
            f"label {_short(key)}: key and value are {size} bytes, more than the {MAX_LABEL_SIZE}-byte limit"
        )


def validate_labels(labels: Optional[Mapping[str, str]]) -> dict:
    """Validate every label and return a plain dict copy ({} for None)."""
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise InvalidArgument(f"labels must be a mapping of strings, not {type(labels).__name__}")
    for key, value in labels.items():
        validate_label(key, value)
    return dict(labels)


def validate_size(value: object, what: str = "size") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{what} must be an integer, not {_short(value)}")
    if value < 0:
        raise InvalidArgument(f"{what} must not be negative: {value}")
    return value
