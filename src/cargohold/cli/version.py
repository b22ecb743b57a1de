"""`cargohold version`: what is running, for bug reports (``ctr version``'s counterpart)."""

from __future__ import annotations

import platform
import sys

import click

from .context import echo, emit_json, json_option
from .groups import examples


def versions() -> dict:
    """cargohold's version, its core (compiled or pure Python), Python's and the storage libraries'."""
    import lmdb
    import msgpack

    import cargohold
    from cargohold._native import COMPILED

    return {"cargohold": cargohold.__version__, "core": "compiled" if COMPILED else "pure-python",
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "lmdb": f"py-lmdb {lmdb.__version__}, LMDB {'.'.join(map(str, lmdb.version()))}",
            "msgpack": ".".join(map(str, msgpack.version)), "platform": f"{sys.platform}/{platform.machine()}"}


@click.command("version", epilog=examples("cargohold version", "cargohold version --json"))
@json_option
def command(as_json: bool) -> None:
    """Print the versions of cargohold and of what it runs on."""
    found = versions()
    if as_json:
        emit_json(found)
        return
    echo(f"cargohold {found.pop('cargohold')}")
    for name, value in found.items():
        echo(f"  {name}: {value}")
