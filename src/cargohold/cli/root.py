"""The `cargohold` command group: global options, the command groups (imported when used), and how
a failure is reported: one line, ``cargohold: <ErrorClass>: <message>`` (`failure`)."""

from __future__ import annotations

import os
from typing import Optional

import click

import cargohold
from cargohold.errors import Error

from .context import Settings, default_root, echo, error_kind, one_line, silence_stdout
from .groups import Entry, Group, examples

# -- failing -------------------------------------------------------------------------------------


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


# -- the group -----------------------------------------------------------------------------------

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


class CommandGroup(Group):
    """The top-level group: every failure of a command becomes one line (`context.failure`)."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The options, then the root this invocation would use without --root, whole (a path
        must not be wrapped in the middle)."""
        super().format_options(ctx, formatter)
        formatter.write(f"\nDefault root: {default_root()}\n")

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
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # already a one-line failure, or click's own way out
        except Exception as exc:  # a bug: still one line (CARGOHOLD_DEBUG=1 shows the traceback)
            if os.environ.get("CARGOHOLD_DEBUG"):
                raise
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
              help="Keep the metadata tables on an etcd cluster, etcd://host:port[,host:port...]/<prefix> "
                   "[default: $CARGOHOLD_METADATA, else LMDB in the root].")
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
