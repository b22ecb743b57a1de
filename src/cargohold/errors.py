"""Error classes of cargohold: every public call raises one of these.

They mirror containerd's `errdefs`. Each also derives from the closest
built-in exception so that ordinary Python code can catch them naturally
(`except LookupError` catches NotFound, `except ValueError` InvalidArgument).
"""

from __future__ import annotations


class Error(Exception):
    """Base class of every cargohold error."""


class NotFound(Error, LookupError):
    """The named object does not exist."""


class AlreadyExists(Error):
    """An object with that name or key already exists."""


class InvalidArgument(Error, ValueError):
    """An argument is malformed: a bad identifier, digest, label, key or filter."""


class FailedPrecondition(Error):
    """The object is in a state that forbids the call (e.g. it still has children)."""


class Unavailable(Error):
    """The resource is busy (e.g. a ref is being written by someone else), or the store is closed."""


class Unsupported(Error, NotImplementedError):
    """The operation or resource type is not supported."""


class Corrupted(Error):
    """The metadata database is damaged or was written by an incompatible program."""


__all__ = [
    "Error",
    "NotFound",
    "AlreadyExists",
    "InvalidArgument",
    "FailedPrecondition",
    "Unavailable",
    "Unsupported",
    "Corrupted",
]
