"""Command groups as ctr users expect them: aliases, help on stdout when no command is given,
short help never cut, and subcommands imported only when used.

`Group` resolves the aliases people type (``list`` for ``ls``; ``remove``,
``delete`` and ``del`` for ``rm``; a group's own, such as ``i`` for
``images``) and lists them in its help. A group given no command prints its
help on stdout and exits 0, as ``ctr`` does. `LazyCommands` holds the
subcommands of the top-level group as ``module:attribute`` until one is
asked for, so that ``cargohold --help`` imports none of them.
"""

from __future__ import annotations

import importlib
from collections.abc import MutableMapping
from typing import Iterator, NamedTuple, Optional

import click

COMMAND_ALIASES = {"list": "ls", "remove": "rm", "delete": "rm", "del": "rm"}
"""Aliases every group accepts for the commands it has (ctr's and nerdctl's)."""


class Entry(NamedTuple):
    """A subcommand not imported yet: where it is, its aliases, its one-line help, and examples
    for it (``""``) and those of its own subcommands (``name``) that come without any
    (``{name: (line, ...)}``)."""

    target: str
    aliases: tuple = ()
    help: str = ""
    examples: Optional[dict] = None


class LazyCommands(MutableMapping):
    """Subcommands by name, imported from their `Entry` on first access."""

    def __init__(self, entries: dict[str, Entry]) -> None:
        self.entries = dict(entries)
        self.loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self.loaded:
            entry = self.entries[name]
            module, _, attr = entry.target.partition(":")
            command = getattr(importlib.import_module(module, __package__), attr)
            if not command.help and entry.help:
                command.help = entry.help
            if not isinstance(command, click.Group):
                command.context_class = Context
            else:
                adopt(command)
                for sub, lines in (entry.examples or {}).items():
                    target = command if sub == "" else command.commands.get(sub)
                    if target is not None and not target.epilog:
                        target.epilog = examples(*lines)
            self.loaded[name] = command
        return self.loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self.loaded[name] = command
        self.entries.setdefault(name, Entry(""))

    def __delitem__(self, name: str) -> None:
        self.loaded.pop(name, None)
        del self.entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


def terminal_columns() -> int:
    """The terminal's width as `shutil.get_terminal_size` reports it ($COLUMNS, else stdout's
    terminal, else 80), without importing shutil (and the compression modules it loads)."""
    import os
    import sys

    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class Context(click.Context):
    """click's context, whose help formatter takes the width click would take (`terminal_columns`)."""

    def make_formatter(self) -> click.HelpFormatter:
        width = self.terminal_width
        if width is None and click.formatting.FORCED_WIDTH is None:
            width = max(min(terminal_columns(), self.max_content_width or 80) - 2, 50)
        return self.formatter_class(width=width, max_width=self.max_content_width)


class Command(click.Command):
    """A command whose help is formatted in this module's `Context`."""

    context_class = Context


class Group(click.Group):
    """A group with aliases, help when given no command, and uncut short help (see the module docstring)."""

    context_class = Context
    command_class = Command

    def __init__(self, *args, aliases: Optional[dict] = None, lazy: Optional[dict] = None, **kwargs) -> None:
        kwargs.setdefault("context_settings", {"help_option_names": ["-h", "--help"]})
        super().__init__(*args, **kwargs)
        if lazy:
            self.commands = LazyCommands(lazy)
        self.aliases: dict[str, str] = dict(aliases or {})
        """Other names of subcommands, besides `COMMAND_ALIASES`."""

    def canonical(self, name: str) -> str:
        if name in self.commands:
            return name
        for table in (self.aliases, self._entry_aliases(), COMMAND_ALIASES):
            target = table.get(name)
            if target is not None and target in self.commands:
                return target
        return name

    def _entry_aliases(self) -> dict:
        if not isinstance(self.commands, LazyCommands):
            return {}
        return {alias: name for name, entry in self.commands.entries.items() for alias in entry.aliases}

    def aliases_of(self, name: str) -> list:
        found = [a for a, target in self.aliases.items() if target == name]
        found += [a for a, target in self._entry_aliases().items() if target == name]
        found += [a for a, target in COMMAND_ALIASES.items() if target == name and a not in found]
        return found

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        name = self.canonical(cmd_name)
        return self.commands[name] if name in self.commands else None

    def parse_args(self, ctx: click.Context, args: list) -> list:
        try:
            if not args and self.no_args_is_help and not ctx.resilient_parsing:
                _help(ctx)
            return super().parse_args(ctx, args)
        except (BrokenPipeError, click.UsageError) as exc:  # --help into a closed pipe, a bad global option
            from .failures import failure

            raise failure(exc) from exc

    def invoke(self, ctx: click.Context):
        if not getattr(ctx, "_protected_args", ctx.args) and not self.invoke_without_command:
            _help(ctx)  # options, but no command: as ctr does, the help rather than an error
        return super().invoke(ctx)

    def _short_help(self, name: str) -> str:
        commands = self.commands
        if isinstance(commands, LazyCommands) and name not in commands.loaded:
            return first_paragraph(commands.entries[name].help)
        command = commands[name]
        return command.short_help or first_paragraph(command.help or "")

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Commands with their aliases (``images, image, i``) and the first sentence of their help, whole."""
        rows = []
        for name in self.list_commands(ctx):
            if not isinstance(self.commands, LazyCommands) and self.commands[name].hidden:
                continue
            rows.append((", ".join([name, *self.aliases_of(name)]), self._short_help(name)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _help(ctx: click.Context) -> None:
    click.echo(ctx.get_help(), color=ctx.color)
    ctx.exit(0)


def first_paragraph(text: str) -> str:
    """The first paragraph of a help text, on one line: what a command list shows, never cut."""
    lines = []
    for line in text.strip().splitlines():
        if not line.strip():
            break
        if line.strip() != "\b":
            lines.append(line.strip())
    return " ".join(lines)


def adopt(group: click.Group) -> None:
    """Give a group defined with plain click (``@click.group``) this module's behaviour: aliases,
    help when given no command, whole descriptions in its command list."""
    if not isinstance(group, Group):
        group.__class__ = type(f"Adopted{type(group).__name__}", (Group, type(group)), {})
        group.aliases = {}
        for command in group.commands.values():
            if not isinstance(command, click.Group):
                command.context_class = Context


def examples(*lines: str) -> str:
    """An ``Examples:`` epilog, kept as written (click rewraps help text otherwise)."""
    body = "\n".join(f"  {line}" for line in lines)
    return f"Examples:\n\n\b\n{body}"
