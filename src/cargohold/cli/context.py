"""Shared state of one CLI invocation: where the root is, which namespace, how to print."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

import click
from rich.console import Console
from rich.table import Table

import cargohold


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
    _db: Optional[cargohold.DB] = field(default=None, repr=False)

    def db(self) -> cargohold.DB:
        if self._db is None:
            self._db = cargohold.open(self.root)
        return self._db

    def ns(self) -> cargohold.Namespace:
        return self.db().namespace(self.namespace)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


pass_settings = click.make_pass_decorator(Settings)

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")

stdout = Console(soft_wrap=True)


def _plain(value: Any) -> Any:
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
    """A table for people: full values, never truncated (scripts can split on whitespace)."""
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="bold")
    for name in columns:
        table.add_column(name, overflow="fold", no_wrap=True)
    for row in rows:
        table.add_row(*("" if v is None else str(_plain(v)) for v in row))
    stdout.print(table)


def format_labels(labels: Optional[dict]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items())) or "-"


def parse_labels(items: tuple) -> dict:
    """KEY=VALUE arguments as a dict."""
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"label {item!r} must be KEY=VALUE", param_hint="LABEL")
        labels[key] = value
    return labels
