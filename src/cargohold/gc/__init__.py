"""Garbage collection: the node table the stores keep (`index`), what labels
mean to the collector (`labels`)."""
