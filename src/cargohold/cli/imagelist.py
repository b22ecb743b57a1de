"""What `images ls` and `images inspect` show of an image: its stored size, its platforms, the blobs
it reaches; and the `images ls` listing itself.

click-free, so that `images ls` runs the same code whether click parsed its
arguments (`cargohold.cli.images`) or the fast dispatcher did (`cargohold.cli.fast`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cargohold.errors import Error

from .output import Column, Listing, format_labels

if TYPE_CHECKING:
    from cargohold import Image, Namespace

    from .context import Settings


class Details:
    """What the namespace holds of one image: bytes (each blob once), platforms, the blobs reached."""

    def __init__(self) -> None:
        self.size = 0
        self.platforms: list = []
        self.content: list = []


def details(ns: "Namespace", image: "Image") -> Details:
    """Walk the image's documents in the content store: its size, its platforms (those of an
    index's entries, else of the manifest's config, as ``ctr images ls`` shows them) and every
    blob it reaches, stored or not."""
    from cargohold.oci import mediatypes
    from cargohold.oci.documents import check_document_size, parse_config
    from cargohold.oci.platforms import format_platform, normalize
    from cargohold.oci.walk import children

    def fetch(descriptor) -> bytes:  # what `transfer.unpacker.document_fetcher` does, without the transfer package
        check_document_size(descriptor.size, f"{descriptor.media_type} {descriptor.digest}")
        return ns.content.read(descriptor.digest)

    found = Details()
    seen: set = set()
    pending = [(image.target, None, True)]  # (descriptor, platform of its index entry, platform unknown yet)
    while pending:
        descriptor, platform, wanted = pending.pop()
        if descriptor.digest in seen:
            continue
        seen.add(descriptor.digest)
        entry = {"digest": descriptor.digest, "media_type": descriptor.media_type, "size": descriptor.size,
                 "platform": platform, "stored": False}
        found.content.append(entry)
        try:
            found.size += ns.content.info(descriptor.digest).size
            entry["stored"] = True
            media_type = descriptor.media_type
            if mediatypes.is_index(media_type):
                for child in reversed(children(descriptor, fetch)):
                    shown = format_platform(normalize(child.platform)) if child.platform is not None else None
                    if shown is not None and shown not in found.platforms:
                        found.platforms.insert(0, shown)
                    pending.append((child.descriptor, shown, wanted and shown is None))
            elif mediatypes.is_manifest(media_type):
                entries = children(descriptor, fetch)
                if wanted and entries:
                    config = entries[0].descriptor
                    shown = format_platform(normalize(parse_config(fetch(config), "config").platform))
                    if shown not in found.platforms:
                        found.platforms.append(shown)
                pending.extend((e.descriptor, platform, False) for e in reversed(entries))
        except Error:
            continue  # not stored (another platform), or not a document we can read
    return found


def stored_size(ns: "Namespace", image: "Image") -> int:
    """Bytes of the image's content that the namespace holds (each blob counted once)."""
    return details(ns, image).size


LIST_COLUMNS = (
    Column("NAME", lambda i: i["name"], "key"),
    Column("TYPE", lambda i: i["target"]["media_type"]),
    Column("DIGEST", lambda i: i["target"]["digest"]),
    Column("SIZE", lambda i: i["size"], "size"),
    Column("PLATFORMS", lambda i: ",".join(i["platforms"])),
    Column("CREATED", lambda i: i["created_at"], "time", wide=True),
    Column("UPDATED", lambda i: i["updated_at"], "time", wide=True),
    Column("LABELS", lambda i: format_labels(i["labels"])),
)


def list_images(settings: "Settings", listing: Listing) -> None:
    """Print the namespace's images as `listing` asks: names (``-q``), JSON or a table (`LIST_COLUMNS`)."""
    def read() -> list:
        ns = settings.reader()
        return [(ns, image) for image in ns.images.list(*listing.filters)]

    ns_images = listing.fetch(read)
    if listing.quiet:
        listing.emit([image for _, image in ns_images], LIST_COLUMNS, key=lambda image: image.name)
        return
    rows = []
    for ns, image in ns_images:
        import dataclasses  # with the first image (and `inspect`, which it loads): an empty listing needs neither

        found = details(ns, image)
        rows.append({**dataclasses.asdict(image), "size": found.size, "platforms": found.platforms})
    listing.emit(rows, LIST_COLUMNS)
