"""Registry authentication: credentials, the Docker config file, and ``WWW-Authenticate`` challenges.

Credentials come from the caller (``--user USER[:PASS]``) or from the Docker
config file (``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``):
its ``auths`` entry for the registry, with a base64 ``auth`` of
``user:password`` or separate ``username`` and ``password`` (credential
helpers are not run). A registry answering 401 says in ``WWW-Authenticate``
how to authenticate: ``Basic realm=...``, or ``Bearer realm=...,service=...,
scope=...`` for distribution's token protocol, where a token for the scopes
is asked of the realm (with the credentials as basic auth, or anonymously).
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

from ...errors import InvalidArgument
from ...oci.documents import load_json

BASIC = "basic"
BEARER = "bearer"

_SEPARATORS = set(' \t"(),/:;<=>?@[]\\{}')


@dataclass(frozen=True)
class Credentials:
    """A user name and password (or token) for a registry."""

    username: str
    password: str

    def __repr__(self) -> str:  # never print the password
        return f"Credentials(username={self.username!r}, password=<hidden>)"


def parse_user(value: str) -> tuple[str, Optional[str]]:
    """``USER[:PASS]`` as (user, password or None when not given)."""
    user, colon, password = value.partition(":")
    if not user:
        raise InvalidArgument(f"user {value.split(':')[0]!r} must not be empty: expected USER[:PASSWORD]")
    return user, (password if colon else None)


@dataclass(frozen=True)
class Challenge:
    """One challenge of a ``WWW-Authenticate`` header: its scheme (lower case) and parameters."""

    scheme: str
    params: Mapping[str, str]


def _token(text: str, start: int) -> int:
    end = start
    while end < len(text) and 32 < ord(text[end]) < 127 and text[end] not in _SEPARATORS:
        end += 1
    return end


def _skip_space(text: str, start: int) -> int:
    while start < len(text) and text[start] in " \t\r\n":
        start += 1
    return start


def _quoted(text: str, start: int) -> tuple[Optional[str], int]:
    """A quoted string starting after its opening quote: (value, index after the closing quote)."""
    out, i = [], start
    while i < len(text):
        c = text[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\\" and i + 1 < len(text):
            i += 1
            c = text[i]
        out.append(c)
        i += 1
    return None, i


def parse_challenges(header: str) -> list[Challenge]:
    """Parse one ``WWW-Authenticate`` value (RFC 7235: challenges of a scheme and ``key=value``
    parameters, values tokens or quoted strings, separated by commas); InvalidArgument naming the
    header when it is malformed."""
    challenges: list[Challenge] = []
    i = _skip_space(header, 0)
    if i == len(header):
        raise InvalidArgument(f"malformed WWW-Authenticate header {header!r}: no authentication scheme")
    while i < len(header):
        end = _token(header, i)
        scheme = header[i:end].lower()
        if not scheme or (end < len(header) and header[end] not in " \t,"):
            raise InvalidArgument(f"malformed WWW-Authenticate header {header!r}: expected an "
                                  f"authentication scheme at {header[i:i + 20]!r}")
        params: dict[str, str] = {}
        challenges.append(Challenge(scheme, params))
        i = _skip_space(header, end)
        while i < len(header):
            key_end = _token(header, i)
            equals = _skip_space(header, key_end)
            if key_end > i and header[equals:equals + 1] != "=" and (equals > key_end or equals == len(header)):
                break  # a lone token: the scheme of the next challenge
            if key_end == i or header[equals:equals + 1] != "=":
                raise InvalidArgument(f"malformed WWW-Authenticate header {header!r}: expected key=value "
                                      f"at {header[i:i + 20]!r}")
            key = header[i:key_end].lower()
            i = _skip_space(header, equals + 1)
            if header[i:i + 1] == '"':
                value, i = _quoted(header, i + 1)
                if value is None:
                    raise InvalidArgument(f"malformed WWW-Authenticate header {header!r}: "
                                          "unterminated quoted string")
            else:
                value_end = _token(header, i)
                value, i = header[i:value_end], value_end
            params[key] = value
            i = _skip_space(header, i)
            if i < len(header):
                if header[i] != ",":
                    raise InvalidArgument(f"malformed WWW-Authenticate header {header!r}: expected ',' "
                                          f"at {header[i:i + 20]!r}")
                i = _skip_space(header, i + 1)
    return challenges


def pick_challenge(headers: Iterable[str]) -> Optional[Challenge]:
    """The challenge to answer among the headers: bearer before basic (as containerd); None if none
    is one of those. A bearer challenge must name an http(s) realm."""
    found = {}
    for header in headers:
        for challenge in parse_challenges(header):
            if challenge.scheme in (BASIC, BEARER):
                found.setdefault(challenge.scheme, challenge)
    bearer = found.get(BEARER)
    if bearer is not None:
        realm = bearer.params.get("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise InvalidArgument(f"malformed WWW-Authenticate bearer challenge: realm {realm!r} is not "
                                  "an http(s) URL")
        return bearer
    return found.get(BASIC)


def merge_scopes(scopes: Iterable[str]) -> list[str]:
    """Token scopes (``type:name:action,...``) with the actions of one resource merged, sorted."""
    actions: dict[str, set] = {}
    for scope in scopes:
        resource, colon, wanted = scope.rpartition(":")
        if not colon:
            resource, wanted = scope, ""
        actions.setdefault(resource, set()).update(a for a in wanted.split(",") if a)
    return [f"{resource}:{','.join(sorted(wanted))}" for resource, wanted in sorted(actions.items())]


def _config_path(environ: Mapping[str, str]) -> str:
    directory = environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return os.path.join(directory, "config.json")


_DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


def _host_of(key: str) -> str:
    """An ``auths`` key's host: the key without scheme and path (``https://host:5000/v1/`` is ``host:5000``)."""
    rest = key.partition("://")[2] if "://" in key else key
    return rest.partition("/")[0]


def docker_config_credentials(domain: str, environ: Optional[Mapping[str, str]] = None) -> Optional[Credentials]:
    """The credentials the Docker config file holds for registry `domain`, or None.

    InvalidArgument naming the file when it is not valid JSON or the entry's
    ``auth`` is not base64 of ``user:password``.
    """
    environ = os.environ if environ is None else environ
    path = _config_path(environ)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InvalidArgument(f"cannot read Docker config {path}: {exc.strerror}") from None
    config = load_json(raw, f"Docker config {path}")
    auths = config.get("auths")
    if not isinstance(auths, dict):
        return None
    wanted = set(_DOCKER_HUB_KEYS) if domain == "docker.io" else {domain}
    for key, entry in auths.items():
        if (key in wanted or _host_of(key) in wanted) and isinstance(entry, dict):
            return _entry_credentials(entry, key, path)
    return None


def _entry_credentials(entry: dict, key: str, path: str) -> Optional[Credentials]:
    encoded = entry.get("auth")
    if encoded:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, ValueError, TypeError):
            raise InvalidArgument(f"Docker config {path}: auths[{key!r}].auth is not base64") from None
        user, colon, password = decoded.partition(":")
        if not colon or not user:
            raise InvalidArgument(f"Docker config {path}: auths[{key!r}].auth does not decode to user:password")
        return Credentials(user, password)
    user, password = entry.get("username"), entry.get("password")
    if isinstance(user, str) and user and isinstance(password, str):
        return Credentials(user, password)
    return None
