"""Loggers that import `logging` when they first log.

Importing `logging` costs a short command (``cargohold images ls``) a
noticeable share of its start-up, and most runs never log anything.
"""

from __future__ import annotations

from typing import Any


class LazyLogger:
    """Stands for ``logging.getLogger(name)``: every attribute is looked up on that logger, on use."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, attr: str) -> Any:
        import logging

        return getattr(logging.getLogger(self.name), attr)

    def __repr__(self) -> str:
        return f"LazyLogger({self.name!r})"
