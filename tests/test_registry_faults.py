"""A misbehaving registry (tests/registry_server.HostileRegistry): every fault is one clear error line naming
the reference, no half-pulled image, and a retried pull resumes where the last one stopped."""

from __future__ import annotations

import json
import os
import threading

import pytest
from cliutil import fails, invoke, parsed
from registry_server import Fault

import cargohold
from cargohold import transfer
from cargohold.errors import Unavailable
from cargohold.oci import mediatypes
from cargohold.oci.build import LayerBuilder
from cargohold.oci.platforms import host

pytest_plugins = ("registry_server",)

REPO = "team/app"


def image(hostile, n: int = 2, size: int = 50_000, tag: str = "1"):
    tars = [LayerBuilder().file(f"f{i}", os.urandom(size)).tar() for i in range(n)]
    manifest, blobs = hostile.add_image(REPO, tag, tars)
    return f"{hostile.host}/{REPO}:{tag}", manifest, blobs


def layer_of(blobs, i: int = 0):
    return [d for d, _ in blobs if mediatypes.is_layer(d.media_type)][i]


def no_image(root) -> None:
    assert parsed(invoke(root, "images", "ls", "--json")) == []


def other_platform_index(hostile) -> str:
    """An index whose only entry is for a platform that is not the host's."""
    _, blobs = hostile.add_image(REPO, "", [LayerBuilder().file("x", b"x").tar()])
    manifest = blobs[0][0]
    arch = "s390x" if host().architecture != "s390x" else "arm64"
    index = json.dumps({"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": [
        {"mediaType": manifest.media_type, "digest": manifest.digest, "size": manifest.size,
         "platform": {"os": "linux", "architecture": arch}}]}).encode()
    hostile.add_document(REPO, mediatypes.OCI_INDEX, index, "multi")
    return f"{hostile.host}/{REPO}:multi"


def oversized_manifest(hostile) -> str:
    data = json.dumps({"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST,
                       "annotations": {"pad": "x" * (4 << 20)}}).encode()
    hostile.add_document(REPO, mediatypes.OCI_MANIFEST, data, "huge")
    return f"{hostile.host}/{REPO}:huge"


