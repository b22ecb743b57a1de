"""Pushing an image from a namespace to a registry (containerd's `remotes.PushContent`, as ``ctr images push`` runs it).

What is pushed: with `all_platforms`, the image's target and everything it
reaches; else, from an index, only the manifest for the platform (the
host's by default), which the tag then names, as ``ctr push --platform``
does. Every blob must be in the content store (checked before anything is
sent).

Order: blobs that are not manifests (configs, layers) first, on up to
`max_concurrent` threads, each only if the registry lacks it (``HEAD``),
mounted from another repository of the same registry when its
``containerd.io/distribution.source.<host>`` label names one, else uploaded
(``POST`` then one ``PUT``); then the manifests and indexes, children
before parents; the root last, under the tag.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Optional

from ... import oci
from ...errors import InvalidArgument
from ...model import Descriptor
from ...oci import mediatypes
from ...oci.digests import CHUNK, VerifiedReader
from ...oci.platforms import PlatformSpec
from ...oci.walk import describe
from ..progress import Progress, counting
from ..unpacker import document_fetcher
from .auth import Credentials
from .client import RegistryClient, naming
from .jobs import Jobs, validate_concurrency
from .pull import transfer_matcher
from ...oci.reference import parse_reference
from .sources import mount_candidate

if TYPE_CHECKING:
    from ...namespaces import Namespace

PHASE = "push"


def push(ns: "Namespace", name: str, ref: Optional[str] = None, *, platform: PlatformSpec = None,
         all_platforms: bool = False, plain_http: bool = False, credentials: Optional[Credentials] = None,
         max_concurrent: int = 3, progress: Optional[Progress] = None) -> Descriptor:
    """Push image `name` of the namespace to `ref` (default: `name` itself, normalized); returns the
    descriptor the tag now names.

    `platform`, `all_platforms`, `plain_http`, `credentials` and `progress`
    (phase ``"push"``) are as for `pull`; `max_concurrent` blobs upload at
    once. A `ref` with a digest must name the pushed root's digest.

    Raises, with the reference in the message: NotFound for an unknown image,
    a blob missing from the content store (before anything is sent), or no
    manifest for the platform; InvalidArgument for a bad reference, a stored
    blob that no longer matches its digest, or content the registry refuses;
    FailedPrecondition when authentication is refused; Unavailable when the
    registry cannot be reached or fails.
    """
    image = ns.images.get(name)
    reference = parse_reference(name if ref is None else ref)
    validate_concurrency(max_concurrent, "max_concurrent")
    with naming(f"push {reference}"):
        fetch = document_fetcher(ns)
        root = image.target
        if not all_platforms and mediatypes.is_index(root.media_type):
            root, _ = oci.resolve_manifest(root, fetch, transfer_matcher(platform, False))
        if reference.digest and reference.digest != root.digest:
            raise InvalidArgument(f"the reference's digest is not that of {describe(root)}")
        blobs = list(oci.walk([root], fetch))
        labels = {blob.descriptor.digest: ns.content.info(blob.descriptor.digest).labels for blob in blobs}
        with RegistryClient(reference, plain_http=plain_http, credentials=credentials, push=True) as client:
            with Jobs(max_concurrent, "cargohold-push") as jobs:
                for blob in blobs:
                    if not _is_manifest(blob.descriptor):
                        jobs.submit(_push_blob, ns, client, jobs, blob.descriptor, labels[blob.descriptor.digest],
                                    progress)
            for descriptor in _children_first(blobs):
                if descriptor.digest != root.digest and not client.exists(descriptor):
                    _push_manifest(ns, client, descriptor, progress)
            _push_manifest(ns, client, root, progress, tag=reference.tag)
    return root


def _is_manifest(descriptor: Descriptor) -> bool:
    return mediatypes.is_manifest(descriptor.media_type) or mediatypes.is_index(descriptor.media_type)


def _children_first(blobs: list) -> list:
    """The manifests and indexes among `blobs` (a walk's output), each after everything it references."""
    by_digest = {blob.descriptor.digest: blob for blob in blobs}
    order, placed = [], set()

    def place(blob: oci.Blob) -> None:
        placed.add(blob.descriptor.digest)
        for child in blob.children:
            if child.digest not in placed and child.digest in by_digest:
                place(by_digest[child.digest])
        if _is_manifest(blob.descriptor):
            order.append(blob.descriptor)

    for blob in blobs:
        if blob.descriptor.digest not in placed:
            place(blob)
    return order


def _stored(ns: "Namespace", descriptor: Descriptor, progress: Optional[Progress]) -> Iterator[bytes]:
    """The blob from the content store in chunks, verified against its descriptor while it is read."""
    with ns.content.open(descriptor.digest) as raw:
        reader = VerifiedReader(counting(raw, progress, PHASE, descriptor), descriptor.digest, descriptor.size,
                                f"stored {describe(descriptor)}")
        while chunk := reader.read(CHUNK):
            yield chunk


def _push_blob(ns: "Namespace", client: RegistryClient, jobs: Jobs, descriptor: Descriptor, labels: Optional[dict],
               progress: Optional[Progress]) -> None:
    if not client.exists(descriptor):
        location = client.start_upload(descriptor, mount_candidate(client.reference, labels))
        if location is not None:

            def chunks() -> Iterator[bytes]:
                for chunk in _stored(ns, descriptor, progress):
                    jobs.check_cancelled()
                    yield chunk

            client.finish_upload(location, descriptor, chunks)
    if progress is not None:
        progress(PHASE, descriptor, descriptor.size)


def _push_manifest(ns: "Namespace", client: RegistryClient, descriptor: Descriptor, progress: Optional[Progress],
                   tag: str = "") -> None:
    client.put_manifest(descriptor, b"".join(_stored(ns, descriptor, progress)), tag)
