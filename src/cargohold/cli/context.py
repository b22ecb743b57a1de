"""Shared state of one CLI invocation: where the root is, which namespace, how to print, how to fail.

Stored text reaches the terminal only through `safe` (tables, plain lines,
error messages): names can come from archives or other hosts, and a name
carrying ``\\x1b]0;...\\x07`` must not drive the terminal. JSON output is exact.

This module is imported by every command and by the listings that run without
click (`cargohold.cli.fast`), so it imports only cargohold's light modules (click
when `echo` or `pass_settings` is first used); the database code loads when a
command opens one. How a failure is reported (`Failure`, `failure`, ...) is in
`cargohold.cli.failures`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional

from cargohold.errors import Error, FailedPrecondition

from .missing import MissingRoot

if TYPE_CHECKING:
    from cargohold import DB, Namespace

_OUTPUT = ("emit_json", "emit_labels", "emit_list", "emit_table", "format_labels", "json_option", "parse_labels")
"""The rest of the old context API, now in `output`: loaded from there when first asked for here."""


def __getattr__(name: str) -> Any:
    if name in _OUTPUT:
        from . import output

        return getattr(output, name)
    if name == "pass_settings":  # a command module's decorator: click is loaded by then
        import click

        globals()[name] = value = click.make_pass_decorator(Settings)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def default_root() -> str:
    """$CARGOHOLD_ROOT, else a per-user data directory ($XDG_DATA_HOME/cargohold, ~/.local/share/cargohold)."""
    env = os.environ.get("CARGOHOLD_ROOT")
    if env:
        return env
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "cargohold")


ROOT_ENTRIES = ("meta", "content", "snapshots")
"""What a directory holds once cargohold used it as a root (one of them is enough: a root whose
meta directory was moved away, to start over, is still a root)."""


class Settings:
    """The global options, and the database this invocation opened (at most one).

    `init` is --init: a command that writes may make a non-empty directory that is not a
    cargohold root into one. `metadata` is --metadata: an engine URL for the tables.
    """

    def __init__(self, root: str, namespace: str, root_given: bool = False, init: bool = False,
                 metadata: "Optional[str]" = None) -> None:
        self.root = root
        self.namespace = namespace
        self.root_given = root_given
        self.init = init
        self.metadata = metadata
        self._db: "Optional[DB]" = None

    def __repr__(self) -> str:
        return f"Settings(root={self.root!r}, namespace={self.namespace!r})"

    def db(self, write: bool = True) -> "DB":
        """The database, opened to write (creating the root) or, with ``write=False``, only to read.

        A reading open writes nothing: MissingRoot when there is no root yet,
        FailedPrecondition for a directory that holds something else. A
        writing open refuses a non-empty directory that is not a root unless
        --init, and a root this user cannot write (FailedPrecondition).
        """
        if self._db is not None and (self._db.readonly and write):
            self.close()
        if self._db is None:
            import cargohold

            self._check_root(write)
            # On an engine the root keeps only this host's locks and sessions: every open writes those.
            self._db = cargohold.open(self.root, readonly=not write and not self.metadata, metadata=self.metadata)
        return self._db

    def ns(self, write: bool = True) -> "Namespace":
        from cargohold.validation import validate_identifier

        validate_identifier(self.namespace, "namespace")  # even when there is no root to open
        return self.db(write).namespace(self.namespace)

    def reader(self) -> "Namespace":
        """The namespace, opened only to read."""
        return self.ns(write=False)

    def _check_root(self, write: bool) -> None:
        root = self.root
        meta = os.path.join(root, "meta")
        if os.path.isfile(os.path.join(meta, "data.mdb")) or self.metadata:
            return  # the usual case: a root with its database (or its tables on an engine)
        existing = os.path.abspath(root)
        while not os.path.lexists(existing) and os.path.dirname(existing) != existing:
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            where = "is not a directory" if existing == os.path.abspath(root) else f"cannot be made: {existing!r} is not a directory"
            raise FailedPrecondition(f"root {root!r} {where}")
        ours = os.path.isdir(root) and any(os.path.isdir(os.path.join(root, name)) for name in ROOT_ENTRIES)
        if not ours and os.path.isdir(root) and os.listdir(root) and not (write and self.init):
            hint = "; give --init to make it one" if write else ""
            raise FailedPrecondition(f"{root!r} is not a cargohold root (it has none of "
                                     f"{', '.join(ROOT_ENTRIES)}) and is not empty{hint}")
        if not write:
            if os.path.isdir(meta):
                from cargohold import kvguard

                kvguard.check_not_lost(meta)  # a lost database is Corrupted, not an empty root
            state = "does not exist" if not os.path.exists(root) else "holds no metadata database"
            raise MissingRoot(f"root {root!r} {state}: nothing is stored there yet")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def safe(value: Any) -> str:
    """`value` as text fit for a terminal (`validation.escape_controls`)."""
    from cargohold.validation import escape_controls  # not for --help: it prints no stored text

    return escape_controls(str(value))


def echo(value: Any = "", *, err: bool = False) -> None:
    """Print one line of text for people (stdout, or stderr with `err`), escaped by `safe`."""
    import click

    click.echo(safe(value), err=err)


def one_line(message: str) -> str:
    """A message on one line (multi-line messages are joined)."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


# -- failing -------------------------------------------------------------------------------------

PUBLIC_ERRORS = ("NotFound", "AlreadyExists", "InvalidArgument", "FailedPrecondition", "Unavailable",
                 "Unsupported", "Corrupted")
"""The error classes a message names (a subclass is reported as the public class it derives from)."""


def silence_stdout() -> None:
    """Point standard output at /dev/null, so that flushing what is left of it cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass


def error_kind(exc: Error) -> str:
    """The public class an error is reported as: its own, or the nearest public ancestor's."""
    for cls in type(exc).__mro__:
        if cls.__module__ == "cargohold.errors" and cls.__name__ in PUBLIC_ERRORS:
            return cls.__name__
    return "Error"


def refuse_terminal(what: str) -> None:
    """FailedPrecondition when stdout is a terminal: binary data would garble it."""
    import sys

    if sys.stdout.isatty():
        raise FailedPrecondition(f"refusing to write {what} to a terminal: redirect standard output "
                                 "(> FILE or | COMMAND)")


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
