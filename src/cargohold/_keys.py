"""`object_key` and `pack_node` for `cargohold.schema`: compiled (`_ext/keys.pxi`) or their twins.

The choice `cargohold._native` makes (`CARGOHOLD_PUREPYTHON=1` or a missing extension: the
twins), made here without importing it: `_native` reaches the fallback module, which imports
the collector's index, which imports `cargohold.schema`.
"""

from __future__ import annotations

import os

if os.environ.get("CARGOHOLD_PUREPYTHON"):
    from ._fallback_keys import object_key, pack_node
else:
    try:
        from ._core import object_key, pack_node
    except ImportError:
        from ._fallback_keys import object_key, pack_node

__all__ = ["object_key", "pack_node"]
