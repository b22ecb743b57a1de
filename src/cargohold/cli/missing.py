"""`MissingRoot`: what a reading command meets where no root exists yet (it prints an empty listing)."""

from __future__ import annotations

from cargohold.errors import NotFound


class MissingRoot(NotFound):
    """The root does not exist (or is an empty directory): a reading command finds nothing in it."""
