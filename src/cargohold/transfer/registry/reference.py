"""Image references as Docker and containerd spell them (containerd's `reference/docker.ParseDockerRef`).

``alpine`` is ``docker.io/library/alpine:latest``; ``user/app:1`` is
``docker.io/user/app:1``; a first component with a ``.`` or ``:``, or
``localhost``, or with upper-case letters, is a registry host
(``localhost:5000/a/b``, ``127.0.0.1:5000/app``); ``index.docker.io`` is
``docker.io``. A reference with both a tag and a digest keeps only the digest.
Repository paths are lower case, at most 255 characters with the host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...errors import InvalidArgument
from ...validation import validate_digest

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPOSITORY = "library"
DEFAULT_TAG = "latest"
DOCKER_HUB_API = "registry-1.docker.io"
"""The host that serves docker.io's registry API (containerd's default host for docker.io)."""

MAX_NAME_LENGTH = 255

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-*)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*"
_REFERENCE = re.compile(rf"({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?\Z")
_SPLIT_NAME = re.compile(rf"(?:({_DOMAIN})/)?({_COMPONENT}(?:/{_COMPONENT})*)\Z")
_IDENTIFIER = re.compile(r"[a-f0-9]{64}\Z")


@dataclass(frozen=True)
class Reference:
    """A normalized reference: registry `domain`, repository `path`, and a `tag` or a `digest`."""

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """The repository with its registry: ``docker.io/library/alpine``."""
        return f"{self.domain}/{self.path}"

    @property
    def object(self) -> str:
        """What ``/v2/<path>/manifests/<object>`` takes: the digest if there is one, else the tag."""
        return self.digest or self.tag

    @property
    def hostname(self) -> str:
        """The registry host without its port (containerd keys distribution-source labels by it)."""
        host = self.domain
        if host.startswith("["):
            return host[1:host.index("]")]
        return host.rpartition(":")[0] if ":" in host else host

    @property
    def api_host(self) -> str:
        """Where the registry API is served: ``registry-1.docker.io`` for docker.io, else the domain."""
        return DOCKER_HUB_API if self.domain == DEFAULT_DOMAIN else self.domain

    def with_object(self, tag: str = "", digest: str = "") -> "Reference":
        """The same repository with another tag or digest."""
        return Reference(self.domain, self.path, tag, digest)

    def __str__(self) -> str:
        if self.digest:
            return f"{self.name}@{self.digest}"
        return f"{self.name}:{self.tag}"


def _split_domain(name: str) -> tuple[str, str]:
    """Docker's rule: the first component is a host if it has '.' or ':', is localhost, or has upper case."""
    first, slash, rest = name.partition("/")
    if not slash or (not any(c in first for c in ".:") and first != "localhost" and first.lower() == first):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, rest
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = f"{OFFICIAL_REPOSITORY}/{remainder}"
    return domain, remainder


def parse_reference(value: object) -> Reference:
    """Normalize an image reference; InvalidArgument naming it if it is not one.

    Without tag or digest the tag is ``latest``; with both, the digest wins.
    """
    if not isinstance(value, str):
        raise InvalidArgument(f"image reference must be a string, not {type(value).__name__}")
    if not value:
        raise InvalidArgument("image reference must not be empty")
    if _IDENTIFIER.match(value):
        raise InvalidArgument(f"invalid image reference {value!r}: a 64-character hex string is an ID, "
                              "not a repository name")
    domain, remainder = _split_domain(value)
    repository = remainder.partition(":")[0].partition("@")[0]
    if repository.lower() != repository:
        raise InvalidArgument(f"invalid image reference {value!r}: repository name {repository!r} "
                              "must be lower case")
    full = f"{domain}/{remainder}"
    match = _REFERENCE.match(full)
    if match is None:
        raise InvalidArgument(f"invalid image reference {value!r}: expected [HOST[:PORT]/]NAME[:TAG][@DIGEST] "
                              "with lower-case name components")
    name, tag, digest = match.groups()
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgument(f"invalid image reference {value!r}: the repository name is longer than "
                              f"{MAX_NAME_LENGTH} characters")
    if digest:
        validate_digest(digest, f"digest of image reference {value!r}")
    split = _SPLIT_NAME.match(name)
    assert split is not None and split.group(1) is not None  # the domain was put there above
    return Reference(split.group(1), split.group(2), "" if digest else (tag or DEFAULT_TAG), digest or "")
