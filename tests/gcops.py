"""Writer operations as plain data, so that a test thread and another process (`python gcops.py`,
a worker reading JSON commands on stdin) can run the same ones through the public API.

An operation is a list ``[name, *args]``:

* ``["content", text, labels]``: commit the blob ``text.encode()`` with labels;
* ``["image", name, target, labels]``, ``["delete_image", name]``;
* ``["snapshot", key, parent, labels]``: prepare and commit; ``["remove_snapshot", key]``;
* ``["relabel_content", digest, labels]``, ``["relabel_snapshot", key, labels]``;
* ``["delete_content", digest]``;
* ``["lease", id, labels]``, ``["delete_lease", id]``,
  ``["lease_add", id, kind, key]``, ``["lease_remove", id, kind, key]`` (kind: content, snapshot, image).

Worker commands (one JSON object per line; one line of reply each): ``{"open": root,
"namespace": ns}``, ``{"ops": [...]}``, ``{"begin": true}`` (enter a write transaction and reply
``inside``; the next line ``{"go": [...]}`` runs its operations in it, commits, and replies
``done``), ``{"close": true}``. A failure replies ``error: ...``.
"""

from __future__ import annotations

import json
import sys

from cargohold import Descriptor, Image, Info, Resource, SnapshotInfo

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_RESOURCE = {"content": "content", "snapshot": "snapshots/native", "image": "images"}


def _blob(ns, data: bytes, labels) -> str:
    import hashlib

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with ns.content.writer(f"ingest-{digest}", total=len(data), expected=digest) as w:
        w.write(data[w.status().offset:])
        w.commit(len(data), digest, labels=labels)
    return digest


def apply(ns, op: list) -> None:
    """Run one operation in namespace handle `ns`."""
    name, *args = op
    sn = ns.snapshotter("native")
    if name == "content":
        _blob(ns, args[0].encode(), args[1])
    elif name == "image":
        ns.images.create(Image(args[0], Descriptor(MANIFEST, args[1], 1), labels=args[2]))
    elif name == "delete_image":
        ns.images.delete(args[0])
    elif name == "snapshot":
        key, parent, labels = args
        sn.prepare(f"{key}-active", parent)
        sn.commit(key, f"{key}-active", labels=labels)
    elif name == "remove_snapshot":
        sn.remove(args[0])
    elif name == "relabel_content":
        ns.content.update(Info(args[0], labels=args[1]), "labels")
    elif name == "relabel_snapshot":
        sn.update(SnapshotInfo(args[0], labels=args[1]), "labels")
    elif name == "delete_content":
        ns.content.delete(args[0])
    elif name == "lease":
        ns.leases.create(args[0], labels=args[1])
    elif name == "delete_lease":
        ns.leases.delete(args[0])
    elif name in ("lease_add", "lease_remove"):
        lease, kind, key = args
        method = ns.leases.add_resource if name == "lease_add" else ns.leases.delete_resource
        method(lease, Resource(key, _RESOURCE[kind]))
    else:
        raise ValueError(f"unknown operation {op!r}")


def digest_of(text: str) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _serve() -> None:
    import cargohold

    db = ns = None
    for line in sys.stdin:
        command = json.loads(line)
        try:
            if "open" in command:
                if db is not None:
                    db.close()
                db = cargohold.open(command["open"])
                ns = db.namespace(command["namespace"])
                reply = "ok"
            elif "ops" in command:
                for op in command["ops"]:
                    apply(ns, op)
                reply = "done"
            elif "begin" in command:
                with db.update():
                    print("inside", flush=True)
                    for op in json.loads(sys.stdin.readline())["go"]:
                        apply(ns, op)
                reply = "done"
            elif "close" in command:
                if db is not None:
                    db.close()
                db = None
                reply = "ok"
            else:
                reply = f"error: unknown command {command!r}"
        except Exception as exc:  # reported to the test
            reply = f"error: {type(exc).__name__}: {exc}"
        print(reply, flush=True)


if __name__ == "__main__":
    _serve()
