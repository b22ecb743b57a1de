"""Metadata engines other than LMDB, chosen by the scheme of a metadata URL (see `cargohold.kv.open_env`)."""

from __future__ import annotations

from typing import Any, Sequence

from ..errors import InvalidArgument, Unsupported

URL_FORMS = "etcd://host:port,.../<prefix>, or etcds:// for TLS"


def check_url(url: str) -> None:
    """InvalidArgument (naming `url`) unless it is a metadata URL an engine takes, Unsupported if
    that engine's client is not installed; nothing is contacted or created. Opens call it before
    they make a directory, so that a bad URL leaves the disk as it was."""
    if not isinstance(url, str):
        raise InvalidArgument(f"metadata URL must be a string, not {type(url).__name__}")
    if not url.startswith(("etcd://", "etcds://")):
        raise InvalidArgument(f"metadata URL {url!r} names no known engine ({URL_FORMS})")
    _etcd(url).parse_url(url)


def _etcd(url: str) -> Any:
    try:
        from . import etcd
    except ImportError as exc:
        raise Unsupported(f"metadata URL {url!r} needs the etcd client: pip install 'cargohold[etcd]' "
                          f"({exc})") from None
    return etcd


def open_engine(url: str, tables: Sequence[str], *, readonly: bool = False) -> Any:
    """The engine a metadata URL names: ``etcd://host:port[,host:port...]/<prefix>`` (``etcds://`` for TLS)."""
    check_url(url)
    return _etcd(url).EtcdEnv(url, tables, readonly=readonly)
