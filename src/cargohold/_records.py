"""`encode_image` for the image store: compiled (`_ext/records.pxi`) or its twin
(`cargohold._fallback_records`), by the rule of `cargohold._native`.

A module of its own, imported by the first image creation: the twin loads the collector's
node-table module, which a reading command never needs (`cargohold._keys` chooses likewise).
"""

from __future__ import annotations

import os

if os.environ.get("CARGOHOLD_PUREPYTHON"):
    from ._fallback_records import encode_image
else:
    try:
        from ._core import encode_image
    except ImportError:
        from ._fallback_records import encode_image

__all__ = ["encode_image"]
