"""Images (``ns.images``): a name pointing at a target descriptor, with labels.

Behaviour of containerd's metadata image store: names are free-form keys,
the target (media type, digest, size) is validated and replaced as a unit,
annotations live on the target. An image is a root for the garbage collector
(until its ``containerd.io/gc.expire``); deleting one marks the database dirty
and publishes ``/images/delete``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from . import filters, schema
from ._native import encode_image
from .errors import InvalidArgument, NotFound
from .fieldpaths import clean_labels, merge_map
from .model import Descriptor, Image, Resource, ResourceType, evolve
from .records import RecordStore, check_string_map
from .validation import require_str, validate_digest, validate_key

if TYPE_CHECKING:
    from .transaction import Transaction


MAX_SIZE = (1 << 64) - 1
"""The largest size a record holds (msgpack's largest integer)."""


def _descriptor(target: object, name: str) -> Descriptor:
    if not isinstance(target, Descriptor):
        raise InvalidArgument(f"target of image {name!r} must be a cargohold.Descriptor, not {type(target).__name__}")
    return target


def _check_target(target: object, name: str) -> Descriptor:
    target = _descriptor(target, name)
    validate_digest(target.digest, f"target digest of image {name!r}")
    size = target.size
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise InvalidArgument(f"target size of image {name!r} must be an integer greater than zero, not {size!r}")
    if size > MAX_SIZE:
        raise InvalidArgument(f"target size of image {name!r} must be at most {MAX_SIZE}, not {size!r}")
    require_str(target.media_type, f"target media type of image {name!r}")
    if not target.media_type:
        raise InvalidArgument(f"target media type of image {name!r} must be set")
    annotations = check_string_map(target.annotations, f"target annotation of image {name!r}")
    return evolve(target, annotations=annotations)


def image_adaptor(image: Image) -> filters.Adaptor:
    """containerd's image filter fields: name, target.digest, target.mediatype, labels, annotations."""
    fields = {"name": image.name, "target.digest": image.target.digest, "target.mediatype": image.target.media_type}
    return filters.adaptor(fields, {"labels": image.labels, "annotations": image.target.annotations})


class ImageStore(RecordStore[Image]):
    """create / get / list / update / delete of the images of one namespace.

    Images created through a leased handle (``ns.with_lease(id)``) join that
    lease; so does one updated through it to carry ``containerd.io/gc.expire``.
    Filter fields: ``name``, ``target.digest``, ``target.mediatype``,
    ``labels.<key>``, ``annotations.<key>``. Update field paths: ``labels``,
    ``labels.<key>``, ``target``, ``annotations``, ``annotations.<key>``.
    """

    kind = schema.K_IMAGE
    node_type = ResourceType.IMAGE
    what = "image"
    model = Image
    id_field = "name"

    def _check_id(self, name: object) -> str:
        return validate_key(name, "image name")

    def _validate(self, image: Image) -> Image:
        name = self._check_id(image.name)
        return evolve(image, labels=clean_labels(image.labels), target=_check_target(image.target, name))

    def _encode(self, image: Image) -> dict:
        t = image.target
        return {"t": {"m": t.media_type, "d": t.digest, "s": t.size, "a": t.annotations}, "l": image.labels}

    def _decode(self, name: str, record: dict) -> Image:
        t = record["t"]
        return Image(name, Descriptor(t["m"], t["d"], t["s"], t["a"]), record["l"])

    def _adaptor(self, image: Image) -> filters.Adaptor:
        return image_adaptor(image)

    def _index(self, t: "Transaction", image: Image) -> None:
        from .gc import index  # the collector's modules load with the first write, not for a listing

        index.index_image(t, self._ns.name, image.name, image.target.digest, image.labels)

    def _merge(self, current: Image, new: Image, paths: tuple) -> Image:
        from dataclasses import replace

        if not paths:
            return replace(new, created_at=current.created_at)
        labels, target = current.labels, current.target
        for path in paths:
            head, dot, key = path.partition(".")
            if path == "labels":
                labels = new.labels
            elif head == "labels" and dot:
                labels = merge_map(labels, new.labels, [key])
            elif path == "target":
                target = new.target
            elif head == "annotations":
                new_annotations = _descriptor(new.target, new.name).annotations
                annotations = merge_map(target.annotations, new_annotations, [key]) if dot else new_annotations
                target = replace(target, annotations=annotations)
            else:
                raise InvalidArgument(f"cannot update field {path!r} of image {current.name!r}")
        return replace(current, labels=labels, target=target)

    def _prepare(self, t: "Transaction", image: object) -> Optional[tuple]:
        return encode_image(image, self._ns.name, t.now, t.now_at)

    def _before_write(self, t: "Transaction", image: Image, created: bool) -> None:
        if self._ns.lease is None:  # only a leased handle has a lease to join
            return
        from . import leases
        from .gc.labels import GC_EXPIRE

        # containerd leases an updated image only once it can expire: only then does the lease matter.
        if created or GC_EXPIRE in image.labels:
            leases.attach(t, self._ns, Resource(image.name, "images"))

    def delete(self, name: str, *, target: Optional[Descriptor] = None, sync: bool = False,
               tx: Optional["Transaction"] = None) -> None:
        """Delete an image; NotFound if there is none.

        With `target`, delete only if the image still points at that digest
        (containerd's ``images.DeleteTarget``), else NotFound. Deleting through
        a leased handle also drops the image from that lease. With ``sync=True``
        a garbage collection runs once the deletion has committed, before this
        returns (containerd's ``images.SynchronousDelete``).
        """
        self._check_id(name)
        if target is not None:
            validate_digest(_descriptor(target, name).digest, f"target digest to delete image {name!r} by")

        from . import leases

        def delete(t: "Transaction") -> None:
            current = self._require(t, name)
            if target is not None and current.target.digest != target.digest:
                raise NotFound(f"image {name!r} has target {current.target.digest}, not {target.digest}")
            leases.detach(t, self._ns, Resource(name, "images"))
            self._delete(t, name)
            from .events import TOPIC_IMAGE_DELETE, ImageDelete  # loaded by the first write that publishes

            t.publish(self._ns.name, TOPIC_IMAGE_DELETE, ImageDelete(name))
            if sync:
                t.after_commit(self._db.garbage_collect)

        self._db.write(tx, delete)


def remove_for_gc(tx: "Transaction", ns: str, name: str) -> None:
    """Remove an image the garbage collector found unreachable: record and node-table entry.

    No validation, no events, no dirty mark: the collector owns those.
    """
    from .gc import index

    tx.kv.delete(schema.T_OBJECTS, schema.object_key(ns, schema.K_IMAGE, name))
    index.remove(tx, ResourceType.IMAGE, ns, name)
