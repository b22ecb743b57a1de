"""`object_key` and `pack_node` for `cargohold.schema`, and `pack_record` and `unpack_record` for its
msgpack records: compiled (`_ext/keys.pxi`, `_ext/msgrecords.pxi`) or their twins.

The choice `cargohold._native` makes (`CARGOHOLD_PUREPYTHON=1` or a missing extension: the
twins), made here without importing it: `_native` reaches the fallback module, which imports
the collector's index, which imports `cargohold.schema`.
"""

from __future__ import annotations

import os

if os.environ.get("CARGOHOLD_PUREPYTHON"):
    from ._fallback_keys import object_key, pack_node
    from ._fallback_msgrecords import pack_record, unpack_record
else:
    try:
        from ._core import object_key, pack_node, pack_record, unpack_record
    except ImportError:
        from ._fallback_keys import object_key, pack_node
        from ._fallback_msgrecords import pack_record, unpack_record

__all__ = ["object_key", "pack_node", "pack_record", "unpack_record"]
