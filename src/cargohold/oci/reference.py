"""Docker image references, normalised and familiarised as containerd's `reference/docker` does.

`normalize` is containerd's `ParseDockerRef`: ``busybox`` is
``docker.io/library/busybox:latest``, ``user/app:1`` is
``docker.io/user/app:1``, ``index.docker.io`` is ``docker.io``; a first
component is a registry host when it has a ``.`` or ``:``, is
``localhost``, or has upper-case letters (``[::1]:5000`` too); a reference
with a tag and a digest keeps only the digest. These are containerd 1.7's
rules; 1.6's refuse upper-case hosts without a dot and IPv6 hosts, and
otherwise agree.
`parse_reference` gives the same as a `Reference` (with what a registry client needs: the
manifest object, the host without its port, the API host of docker.io).
`familiar` is what Docker shows and writes in ``RepoTags``
(``TagNameOnly`` then ``FamiliarString``): ``docker.io/library/busybox:latest``
is ``busybox:latest``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InvalidArgument
from ..validation import validate_digest

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPOSITORY = "library"
DEFAULT_TAG = "latest"
DOCKER_HUB_API = "registry-1.docker.io"
"""The host that serves docker.io's registry API (containerd's default host for docker.io)."""
MAX_NAME_LENGTH = 255
"""Longest repository name, its registry host included."""

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-*)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,}"
_PATH = rf"{_COMPONENT}(?:/{_COMPONENT})*"
_REFERENCE = re.compile(rf"((?:{_DOMAIN}/)?{_PATH})(?::({_TAG}))?(?:@({_DIGEST}))?\Z")
_NAME = re.compile(rf"(?:({_DOMAIN})/)?({_PATH})\Z")
_IDENTIFIER = re.compile(r"[a-f0-9]{64}\Z")


@dataclass(frozen=True)
class Reference:
    """A normalised reference: registry `domain`, repository `path`, and a `tag` and/or a `digest`."""

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """The repository with its registry: ``docker.io/library/busybox``."""
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
        return _join(self.name, self.tag, self.digest)


def _join(name: str, tag: str, digest: str) -> str:
    return name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def _split_domain(name: str) -> tuple[str, str]:
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


def parse(value: object) -> Reference:
    """A reference as written (containerd's `ParseNormalizedNamed`): no tag is added, none is dropped.

    InvalidArgument naming `value` when it is not a reference.
    """
    if not isinstance(value, str):
        raise InvalidArgument(f"image reference must be a string, not {type(value).__name__}")
    if not value:
        raise InvalidArgument("image reference must not be empty")
    if _IDENTIFIER.match(value):
        raise InvalidArgument(f"invalid image reference {value!r}: a 64-character hex string is an image ID, "
                              "not a repository name")
    domain, remainder = _split_domain(value)
    repository = remainder.partition(":")[0].partition("@")[0]
    if repository.lower() != repository:
        raise InvalidArgument(f"invalid image reference {value!r}: repository name {repository!r} "
                              "must be lower case")
    match = _REFERENCE.match(f"{domain}/{remainder}")
    if match is None:
        raise InvalidArgument(f"invalid image reference {value!r}: expected [HOST[:PORT]/]NAME[:TAG][@DIGEST]")
    name, tag, digest = match.groups()
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgument(f"invalid image reference {value!r}: the repository name is longer than "
                              f"{MAX_NAME_LENGTH} characters")
    if digest:
        validate_digest(digest, f"digest of image reference {value!r}")
    split = _NAME.match(name)
    assert split is not None and split.group(1)  # the domain was put there above
    return Reference(split.group(1), split.group(2), tag or "", digest or "")


def parse_reference(value: object) -> Reference:
    """The normalised reference (containerd's `ParseDockerRef`): without tag or digest the tag is
    ``latest``; with both, only the digest is kept. InvalidArgument naming `value` if it is not one."""
    ref = parse(value)
    return ref.with_object(digest=ref.digest) if ref.digest else ref.with_object(tag=ref.tag or DEFAULT_TAG)


def normalize(value: object) -> str:
    """The full name containerd gives a reference: ``busybox`` -> ``docker.io/library/busybox:latest``;
    with a digest, the tag is dropped."""
    return str(parse_reference(value))


def familiar(value: object) -> str:
    """The short name Docker shows (``TagNameOnly`` + ``FamiliarString``): ``docker.io/library/busybox:latest``
    -> ``busybox:latest``, ``example.com/app`` -> ``example.com/app:latest``."""
    ref = parse(value)
    name = ref.name
    if ref.domain == DEFAULT_DOMAIN:
        head, _, rest = ref.path.partition("/")
        name = rest if head == OFFICIAL_REPOSITORY and "/" not in rest else ref.path
    tag = ref.tag or ("" if ref.digest else DEFAULT_TAG)
    return _join(name, tag, ref.digest)
