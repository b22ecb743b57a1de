"""How a failed command is reported: one line on stderr, ``cargohold: <ErrorClass>: <message>``,
exit code 1 (`Failure`); a closed pipe quietly, exit code 141 (`PipeClosed`); Ctrl-C, exit code 130.

`failure` says what a command's exception is reported as: cargohold's errors by
their public class, OS errors by what went wrong, click's usage errors as
InvalidArgument. The click group (`root.CommandGroup`), `main` and the listings
that run without click (`fast`) all report through it; it is imported only when
something fails.
"""

from __future__ import annotations

import sys
from typing import NoReturn, Optional

import click

from cargohold.errors import Error

from .context import echo, error_kind, one_line, silence_stdout


class Failure(click.ClickException):
    """A failed command: one line on stderr, ``cargohold: <ErrorClass>: <message>``, exit code 1."""

    def __init__(self, kind: str, message: str, exit_code: int = 1) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        echo(f"cargohold: {one_line(self.message)}", err=True)


class PipeClosed(click.ClickException):
    """Standard output was closed by its reader (``| head``): end quietly, with the status a
    process killed by SIGPIPE gets from the shell."""

    exit_code = 141

    def __init__(self) -> None:
        super().__init__("")

    def show(self, file=None) -> None:
        silence_stdout()


def os_failure(exc: OSError) -> Failure:
    """An OS error as a Failure of the class that says what went wrong."""
    import errno

    kind = {errno.ENOENT: "NotFound", errno.EEXIST: "AlreadyExists", errno.EACCES: "FailedPrecondition",
            errno.EPERM: "FailedPrecondition", errno.EROFS: "FailedPrecondition", errno.ENOTDIR: "InvalidArgument",
            errno.EISDIR: "InvalidArgument", errno.ENAMETOOLONG: "InvalidArgument"}.get(exc.errno, "Unavailable")
    what = exc.strerror or str(exc)
    if exc.errno == errno.EROFS:
        what = "read-only file system"
    if exc.filename is not None:
        what += f": {exc.filename!r}"
    return Failure(kind, what)


def failure(exc: BaseException) -> click.ClickException:
    """What a command's exception is reported as."""
    cause: Optional[BaseException] = exc
    while cause is not None:  # also when a store wrapped it into one of its errors
        if isinstance(cause, BrokenPipeError):
            return PipeClosed()
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, Error):
        return Failure(error_kind(exc), str(exc))
    if isinstance(exc, OSError):
        return os_failure(exc)
    if isinstance(exc, click.UsageError):
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        return Failure("InvalidArgument", exc.format_message() + hint)
    raise exc


def internal_error(exc: Exception) -> Failure:
    """An exception no cargohold class describes: a bug, reported in one line all the same."""
    return Failure("Error", f"internal error, please report it: {type(exc).__name__}: {exc} "
                            "(CARGOHOLD_DEBUG=1 shows where)")


def interrupted() -> Failure:
    """Ctrl-C: what was in flight has been undone; exit 130 (128 + SIGINT), as shells report it."""
    return Failure("Cancelled", "interrupted", exit_code=130)


def exit_with(report: click.ClickException) -> NoReturn:
    """Show `report` and exit with its status.

    A KeyboardInterrupt that once left code run by ``exec`` of a string (`dataclasses` compiles a
    class's methods so, at the class's first use) makes CPython note it as unhandled, and a process
    started with ``python -m`` then kills itself with SIGINT as it exits, whatever status it asked
    for. Running a string to its end clears that note: a Ctrl-C the command handled exits 130.
    """
    report.show()
    exec("")  # noqa: S102 -- see above
    sys.exit(report.exit_code)
