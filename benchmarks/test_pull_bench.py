"""Pulling a 500 MiB image of 5 layers from a loopback registry, unpacked, against skopeo + tar in the same run.

    .venv/bin/python -m pytest benchmarks/test_pull_bench.py

* cargohold: ``transfer.pull(..., unpack=True)`` into a fresh root each round
  (download, verify, store, unpack into native snapshots);
* the tools: ``skopeo copy docker://... oci:DIR`` then ``tar -xzf`` of each
  layer, in order, into one directory, once before each of cargohold's rounds
  (the machine is shared: alternating puts both under the same load);
* a second pull into the same root, which must download no layer byte (the
  registry's access log says how many blob bytes it served).

Target: the pull within 1.2x of the tools. The registry is Debian's
docker-registry (distribution 2.8) on a loopback port; layers are 100 MiB of
random files each (gzip), so compression saves nothing and every byte moves.
The ratios are printed at the end of the run ("benchmark ratios").
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "tests"))

from registry_server import DOCKER_REGISTRY, SKOPEO, Registry, seed  # noqa: E402

import cargohold  # noqa: E402
from cargohold import transfer  # noqa: E402
from cargohold.oci.build import LayerBuilder  # noqa: E402

LAYERS = 5
FILES = 10
FILE_SIZE = 10 << 20
ROUNDS = 5

pytestmark = pytest.mark.skipif(DOCKER_REGISTRY is None or SKOPEO is None,
                                reason="needs docker-registry and skopeo")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("pull-bench")


@pytest.fixture(scope="module")
def registry(workdir):
    server = Registry(workdir / "registry").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def image(registry, workdir):
    """The reference of a 5-layer, 500 MiB image in the registry, and its layers' digests."""
    tars = []
    for i in range(LAYERS):
        layer = LayerBuilder()
        for j in range(FILES):
            layer.file(f"layer{i}/file{j}", os.urandom(FILE_SIZE))
        tars.append(layer.tar())
    manifest = seed(registry, workdir, "bench/app:1", tars)
    del tars
    ref = f"{registry.host}/bench/app:1"
    with cargohold.open(workdir / "probe") as db:  # read the manifest back to know the layer digests
        ns = db.namespace("probe")
        transfer.pull(ns, ref, plain_http=True)
        layers = [layer["digest"] for layer in json.loads(ns.content.read(manifest.digest))["layers"]]
    shutil.rmtree(workdir / "probe")
    return ref, layers


@pytest.mark.benchmark(group="pull 500 MiB, 5 layers, unpacked")
def test_pull_against_skopeo_and_tar(benchmark, workdir, image, report):
    """Rounds alternate: before each timed pull, the tools run once (timed by hand), so both see the
    same machine load; the ratio is that of the medians."""
    ref, layers = image
    dest, rootfs = workdir / "skopeo", workdir / "rootfs"
    state = {"round": 0, "db": None}
    tool_times: list[float] = []

    def tools_round() -> None:
        for path in (dest, rootfs):
            shutil.rmtree(path, ignore_errors=True)
        rootfs.mkdir()
        start = time.perf_counter()
        subprocess.run([SKOPEO, "copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"oci:{dest}:app"],
                       check=True)
        for digest in layers:
            blob = dest / "blobs" / "sha256" / digest.partition(":")[2]
            subprocess.run(["tar", "-xzf", str(blob), "-C", str(rootfs)], check=True)
        tool_times.append(time.perf_counter() - start)
        for path in (dest, rootfs):
            shutil.rmtree(path)

    def fresh_root():
        if state["db"] is not None:
            state["db"].close()
            shutil.rmtree(workdir / f"root-{state['round']}")
        tools_round()
        state["round"] += 1
        state["db"] = cargohold.open(workdir / f"root-{state['round']}")
        return (state["db"].namespace("bench"), ref), {"plain_http": True, "unpack": True}

    benchmark.pedantic(transfer.pull, setup=fresh_root, rounds=ROUNDS, warmup_rounds=0)
    state["db"].close()
    ours, theirs = benchmark.stats.stats.median, statistics.median(tool_times)
    benchmark.extra_info.update(tools_median_s=theirs, tools_rounds_s=tool_times)
    size = LAYERS * FILES * FILE_SIZE / 2**20
    report(f"pull+unpack vs skopeo copy + tar -xzf: {ours:.2f}s / {theirs:.2f}s = {ours / theirs:.2f}x"
           f" ({size / ours:.0f} MiB/s vs {size / theirs:.0f} MiB/s; target <= 1.2x)")


def test_a_second_pull_downloads_no_layer(workdir, registry, image, report):
    ref, layers = image
    with cargohold.open(workdir / "again") as db:
        ns = db.namespace("bench")
        transfer.pull(ns, ref, plain_http=True, unpack=True)
        before = len(registry.access())
        transfer.pull(ns, ref, plain_http=True, unpack=True)
    served = registry.blob_bytes(before)
    report(f"second pull of the 500 MiB image: {served} blob bytes served")
    assert served == 0
