"""Entry point of the `cargohold` command: error reporting, pipes and signals.

Every error is one line on stderr, ``cargohold: <ErrorClass>: <message>``,
with exit code 1: cargohold's errors, OS errors and usage errors alike
(`failures.failure`). Ctrl-C undoes what was in flight, says so in one line
and exits 130; a reader closing the pipe (``| head``) ends the command
quietly with exit code 141, as a shell reports a program killed by SIGPIPE.

Start-up is kept short: this module imports nothing until it runs (the
group, `cli`, lives in `cargohold.cli.root` and is loaded on first use), the
groups are imported only when used (`groups`), and each command imports
what it needs when it runs. ``--version`` answers before click is imported,
and so does ``images ls`` with plain arguments (`cargohold.cli.fast`).
"""

from __future__ import annotations

import sys


def _fast_version(argv: list) -> bool:
    """``cargohold --version`` answers before click is even imported."""
    if argv != ["--version"]:
        return False
    from cargohold import __version__

    sys.stdout.write(f"cargohold, version {__version__}\n")
    return True


def _fast_listing(args: list) -> bool:
    """``cargohold images ls ...`` without click, when `cargohold.cli.fast` takes its arguments
    (help is always click's)."""
    if "--help" in args or "-h" in args:
        return False
    from .fast import run

    return run(args)


def main(argv=None) -> None:
    """Run the CLI: errors are one line on stderr, Ctrl-C exits 130, a closed pipe 141."""
    args = sys.argv[1:] if argv is None else list(argv)
    if _fast_version(args) or _fast_listing(args):
        return
    run_click(args)


def run_click(args: list) -> None:
    """Run the CLI through click, whatever the arguments (`main` without its fast paths)."""
    import click

    from .root import cli

    try:
        try:
            code = cli.main(args=args, prog_name="cargohold", standalone_mode=False)
            sys.stdout.flush()
        except BrokenPipeError:
            from .failures import PipeClosed

            raise PipeClosed() from None
        except click.exceptions.Abort:  # Ctrl-C while the arguments were parsed
            from .failures import interrupted

            raise interrupted() from None
    except click.ClickException as exc:
        from .failures import exit_with

        exit_with(exc)
    if isinstance(code, int) and code:
        sys.exit(code)


def __getattr__(name: str):
    """`cli` (the click group) and the rest of `cargohold.cli.root`, loaded on first use."""
    if name.startswith("__"):
        raise AttributeError(name)
    from . import root

    return getattr(root, name)


if __name__ == "__main__":
    main()