# (id, faults given the layer's digest, expected class, a word of the message)
CASES = [
    ("401", lambda d: [Fault(r"/v2/", status=401, headers={"WWW-Authenticate": 'Basic realm="r"'})],
     "FailedPrecondition", "requires authentication"),
    ("403", lambda d: [Fault(r"/manifests/", status=403)], "FailedPrecondition", "403"),
    ("404", lambda d: [Fault(r"/manifests/", status=404)], "NotFound", "404"),
    ("429", lambda d: [Fault(rf"/blobs/{d}", status=429)], "Unavailable", "429"),
    ("500", lambda d: [Fault(r"/manifests/", status=500)], "Unavailable", "500"),
    ("500-deep-json-error", lambda d: [Fault(rf"/blobs/{d}", status=500, body=b"[" * 200_000)], "Unavailable",
     "500"),
    ("closes-mid-blob", lambda d: [Fault(rf"GET .*/blobs/{d}", close_after=1000)], "Unavailable", "broke"),
    ("wrong-digest", lambda d: [Fault(rf"GET .*/blobs/{d}", body=None)], "InvalidArgument", "digest mismatch"),
    ("too-long", lambda d: [Fault(rf"GET .*/blobs/{d}", body=None)], "InvalidArgument", "sends"),
    ("redirect-loop", lambda d: [Fault(rf"/blobs/{d}", redirect=f"/v2/{REPO}/blobs/{d}")], "Unavailable",
     "redirect"),
    ("malformed-challenge", lambda d: [Fault(r"/v2/", status=401, headers={"WWW-Authenticate": 'Bearer realm="x'})],
     "InvalidArgument", "malformed WWW-Authenticate"),
    ("challenge-without-realm", lambda d: [Fault(r"/v2/", status=401, headers={"WWW-Authenticate": "Bearer"})],
     "InvalidArgument", "realm"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_a_fault_is_one_line_naming_the_reference(hostile, tmp_path, case):
    name, faults, kind, word = case
    ref, manifest, blobs = image(hostile)
    layer = layer_of(blobs)
    hostile.faults.extend(faults(layer.digest))
    data = hostile.blobs[layer.digest]
    if name == "wrong-digest":
        hostile.faults[0].body = bytes(reversed(data))
    if name == "too-long":
        hostile.faults[0].body = data + b"extra"
    root = tmp_path / "root"
    line = fails(root, "images", "pull", "--plain-http", ref)
    assert line.startswith(f"cargohold: {kind}: pull {ref}: "), line
    assert word in line, line
    no_image(root)


def test_manifest_over_4_mib_and_no_matching_platform(hostile, tmp_path):
    root = tmp_path / "root"
    huge = oversized_manifest(hostile)
    line = fails(root, "images", "pull", "--plain-http", huge)
    assert line.startswith(f"cargohold: InvalidArgument: pull {huge}: ") and "4194304" in line, line
    multi = other_platform_index(hostile)
    line = fails(root, "images", "pull", "--plain-http", multi)
    assert line.startswith(f"cargohold: NotFound: pull {multi}: no manifest of index"), line
    assert "matches platform" in line
    no_image(root)
    # the oversized manifest was never downloaded: HEAD told its size
    assert not any(m == "GET" and "/manifests/huge" in p for m, p, _ in hostile.requests)


def test_wrong_content_is_discarded_and_a_retry_starts_afresh(hostile, tmp_path):
    ref, manifest, blobs = image(hostile)
    layer = layer_of(blobs)
    data = hostile.blobs[layer.digest]
    hostile.faults.append(Fault(rf"GET .*/blobs/{layer.digest}", body=bytes(reversed(data)), times=1))
    with cargohold.open(tmp_path / "root") as db:
        ns = db.namespace("default")
        with pytest.raises(cargohold.errors.InvalidArgument, match="digest mismatch"):
            transfer.pull(ns, ref, plain_http=True)
        # nothing wrong is kept to resume from (the other layer, stopped meanwhile, may keep its part)
        assert f"layer-{layer.digest}" not in [status.ref for status in ns.content.statuses()]
        transfer.pull(ns, ref, plain_http=True)
        assert ns.content.read(layer.digest) == data


def test_an_interrupted_pull_resumes_from_the_ingest_offset(hostile, tmp_path):
    ref, manifest, blobs = image(hostile, n=2, size=400_000)
    layer = layer_of(blobs, 1)
    size = layer.size
    cut = size // 3
    hostile.faults.append(Fault(rf"GET .*/blobs/{layer.digest}", close_after=cut, times=1))
    root = tmp_path / "root"
    line = fails(root, "images", "pull", "--plain-http", "--max-concurrent-downloads", "1", ref)
    assert line.startswith(f"cargohold: Unavailable: pull {ref}: layer {layer.digest}: ")
    no_image(root)
    with cargohold.open(root) as db:
        statuses = db.namespace("default").content.statuses()
        assert [(s.ref, s.offset, s.total) for s in statuses] == [(f"layer-{layer.digest}", cut, size)]
    served = dict(hostile.served)
    invoke(root, "images", "pull", "--plain-http", ref)
    ranges = [h.get("Range") for m, p, h in hostile.requests if m == "GET" and layer.digest in p]
    assert ranges == [None, f"bytes={cut}-"]
    # every byte of the layer crossed the wire once; the blobs stored before were not fetched again
    assert hostile.served[layer.digest] == size
    assert all(hostile.served[d] == n for d, n in served.items() if d != layer.digest)
    with cargohold.open(root) as db:
        ns = db.namespace("default")
        assert ns.content.read(layer.digest) == hostile.blobs[layer.digest]
        assert ns.content.statuses() == [] and ns.leases.list() == []
        assert [i.name for i in ns.images.list()] == [ref]


def test_a_registry_ignoring_range_is_read_from_the_start(hostile, tmp_path):
    ref, manifest, blobs = image(hostile, n=1, size=300_000)
    layer = layer_of(blobs)
    data = hostile.blobs[layer.digest]
    hostile.faults.append(Fault(rf"GET .*/blobs/{layer.digest}", close_after=1000, times=1))
    with cargohold.open(tmp_path / "root") as db:
        ns = db.namespace("default")
        with pytest.raises(Unavailable):
            transfer.pull(ns, ref, plain_http=True)
        hostile.faults.append(Fault(rf"GET .*/blobs/{layer.digest}", body=data))  # 200, whole body
        transfer.pull(ns, ref, plain_http=True)
        assert ns.content.read(layer.digest) == data


def gate_layers(hostile, blobs, parties: int, timeout: float) -> None:
    """Make every layer download wait until `parties` of them are in flight (else each gets a 500)."""
    config = blobs[1][0]
    hostile.faults.append(Fault(rf"GET .*/blobs/{config.digest}"))  # served as usual: fetched before the layers
    hostile.faults.append(Fault(r"GET .*/blobs/", gate=threading.Barrier(parties, timeout=timeout)))


def test_layers_download_concurrently_up_to_the_limit(hostile, tmp_path):
    ref, manifest, blobs = image(hostile, n=3, size=10_000)
    gate_layers(hostile, blobs, 3, timeout=10)
    with cargohold.open(tmp_path / "root") as db:
        transfer.pull(db.namespace("default"), ref, plain_http=True, max_concurrent=3)


def test_one_download_at_a_time_when_the_limit_is_one(hostile, tmp_path):
    ref, manifest, blobs = image(hostile, n=2, size=10_000)
    gate_layers(hostile, blobs, 2, timeout=1)
    with cargohold.open(tmp_path / "root") as db:
        with pytest.raises(Unavailable, match="500"):
            transfer.pull(db.namespace("default"), ref, plain_http=True, max_concurrent=1)


def test_push_faults_and_credentials_stay_with_the_registry(hostile, tmp_path):
    from cargohold.oci.build import write_image
    from cargohold.transfer import Credentials

    root = tmp_path / "root"
    name = f"{hostile.host}/{REPO}:1"
    write_image(tmp_path / "img.tar", name, [LayerBuilder().file("a", os.urandom(1000)).tar()])
    invoke(root, "images", "import", tmp_path / "img.tar")
    hostile.faults.append(Fault(r"PUT .*/manifests/", status=500, times=1))
    line = fails(root, "images", "push", "--plain-http", name)
    assert line.startswith(f"cargohold: Unavailable: push {name}: manifest sha256:") and "500" in line
    # an upload the registry moves to another host gets no credentials
    hostile.requests.clear()
    hostile.blobs.clear()
    port = hostile.host.rpartition(":")[2]
    hostile.upload_location = f"http://localhost:{port}/upload/elsewhere"
    hostile.faults.append(Fault(r"HEAD .*/blobs/", status=401, headers={"WWW-Authenticate": 'Basic realm="r"'},
                                times=1))
    with cargohold.open(root) as db:
        ns = db.namespace("default")
        pushed = transfer.push(ns, name, f"{hostile.host}/{REPO}:2", plain_http=True,
                               credentials=Credentials("u", "p"), max_concurrent=1)
        assert hostile.manifests[REPO, "2"][1] == ns.content.read(pushed.digest)
    auth = {(method, path.partition("?")[0]): "Authorization" in headers
            for method, path, headers in hostile.requests}
    assert auth[("PUT", "/upload/elsewhere")] is False
    assert auth[("POST", f"/v2/{REPO}/blobs/uploads/")] is True


def gzip_bomb(decoded: int, layers: int = 2) -> bytes:
    """`decoded` zero bytes gzipped `layers` times over: a few KiB on the wire."""
    import zlib

    data = bytes(decoded)
    for _ in range(layers):
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)
        data = packer.compress(data) + packer.flush()
    return data


@pytest.mark.parametrize("target", ["manifest", "layer", "error"])
def test_an_encoded_answer_is_refused_before_it_is_decoded(hostile, tmp_path, target):
    """httpx would decode `Content-Encoding: gzip, gzip` a whole chunk at a time, before any size limit
    saw a byte (a few KiB became gigabytes): the client asks for identity and refuses anything else.
    The layer is the bomb's own bytes, so its length is the one its descriptor gives."""
    import resource

    bomb = gzip_bomb(256 << 20)
    assert len(bomb) < 64 << 10
    manifest, blobs = hostile.add_image(REPO, "1", [(bomb, "")])
    ref = f"{hostile.host}/{REPO}:1"
    layer = layer_of(blobs)
    encoded = {"Content-Encoding": "gzip, gzip", "Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    if target == "manifest":  # no HEAD: the manifest's size is not known before it is read
        hostile.faults += [Fault(r"HEAD .*/manifests/", status=405), Fault(r"GET .*/manifests/", status=200,
                                                                          body=bomb, headers=encoded)]
    else:
        hostile.faults.append(Fault(rf"GET .*/blobs/{layer.digest}", status=500 if target == "error" else 200,
                                    body=bomb, headers=encoded))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with cargohold.open(tmp_path / "root") as db:
        ns = db.namespace("default")
        if target == "error":
            with pytest.raises(Unavailable, match=r"answered 500 Internal Server Error$"):
                transfer.pull(ns, ref, plain_http=True)
        else:
            with pytest.raises(cargohold.errors.InvalidArgument,
                               match=r"Content-Encoding 'gzip, gzip', which cargohold did not ask for"):
                transfer.pull(ns, ref, plain_http=True)
        assert ns.images.list() == []
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) < 128 << 10  # KiB: never decoded
    assert {headers.get("Accept-Encoding") for _, _, headers in hostile.requests} == {"identity"}


@pytest.mark.parametrize("declared", ["small", "true"])
def test_a_document_naming_a_stored_blob_is_held_to_the_download_limits(hostile, tmp_path, declared):
    """An index entry may name any digest the namespace stores, a large layer among them: the stored blob
    used to be read whole into memory as the manifest, whatever size the entry declared."""
    import hashlib
    import resource

    big = os.urandom(48 << 20)
    digest = "sha256:" + hashlib.sha256(big).hexdigest()
    size = 400 if declared == "small" else len(big)
    index = json.dumps({"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": [
        {"mediaType": mediatypes.OCI_MANIFEST, "digest": digest, "size": size}]}).encode()
    hostile.add_document(REPO, mediatypes.OCI_INDEX, index, "big")
    ref = f"{hostile.host}/{REPO}:big"
    with cargohold.open(tmp_path / "root") as db:
        ns = db.namespace("default")
        with ns.content.writer("big", total=len(big), expected=digest) as w:
            w.write(big)
            w.commit(len(big), digest)
        del big
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        message = (r"declares 400 bytes, the stored blob of that digest has 50331648" if declared == "small"
                   else r"is 50331648 bytes or more, larger than the 4194304-byte limit")
        with pytest.raises(cargohold.errors.InvalidArgument, match=message):
            transfer.pull(ns, ref, plain_http=True)
        assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) < 16 << 10  # KiB: not read
        assert ns.images.list() == []
