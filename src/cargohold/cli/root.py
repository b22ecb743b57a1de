"""The `cargohold` command group: global options and the command groups, imported when used."""

from __future__ import annotations

import os

import click

import cargohold

from .context import Settings, default_root
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
    "gc": Entry(".gc:command", (),
                "Run a garbage collection and print what it removed, what it freed and how long it took."),
    "prune": Entry(".prune:command", (), "Remove every image no container uses, then collect what that leaves "
                   "unreachable."),
    "fsck": Entry(".fsck:command", (), "Check every invariant of the root: records against the node table, parents, leases, and the "
                  "blobs, ingests and snapshot directories on disk; list data no record owns."),
    "compact": Entry(".compact:command", (), "Rewrite the LMDB files compacted and swap them in atomically; "
                     "print each file's size before and after."),
    "df": Entry(".df:command", (), "Bytes per namespace and store: total, shared with other namespaces, "
                "reclaimable by a collection now."),
    "info": Entry(".info:command", (), "Counts and bytes per namespace and store, and what the backends hold on disk."),
    "version": Entry(".version:command", (), "Print the versions of cargohold and of what it runs on."),
    "containerd": Entry(".containerd:command", (),
                        "Read a containerd root: list, plan its GC, measure, check, import (never writes to it).",
                        examples={
                            "": ("cargohold containerd ls images", "cargohold containerd --help"),
                            "gc": ("cargohold containerd gc --dry-run",
                                   "cargohold containerd gc --explain sha256:<digest> -n k8s.io"),
                            "du": ("cargohold containerd du", "cargohold containerd du --root-dir /srv/containerd"),
                            "fsck": ("cargohold containerd fsck", "cargohold containerd fsck --json"),
                            "import": ("cargohold containerd import --into /srv/cargohold",
                                       "cargohold containerd import --copy --into /tmp/copy")}),
    "demo": Entry(".demo:command", (), "Build, import and unpack an image, create a container on it, delete the "
                  "image, collect garbage, and report what was kept, what was removed and why."),
}


METADATA_FORMS = [
    ("(not given)", "LMDB in <root>/meta, for this host alone."),
    ("etcd://host:port[,host:port...]/<prefix>",
     "The tables on an etcd cluster under <prefix>, which several hosts can share; <root> keeps this "
     "host's locks, sessions and snapshot directories, and <root>/content must be the fleet's shared one."),
    ("etcds://host:port[,host:port...]/<prefix>[?cacert=<file>][&cert=<file>&key=<file>]",
     "The same over TLS: the members' certificates are verified against the CA in cacert (else the "
     "system's trust store); cert and key, given together, are the client certificate."),
]
"""What --metadata takes, for the help (whole forms: a URL must not be wrapped in the middle)."""


class CommandGroup(Group):
    """The top-level group: every failure of a command becomes one line (`context.failure`)."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The options, then the root this invocation would use without --root, whole (a path
        must not be wrapped in the middle)."""
        super().format_options(ctx, formatter)
        formatter.write(f"\nDefault root: {default_root()}\n")
        with formatter.section("Metadata (--metadata URL, $CARGOHOLD_METADATA)"):
            formatter.write_dl(METADATA_FORMS)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError as exc:  # a group of another kind, given no command
            click.echo(exc.ctx.get_help())
            ctx.exit(0)
        except KeyboardInterrupt:
            from .failures import interrupted

            raise interrupted() from None
        except (cargohold.errors.Error, OSError, click.UsageError) as exc:
            from .failures import failure

            raise failure(exc) from exc
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # already a one-line failure, or click's own way out
        except Exception as exc:  # a bug: still one line (CARGOHOLD_DEBUG=1 shows the traceback)
            if os.environ.get("CARGOHOLD_DEBUG"):
                raise
            from .failures import internal_error

            raise internal_error(exc) from exc


def _check_root(ctx: click.Context, param: click.Parameter, value: "str | None") -> "str | None":
    if value == "":
        raise click.BadParameter("must not be empty (leave --root out for the default root)", ctx, param)
    return value


@click.group(cls=CommandGroup, lazy=GROUPS, epilog=examples(
    "cargohold demo                                  # a guided tour on a temporary root",
    "cargohold images import --unpack alpine.tar",
    "cargohold i ls -q                               # ctr's aliases work: i, c, ns, list, rm...",
    "cargohold --root /srv/host --namespace k8s.io content ls --format json"))
@click.option("--root", type=click.Path(file_okay=False), default=None, callback=_check_root,
              help="Root directory of the host metadata [default: $CARGOHOLD_ROOT, else the user's data "
                   "directory: see Default root below].")
@click.option("--metadata", envvar="CARGOHOLD_METADATA", default=None, metavar="URL",
              help="Where the metadata tables live: LMDB in the root, or an etcd cluster several hosts "
                   "share, etcd://... (etcds://... over TLS, with cacert, cert and key options): see Metadata "
                   "below [default: $CARGOHOLD_METADATA, else LMDB].")
@click.option("--namespace", "-n", default="default", show_default=True, help="Namespace to work in.")
@click.option("--init", is_flag=True,
              help="Let a command that writes make --root a cargohold root although it is a non-empty directory.")
@click.version_option(cargohold.__version__, prog_name="cargohold")
@click.pass_context
def cli(ctx: click.Context, root: "str | None", metadata: "str | None", namespace: str, init: bool) -> None:
    """cargohold: container-host metadata on LMDB, with containerd's garbage collector.

    Start with `cargohold demo`. Every command takes --help; listings take -q,
    --filter and --format json|table|wide (--json). Commands that only read
    open the root read-only, and create nothing.
    """
    settings = Settings(root=root or default_root(), namespace=namespace, root_given=root is not None, init=init,
                        metadata=metadata or None)
    ctx.obj = settings
    ctx.call_on_close(settings.close)
