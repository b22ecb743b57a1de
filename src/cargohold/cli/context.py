"""Shared state of one CLI invocation: where the root is, which namespace, how to print.

Stored text reaches the terminal only through `safe` (tables, plain lines,
error messages): names can come from archives or other hosts, and a name
carrying ``\\x1b]0;...\\x07`` must not drive the terminal. JSON output is exact.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

import cargohold
from cargohold.errors import Error
from cargohold.validation import escape_controls, validate_labels


def default_root() -> str:
    """$CARGOHOLD_ROOT, else a per-user data directory."""
    env = os.environ.get("CARGOHOLD_ROOT")
    if env:
        return env
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "cargohold")


@dataclass
class Settings:
    root: str
    namespace: str
    root_given: bool = False
    metadata: Optional[str] = None
    _db: Optional[cargohold.DB] = field(default=None, repr=False)

    def db(self) -> cargohold.DB:
        if self._db is None:
            self._db = cargohold.open(self.root, metadata=self.metadata)
        return self._db

    def ns(self) -> cargohold.Namespace:
        return self.db().namespace(self.namespace)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


pass_settings = click.make_pass_decorator(Settings)


def safe(value: Any) -> str:
    """`value` as text fit for a terminal (`validation.escape_controls`)."""
    return escape_controls(str(value))


def echo(value: Any = "", *, err: bool = False) -> None:
    """Print one line of text for people (stdout, or stderr with `err`), escaped by `safe`."""
    click.echo(safe(value), err=err)


def one_line(message: str) -> str:
    """A message on one line (multi-line messages are joined)."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


class Failure(click.ClickException):
    """A failed command: one line on stderr, exit code 1."""

    def show(self, file=None) -> None:
        echo(f"cargohold: {one_line(self.message)}", err=True)


def _failure(exc: BaseException) -> Failure:
    if isinstance(exc, Error):
        return Failure(f"{type(exc).__name__}: {exc}")
    return Failure(str(exc))


class CommandGroup(click.Group):
    """A group whose commands report cargohold errors, OS errors and usage errors as a one-line `Failure`."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            raise Failure(exc.format_message() + hint) from exc
        except (Error, OSError) as exc:
            raise _failure(exc) from exc

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")

stdout = Console(soft_wrap=True, highlight=False)


def _plain(value: Any) -> Any:
    """`value` as JSON can hold it: dataclasses as objects, enums by lower-case name, times in ISO 8601."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.name.lower()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(_plain(data), indent=2, sort_keys=True) + "\n")


def emit_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A table for people: full values, never truncated or wrapped, so scripts can split lines on whitespace."""
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="bold")
    for name in columns:
        table.add_column(name, no_wrap=True)
    for row in rows:
        table.add_row(*(Text("-" if v is None or v == "" else safe(_plain(v))) for v in row))
    wide = Console(width=1 << 20, soft_wrap=True, highlight=False, force_terminal=stdout.is_terminal,
                   no_color=not stdout.is_terminal)
    with wide.capture() as captured:
        wide.print(table)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def format_labels(labels: Optional[dict]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items())) or "-"


def parse_labels(items: tuple) -> dict:
    """KEY=VALUE arguments as a dict, checked as labels before any command writes
    (an argument that is not UTF-8 text is InvalidArgument); an empty VALUE is kept."""
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"label {item!r} must be KEY=VALUE", param_hint="LABEL")
        labels[key] = value
    return validate_labels(labels)


def emit_labels(labels: Optional[dict], as_json: bool) -> None:
    """The labels an object has after a `label` command."""
    if as_json:
        emit_json(labels or {})
    else:
        echo(format_labels(labels))


def emit_list(items: Sequence[Any], as_json: bool, columns: Sequence[str], row: Callable[[Any], Sequence[Any]]) -> None:
    """`items` as JSON, or as a table of one `row(item)` each."""
    if as_json:
        emit_json(items)
    else:
        emit_table(columns, [row(item) for item in items])


def remove_all(settings: Settings, names: Iterable[str], remove: Callable[[str, Any], None], *,
               sync: bool = False) -> None:
    """Remove every named object in one transaction (all or none), collect if `sync`, print the names.

    `remove(name, tx)` removes one object inside transaction `tx`.
    """
    names = tuple(dict.fromkeys(names))
    db = settings.db()
    with db.update() as tx:
        for name in names:
            remove(name, tx)
    if sync:
        db.garbage_collect()
    for name in names:
        echo(name)
