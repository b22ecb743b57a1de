"""What commands print: tables for people, JSON for scripts, one token a line with ``-q``.

Tables show full names, digests and keys (never truncated or wrapped), sizes
and ages for people (``1.4 MB``, ``3 days ago``) and ``-`` for an empty value;
``--format json`` (or ``--json``) prints the exact values. A name or key
holding a space or a quote is printed single-quoted, as a shell would read it
(``'my key'``), in tables and ``-q`` output alike, so that it stays one token
for ``xargs``. Every cell passes through `escape_controls` first.

Tables are rendered here (no terminal library): 10,000 rows take milliseconds.
click is imported only by the option decorators and `emit_labels`: the listings
that run without it (`cargohold.cli.fast`) print through this module too.
"""

from __future__ import annotations

import enum
import functools
import json
import sys
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Optional, Sequence

from cargohold.errors import InvalidArgument
from cargohold.validation import escape_controls, validate_labels

FORMATS = ("table", "wide", "json")


# -- values ---------------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """`value` as JSON can hold it: dataclasses as objects, enums by lower-case name, times in ISO 8601."""
    if hasattr(type(value), "__dataclass_fields__") and not isinstance(value, type):  # dataclasses.is_dataclass
        import dataclasses  # loaded by then: `value` is one

        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.name.lower()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def human_size(size: int) -> str:
    """Bytes for people, in decimal units: ``512 B``, ``1.4 kB``, ``12.3 MB``, ``143 GB``."""
    if size < 1000:
        return f"{size} B"
    value = float(size)
    for unit in ("kB", "MB", "GB", "TB", "PB", "EB"):
        value /= 1000
        if value < 999.5 or unit == "EB":
            return f"{value:.1f} {unit}" if value < 99.95 else f"{value:.0f} {unit}"
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    """A duration for people, rounded as ``docker ps`` rounds it: ``5 seconds``, ``about an hour``, ``3 days``."""
    if seconds < 1:
        return "less than a second"
    if seconds < 2:
        return "1 second"
    if seconds < 60:
        return f"{int(seconds)} seconds"
    minutes = int(seconds // 60)
    if minutes == 1:
        return "about a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(seconds / 3600)
    if hours == 1:
        return "about an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // (24 * 7)} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // (24 * 30)} months"
    return f"{hours // (24 * 365)} years"


def human_age(when: datetime, now: Optional[datetime] = None) -> str:
    """How long ago `when` was: ``3 days ago`` (``… from now`` for a time ahead of the clock)."""
    seconds = ((now or datetime.now(timezone.utc)) - when).total_seconds()
    if seconds < -1:
        return f"{human_duration(-seconds)} from now"
    return f"{human_duration(max(seconds, 0))} ago"


_QUOTED = frozenset(" '\"")


def quote_token(text: str) -> str:
    """`text` as one shell token: single-quoted when it holds a space or a quote, or is empty."""
    if text and _QUOTED.isdisjoint(text):
        return text
    return "'" + text.replace("'", "'\"'\"'") + "'"


def format_labels(labels: Optional[dict]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items())) or "-"


def parse_labels(items: tuple) -> dict:
    """KEY=VALUE arguments as a dict, checked as labels before any command writes
    (an argument that is not UTF-8 text is InvalidArgument); an empty VALUE is kept."""
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidArgument(f"label {item!r} must be KEY=VALUE (KEY= removes KEY)")
        labels[key] = value
    return validate_labels(labels)


# -- JSON and tables ------------------------------------------------------------------------------


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(plain(data), indent=2, sort_keys=True) + "\n")


def _width(text: str) -> int:
    """Columns `text` takes on a terminal (wide East Asian characters take two, combining ones none)."""
    if text.isascii():
        return len(text)
    import unicodedata

    return sum(0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
               for ch in text)


def render_table(columns: Sequence[str], rows: Iterable[Sequence[str]], *, bold: bool = False) -> str:
    """Left-aligned columns two spaces apart, header first, no trailing spaces; cells are ready text."""
    rows = [list(columns)] + [list(row) for row in rows]
    widths = [max(_width(row[i]) for row in rows) for i in range(len(columns))]
    out = []
    for n, row in enumerate(rows):
        cells = []
        for i, cell in enumerate(row):
            pad = " " * (widths[i] - _width(cell)) if i + 1 < len(row) else ""
            cells.append((f"\x1b[1m{cell}\x1b[0m" if bold and n == 0 else cell) + pad)
        out.append("  ".join(cells).rstrip() + "\n")
    return "".join(out)


def cell(value: Any) -> str:
    """A table cell: ``-`` for an empty value, escaped text otherwise."""
    if value is None or value == "":
        return "-"
    return escape_controls(str(plain(value)))


