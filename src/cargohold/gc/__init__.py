"""Garbage collection: the node table the stores keep (`index`), what labels
mean to the collector (`labels`), one collection's roots/references/removal
(`context`), and background scheduling (`Scheduler`)."""

from .scheduler import Scheduler

__all__ = ["Scheduler"]
