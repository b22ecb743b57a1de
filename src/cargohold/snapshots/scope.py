"""Which host a snapshotter's records belong to, on a metadata engine several hosts share.

A snapshot is local to one host: its directory is on that host's disk. On
LMDB (one host) a snapshotter's records are keyed by its name, as containerd
keys them (``<ns>\\0snapshot\\0native\\0<key>``, backend records under
``native\\0``). On an engine a fleet shares (etcd) every host has its own
``native``, so each snapshotter of each host has a *host scope*: a random id
kept in the backend's own root (``<root>/host.json``, so that it stays with
the directories its records describe; a backend without a root directory
keeps it in the metadata directory, ``<meta>/host-<name>.json``). The shared
metadata then knows the snapshotter as ``<name>@<scope>`` (`stored_name`) in
every key: records, child links, id sequence, node-table entries, backend
records and dirty markers. The public name stays ``<name>`` everywhere else
(the API, events, containers' ``snapshotter`` field, lease resource types,
``containerd.io/gc.ref.snapshot.<name>`` labels).
"""

from __future__ import annotations

import json
import os
import re
import uuid
from typing import Optional

from ..errors import Corrupted, FailedPrecondition, Unavailable
from ..ownership import write_json

SCOPE_FILE = "host.json"
SEP = "@"
"""Between a snapshotter's name and its host scope; no snapshotter name has one."""

_SCOPE = re.compile(r"[0-9a-f]{16}\Z")


def stored_name(name: str, scope: str) -> str:
    """The snapshotter name the metadata keys use: `name` itself without a scope."""
    return f"{name}{SEP}{scope}" if scope else name


def public_name(stored: str) -> str:
    """The snapshotter name of a stored one (without its host scope)."""
    return stored.partition(SEP)[0]


def scope_path(directory: str, name: Optional[str] = None) -> str:
    """Where the scope of a snapshotter is kept: in its backend root, or (`name` given) in a
    metadata directory."""
    return os.path.join(directory, SCOPE_FILE if name is None else f"host-{name}.json")


def read_scope(path: str) -> Optional[str]:
    """The scope recorded at `path`, None if there is none; Corrupted for a damaged file."""
    try:
        with open(path, "rb") as f:
            raw = f.read(4096)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Unavailable(f"cannot read the host scope file {path!r}: {exc}") from None
    try:
        scope = json.loads(raw).get("host")
    except (ValueError, AttributeError):
        scope = None
    if not isinstance(scope, str) or not _SCOPE.match(scope):
        raise Corrupted(f"the host scope file {path!r} is damaged (it names which host's snapshot records "
                        "in the shared metadata are this backend's): restore it from a backup of this host")
    return scope


def host_scope(path: str, *, create: bool, snapshots: Optional[str] = None) -> str:
    """The scope recorded at `path`; a new one is recorded first if there is none and `create`
    (else a fresh one is returned, unrecorded: no record in the shared metadata can have it).

    A new scope is refused (FailedPrecondition) while the directory `snapshots` (the backend's
    snapshot directories) holds anything: no record of the shared metadata could own those
    directories, so the backend's next cleanup would delete them all. That is a lost or
    never-copied ``host.json``, or a root that kept its snapshots on LMDB until now.
    """
    scope = read_scope(path)
    if scope is not None:
        return scope
    fresh = uuid.uuid4().hex[:16]
    if not create:
        return fresh
    if snapshots is not None and _holds_anything(snapshots):
        raise FailedPrecondition(
            f"the snapshot directories in {snapshots!r} belong to no host of the shared metadata: the host "
            f"scope file {path!r} is missing (restore it from this host's backup), or their records are in "
            "another metadata database (open the root with that one); a new scope would let the next "
            "collection delete them")
    try:
        if write_json(path, {"host": fresh}, replace=False):
            return fresh
    except OSError as exc:
        raise Unavailable(f"cannot record the host scope of a snapshotter in {path!r}: {exc}") from None
    scope = read_scope(path)  # another process recorded one first
    if scope is None:
        raise Unavailable(f"the host scope file {path!r} vanished while it was created")
    return scope


def _holds_anything(directory: str) -> bool:
    try:
        with os.scandir(directory) as entries:
            return next(entries, None) is not None
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise Unavailable(f"cannot list the snapshot directories in {directory!r}: {exc}") from None
