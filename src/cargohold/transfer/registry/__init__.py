"""Pulling images from, and pushing them to, an OCI distribution registry (Docker registry API v2).

`pull` and `push` are the entry points (also `cargohold.transfer.pull` and
`.push`); `reference` parses image references as Docker does, `auth` reads
credentials and challenges, `client` speaks the registry API, `sources`
keeps containerd's distribution-source labels, `jobs` runs blob copies on a
few threads.
"""

from .auth import Credentials
from .pull import pull
from .push import push
from ...oci.reference import Reference, parse_reference

__all__ = ["Credentials", "Reference", "parse_reference", "pull", "push"]
