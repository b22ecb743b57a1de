"""`cargohold content ...`: the namespace's blobs and ingests."""

from __future__ import annotations

import shutil
import sys
from typing import Optional

import click

from cargohold import Info
from cargohold.content.local import CHUNK
from cargohold.errors import AlreadyExists, Error
from cargohold.fieldpaths import label_paths

from .context import (Settings, echo, emit_labels, emit_list, format_labels, json_option, parse_labels,
                      pass_settings, remove_all)


@click.group("content")
def command() -> None:
    """List, read, write, label and remove content blobs."""


@command.command("ls")
@click.argument("filters", nargs=-1)
@click.option("-q", "--quiet", is_flag=True, help="Print only the digests.")
@json_option
@pass_settings
def ls(settings: Settings, filters: tuple, quiet: bool, as_json: bool) -> None:
    """List blobs, optionally only those matching FILTERS (e.g. 'labels."containerd.io/gc.root"')."""
    found = list(settings.ns().content.walk(*filters))
    if quiet:
        for info in found:
            echo(info.digest)
    else:
        emit_list(found, as_json, ["DIGEST", "SIZE", "CREATED", "LABELS"],
                  lambda i: (i.digest, i.size, i.created_at, format_labels(i.labels)))


@command.command("get")
@click.argument("digest")
@pass_settings
def get(settings: Settings, digest: str) -> None:
    """Write the blob DIGEST to stdout."""
    out = sys.stdout.buffer
    with settings.ns().content.open(digest) as blob:
        shutil.copyfileobj(blob, out, CHUNK)
    out.flush()


@command.command("ingest")
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
    """
    content = settings.ns().content
    wanted = parse_labels(labels)
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
                info = writer.commit(size, expected, wanted)
            except AlreadyExists:
                info = _relabel(content, writer.digest(), wanted)
    except Error:
        try:
            content.abort(ref)
        except Error:
            pass  # already consumed or gone; the first error is the one to report
        raise
    echo(info.digest)


def _skip(source, count: int) -> None:
    """Skip what an earlier, interrupted ingest already stored (as containerd's content.Copy does)."""
    while count > 0:
        chunk = source.read(min(CHUNK, count))
        if not chunk:
            raise click.UsageError(f"the input is shorter than the {count} bytes the ingest already holds")
        count -= len(chunk)


def _relabel(content, digest: str, labels: dict) -> Info:
    if labels:
        return content.update(Info(digest, labels=labels), *label_paths(labels))
    return content.info(digest)


@command.command("rm")
@click.argument("digests", nargs=-1, required=True, metavar="DIGEST...")
@pass_settings
def rm(settings: Settings, digests: tuple) -> None:
    """Remove blobs from the namespace, all or none (the bytes go at the next garbage collection)."""
    content = settings.ns().content
    remove_all(settings, digests, lambda digest, tx: content.delete(digest, tx=tx))


@command.command("active")
@click.argument("filters", nargs=-1)
@json_option
@pass_settings
def active(settings: Settings, filters: tuple, as_json: bool) -> None:
    """List ingests in progress (resumable writes), optionally matching FILTERS (e.g. 'ref~=^import')."""
    emit_list(settings.ns().content.statuses(*filters), as_json, ["REF", "OFFSET", "TOTAL", "EXPECTED", "UPDATED"],
              lambda s: (s.ref, s.offset, s.total, s.expected, s.updated_at))


@command.command("label")
@click.argument("digest")
@click.argument("labels", nargs=-1, required=True, metavar="KEY=VALUE...")
@json_option
@pass_settings
def label(settings: Settings, digest: str, labels: tuple, as_json: bool) -> None:
    """Set labels on blob DIGEST (KEY= with an empty value removes KEY)."""
    info = _relabel(settings.ns().content, digest, parse_labels(labels))
    emit_labels(info.labels, as_json)
