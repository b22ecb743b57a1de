"""A real etcd cluster (Debian's etcd-server) on loopback ports with temp data dirs, for the tests.

Members are separate `etcd` processes, each stopped by its own PID. Data
dirs live on tmpfs when there is one (raft fsyncs every commit).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from typing import Optional

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
MAX_TXN_OPS = 1_000_000
MAX_REQUEST_BYTES = 64 << 20


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def make_certs(directory: str, name: str = "ca") -> dict:
    """A self-signed CA (``<name>.pem``) and, signed by it, a certificate for 127.0.0.1 that serves as
    both the members' server certificate and a client one (openssl); their paths by role."""
    os.makedirs(directory, exist_ok=True)
    paths = {role: os.path.join(directory, f"{name}-{role}") for role in ("ca.pem", "ca.key", "cert.pem",
                                                                          "key.pem", "csr", "ext")}
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    with open(paths["ext"], "w") as fh:
        fh.write("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    for argv in (["req", "-x509", *curve, "-keyout", paths["ca.key"], "-out", paths["ca.pem"], "-days", "2",
                  "-subj", f"/CN=cargohold test {name}"],
                 ["req", *curve, "-keyout", paths["key.pem"], "-out", paths["csr"], "-subj", "/CN=127.0.0.1"],
                 ["x509", "-req", "-in", paths["csr"], "-CA", paths["ca.pem"], "-CAkey", paths["ca.key"],
                  "-CAcreateserial", "-out", paths["cert.pem"], "-days", "2", "-extfile", paths["ext"]]):
        subprocess.run(["openssl", *argv], check=True, capture_output=True)
    return {"ca": paths["ca.pem"], "cert": paths["cert.pem"], "key": paths["key.pem"]}


class Cluster:
    """`size` etcd members on 127.0.0.1; `url(prefix)` is the cargohold metadata URL. With `tls`
    (`make_certs`), members serve clients over TLS only and require a client certificate."""

    def __init__(self, size: int = 1, base: Optional[str] = None, *, raised_limits: bool = True,
                 tls: Optional[dict] = None) -> None:
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        self.base = base or tempfile.mkdtemp(prefix="cargohold-etcd-", dir=shm)
        ports = free_ports(2 * size)
        self.client_ports = ports[:size]
        self.peer_ports = ports[size:]
        self.names = [f"m{i}" for i in range(size)]
        self.raised_limits = raised_limits
        self.tls = tls
        """Start members with MAX_TXN_OPS and MAX_REQUEST_BYTES (what a fleet's collections need)."""
        self.procs: list[Optional[subprocess.Popen]] = [None] * size
        self._initial = ",".join(f"{name}=http://127.0.0.1:{port}" for name, port in zip(self.names, self.peer_ports))

    def _argv(self, index: int, state: str) -> list[str]:
        client = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.client_ports[index]}"
        peer = f"http://127.0.0.1:{self.peer_ports[index]}"
        return [ETCD, "--name", self.names[index], "--data-dir", os.path.join(self.base, self.names[index]),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", self._initial, "--initial-cluster-state", state,
                "--initial-cluster-token", os.path.basename(self.base),
                *(["--max-txn-ops", str(MAX_TXN_OPS), "--max-request-bytes", str(MAX_REQUEST_BYTES)]
                  if self.raised_limits else []),
                *(["--cert-file", self.tls["cert"], "--key-file", self.tls["key"], "--client-cert-auth",
                   "--trusted-ca-file", self.tls["ca"]] if self.tls else []),
                "--logger", "zap", "--log-level", "error"]

    def start_member(self, index: int, state: str = "new") -> None:
        log = open(os.path.join(self.base, f"{self.names[index]}.log"), "ab")
        self.procs[index] = subprocess.Popen(self._argv(index, state), stdout=log, stderr=log,
                                             stdin=subprocess.DEVNULL)
        log.close()

    def start(self) -> "Cluster":
        for index in range(len(self.names)):
            self.start_member(index)
        self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 30.0, members: Optional[list[int]] = None) -> None:
        """Wait until every running member (or `members`) answers a linearizable read."""
        deadline = time.monotonic() + timeout
        indexes = members if members is not None else [i for i, p in enumerate(self.procs) if p is not None]
        pending = set(indexes)
        while pending:
            for index in list(pending):
                proc = self.procs[index]
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"etcd member {self.names[index]} exited: {self.log(index)}")
                try:
                    self.request(index, "/v3/kv/range", {"key": "AA=="}, timeout=1)
                    pending.discard(index)
                except OSError:
                    pass
            if pending:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"etcd members {sorted(pending)} not healthy: "
                                       + " | ".join(self.log(i) for i in pending))
                time.sleep(0.05)

    def log(self, index: int) -> str:
        try:
            with open(os.path.join(self.base, f"{self.names[index]}.log"), errors="replace") as fh:
                return fh.read()[-2000:]
        except OSError:
            return ""

    def request(self, index: int, path: str, payload: dict, timeout: float = 5) -> dict:
        scheme, context = "http", None
        if self.tls:
            scheme, context = "https", ssl.create_default_context(cafile=self.tls["ca"])
            context.load_cert_chain(self.tls["cert"], self.tls["key"])
        req = urllib.request.Request(f"{scheme}://127.0.0.1:{self.client_ports[index]}{path}",
                                     data=json.dumps(payload).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return json.loads(resp.read())

    def leader(self) -> int:
        """The index of the current leader."""
        for index, proc in enumerate(self.procs):
            if proc is None:
                continue
            try:
                status = self.request(index, "/v3/maintenance/status", {}, timeout=1)
            except OSError:
                continue
            if status.get("leader") == status["header"].get("member_id"):
                return index
        raise RuntimeError("no etcd leader")

    def stop_member(self, index: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[index]
        if proc is None:
            return
        os.kill(proc.pid, sig)
        proc.wait(timeout=30)
        self.procs[index] = None

    def restart_member(self, index: int) -> None:
        self.start_member(index, state="existing")
        self.wait_healthy(members=[index])

    @property
    def endpoints(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.client_ports)

    def url(self, prefix: str) -> str:
        if self.tls:
            return (f"etcds://{self.endpoints}/{prefix}?cacert={self.tls['ca']}&cert={self.tls['cert']}"
                    f"&key={self.tls['key']}")
        return f"etcd://{self.endpoints}/{prefix}"

    def stop(self) -> None:
        for index in range(len(self.procs)):
            try:
                self.stop_member(index)
            except (OSError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.base, ignore_errors=True)
