"""Moving images between image archives (OCI layouts, docker save) and a namespace's stores.

`import_archive` stores an image archive (OCI layout or docker save, maybe gzipped) in a
namespace and creates its images, optionally unpacking them into snapshots;
`unpack_image` unpacks an image already stored; `export_image` writes images
back out as an OCI layout tar; `pull` and `push` move images between a
namespace and an OCI distribution registry (`registry`). They join
`cargohold.oci` (store-agnostic reading, unpacking and writing) to the
content store, the snapshotters and the image store, with containerd's rules
for leases and GC labels.
"""

from .exporter import export_image
from .importer import import_archive
from .progress import Progress
from .registry import Credentials, pull, push
from .unpacker import image_layers, unpack_image

__all__ = ["export_image", "import_archive", "Progress", "image_layers", "unpack_image", "Credentials", "pull",
           "push"]
