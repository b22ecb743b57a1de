"""Layer identities: chain IDs, and the list of snapshots an unpack creates.

A layer's diff ID is the sha256 of its uncompressed tar stream. The chain ID
of a stack of layers names the filesystem they produce together (OCI image
spec, containerd's `identity.ChainID`): chain(1) = diffid(1), chain(n) =
sha256(chain(n-1) + " " + diffid(n)). Unpacked snapshots are named by it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

from ..errors import InvalidArgument
from ..model import Descriptor
from ..validation import validate_digest
from .documents import ImageConfig, Manifest


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The chain ID of every prefix of `diff_ids` (one per layer, bottom first)."""
    out: list[str] = []
    for diff_id in diff_ids:
        validate_digest(diff_id, "diff ID")
        if out:
            diff_id = "sha256:" + hashlib.sha256(f"{out[-1]} {diff_id}".encode()).hexdigest()
        out.append(diff_id)
    return out


def chain_id(diff_ids: Sequence[str]) -> str:
    """The chain ID of the whole stack (the top layer's); InvalidArgument for an empty stack."""
    if not diff_ids:
        raise InvalidArgument("a chain ID needs at least one diff ID")
    return chain_ids(diff_ids)[-1]


@dataclass(frozen=True)
class RootfsLayer:
    """One layer to unpack: its blob, its diff ID, and the snapshot (chain ID) it becomes atop `parent`."""

    descriptor: Descriptor
    diff_id: str
    chain_id: str
    parent: str


def rootfs_layers(manifest: Manifest, config: ImageConfig) -> list[RootfsLayer]:
    """Pair a manifest's layers with its config's diff IDs, bottom first, with their chain IDs.

    Raises InvalidArgument when the counts differ (containerd refuses such an image).
    """
    if len(manifest.layers) != len(config.diff_ids):
        raise InvalidArgument(
            f"the manifest has {len(manifest.layers)} layers but its config lists "
            f"{len(config.diff_ids)} diff IDs")
    chains = chain_ids(config.diff_ids)
    parents = [""] + chains[:-1]
    return [RootfsLayer(layer, diff_id, chain, parent)
            for layer, diff_id, chain, parent in zip(manifest.layers, config.diff_ids, chains, parents, strict=True)]
