"""The `cargohold` command group: global options and the command groups, imported when used."""

from __future__ import annotations

import click

import cargohold

from .context import Settings, default_root, failure, interrupted
from .groups import Entry, Group, examples

GROUPS = {
    "namespaces": Entry(".namespaces:command", ("namespace", "ns"), "Create, list, label and remove namespaces."),
    "images": Entry(".images:command", ("image", "i"),
                    "Import, export, pull, push, list, inspect, tag, label and remove images."),
    "content": Entry(".content:command", (), "List, read, write, label and remove content blobs."),
    "snapshots": Entry(".snapshots:command", ("snapshot",),
                       "Prepare, view, commit, inspect, label and remove snapshots."),
    "leases": Entry(".leases:command", ("lease",), "Create, list and remove leases, and list what they hold."),
    "containers": Entry(".containers:command", ("container", "c"),
                        "Create, list, inspect and remove containers."),
    "gc": Entry(".gc:command", (), "Collect garbage, show what a collection would remove, or why something stays."),
    "info": Entry(".info:command", (), "Counts and bytes per namespace and store, and what the backends hold."),
    "version": Entry(".version:command", (), "Print the versions of cargohold and of what it runs on."),
    "containerd": Entry(".containerd:command", (),
                        "Read a containerd root: list, plan its GC, measure, check, import (never writes to it).",
                        examples={
                            "ls": ("cargohold containerd ls", "cargohold containerd ls -n k8s.io -q content"),
                            "gc": ("cargohold containerd gc --dry-run",
                                   "cargohold containerd gc --explain sha256:<digest> -n k8s.io"),
                            "du": ("cargohold containerd du", "cargohold containerd du --root-dir /srv/containerd"),
                            "fsck": ("cargohold containerd fsck", "cargohold containerd fsck --json"),
                            "import": ("cargohold containerd import --into /srv/cargohold",
                                       "cargohold containerd import --copy --into /tmp/copy")}),
    "demo": Entry(".demo:command", (), "A guided tour of import, unpack, containers and garbage collection."),
}


class RootOption(click.Option):
    """--root, whose help shows the default this invocation would use ($CARGOHOLD_ROOT or the user's data dir)."""

    def get_help_record(self, ctx: click.Context):
        names, text = super().get_help_record(ctx)
        return names, f"{text} [default: {default_root()}]"


class CommandGroup(Group):
    """The top-level group: every failure of a command becomes one line (`context.failure`)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError as exc:  # a group of another kind, given no command
            click.echo(exc.ctx.get_help())
            ctx.exit(0)
        except KeyboardInterrupt:
            raise interrupted() from None
        except (cargohold.errors.Error, OSError, click.UsageError) as exc:
            raise failure(exc) from exc


def _check_root(ctx: click.Context, param: click.Parameter, value: "str | None") -> "str | None":
    if value == "":
        raise click.BadParameter("must not be empty (leave --root out for the default root)", ctx, param)
    return value


@click.group(cls=CommandGroup, lazy=GROUPS, epilog=examples(
    "cargohold demo                                  # a guided tour on a temporary root",
    "cargohold images import --unpack alpine.tar",
    "cargohold i ls -q                               # ctr's aliases work: i, c, ns, list, rm...",
    "cargohold --root /srv/host --namespace k8s.io content ls --format json"))
@click.option("--root", type=click.Path(file_okay=False), default=None, cls=RootOption, callback=_check_root,
              help="Root directory of the host metadata ($CARGOHOLD_ROOT, else the user's data directory).")
@click.option("--namespace", "-n", default="default", show_default=True, help="Namespace to work in.")
@click.option("--init", is_flag=True,
              help="Let a command that writes make --root a cargohold root although it is a non-empty directory.")
@click.version_option(cargohold.__version__, prog_name="cargohold")
@click.pass_context
def cli(ctx: click.Context, root: "str | None", namespace: str, init: bool) -> None:
    """cargohold: container-host metadata on LMDB, with containerd's garbage collector.

    Start with `cargohold demo`. Every command takes --help; listings take -q,
    --filter and --format json|table|wide (--json). Commands that only read
    open the root read-only, and create nothing.
    """
    settings = Settings(root=root or default_root(), namespace=namespace, root_given=root is not None, init=init)
    ctx.obj = settings
    ctx.call_on_close(settings.close)
