"""Metadata engines other than LMDB, chosen by the scheme of a metadata URL (see `cargohold.kv.open_env`)."""

from __future__ import annotations

from typing import Any, Sequence

from ..errors import InvalidArgument, Unsupported


def open_engine(url: str, tables: Sequence[str], *, readonly: bool = False) -> Any:
    """The engine a metadata URL names: ``etcd://host:port[,host:port...]/<prefix>`` (``etcds://`` for TLS)."""
    if not isinstance(url, str):
        raise InvalidArgument(f"metadata URL must be a string, not {type(url).__name__}")
    if url.startswith(("etcd://", "etcds://")):
        try:
            from .etcd import EtcdEnv
        except ImportError as exc:
            raise Unsupported(f"metadata URL {url!r} needs the etcd client: pip install 'cargohold[etcd]' "
                              f"({exc})") from None

        return EtcdEnv(url, tables, readonly=readonly)
    raise InvalidArgument(f"metadata URL {url!r} names no known engine (etcd://host:port,.../<prefix>, or etcds:// for TLS)")
