"""What both archive formats share: the import plan, verified blob reads, and errors naming the archive.

An `ImageArchive` (OCI layout) and a `DockerArchive` (``docker save``) both
end in an index: the archive's index.json, or the one containerd makes for a
``docker save`` archive. `plan_index` walks it the same way for both
(containerd's `Import`: platform filter, children labels, names), so the two
formats store blobs and create images by exactly the same rules.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator, Optional

from ..errors import Error, NotFound
from ..model import Descriptor
from . import naming
from .documents import check_document_size
from .platforms import Matcher
from .sources import Source
from .walk import Blob, Fetch, describe, walk


@dataclass(frozen=True)
class ImageRef:
    """An image an import creates: its name (None when the archive gives none) and target."""

    name: Optional[str]
    target: Descriptor


@dataclass(frozen=True)
class ImportPlan:
    """What importing an archive stores.

    `index` is the archive's index (containerd stores it too, unnamed);
    `blobs` are the blobs it reaches, parents before children, each with its
    GC labels; `images` are the images to create, in index order.
    """

    index: Blob
    blobs: tuple
    images: tuple


def plan_index(index: Descriptor, fetch: Fetch, check: Callable[[Descriptor], None], matcher: Matcher,
               base_name: Optional[str], listing: str) -> ImportPlan:
    """The plan of an archive whose index is `index`: the blobs it reaches for the matcher's platforms.

    `fetch` reads documents, `check` proves a blob is there (each reached blob
    once); images are the index entries kept, named by `naming.image_name`.
    NotFound, naming `listing` (where the entries come from), when no entry
    matches the platform.
    """
    blobs = list(walk([index], fetch, matcher))
    root = blobs[0]
    if not root.children:
        raise NotFound(f"no manifest in {listing} matches platform {matcher!r}")
    for blob in blobs[1:]:
        check(blob.descriptor)
    images = tuple(ImageRef(naming.image_name(d.annotations, base_name), d) for d in root.children)
    return ImportPlan(root, tuple(blobs[1:]), images)


class Archive:
    """An archive opened for reading (a context manager); subclasses say where each blob is (`_open`).

    ``format`` is ``"oci"`` or ``"docker"``; ``index`` the descriptor of its
    index. Not for concurrent use from several threads, but several blobs may
    be open at once.
    """

    format = ""
    index: Descriptor

    def __init__(self, path: str, source: Source) -> None:
        self.path = path
        self._source = source

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the archive file (and the decompressed copy of a compressed one)."""
        self._source.close()

    @contextlib.contextmanager
    def _context(self) -> Iterator[None]:
        try:
            yield
        except Error as exc:
            raise type(exc)(f"image archive {self.path}: {exc}") from None

    def _open(self, descriptor: Descriptor, prefix: str = "") -> BinaryIO:
        """A verifying reader of the blob (VerifiedReader), `prefix` heading its errors."""
        raise NotImplementedError

    def _fetch(self, descriptor: Descriptor) -> bytes:
        check_document_size(descriptor.size, describe(descriptor))
        with self._open(descriptor) as f:
            return f.read()

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        """A binary stream of a blob that raises InvalidArgument if it proves not to match `descriptor`.

        A missing blob or a size mismatch fails at once; a wrong digest when
        the last byte is read. Close it after use (it is a context manager).
        """
        with self._context():
            return io.BufferedReader(self._open(descriptor, f"image archive {self.path}: "))

    def read_blob(self, descriptor: Descriptor) -> bytes:
        """The verified bytes of a document blob (at most MAX_DOCUMENT_SIZE)."""
        with self._context():
            return self._fetch(descriptor)
