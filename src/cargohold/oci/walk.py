"""Walking an image's content graph, wherever its blobs live.

`walk` visits an index, its manifests, their configs and layers in
containerd's order (`images.Walk`: depth first, each parent before its
children), keeping only the index entries whose platform the matcher accepts
(`images.FilterPlatforms`), and returns for each blob the containerd GC labels
it gets for its children. `resolve_manifest` picks the one manifest an unpack
uses (`images.Manifest`). Both read documents through a `fetch(descriptor) ->
bytes` callable, so the same code serves an archive and the content store.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

from ..errors import InvalidArgument, NotFound, Unsupported
from ..model import Descriptor
from . import mediatypes
from .documents import IndexEntry, Manifest, load_json, parse_config, parse_index, parse_manifest
from .gclabels import children_labels
from .platforms import ALL, Matcher, Platform, normalize

Fetch = Callable[[Descriptor], bytes]
"""Returns the verified bytes of a (small) document blob."""


@dataclass(frozen=True)
class Blob:
    """One blob an image reaches, with the children it references and the labels that say so."""

    descriptor: Descriptor
    children: tuple = ()
    labels: Optional[dict] = None


def describe(descriptor: Descriptor) -> str:
    """A short name for a blob in messages: its kind and digest."""
    if mediatypes.is_index(descriptor.media_type):
        kind = "index"
    elif mediatypes.is_manifest(descriptor.media_type):
        kind = "manifest"
    elif mediatypes.is_known_config(descriptor.media_type):
        kind = "config"
    elif mediatypes.is_layer(descriptor.media_type):
        kind = "layer"
    else:
        kind = "blob"
    return f"{kind} {descriptor.digest}"


def children(descriptor: Descriptor, fetch: Fetch) -> tuple:
    """The index entries (for an index) or config and layers (for a manifest) of a blob.

    Configs are read and must be JSON objects; other leaves have no children.
    """
    what = describe(descriptor)
    media_type = descriptor.media_type
    if mediatypes.is_index(media_type):
        return parse_index(fetch(descriptor), media_type, what).manifests
    if mediatypes.is_manifest(media_type):
        manifest = parse_manifest(fetch(descriptor), media_type, what)
        return tuple(IndexEntry(d) for d in (manifest.config, *manifest.layers))
    if mediatypes.is_config(media_type):
        load_json(fetch(descriptor), what)
    return ()


def walk(roots: Iterable[Descriptor], fetch: Fetch, matcher: Matcher = ALL) -> Iterator[Blob]:
    """Every blob reachable from `roots`, once each, parents first.

    Index entries with a platform the matcher rejects are skipped with all
    they reach; entries without a platform are always kept. A blob's labels
    name all of its children, skipped ones too (as a pull labels them): a
    blob already stored from a wider import keeps every reference, and a
    child that is not stored is an edge to nothing for the collector. Raises
    Unsupported for a reached media type cargohold cannot import.
    """
    seen: set[str] = set()
    roots = list(roots)
    for root in roots:
        mediatypes.check_supported(root.media_type, describe(root))
    stack = [iter(roots)]
    while stack:
        descriptor = next(stack[-1], None)
        if descriptor is None:
            stack.pop()
            continue
        if descriptor.digest in seen:
            continue
        seen.add(descriptor.digest)
        entries = children(descriptor, fetch)
        kept = tuple(entry.descriptor for entry in entries
                     if entry.platform is None or matcher.match(entry.platform))
        for child in kept:
            mediatypes.check_supported(child.media_type, f"{describe(child)} in {describe(descriptor)}")
        yield Blob(descriptor, kept, children_labels([entry.descriptor for entry in entries]))
        if kept:
            stack.append(iter(kept))


def _preference(matcher: Matcher, a: IndexEntry, b: IndexEntry) -> int:
    if a.platform is None or b.platform is None:
        return (a.platform is None) - (b.platform is None)
    if matcher.less(a.platform, b.platform):
        return -1
    return 1 if matcher.less(b.platform, a.platform) else 0


def resolve_manifest(target: Descriptor, fetch: Fetch, matcher: Matcher) -> tuple[Descriptor, Manifest]:
    """The manifest of `target` for the matcher's platform, and its descriptor.

    From an index, the best matching entry is followed (entries without a
    platform come last); a manifest reached without a platform in its entry
    is checked against its config's platform. Raises NotFound when nothing
    matches.
    """
    descriptor: Descriptor = target
    platform: Optional[Platform] = None
    visited: set[str] = set()
    while True:
        if descriptor.digest in visited:
            raise InvalidArgument(f"index {descriptor.digest} refers to itself")
        visited.add(descriptor.digest)
        media_type = descriptor.media_type
        what = describe(descriptor)
        if mediatypes.is_manifest(media_type):
            manifest = parse_manifest(fetch(descriptor), media_type, what)
            if descriptor.digest != target.digest:
                if platform is None:
                    config = manifest.config
                    platform = normalize(parse_config(fetch(config), describe(config)).platform)
                if not matcher.match(platform):
                    raise NotFound(f"no manifest of {target.digest} matches platform {matcher!r}")
            return descriptor, manifest
        if not mediatypes.is_index(media_type):
            raise Unsupported(f"unsupported media type {media_type!r} of {what}: not a manifest or index")
        entries = [entry for entry in parse_index(fetch(descriptor), media_type, what).manifests
                   if entry.platform is None or matcher.match(entry.platform)]
        entries.sort(key=functools.cmp_to_key(functools.partial(_preference, matcher)))
        if not entries:
            raise NotFound(f"no manifest of {target.digest} matches platform {matcher!r}")
        descriptor, platform = entries[0].descriptor, entries[0].platform
