"""Choose the compiled core or its pure-Python twin (the msgpack-python pattern).

`CARGOHOLD_PUREPYTHON=1` forces the fallback; so does a missing extension.
`COMPILED` says which one is in use.
"""

from __future__ import annotations

import os

if os.environ.get("CARGOHOLD_PUREPYTHON"):
    from ._fallback import (BoltBucket, BoltTx, Marker, TableCheck, bolt_branch, bolt_leaf, ctrd_blobs,
                            ctrd_containers, ctrd_images, ctrd_snapshots, decode_varint, encode_container,
                            encode_image, encode_varint)

    COMPILED = False
else:
    try:
        from ._core import (BoltBucket, BoltTx, Marker, TableCheck, bolt_branch, bolt_leaf, ctrd_blobs,
                            ctrd_containers, ctrd_images, ctrd_snapshots, decode_varint, encode_container,
                            encode_image, encode_varint)

        COMPILED = True
    except ImportError:
        from ._fallback import (BoltBucket, BoltTx, Marker, TableCheck, bolt_branch, bolt_leaf, ctrd_blobs,
                                ctrd_containers, ctrd_images, ctrd_snapshots, decode_varint, encode_container,
                                encode_image, encode_varint)

        COMPILED = False

from ._keys import object_key, pack_node  # noqa: E402 (chosen by the same rule, see cargohold._keys)

__all__ = ["COMPILED", "BoltBucket", "BoltTx", "Marker", "TableCheck", "bolt_branch", "bolt_leaf", "ctrd_blobs",
           "ctrd_containers", "ctrd_images", "ctrd_snapshots", "decode_varint", "encode_container", "encode_image",
           "encode_varint",
           "object_key", "pack_node"]
