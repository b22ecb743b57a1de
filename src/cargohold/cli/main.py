"""Entry point of the `cargohold` command: global options, command groups, error reporting.

Every error is reported as one line on stderr with exit code 1: cargohold's
errors and OS errors raised by a command become `Failure` (so click's own
runner reports them the same way), usage errors are shortened to their message.
"""

from __future__ import annotations

import sys

import click

import cargohold

from . import (compact, containerd, containers, content, demo, df, fsck, gc, images, info, leases, namespaces, prune,
               snapshots)
from .context import CommandGroup, Settings, default_root, echo, one_line


@click.group(cls=CommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Root directory of the host metadata [default: $CARGOHOLD_ROOT, else a per-user data dir].")
@click.option("--metadata", envvar="CARGOHOLD_METADATA", default=None, metavar="URL",
              help="Keep the metadata tables on an etcd cluster, etcd://host:port[,host:port...]/<prefix> "
                   "[default: $CARGOHOLD_METADATA, else LMDB in the root].")
@click.option("--namespace", "-n", default="default", show_default=True, help="Namespace to work in.")
@click.version_option(cargohold.__version__, prog_name="cargohold")
@click.pass_context
def cli(ctx: click.Context, root: str, metadata: str, namespace: str) -> None:
    """cargohold: container-host metadata on LMDB, with containerd's garbage collector.

    Start with `cargohold demo`. Every command takes --help; listings take
    --json for scripts.
    """
    settings = Settings(root=root or default_root(), namespace=namespace, root_given=root is not None,
                        metadata=metadata or None)
    ctx.obj = settings
    ctx.call_on_close(settings.close)


for module in (namespaces, images, content, snapshots, leases, containers, gc, prune, fsck, compact, df, info,
               containerd, demo):
    cli.add_command(module.command)


def main(argv=None) -> None:
    """Run the CLI; every error becomes one line on stderr and exit code 1."""
    try:
        code = cli.main(args=argv, prog_name="cargohold", standalone_mode=False)
    except click.exceptions.Abort:
        echo("cargohold: aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        echo(f"cargohold: {one_line(exc.format_message())}", err=True)
        sys.exit(1)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
