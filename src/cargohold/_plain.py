"""The compiled msgpack fast paths of `cargohold.schema` (`_ext/plainpack.pxi`), or None.

`plain_pack` and `plain_unpack` give msgpack-python's bytes and values for records of the
common forms and leave every other record (and every damaged one) to msgpack itself, so that
`schema.pack`/`schema.unpack` return and raise exactly what msgpack makes them. The pure-Python
core (`CARGOHOLD_PUREPYTHON=1`, or a missing extension) has none: it calls msgpack for every
record. Chosen as `cargohold._keys` chooses, without importing `cargohold._native`.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

plain_pack: Optional[Callable[[Any], Optional[bytes]]] = None
plain_unpack: Optional[Callable[[bytes], Any]] = None
NOT_PLAIN: Any = None

if not os.environ.get("CARGOHOLD_PUREPYTHON"):
    try:
        from ._core import NOT_PLAIN, plain_pack, plain_unpack
    except ImportError:
        pass

__all__ = ["NOT_PLAIN", "plain_pack", "plain_unpack"]
