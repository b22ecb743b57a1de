"""containerd's field-path updates, shared by every store's ``update(obj, *fieldpaths)``.

With no field paths every updatable field is replaced. ``labels`` replaces all
labels, ``labels.<key>`` copies one key from the new object (absent or empty
deletes it). Labels with empty values are never stored.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Optional

from .errors import InvalidArgument
from .validation import require_str, validate_labels


def clean_labels(labels: Optional[Mapping[str, str]]) -> dict:
    """Validated copy without empty values (containerd never stores an empty label)."""
    if labels is None or (type(labels) is dict and not labels):
        return {}
    return {k: v for k, v in validate_labels(labels).items() if v != ""}


def split(paths: Iterable[str], prefix: str) -> tuple[list[str], list[str]]:
    """(keys of ``<prefix>.<key>`` paths, other paths)."""
    keys, others = [], []
    dotted = prefix + "."
    for path in paths:
        if path.startswith(dotted):
            keys.append(path[len(dotted):])
        else:
            others.append(path)
    return keys, others


def merge_map(current: Mapping[str, str], new: Mapping[str, str], keys: Iterable[str]) -> dict:
    """Copy each of `keys` from new into a copy of current (missing or empty deletes)."""
    merged = dict(current)
    for key in keys:
        value = new.get(key, "")
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def label_paths(labels: Mapping[str, str]) -> tuple[str, ...]:
    """The field paths that set (or, for an empty value, remove) exactly these labels."""
    return tuple(f"labels.{key}" for key in labels)


def update_labels(current: Mapping[str, str], new: Optional[Mapping[str, str]], paths: Iterable[str],
                  what: str) -> dict:
    """The labels of an object whose only mutable field is its labels, after a field-path update.

    No paths or ``labels`` replace them all; ``labels.<key>`` copies one key.
    Any other path is InvalidArgument naming `what`.
    """
    paths = [require_str(path, "field path") for path in paths]
    new = clean_labels(new)
    keys, others = split(paths, "labels")
    for path in others:
        if path != "labels":
            raise InvalidArgument(f"cannot update field {path!r} of {what}")
    if not paths or others:
        return new
    return merge_map(current, new, keys)
