"""`cargohold content ...`: the namespace's blobs and ingests.

Every DIGEST argument may be a prefix (``sha256:4f3a``, ``4f3a``) of one blob the namespace holds.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Optional

import click

from cargohold.errors import AlreadyExists, Error

from .context import Settings, echo, emit_labels, emit_json, pass_settings, refuse_terminal, remove_all
from .groups import Group, examples
from .output import Column, format_labels, listing_options, parse_labels
from .prefixes import check, resolve_content

if TYPE_CHECKING:
    from cargohold import Info

CHUNK = 1 << 20


@click.group("content", cls=Group, epilog=examples("cargohold content ls", "echo hi | cargohold content ingest note-1"))
def command() -> None:
    """List, read, write, label and remove content blobs."""


LIST_COLUMNS = (
    Column("DIGEST", lambda i: i.digest),
    Column("SIZE", lambda i: i.size, "size"),
    Column("CREATED", lambda i: i.created_at, "time"),
    Column("UPDATED", lambda i: i.updated_at, "time", wide=True),
    Column("LABELS", lambda i: format_labels(i.labels)),
)


@command.command("ls", epilog=examples("cargohold content ls", "cargohold content ls -q | head -1",
                                       "cargohold content ls --format json 'labels.\"containerd.io/gc.root\"'"))
@click.argument("filters", nargs=-1)
@listing_options("digests", filter_example='labels."containerd.io/gc.root"')
@pass_settings
def ls(settings: Settings, listing) -> None:
    """List blobs, optionally only those matching FILTERS (e.g. 'labels."containerd.io/gc.root"')."""
    listing.emit(listing.fetch(lambda: settings.reader().content.walk(*listing.filters)), LIST_COLUMNS)


@command.command("get", epilog=examples("cargohold content get sha256:4f3a > blob", "cargohold content get 4f3a | head -c10"))
@click.argument("digest")
@pass_settings
def get(settings: Settings, digest: str) -> None:
    """Write the blob DIGEST to stdout (never to a terminal)."""
    check([digest])
    ns = settings.reader()
    (digest,) = resolve_content(ns, [digest])
    with ns.content.open(digest) as blob:
        refuse_terminal(f"blob {digest}")
        out = sys.stdout.buffer
        while chunk := blob.read(CHUNK):
            out.write(chunk)
    out.flush()


@command.command("info", epilog=examples("cargohold content info sha256:4f3a"))
@click.argument("digests", nargs=-1, required=True, metavar="DIGEST...")
@pass_settings
def info(settings: Settings, digests: tuple) -> None:
    """Print blobs' records as JSON: digest, size, labels and times."""
    digests = check(dict.fromkeys(digests))
    ns = settings.reader()
    emit_json([ns.content.info(digest) for digest in resolve_content(ns, digests)])


@command.command("ingest", epilog=examples("echo hi | cargohold content ingest note-1 --label kind=text",
                                           "cargohold content ingest layer-1 --expected sha256:<digest> < layer.tar"))
@click.argument("ref")
@click.option("--expected", metavar="DIGEST", help="Refuse the content unless it has this digest.")
@click.option("--size", type=click.IntRange(min=0), default=0, help="Refuse the content unless it has this size.")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Label the blob (repeatable).")
@pass_settings
def ingest(settings: Settings, ref: str, expected: Optional[str], size: int, labels: tuple) -> None:
    """Store stdin as a blob through ingest REF and print its digest.

    An interrupted ingest resumes when run again with the same REF and the
    same input; a failed one (digest or size mismatch) is discarded. Content
    the namespace has already is not stored twice (its labels are updated).
    A REF that another writer has open is Unavailable.
    """
    wanted = parse_labels(labels)
    content = settings.ns().content
    source = sys.stdin.buffer
    try:
        writer = content.writer(ref, total=size, expected=expected)
    except AlreadyExists:
        _relabel(content, expected, wanted)
        echo(expected)
        return
    try:
        with writer:
            _skip(source, writer.status().offset)
            while chunk := source.read(CHUNK):
                writer.write(chunk)
            try:
                stored = writer.commit(size, expected, wanted)
            except AlreadyExists:
                stored = _relabel(content, writer.digest(), wanted)
    except Error:
        try:
            content.abort(ref)
        except Error:
            pass  # already consumed or gone; the first error is the one to report
        raise
    echo(stored.digest)


def _skip(source, count: int) -> None:
    """Skip what an earlier, interrupted ingest already stored (as containerd's content.Copy does)."""
    from cargohold.errors import FailedPrecondition

    while count > 0:
        chunk = source.read(min(CHUNK, count))
        if not chunk:
            raise FailedPrecondition(f"the input is shorter than the {count} bytes the ingest already holds")
        count -= len(chunk)


def _relabel(content, digest: str, labels: dict) -> "Info":
    if labels:
        from cargohold import Info
        from cargohold.fieldpaths import label_paths

        return content.update(Info(digest, labels=labels), *label_paths(labels))
    return content.info(digest)


@command.command("rm", epilog=examples("cargohold content rm sha256:4f3a", "cargohold content ls -q | xargs cargohold content rm"))
@click.argument("digests", nargs=-1, required=True, metavar="DIGEST...")
@pass_settings
def rm(settings: Settings, digests: tuple) -> None:
    """Remove blobs from the namespace, all or none (the bytes go at the next garbage collection)."""
    digests = check(digests)
    ns = settings.ns()
    remove_all(settings, resolve_content(ns, digests), lambda digest, tx: ns.content.delete(digest, tx=tx))


ACTIVE_COLUMNS = (
    Column("REF", lambda s: s.ref, "key"),
    Column("OFFSET", lambda s: s.offset, "size"),
    Column("TOTAL", lambda s: s.total, "size"),
    Column("EXPECTED", lambda s: s.expected),
    Column("STARTED", lambda s: s.started_at, "time", wide=True),
    Column("UPDATED", lambda s: s.updated_at, "time"),
)


@command.command("active", epilog=examples("cargohold content active", "cargohold content active -q 'ref~=^import-'"))
@click.argument("filters", nargs=-1)
@listing_options("refs", filter_example="ref~=^import-")
@pass_settings
def active(settings: Settings, listing) -> None:
    """List ingests in progress (resumable writes), optionally matching FILTERS (e.g. 'ref~=^import')."""
    listing.emit(listing.fetch(lambda: settings.reader().content.statuses(*listing.filters)), ACTIVE_COLUMNS)


@command.command("label", epilog=examples("cargohold content label sha256:4f3a containerd.io/gc.root=keep",
                                          "cargohold content label 4f3a team="))
@click.argument("digest")
@click.argument("labels", nargs=-1, required=True, metavar="KEY=VALUE...")
@click.option("--json", "as_json", is_flag=True, help="Print the labels as JSON.")
@pass_settings
def label(settings: Settings, digest: str, labels: tuple, as_json: bool) -> None:
    """Set labels on blob DIGEST (KEY= with an empty value removes KEY)."""
    changes = parse_labels(labels)
    check([digest])
    ns = settings.ns()
    (digest,) = resolve_content(ns, [digest])
    emit_labels(_relabel(ns.content, digest, changes).labels, as_json)
