"""Content: the on-disk blob store (`LocalStore`) and the namespaced proxy
reached as ``ns.content`` (`cargohold.content.store.ContentStore`)."""

from .local import LocalStore

__all__ = ["LocalStore"]
