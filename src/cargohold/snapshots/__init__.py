"""Snapshots: the directory backends (`NativeSnapshotter`, `OverlaySnapshotter`,
each with its own metastore) and the namespaced proxy (`store.Snapshotter`,
reached as ``ns.snapshotter(name)``)."""

from .native import NativeSnapshotter
from .overlay import OverlaySnapshotter

__all__ = ["NativeSnapshotter", "OverlaySnapshotter"]
