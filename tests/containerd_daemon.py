"""A private containerd daemon for the tests: its own root, state dir and socket.

`Daemon` writes a ``version = 2`` config (CRI and the plugins that would touch
the host disabled, the GC scheduler quiet so that only the test triggers
collections), starts `/usr/bin/containerd`, waits for its socket, runs `ctr`
against it (`ctr()`, raising with the daemon's log on failure) and stops it by
PID (SIGTERM, then SIGKILL). `gc()` runs one synchronous collection the way
`ctr ... rm --sync` does: it creates and deletes a throwaway lease with
``--sync``, which returns after containerd's garbage collector ran.

Tests skip (with the reason) when containerd, ctr or root privileges are missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Optional, Sequence

import pytest

CONTAINERD = shutil.which("containerd") or "/usr/bin/containerd"
CTR = shutil.which("ctr") or "/usr/bin/ctr"
META_DB = os.path.join("io.containerd.metadata.v1.bolt", "meta.db")

_DISABLED = [
    "io.containerd.grpc.v1.cri",
    "io.containerd.internal.v1.opt",          # would create /opt/containerd
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
]


def unavailable_reason() -> Optional[str]:
    """Why a private containerd cannot run here, or None if it can."""
    for path in (CONTAINERD, CTR):
        if not os.access(path, os.X_OK):
            return f"{path} is not installed (apt-get install containerd)"
    if os.geteuid() != 0:
        return "a private containerd daemon needs root"
    return None


needs_containerd = pytest.mark.skipif(unavailable_reason() is not None,
                                      reason=unavailable_reason() or "")


class DaemonError(AssertionError):
    """containerd or ctr failed; the message carries the command, its output and the daemon log."""


class Daemon:
    """One containerd process on a private root (``<base>/root``)."""

    def __init__(self, base: str) -> None:
        self.base = os.path.abspath(base)
        self.root = os.path.join(self.base, "root")
        self.state = os.path.join(self.base, "state")
        # a unix socket path must stay under 108 bytes: keep it in a short directory
        self._sockdir = tempfile.mkdtemp(prefix="ctrd-", dir="/tmp")
        self.address = os.path.join(self._sockdir, "c.sock")
        self.log_path = os.path.join(self.base, "containerd.log")
        self.config_path = os.path.join(self.base, "config.toml")
        self.proc: Optional[subprocess.Popen] = None

    @property
    def meta_db(self) -> str:
        return os.path.join(self.root, META_DB)

    def _config(self) -> str:
        disabled = ", ".join(f'"{name}"' for name in _DISABLED)
        return (
            "version = 2\n"
            f'root = "{self.root}"\n'
            f'state = "{self.state}"\n'
            f"disabled_plugins = [{disabled}]\n"
            "[grpc]\n"
            f'  address = "{self.address}"\n'
            "[ttrpc]\n"
            f'  address = "{self.address}.ttrpc"\n'
            "[debug]\n"
            '  level = "debug"\n'
            # Only the test collects: no collection at startup, none on deletions or mutations,
            # and after a collection the next tick is ages away (its interval is the mean
            # collection time divided by the pause threshold).
            '[plugins."io.containerd.gc.v1.scheduler"]\n'
            "  pause_threshold = 0.000000001\n"
            "  deletion_threshold = 1000000000\n"
            "  mutation_threshold = 1000000000\n"
            '  schedule_delay = "0s"\n'
            '  startup_delay = "0s"\n'
        )

    def start(self, timeout: float = 30.0) -> "Daemon":
        os.makedirs(self.base, exist_ok=True)
        with open(self.config_path, "w") as f:
            f.write(self._config())
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen([CONTAINERD, "--config", self.config_path], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        finally:
            log.close()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DaemonError(f"containerd exited with {self.proc.returncode}\n{self.log_tail()}")
            if os.path.exists(self.address):
                probe = subprocess.run(self._ctr_argv("version"), capture_output=True, timeout=10)
                if probe.returncode == 0:
                    return
            time.sleep(0.05)
        raise DaemonError(f"containerd did not answer on {self.address} within {timeout}s\n{self.log_tail()}")

    def _ctr_argv(self, *args: str, namespace: Optional[str] = None) -> list[str]:
        argv = [CTR, "--address", self.address]
        if namespace is not None:
            argv += ["--namespace", namespace]
        return argv + list(args)

    def ctr(self, *args: str, namespace: str = "default", input: Optional[bytes] = None,
            timeout: float = 120.0, check: bool = True) -> str:
        """Run ``ctr ARGS`` in `namespace`; its stdout (DaemonError with the daemon log if it fails)."""
        proc = subprocess.run(self._ctr_argv(*args, namespace=namespace), input=input,
                              capture_output=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise DaemonError(f"ctr {' '.join(args)} failed ({proc.returncode}):\n"
                              f"{proc.stdout.decode(errors='replace')}{proc.stderr.decode(errors='replace')}\n"
                              f"{self.log_tail()}")
        return proc.stdout.decode()

    def ctr_lines(self, *args: str, namespace: str = "default") -> list[str]:
        return [line for line in self.ctr(*args, namespace=namespace).splitlines() if line.strip()]

    def gc(self, namespace: str = "default") -> None:
        """One synchronous garbage collection (a throwaway lease deleted with --sync)."""
        lease = f"gc-trigger-{time.monotonic_ns()}"
        self.ctr("leases", "create", "--id", lease, "--expires", "0s", namespace=namespace)
        self.ctr("leases", "rm", "--sync", lease, namespace=namespace)

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode(errors="replace").splitlines()
        except OSError:
            return "(no containerd log)"
        return "containerd log (last lines):\n" + "\n".join(text[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM by PID, SIGKILL if it does not exit in time."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None
        shutil.rmtree(self._sockdir, ignore_errors=True)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> "Daemon":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- containerd's gRPC API, for what ctr cannot do (lease resources, leased ingests) -----------
#
# Messages are encoded by hand (strings, int64s, nested messages and string maps are all
# these calls need), so only grpcio is required, no generated code.


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def pb_bytes(number: int, data: "bytes | str") -> bytes:
    data = data.encode() if isinstance(data, str) else data
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def pb_int(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value) if value else b""


def pb_map(number: int, mapping: Optional[dict]) -> bytes:
    return b"".join(pb_bytes(number, pb_bytes(1, k) + pb_bytes(2, v)) for k, v in sorted((mapping or {}).items()))


def _pb_fields(raw: bytes) -> list[tuple[int, bytes]]:
    """(number, bytes) of the length-delimited fields of a message (all these replies hold)."""
    out, pos = [], 0
    while pos < len(raw):
        tag, pos = _read_varint(raw, pos)
        if tag & 7 != 2:
            raise AssertionError(f"unexpected protobuf wire type {tag & 7}")
        size, pos = _read_varint(raw, pos)
        out.append((tag >> 3, raw[pos:pos + size]))
        pos += size
    return out


def _read_varint(raw: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = raw[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


class Api:
    """A few calls of containerd's gRPC API over the daemon's socket."""

    def __init__(self, address: str) -> None:
        grpc = pytest.importorskip("grpc", reason="grpcio is not installed (pip install grpcio)")
        self._channel = grpc.insecure_channel(f"unix://{address}")

    def close(self) -> None:
        self._channel.close()

    @staticmethod
    def _metadata(ns: str, lease: Optional[str]) -> list:
        return [("containerd-namespace", ns)] + ([("containerd-lease", lease)] if lease else [])

    def call(self, method: str, payload: bytes, *, ns: str = "default", lease: Optional[str] = None) -> bytes:
        rpc = self._channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        return rpc(payload, metadata=self._metadata(ns, lease), timeout=60)

    def lease_add(self, lease_id: str, resource_id: str, resource_type: str, *, ns: str = "default") -> None:
        self.call("/containerd.services.leases.v1.Leases/AddResource",
                  pb_bytes(1, lease_id) + pb_bytes(2, pb_bytes(1, resource_id) + pb_bytes(2, resource_type)), ns=ns)

    def lease_resources(self, lease_id: str, *, ns: str = "default") -> list[tuple[str, str]]:
        """(id, type) of every resource of the lease, as containerd lists them."""
        raw = self.call("/containerd.services.leases.v1.Leases/ListResources", pb_bytes(1, lease_id), ns=ns)
        return [(fields.get(1, b"").decode(), fields.get(2, b"").decode())
                for number, item in _pb_fields(raw) if number == 1 for fields in [dict(_pb_fields(item))]]

    def write(self, ref: str, data: bytes, *, ns: str = "default", lease: Optional[str] = None,
              commit: bool = True, expected: str = "", labels: Optional[dict] = None) -> None:
        """Write `data` to ingest `ref` (in `lease` if given); commit it, or leave the ingest in progress."""
        total = len(data) if commit or not data else len(data) + 1
        action = 1 if data else 0   # a write, or a stat that only opens the ingest
        requests = [pb_int(1, action) + pb_bytes(2, ref) + pb_int(3, total) + pb_bytes(4, expected)
                    + (pb_bytes(6, data) if data else b"")]
        if commit:
            requests.append(pb_int(1, 2) + pb_bytes(2, ref) + pb_int(3, total) + pb_bytes(4, expected)
                            + pb_int(5, len(data)) + pb_map(7, labels))
        rpc = self._channel.stream_stream("/containerd.services.content.v1.Content/Write",
                                          request_serializer=None, response_deserializer=None)
        for _ in rpc(iter(requests), metadata=self._metadata(ns, lease), timeout=60):
            pass


# -- images and ctr output, for scenarios ------------------------------------------------------


def layer(files: dict) -> bytes:
    """A layer tar of {path: bytes} (directories made as needed)."""
    from cargohold.oci.build import LayerBuilder

    builder = LayerBuilder()
    made = set()
    for path, data in sorted(files.items()):
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            directory = "/".join(parts[:i])
            if directory not in made:
                builder.dir(directory)
                made.add(directory)
        builder.file(path, data)
    return builder.tar()


def image_archive(path: str, name: str, layers: list, **options) -> str:
    """An OCI archive holding image `name` of `layers` (tar bytes); returns the manifest digest."""
    from cargohold.oci.build import write_image

    return write_image(path, name, layers, **options).digest


def index_archive(path: str, name: str, per_platform: dict) -> str:
    """An OCI archive whose image `name` is an index of one manifest per platform ({"linux/arm64": layers});
    returns the index digest."""
    import io
    import json

    from cargohold.model import Descriptor
    from cargohold.oci import mediatypes, platforms
    from cargohold.oci.build import build_image
    from cargohold.oci.digests import digest_bytes
    from cargohold.oci.documents import descriptor_json
    from cargohold.oci.export import write_archive

    blobs, manifests = [], []
    for spec, layers in per_platform.items():
        platform = platforms.parse(spec)
        manifest, image_blobs = build_image(layers, platform=platform)
        blobs += image_blobs
        entry = descriptor_json(manifest)
        entry["platform"] = {"os": platform.os, "architecture": platform.architecture}
        manifests.append(entry)
    data = json.dumps({"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": manifests}).encode()
    index = Descriptor(mediatypes.OCI_INDEX, digest_bytes(data), len(data))
    write_archive(path, [(name, index)], [(index, io.BytesIO(data))] + [(d, io.BytesIO(b)) for d, b in blobs])
    return index.digest


def parse_labels(text: str) -> dict:
    """ctr's LABELS column ("k=v,k2=v2" or "-") as a dict."""
    if text in ("", "-"):
        return {}
    return dict(item.split("=", 1) for item in text.split(","))


def unmount_under(path: str) -> None:
    """Detach every mount below `path` (overlay mounts a test made), deepest first."""
    prefix = os.path.abspath(path) + os.sep
    with open("/proc/self/mountinfo") as f:
        targets = [line.split()[4] for line in f]
    for target in sorted((t for t in targets if t.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)


def start_daemon(base: str) -> Daemon:
    """A started daemon; skip the calling test (with the reason) if containerd cannot run here."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    return Daemon(base).start()


__all__: Sequence[str] = ["Api", "Daemon", "DaemonError", "META_DB", "needs_containerd", "start_daemon",
                          "unavailable_reason", "unmount_under"]
