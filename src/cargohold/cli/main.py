"""Entry point of the `cargohold` command: global options, command groups, error reporting.

Every error is reported as one line on stderr with exit code 1.
"""

from __future__ import annotations

import sys

import click

import cargohold
from cargohold.errors import Error

from . import demo, namespaces
from .context import Settings, default_root


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Root directory of the host metadata [default: $CARGOHOLD_ROOT, else a per-user data dir].")
@click.option("--namespace", "-n", default="default", show_default=True, help="Namespace to work in.")
@click.version_option(cargohold.__version__, prog_name="cargohold")
@click.pass_context
def cli(ctx: click.Context, root: str, namespace: str) -> None:
    """cargohold: container-host metadata on LMDB, with containerd's garbage collector."""
    settings = Settings(root=root or default_root(), namespace=namespace, root_given=root is not None)
    ctx.obj = settings
    ctx.call_on_close(settings.close)


cli.add_command(namespaces.group)
cli.add_command(demo.command)


def main(argv=None) -> None:
    """Run the CLI; cargohold errors become one line on stderr and exit code 1."""
    try:
        code = cli.main(args=argv, prog_name="cargohold", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("cargohold: aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        click.echo(f"cargohold: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code if exc.exit_code else 1)
    except Error as exc:
        click.echo(f"cargohold: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"cargohold: {exc}", err=True)
        sys.exit(1)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