def emit_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A table for people: full values, never truncated or wrapped, so scripts can split lines on whitespace."""
    sys.stdout.write(render_table(columns, ([cell(v) for v in row] for row in rows), bold=sys.stdout.isatty()))


def emit_labels(labels: Optional[dict], as_json: bool) -> None:
    """The labels an object has after a `label` command."""
    if as_json:
        emit_json(labels or {})
    else:
        import click

        click.echo(escape_controls(format_labels(labels)))


def emit_list(items: Sequence[Any], as_json: bool, columns: Sequence[str], row: Callable[[Any], Sequence[Any]]) -> None:
    """`items` as JSON, or as a table of one `row(item)` each."""
    if as_json:
        emit_json(items)
    else:
        emit_table(columns, [row(item) for item in items])


def __getattr__(name: str) -> Any:
    """`json_option`, the ``--json`` flag of commands that print one object, made when a command module asks."""
    if name == "json_option":
        import click

        globals()[name] = value = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- listings -------------------------------------------------------------------------------------


class Column:
    """One column of a listing: its header, how to get its value from an item, and how to show it.

    `kind` is ``text``, ``key`` (a name or key: one shell token), ``size`` (bytes) or ``time``
    (an age); `wide` columns appear only with ``--format wide``.
    """

    __slots__ = ("name", "value", "kind", "wide")

    def __init__(self, name: str, value: Callable[[Any], Any], kind: str = "text", wide: bool = False) -> None:
        self.name, self.value, self.kind, self.wide = name, value, kind, wide


def _shown(column: Column, value: Any, now: datetime) -> str:
    if value is None or value == "":
        return "-"
    if column.kind == "key":
        return quote_token(escape_controls(str(value)))
    if column.kind == "size" and isinstance(value, int):
        return human_size(value)
    if column.kind == "time" and isinstance(value, datetime):
        return human_age(value, now)
    return cell(value)


class Listing:
    """How one listing command was asked to print: ``-q``, ``--format`` (``--json``), filters."""

    __slots__ = ("quiet", "format", "filters")

    def __init__(self, quiet: bool = False, format: str = "table", filters: tuple = ()) -> None:
        self.quiet, self.format, self.filters = quiet, format, tuple(filters)

    @property
    def json(self) -> bool:
        return self.format == "json"

    def emit(self, items: Sequence[Any], columns: Sequence[Column], *,
             key: Optional[Callable[[Any], Any]] = None, as_json: Optional[Callable[[Any], Any]] = None) -> None:
        """Print `items`: their keys (``-q``: `key`, else the first column's), JSON (each item
        through `as_json`, else as it is) or a table of `columns`."""
        if self.quiet:
            pick = key or columns[0].value
            sys.stdout.write("".join(quote_token(escape_controls(str(pick(item)))) + "\n" for item in items))
        elif self.json:
            emit_json([as_json(item) for item in items] if as_json else list(items))
        else:
            shown = [c for c in columns if self.format == "wide" or not c.wide]
            now = datetime.now(timezone.utc)
            sys.stdout.write(render_table([c.name for c in shown],
                                          ([_shown(c, c.value(item), now) for c in shown] for item in items),
                                          bold=sys.stdout.isatty()))

    def fetch(self, read: Callable[[], Iterable[Any]]) -> list:
        """What `read()` lists (the filters checked first), or nothing when there is no root yet."""
        from .missing import MissingRoot

        if self.filters:
            from cargohold import filters

            filters.parse(*self.filters)
        try:
            return list(read())
        except MissingRoot:
            return []

    def select(self, items: Iterable[Any], fields: Callable[[Any], dict],
               maps: Optional[Callable[[Any], dict]] = None) -> list:
        """The items the filters match, for listings whose store takes none: `fields(item)` gives
        the plain fields (``{"id": ...}``), `maps(item)` the label-like maps (``{"labels": {...}}``)."""
        items = list(items)
        if not self.filters:
            return items
        from cargohold import filters

        matcher = filters.parse(*self.filters)
        return [item for item in items
                if matcher.match(filters.adaptor(fields(item), maps(item) if maps else None))]


def listing_options(what: str, *, filter_example: str = "labels.team==infra") -> Callable:
    """The options every listing takes: ``-q`` (only `what`), ``--filter`` (repeatable, in
    containerd's syntax, also given as FILTER arguments), ``--format`` and ``--json``.

    The command receives them as one `Listing` argument named ``listing`` (and a
    ``filters`` argument, if it has one, is folded into it).
    """
    import click

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args, quiet: bool, fmt: Optional[str], as_json: bool, filter_options: tuple, **kwargs):
            if as_json and fmt not in (None, "json"):
                raise click.UsageError(f"--json and --format {fmt} contradict each other")
            given = tuple(kwargs.pop("filters", ())) + tuple(filter_options)
            listing = Listing(quiet=quiet, format="json" if as_json else fmt or "table", filters=given)
            return fn(*args, listing=listing, **kwargs)

        for option in (
            click.option("-q", "--quiet", is_flag=True, help=f"Print only the {what}, one a line."),
            click.option("--filter", "filter_options", multiple=True, metavar="FILTER",
                         help=f"Only what matches FILTER, in containerd's syntax (e.g. '{filter_example}'); "
                              "',' joins conditions that must all hold, repeated filters match when any does."),
            click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
                         help="table (for people, the default), wide (more columns) or json (exact values)."),
            click.option("--json", "as_json", is_flag=True, help="Print JSON (the same as --format json)."),
        ):
            run = option(run)
        return run

    return decorate
