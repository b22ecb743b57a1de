"""containerd's on-disk layout, in one place: directories of a root, bucket and field names.

A containerd root (``/var/lib/containerd``) holds, per plugin, one directory:

* ``io.containerd.metadata.v1.bolt/meta.db``: the metadata (bbolt), decoded by
  `cargohold.containerd.decode`;
* ``io.containerd.content.v1.content/blobs/<alg>/<hex>`` and ``ingest/<sha256(ref)>/``
  (files ``ref``, ``data``, ``total``, ``startedat``, ``updatedat``): the content store;
* ``io.containerd.snapshotter.v1.<name>/metadata.db`` (bbolt, the snapshotter's own
  metastore) and ``snapshots/<id>``: one directory per backend snapshot (``native``:
  the tree itself; ``overlayfs``: ``fs`` and ``work`` inside it).

Metadata schema (``metadata/buckets.go``), a "/" separating buckets::

    v1/version                          varint db version (see below)
    v1/<ns>/labels/<key>                namespace labels
    v1/<ns>/images/<name>/              createdat, updatedat, target/{digest,mediatype,size},
                                        labels/, annotations/
    v1/<ns>/containers/<id>/            createdat, updatedat, spec (proto Any), image,
                                        snapshotter, snapshotKey, sandboxid,
                                        runtime/{name, options (proto Any)}, extensions/, labels/
    v1/<ns>/snapshots/<snapshotter>/<key>/
                                        name (backend key), parent, createdat, updatedat,
                                        children/, labels/
    v1/<ns>/content/blob/<digest>/      createdat, updatedat, size (varint), labels/
    v1/<ns>/content/ingests/<ref>/      ref (backend ref), expireat (binary time), expected
    v1/<ns>/leases/<id>/                createdat, labels/, content/<digest>, ingests/<ref>,
                                        snapshots/<snapshotter>/<key>, images/<name> (2.x)
    v1/<ns>/sandboxes/<id>/             createdat, updatedat, spec, sandboxer, runtime/,
                                        extensions/, labels/            (db version 4)
    <ns>/sandboxes/<id>/                the same, outside v1                (db version 3, 1.7)

Timestamps are Go's ``time.Time.MarshalBinary`` (`gotime`); sizes are Go varints.

Db versions. containerd keeps schema ``v1`` and bumps an integer db version for
compatible additions; every release refuses nothing older and migrates it on start:

* 1 (child links), 2 (structured ingests), 3 (bbolt): containerd 1.x (1.6 and 1.7
  write 3). 1.7 writes sandboxes outside ``v1`` (a bug its GC never saw: they are
  not roots there).
* 4: containerd 2.x; sandboxes moved under ``v1/<ns>/sandboxes``.

A database without ``v1`` is not containerd metadata (`Corrupted`); a version above
`MAX_DB_VERSION` is refused (`Unsupported`), as containerd refuses nothing but may
have changed meaning; versions 1 and 2 are read as 3, their layouts being a subset
(a version-1 ``content/ingest`` bucket of bare refs is read as ingests without
expiry). The garbage-collection rules follow the release line (`plan`).
"""

from __future__ import annotations

SCHEMA = b"v1"
DB_VERSION = b"version"
MAX_DB_VERSION = 4
RULES_BY_VERSION = {1: "1.x", 2: "1.x", 3: "1.x", 4: "2.x"}

# directories of a root
METADATA_DIR = "io.containerd.metadata.v1.bolt"
META_DB = "meta.db"
CONTENT_DIR = "io.containerd.content.v1.content"
SNAPSHOTTER_PREFIX = "io.containerd.snapshotter.v1."
SNAPSHOTTER_DB = "metadata.db"
SNAPSHOTS_DIR = "snapshots"
BLOBS_DIR = "blobs"
INGEST_DIR = "ingest"
DEFAULT_ROOT = "/var/lib/containerd"

# object buckets of a namespace
LABELS = b"labels"
ANNOTATIONS = b"annotations"
IMAGES = b"images"
CONTAINERS = b"containers"
SNAPSHOTS = b"snapshots"
CONTENT = b"content"
BLOB = b"blob"
INGESTS = b"ingests"
INGEST_V1 = b"ingest"
LEASES = b"leases"
SANDBOXES = b"sandboxes"
LEASE_IMAGES = b"images"

# fields
CREATED_AT = b"createdat"
UPDATED_AT = b"updatedat"
TARGET = b"target"
DIGEST = b"digest"
MEDIA_TYPE = b"mediatype"
SIZE = b"size"
IMAGE = b"image"
RUNTIME = b"runtime"
NAME = b"name"
OPTIONS = b"options"
SPEC = b"spec"
SNAPSHOT_KEY = b"snapshotKey"
SNAPSHOTTER = b"snapshotter"
EXTENSIONS = b"extensions"
SANDBOX_ID = b"sandboxid"
SANDBOXER = b"sandboxer"
PARENT = b"parent"
CHILDREN = b"children"
REF = b"ref"
EXPIRE_AT = b"expireat"
EXPECTED = b"expected"

# a snapshotter's metadata.db (snapshots/storage)
STORAGE_SNAPSHOTS = b"snapshots"
STORAGE_PARENTS = b"parents"
STORAGE_ID = b"id"
STORAGE_KIND = b"kind"
STORAGE_INODES = b"inodes"

# ingest directory files
INGEST_REF = "ref"
INGEST_DATA = "data"
INGEST_TOTAL = "total"
INGEST_STARTED = "startedat"
INGEST_UPDATED = "updatedat"
