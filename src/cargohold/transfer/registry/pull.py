"""Pulling an image from a registry into a namespace (containerd's `client.Pull`, as ``ctr images pull`` runs it).

Order, so that a failure leaves no image and only resumable or collectable
data behind:

1. The reference is resolved to a descriptor (``HEAD /v2/<name>/manifests/<tag>``).
2. Inside a lease (`transfer_lease`), the content graph is walked parents
   first. Indexes, manifests and configs are fetched into memory, verified
   and stored at once; an index keeps the entries the platform matcher
   accepts, and only the best one unless `all_platforms` (containerd's
   ``LimitManifests``). Every other blob (layers) is streamed into the
   content store on up to `max_concurrent` threads, its size and digest
   checked as it arrives.
3. Each blob is written through a stable ingest ref (containerd's
   ``layer-<digest>``, ``manifest-<digest>``...), so an interrupted download
   is resumed from the ingest's offset by a Range request the next time;
   a blob the namespace already has is not downloaded again. Blobs get
   containerd's GC labels (an index and a manifest reference all their
   children, as containerd's pull labels them before filtering) and
   ``containerd.io/distribution.source.<host>`` listing the repository.
4. With `unpack`, the platform's layers are unpacked into `snapshotter`.
5. The image is created, or its target replaced, and the lease ends.

Only the image record makes the content reachable: what a failed pull
stored is garbage for the next collection, and until then a retried pull
reuses it (committed blobs) or resumes it (partial ingests).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Optional

from ...errors import AlreadyExists, Error, InvalidArgument, NotFound, Unavailable
from ...fieldpaths import label_paths
from ...model import Descriptor, Image, Info
from ...oci import mediatypes
from ...oci.gclabels import children_labels
from ...oci.limits import validate_max_size
from ...oci.platforms import Matcher, PlatformSpec, only, parse, platform_matcher
from ...oci.walk import children, describe
from ...validation import validate_key
from ..lease import transfer_lease
from ..progress import Progress
from ..unpacker import unpack_target
from .auth import Credentials
from .client import RegistryClient, check_document_limit, naming
from .jobs import Jobs, validate_concurrency
from ...oci.reference import Reference, parse_reference
from .sources import source_label

if TYPE_CHECKING:
    from ...content.store import Writer
    from ...namespaces import Namespace

PHASE = "pull"
BUSY_WAIT = 120.0
"""Seconds to wait for another writer (a concurrent pull) to finish a blob before giving up."""


def pull(ns: "Namespace", ref: str, *, platform: PlatformSpec = None, all_platforms: bool = False,
         unpack: bool = False, snapshotter: str = "native", plain_http: bool = False,
         credentials: Optional[Credentials] = None, max_concurrent: int = 3,
         progress: Optional[Progress] = None, max_layer_size: Optional[int] = None) -> Image:
    """Pull image `ref` from its registry into the namespace; returns the image, named by the normalized
    reference (``alpine`` is ``docker.io/library/alpine:latest``).

    `platform` (a specifier or Platform) pulls that platform (and those it
    runs, containerd's ``platforms.Only``), the default the host's; with
    `all_platforms` every one. `unpack` unpacks the layers of `platform`
    (the host's by default) into `snapshotter`. `plain_http` talks HTTP
    instead of HTTPS. `credentials` None takes those of the Docker config
    file, if any. At most `max_concurrent` blobs download at once.
    `progress` is told how far each blob has got (phase ``"pull"``, then
    ``"unpack"``). `max_layer_size` bounds what each layer may expand to when
    unpacked (see `unpack_image`).

    Raises, with the reference in the message: InvalidArgument for a bad
    reference or content that does not match its descriptor, NotFound when
    the registry lacks it or no manifest matches the platform,
    FailedPrecondition when authentication is refused, Unavailable when the
    registry cannot be reached or fails, Unsupported for media types
    cargohold cannot store. A failed pull creates no image.
    """
    reference = parse_reference(ref)
    validate_concurrency(max_concurrent, "max_concurrent")
    validate_max_size(max_layer_size)
    if unpack:
        ns.db.snapshotter_backend(snapshotter)
    name = validate_key(str(reference), "image name")
    matcher = transfer_matcher(platform, all_platforms)
    with naming(f"pull {reference}"), RegistryClient(reference, plain_http=plain_http,
                                                     credentials=credentials) as client:
        target = client.resolve()
        mediatypes.check_supported(target.media_type, describe(target))
        with transfer_lease(ns) as leased:
            _Fetch(leased, client, matcher, all_platforms, progress).run(target, max_concurrent)
            if unpack:
                unpack_target(leased, target, snapshotter, platform, progress, max_layer_size)
            return _create_image(ns, Image(name, target))


def transfer_matcher(platform: PlatformSpec, all_platforms: bool) -> Matcher:
    """The platforms a pull or push keeps: every one, the host's (`platform_matcher`'s default), or a
    given platform with those it can run (containerd's pull and push use ``platforms.Only``)."""
    if all_platforms or platform is None:
        return platform_matcher(platform, all_platforms)
    return only(parse(platform) if isinstance(platform, str) else platform)


def ingest_ref(descriptor: Descriptor) -> str:
    """The stable ingest ref of a blob (containerd's `remotes.MakeRefKey`), so a retry resumes it."""
    media_type = descriptor.media_type
    if mediatypes.is_manifest(media_type):
        kind = "manifest"
    elif mediatypes.is_index(media_type):
        kind = "index"
    elif mediatypes.is_layer(media_type):
        kind = "layer"
    elif mediatypes.is_known_config(media_type):
        kind = "config"
    else:
        kind = "unknown"
    return f"{kind}-{descriptor.digest}"


def _is_document(descriptor: Descriptor) -> bool:
    media_type = descriptor.media_type
    return mediatypes.is_index(media_type) or mediatypes.is_manifest(media_type) or mediatypes.is_config(media_type)


def _best(entries: list, matcher: Matcher) -> list:
    """The entry the matcher prefers, the first of equals, entries with a platform first."""
    best = None
    for entry in entries:
        if best is None or (entry.platform is not None and (
                best.platform is None or matcher.less(entry.platform, best.platform))):
            best = entry
    return [best] if best is not None else []


class _Fetch:
    """One pull's walk over the content graph, storing each blob through the leased handle."""

    def __init__(self, leased: "Namespace", client: RegistryClient, matcher: Matcher, all_platforms: bool,
                 progress: Optional[Progress]) -> None:
        self._leased = leased
        self._client = client
        self._reference: Reference = client.reference
        self._matcher = matcher
        self._all = all_platforms
        self._progress = progress
        self._jobs: Optional[Jobs] = None

    def run(self, target: Descriptor, max_concurrent: int) -> None:
        manifests = 0
        with Jobs(max_concurrent, "cargohold-pull") as jobs:
            self._jobs = jobs
            pending, seen = [target], set()
            while pending:
                descriptor = pending.pop()
                if descriptor.digest in seen:
                    continue
                seen.add(descriptor.digest)
                if _is_document(descriptor):
                    manifests += mediatypes.is_manifest(descriptor.media_type)
                    pending.extend(reversed(self._document(descriptor)))
                else:
                    jobs.submit(self._blob, descriptor)
                jobs.check()
            if manifests == 0:
                raise NotFound(f"no manifest of {describe(target)} matches platform {self._matcher!r}")

    # -- one blob ----------------------------------------------------------------------

    def _document(self, descriptor: Descriptor) -> list:
        """Store an index, manifest or config; returns the children to pull next."""
        data = self._local(descriptor)
        if data is None:
            data = self._client.fetch_document(descriptor)
        entries = children(descriptor, lambda _: data)
        labels = children_labels([entry.descriptor for entry in entries])
        self._store(descriptor, labels, lambda writer, offset: writer.write(data[offset:]))
        kept = [entry for entry in entries if entry.platform is None or self._matcher.match(entry.platform)]
        if mediatypes.is_index(descriptor.media_type):
            if not self._all:
                kept = _best(kept, self._matcher)
            if not kept:
                raise NotFound(f"no manifest of {describe(descriptor)} matches platform {self._matcher!r}")
        for entry in kept:
            mediatypes.check_supported(entry.descriptor.media_type,
                                       f"{describe(entry.descriptor)} in {describe(descriptor)}")
        return [entry.descriptor for entry in kept]

    def _local(self, descriptor: Descriptor) -> Optional[bytes]:
        """The document if the namespace has it already (then it is not fetched again). Its descriptor
        is held to the limits a download is: a registry's document may name any digest the namespace
        stores, a layer of gigabytes among them."""
        content = self._leased.content
        try:
            stored = content.info(descriptor.digest).size
        except NotFound:
            return None
        check_document_limit(descriptor)
        if stored != descriptor.size:
            raise InvalidArgument(f"{describe(descriptor)}: its descriptor declares {descriptor.size} bytes, "
                                  f"the stored blob of that digest has {stored}")
        try:
            return content.read(descriptor.digest)
        except NotFound:  # collected meanwhile
            return None

    def _blob(self, descriptor: Descriptor) -> None:
        self._store(descriptor, {}, lambda writer, offset: self._download(descriptor, writer, offset))

    def _download(self, descriptor: Descriptor, writer: "Writer", offset: int) -> None:
        """Append the blob's bytes from `offset` to the ingest, streaming them from the registry."""
        what = describe(descriptor)
        size = descriptor.size
        with self._client.open_blob(descriptor, offset) as (start, chunks):
            if start != offset:  # the registry ignored the Range request: start over
                writer.truncate(start)
            done = start
            self._report(descriptor, done)
            for chunk in chunks:
                self._jobs.check_cancelled()
                done += len(chunk)
                if done > size:
                    raise InvalidArgument(f"{what}: the registry sends more than the {size} bytes its "
                                          "descriptor declares")
                writer.write(chunk)
                self._report(descriptor, done)
        if done < size:
            raise Unavailable(f"{what}: the registry sent {done} of its {size} bytes")

    def _store(self, descriptor: Descriptor, labels: dict, fill: Callable[["Writer", int], None]) -> None:
        """Commit a blob through its ingest ref: `fill(writer, offset)` appends what the ingest lacks.

        A blob already stored only gets its labels. Content that proves wrong
        discards the ingest (a retry starts afresh); anything else keeps it
        for a retry to resume.
        """
        content = self._leased.content
        ref = ingest_ref(descriptor)
        writer = self._writer(ref, descriptor)
        if writer is None:
            self._label(descriptor, labels)
            return
        try:
            with writer:
                offset = writer.status().offset
                if offset > descriptor.size:
                    writer.truncate(0)
                    offset = 0
                if offset < descriptor.size:
                    fill(writer, offset)
                actual = writer.digest()
                if actual != descriptor.digest:
                    raise InvalidArgument(f"{describe(descriptor)}: digest mismatch, the registry served {actual}")
                try:
                    writer.commit(descriptor.size, descriptor.digest, {**labels, **self._source(None)})
                except AlreadyExists:  # committed meanwhile by another writer
                    self._label(descriptor, labels)
        except InvalidArgument:
            try:
                content.abort(ref)
            except Error:
                pass  # the first error is the one to report
            raise
        self._report(descriptor, descriptor.size)

    def _writer(self, ref: str, descriptor: Descriptor) -> Optional["Writer"]:
        """The ingest's writer, or None when the namespace has the blob; waits out a concurrent writer."""
        deadline, delay = time.monotonic() + BUSY_WAIT, 0.05
        while True:
            try:
                return self._leased.content.writer(ref, total=descriptor.size, expected=descriptor.digest)
            except AlreadyExists:  # stored already, and now held by the lease
                return None
            except Unavailable:
                if time.monotonic() > deadline:
                    raise
                self._jobs.check_cancelled()
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _source(self, current: Optional[dict]) -> dict:
        return source_label(self._reference, current)

    def _label(self, descriptor: Descriptor, labels: dict) -> None:
        """Add the GC and distribution-source labels to a blob the namespace already has."""
        content = self._leased.content
        labels = {**labels, **self._source(content.info(descriptor.digest).labels)}
        content.update(Info(descriptor.digest, labels=labels), *label_paths(labels))
        self._report(descriptor, descriptor.size)

    def _report(self, descriptor: Descriptor, done: int) -> None:
        if self._progress is not None:
            self._progress(PHASE, descriptor, done)


def _create_image(ns: "Namespace", image: Image) -> Image:
    """Create the image, or point an existing one at the new target (labels kept, as the importer does)."""
    with ns.db.update() as tx:
        try:
            ns.images.get(image.name, tx=tx)
        except NotFound:
            return ns.images.create(image, tx=tx)
        return ns.images.update(image, "target", tx=tx)
