"""`images ls` without click: the listing run most often, parsed here when its arguments are plain,
so that it starts in the time the database code takes (importing click alone takes about as long).

`run` takes exactly: the global options ``--root DIR``, ``--namespace NS`` (``-n NS``) and
``--init`` (long ones also as ``--opt=value``), then ``images`` (or ``image``, ``i``), then
``ls`` (or ``list``) with ``-q``/``--quiet``, ``--json``, ``--format table|wide|json``,
``--filter FILTER`` and FILTER arguments in any order. Anything else returns False and click
parses the arguments instead: help, any other option or command, a value click would refuse
(an empty or unusable --root, an unknown format, --json with another format), a value that
looks like an option, an engine (--metadata, $CARGOHOLD_METADATA), shell completion. So every
message about the arguments is click's own. The listing and the report of a failure run the
code the click command runs (`imagelist.list_images`, `failures.failure`): output, messages and
exit codes are the same byte for byte (tests/test_cli_fast.py runs both on the same roots).
"""

from __future__ import annotations

import os
import stat
import sys
from typing import NoReturn, Optional

from .context import Settings, default_root
from .output import FORMATS, Listing

GROUP_NAMES = ("images", "image", "i")
"""The images group and its aliases (`root.GROUPS`)."""

COMMAND_NAMES = ("ls", "list")
"""`images ls` and its alias (`groups.COMMAND_ALIASES`)."""

_GLOBAL_VALUES = {"--root": "root", "--namespace": "namespace", "-n": "namespace"}
_GLOBAL_FLAGS = {"--init": "init"}
_LS_VALUES = {"--filter": "filter", "--format": "format"}
_LS_FLAGS = {"-q": "quiet", "--quiet": "quiet", "--json": "json"}


def _option(args: list, i: int, values: dict, flags: dict) -> Optional[tuple]:
    """The option at ``args[i]`` as (key, value, index after it), or None if it is not a plain one."""
    arg = args[i]
    name, eq, attached = arg.partition("=") if arg.startswith("--") else (arg, "", "")
    if name in flags and not eq:
        return flags[name], True, i + 1
    if name not in values:
        return None
    if eq:
        return values[name], attached, i + 1
    if i + 1 >= len(args) or args[i + 1].startswith("-"):
        return None
    return values[name], args[i + 1], i + 2


def _usable_root(path: str) -> bool:
    """Whether click's ``Path(file_okay=False)`` takes `path` without a word: it does not
    exist, or it is a directory this user can read."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return True
    except ValueError:  # an embedded NUL: let click say what it says
        return False
    return stat.S_ISDIR(mode) and os.access(path, os.R_OK)


def parse(args: list) -> Optional[tuple]:
    """(`Settings`, `Listing`) for an ``images ls`` that needs no click, else None (see the module)."""
    if os.environ.get("CARGOHOLD_METADATA") or "_CARGOHOLD_COMPLETE" in os.environ:
        return None
    given: dict = {"root": None, "namespace": "default", "init": False}
    i = 0
    while i < len(args) and args[i].startswith("-"):
        found = _option(args, i, _GLOBAL_VALUES, _GLOBAL_FLAGS)
        if found is None:
            return None
        key, given[key], i = found
    if len(args) < i + 2 or args[i] not in GROUP_NAMES or args[i + 1] not in COMMAND_NAMES:
        return None
    root = given["root"]
    if root is not None and (root == "" or not _usable_root(root)):
        return None
    shown = {"quiet": False, "json": False, "format": None}
    filters, filter_options = [], []
    i += 2
    while i < len(args):
        if not args[i].startswith("-"):
            filters.append(args[i])
            i += 1
            continue
        found = _option(args, i, _LS_VALUES, _LS_FLAGS)
        if found is None:
            return None
        key, value, i = found
        if key == "filter":
            filter_options.append(value)
        else:
            shown[key] = value
    fmt = shown["format"]
    if fmt is not None and fmt not in FORMATS or shown["json"] and fmt not in (None, "json"):
        return None
    settings = Settings(root=root or default_root(), namespace=given["namespace"], root_given=root is not None,
                        init=given["init"])
    listing = Listing(quiet=shown["quiet"], format="json" if shown["json"] else fmt or "table",
                      filters=tuple(filters) + tuple(filter_options))
    return settings, listing


def run(args: list) -> bool:
    """List images as ``cargohold images ls`` does, if `parse` takes `args`; False if it does not."""
    parsed = parse(args)
    if parsed is None:
        return False
    settings, listing = parsed
    try:
        from .imagelist import list_images

        try:
            list_images(settings, listing)
        finally:
            settings.close()
        sys.stdout.flush()
    except BaseException as exc:  # noqa: B036 -- reported as the click command reports it
        _fail(exc)
    return True


def _fail(exc: BaseException) -> NoReturn:
    """Report `exc` as `root.CommandGroup` and `main` do, and exit with their status."""
    from cargohold.errors import Error

    from .failures import exit_with, failure, internal_error, interrupted

    if isinstance(exc, KeyboardInterrupt):
        report = interrupted()
    elif isinstance(exc, (Error, OSError)):
        report = failure(exc)
    elif isinstance(exc, Exception) and not os.environ.get("CARGOHOLD_DEBUG"):
        report = internal_error(exc)
    else:
        raise exc
    exit_with(report)
