"""Digest prefixes, as people type them: ``sha256:4f3a``, or the bare hex ``4f3a`` (even all of it).

Wherever a command takes a digest, a prefix that matches exactly one of the
candidates stands for it; one that matches several is refused, naming them;
one that matches none is NotFound. Anything that is not shaped like a digest
prefix is returned as it is, for the command to judge (and refuse) itself.
"""

from __future__ import annotations

import re
from typing import Iterable, Optional

from cargohold.errors import InvalidArgument, NotFound
from cargohold.validation import DIGEST_ALGORITHMS, validate_digest

_PREFIX = re.compile(r"(?:(?P<alg>[a-z0-9]+):)?(?P<hex>[0-9a-f]+)\Z")
_SHOWN = 5
"""How many matches an ambiguity message names."""


def as_prefix(text: str) -> Optional[tuple[str, str]]:
    """(algorithm or '', hex) if `text` is a digest prefix but not a whole digest, else None."""
    m = _PREFIX.match(text)
    if m is None:
        return None
    algorithm, encoded = m.group("alg") or "", m.group("hex")
    if algorithm and algorithm not in DIGEST_ALGORITHMS:
        return None
    if algorithm and len(encoded) >= DIGEST_ALGORITHMS[algorithm]:
        return None  # a whole digest (or too long for one)
    if not algorithm and len(encoded) > max(DIGEST_ALGORITHMS.values()):
        return None
    return algorithm, encoded


def matches(text: str, digest: str) -> bool:
    """Whether digest prefix `text` (see `as_prefix`) matches `digest`."""
    shape = as_prefix(text)
    if shape is None:
        return text == digest
    algorithm, encoded = shape
    alg, _, hexpart = digest.partition(":")
    return (not algorithm or alg == algorithm) and hexpart.startswith(encoded)


def resolve(text: str, candidates: Iterable[str], what: str = "digest") -> str:
    """The one candidate digest prefix `text` stands for (`text` itself when it is no prefix)."""
    if as_prefix(text) is None:
        return text
    found = sorted({c for c in candidates if matches(text, c)})
    if len(found) == 1:
        return found[0]
    if not found:
        raise NotFound(f"no {what} starts with {text!r}")
    shown = ", ".join(found[:_SHOWN]) + (f" and {len(found) - _SHOWN} more" if len(found) > _SHOWN else "")
    raise InvalidArgument(f"{what} prefix {text!r} is ambiguous: it matches {shown}; give more of it")


def check(texts: Iterable[str]) -> list:
    """`texts`, each a digest or a digest prefix (InvalidArgument, naming it, for anything else)."""
    texts = list(texts)
    for text in texts:
        if as_prefix(text) is None:
            validate_digest(text)
    return texts


def resolve_content(ns, texts: Iterable[str]) -> list:
    """Each of `texts` (already `check`ed) as the digest of a blob of namespace `ns`, prefixes
    resolved (listing its content only when one is given)."""
    texts = list(texts)
    if not any(as_prefix(t) is not None for t in texts):
        return texts
    digests = [info.digest for info in ns.content.walk()]
    return [resolve(t, digests, "blob digest") for t in texts]
