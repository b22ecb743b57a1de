"""containerd's own on-disk root as an input of cargohold: read-only, safe while containerd runs.

>>> with cargohold.containerd.open_root("/var/lib/containerd") as host:
...     host.images("default"), host.unreachable()

`open_root` decodes meta.db (`decode`, `schema`, `gotime`), the snapshotters'
metastores (`snapshotters`) and the content store's directories (`contentstore`),
and plans containerd's garbage collection with cargohold's mark phase under
the rules of the release line that wrote the database (`plan`). `usage` and
`fsck` measure and check the root; `import_root` copies its state into a new
cargohold root.
"""

from __future__ import annotations

from . import fsck, usage
from .importer import ImportReport, import_root
from .root import Host, open_root

__all__ = ["Host", "ImportReport", "fsck", "import_root", "open_root", "usage"]
