"""Registries for the tests, all on loopback ports chosen free: a pytest plugin (``pytest_plugins``).

* `Registry`: Debian's ``docker-registry`` (distribution 2.8) in a temp
  storage directory, anonymous, with htpasswd basic auth (bcrypt entries
  from the Python ``bcrypt`` package) or with token auth; its access log
  (stdout) tells which requests it served and how many bytes.
* `TokenServer`: distribution's token protocol, in a thread of the test
  process: it signs RS256 JWTs with a key whose self-signed certificate it
  wrote for the registry's ``rootcertbundle``, and records what it granted.
* `HostileRegistry`: a registry API of our own, in a thread, serving a few
  images and the faults a test chooses (statuses, dropped connections,
  wrong bytes, redirect loops, bad challenges), counting the bytes it sends.

Session fixtures start one registry of each kind and stop it by PID at the
end; `seed` puts an image into one with ``skopeo copy``. (PYTEST_DONT_REWRITE: test modules import
helpers from here before pytest loads it as a plugin.)
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Optional

import pytest
from oci_fixtures import Layer, Layout

from cargohold.oci.build import build_image, write_image
from cargohold.oci.platforms import host

DOCKER_REGISTRY = shutil.which("docker-registry")
SKOPEO = shutil.which("skopeo")
needs_registry = pytest.mark.skipif(DOCKER_REGISTRY is None or SKOPEO is None,
                                    reason="needs docker-registry and skopeo (apt-get install docker-registry skopeo)")

USER, PASSWORD = "tester", "s3cret-pass"
SERVICE, ISSUER = "cargohold-test-registry", "cargohold-test-tokens"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Access:
    """One line of the registry's access log."""

    method: str
    path: str
    status: int
    size: int


_ACCESS = re.compile(r'"([A-Z]+) (\S+) HTTP/[0-9.]+" (\d{3}) (\d+|-)')


class Registry:
    """A ``docker-registry serve`` process; `auth` is None, ``"htpasswd"`` or a `TokenServer`."""

    def __init__(self, workdir, auth=None) -> None:
        self.workdir = os.fspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.auth = auth
        self.log_path = os.path.join(self.workdir, "access.log")
        self._proc: Optional[subprocess.Popen] = None
        self._markers = 0

    def _auth_config(self) -> list[str]:
        if self.auth is None:
            return []
        if self.auth == "htpasswd":
            import bcrypt
            path = os.path.join(self.workdir, "htpasswd")
            hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
            with open(path, "w") as f:
                f.write(f"{USER}:{hashed}\n")
            return ["auth:", "  htpasswd:", "    realm: cargohold-test", f"    path: {path}"]
        token: TokenServer = self.auth
        return ["auth:", "  token:", f"    realm: {token.realm}", f"    service: {SERVICE}",
                f"    issuer: {ISSUER}", f"    rootcertbundle: {token.cert_path}"]

    def start(self) -> "Registry":
        config = os.path.join(self.workdir, "config.yml")
        lines = ["version: 0.1", "log:", "  level: error", "  accesslog:", "    disabled: false",
                 "storage:", "  filesystem:", f"    rootdirectory: {os.path.join(self.workdir, 'data')}",
                 "  delete:", "    enabled: true", "http:", f"  addr: {self.host}",
                 f"  secret: {secrets.token_hex(16)}", *self._auth_config()]
        with open(config, "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(self.log_path, "wb") as log, open(os.path.join(self.workdir, "stderr.log"), "wb") as err:
            self._proc = subprocess.Popen([DOCKER_REGISTRY, "serve", config], stdout=log, stderr=err,
                                          stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                with open(err.name) as errors:
                    raise RuntimeError(f"docker-registry exited: {errors.read()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("docker-registry did not start listening")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def access(self) -> list[Access]:
        """Every request logged so far, once the requests made before this call are all logged."""
        self._markers += 1
        marker = f"/v2/-marker-{self._markers}/tags/list"
        try:
            urllib.request.urlopen(f"http://{self.host}{marker}", timeout=5).close()
        except OSError:
            pass  # 401 or 404: it is logged all the same
        deadline = time.monotonic() + 5
        while True:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                entries = [Access(m[1], m[2], int(m[3]), 0 if m[4] == "-" else int(m[4]))
                           for m in (_ACCESS.search(line) for line in f) if m]
            if any(entry.path == marker for entry in entries) or time.monotonic() > deadline:
                return [entry for entry in entries if "/-marker-" not in entry.path]
            time.sleep(0.02)

    def blob_bytes(self, since: int = 0, repository: str = "", digests=None) -> int:
        """Bytes of blobs served by GET (after the first `since` log entries), optionally of one repository
        or of some `digests` only."""
        return sum(entry.size for entry in self.access()[since:]
                   if entry.method == "GET" and "/blobs/" in entry.path and entry.status in (200, 206)
                   and f"/v2/{repository}" in entry.path
                   and (digests is None or entry.path.rpartition("/")[2] in digests))


def seed(registry: Registry, tmp_path, repo_tag: str, layers: list, *, archive: Optional[str] = None,
         all_images: bool = False, skopeo_args: tuple = (), **options):
    """Put an image into the registry with skopeo; returns the manifest descriptor (None for `archive`).

    `layers` and `options` go to `write_image`; `archive` copies a ready OCI
    layout (directory or tar) instead; `all_images` copies every image of an
    index; `skopeo_args` go to ``skopeo copy``.
    """
    manifest = None
    if archive is None:
        archive = os.path.join(os.fspath(tmp_path), f"seed-{secrets.token_hex(4)}.tar")
        manifest = write_image(archive, f"{registry.host}/{repo_tag}", layers, **options)
    source = f"oci-archive:{archive}" if os.path.isfile(archive) else f"oci:{archive}"
    skopeo("copy", "-q", *(["--all"] if all_images else []), *skopeo_args, *registry_creds(registry, "dest"),
           "--dest-tls-verify=false", source, f"docker://{registry.host}/{repo_tag}")
    return manifest


def multi_platform(tmp_path, others=(("s390x", ""),)):
    """An OCI layout with an index of the host's platform and `others` (linux/<arch>/<variant>)."""
    layout = Layout(tmp_path / "multi")
    me = host()
    images = [layout.image([Layer().file("who", me.architecture.encode()).bytes()], arch=me.architecture,
                           variant=me.variant)]
    images += [layout.image([Layer().file("who", f"{arch}{variant}".encode()).bytes()], arch=arch, variant=variant)
               for arch, variant in others]
    index = layout.index(images)
    layout.write_index([(index, {"org.opencontainers.image.ref.name": "1"})])
    return layout.root, index, images


def registry_creds(registry: Registry, side: str) -> list[str]:
    return [] if registry.auth is None else [f"--{side}-creds", f"{USER}:{PASSWORD}"]


def skopeo(*args: str) -> str:
    proc = subprocess.run([SKOPEO, *args], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f"skopeo {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def inspect_raw(registry: Registry, repo_ref: str) -> bytes:
    out = subprocess.run([SKOPEO, "inspect", "--raw", "--tls-verify=false", *registry_creds(registry, ""),
                          f"docker://{registry.host}/{repo_ref}"], capture_output=True, timeout=60)
    if out.returncode != 0:
        raise AssertionError(out.stderr.decode())
    return out.stdout


class QuietServer(http.server.ThreadingHTTPServer):
    """A threaded HTTP server on a free loopback port that keeps its handlers' errors instead of printing
    them (clients that drop connections are what the hostile registry is for)."""

    daemon_threads = True

    def __init__(self, handler) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.errors: list[str] = []

    def handle_error(self, request, client_address) -> None:
        import traceback
        self.errors.append(traceback.format_exc())


# -- token server ------------------------------------------------------------------------

class TokenServer:
    """distribution's token endpoint: grants what `policy(user, scope)` allows, signed for the registry.

    The default policy: the test user gets every action asked for; anonymous
    clients get ``pull`` on repositories under ``public/``. Wrong credentials
    get 401. `grants` records (user, scope strings) of every token issued.
    """

    def __init__(self, workdir) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.workdir = os.fspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cargohold test token signer")])
        now = datetime.now(timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=2))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(self._key, hashes.SHA256()))
        self.cert_path = os.path.join(self.workdir, "token-signer.pem")
        with open(self.cert_path, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        self._x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        self.grants: list[tuple[Optional[str], tuple]] = []
        self.policy: Callable[[Optional[str], str, str], list] = self.default_policy
        self._server = QuietServer(self._handler())
        self.realm = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @staticmethod
    def default_policy(user: Optional[str], repository: str, actions: str) -> list:
        if user is not None:
            return actions.split(",")
        return ["pull"] if repository.startswith("public/") and "pull" in actions.split(",") else []

    def start(self) -> "TokenServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def token(self, user: Optional[str], scopes: list) -> str:
        import jwt
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            repository, _, actions = rest.rpartition(":")
            granted = self.policy(user, repository, actions) if kind == "repository" else []
            access.append({"type": kind, "name": repository, "actions": granted})
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": user or "", "aud": SERVICE, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": secrets.token_hex(8), "access": access}
        self.grants.append((user, tuple(scopes)))
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"x5c": [self._x5c]})

    def _handler(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                user = None
                header = self.headers.get("Authorization", "")
                if header.startswith("Basic "):
                    name, _, password = base64.b64decode(header[6:]).decode().partition(":")
                    if (name, password) != (USER, PASSWORD):
                        self.send_response(401)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    user = name
                body = json.dumps({"token": server.token(user, query.get("scope", [])), "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


# -- the hostile registry ------------------------------------------------------------------

@dataclass
class Fault:
    """What the hostile registry does instead of answering a matching request normally.

    `match` is a regular expression searched in ``METHOD PATH``; `times`
    limits how often it applies (None: always). Actions: `status` (with
    `headers` and `body`), `close_after` (send the right headers, that many
    bytes of the body, then drop the connection), `body` alone (serve these
    bytes with their own length), `redirect` (to this path), `gate` (a
    threading.Barrier every matching request waits at before it is served).
    """

    match: str
    status: Optional[int] = None
    headers: dict = field(default_factory=dict)
    body: Optional[bytes] = None
    close_after: Optional[int] = None
    redirect: Optional[str] = None
    gate: Optional[threading.Barrier] = None
    times: Optional[int] = None


class HostileRegistry:
    """A registry API serving `add_image`'s images from memory, and the `faults` a test adds; pushes are
    kept in memory too (uploads in one PUT)."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[tuple[str, str], tuple[str, bytes]] = {}
        self.faults: list[Fault] = []
        self.served: Counter = Counter()
        self.requests: list[tuple[str, str, dict]] = []
        self.upload_location: Optional[str] = None
        self._lock = threading.Lock()
        self._server = QuietServer(self._handler())
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> "HostileRegistry":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.blobs.clear()
            self.manifests.clear()
            self.faults.clear()
            self.served.clear()
            self.requests.clear()
            self.upload_location = None

    def add_document(self, repository: str, media_type: str, data: bytes, tag: str = "") -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.manifests[repository, digest] = (media_type, data)
        if tag:
            self.manifests[repository, tag] = (media_type, data)
        return digest

    def add_image(self, repository: str, tag: str, layers: list, **options):
        """An image built by `build_image`; returns (manifest descriptor, [(descriptor, bytes)])."""
        manifest, blobs = build_image(layers, **options)
        (_, manifest_data), *others = blobs
        self.add_document(repository, manifest.media_type, manifest_data, tag)
        for descriptor, data in others:
            self.blobs[descriptor.digest] = data
        return manifest, blobs

    def _fault(self, method: str, path: str) -> Optional[Fault]:
        with self._lock:
            for fault in self.faults:
                if re.search(fault.match, f"{method} {path}") and (fault.times is None or fault.times > 0):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def _handler(self):
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, body: bytes = b"", headers: Optional[dict] = None,
                      head: bool = False) -> None:
                self.send_response(status)
                headers = {"Content-Length": str(len(body)), **(headers or {})}
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _answer(self, method: str) -> None:
                path = urllib.parse.urlsplit(self.path).path
                with registry._lock:
                    registry.requests.append((method, self.path, dict(self.headers)))
                fault = registry._fault(method, path)
                if fault is not None and fault.gate is not None:
                    try:
                        fault.gate.wait()
                    except threading.BrokenBarrierError:
                        return self._send(500, b"gate broken: requests did not come concurrently")
                    fault = None
                if fault is not None and fault.redirect is not None:
                    return self._send(307, headers={"Location": fault.redirect})
                if fault is not None and fault.status is not None:
                    return self._send(fault.status, fault.body or b"", fault.headers, head=method == "HEAD")
                if path == "/v2/" or path == "/v2":
                    return self._send(200, b"{}", {"Content-Type": "application/json"})
                found = self._content(path)
                if found is None:
                    body = json.dumps({"errors": [{"code": "BLOB_UNKNOWN", "message": "not here"}]}).encode()
                    return self._send(404, body, {"Content-Type": "application/json"}, head=method == "HEAD")
                media_type, data, digest = found
                if fault is not None and fault.body is not None:
                    data = fault.body
                self._serve(method, data, media_type, digest, fault)

            def _content(self, path: str):
                m = re.fullmatch(r"/v2/(.+)/(manifests|blobs)/([^/]+)", path)
                if m is None:
                    return None
                repository, kind, obj = m.groups()
                if kind == "manifests":
                    entry = registry.manifests.get((repository, obj))
                    if entry is None:
                        return None
                    media_type, data = entry
                    return media_type, data, "sha256:" + hashlib.sha256(data).hexdigest()
                data = registry.blobs.get(obj)
                return None if data is None else ("application/octet-stream", data, obj)

            def _serve(self, method: str, data: bytes, media_type: str, digest: str, fault: Optional[Fault]):
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
                status, headers = 200, {"Content-Type": media_type, "Docker-Content-Digest": digest}
                if match and int(match[1]) < len(data):
                    start = int(match[1])
                    status = 206
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                body = data[start:]
                if method == "HEAD":
                    return self._send(status, body, headers, head=True)
                if fault is not None and fault.close_after is not None:
                    self.send_response(status)
                    headers["Content-Length"] = str(len(body))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(body[:fault.close_after])
                    self.wfile.flush()
                    with registry._lock:
                        registry.served[digest] += min(fault.close_after, len(body))
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self._send(status, body, headers)
                with registry._lock:
                    registry.served[digest] += len(body)

            def do_GET(self) -> None:
                self._answer("GET")

            def do_HEAD(self) -> None:
                self._answer("HEAD")

            def _upload(self, method: str) -> None:
                """Uploads: POST starts one at `upload_location`, PUT (there, or anywhere) completes it."""
                parts = urllib.parse.urlsplit(self.path)
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with registry._lock:
                    registry.requests.append((method, self.path, dict(self.headers)))
                fault = registry._fault(method, parts.path)
                if fault is not None and fault.status is not None:
                    return self._send(fault.status, fault.body or b"", fault.headers)
                m = re.fullmatch(r"/v2/(.+)/manifests/([^/]+)", parts.path)
                if method == "PUT" and m:
                    digest = registry.add_document(m[1], self.headers.get("Content-Type", ""), data, m[2])
                    return self._send(201, headers={"Docker-Content-Digest": digest})
                if method == "POST":
                    return self._send(202, headers={"Location": registry.upload_location or "/upload/1"})
                digest = urllib.parse.parse_qs(parts.query).get("digest", [""])[0]
                if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
                    return self._send(400, b'{"errors":[{"code":"DIGEST_INVALID","message":"bad"}]}')
                registry.blobs[digest] = data
                self._send(201, headers={"Docker-Content-Digest": digest})

            def do_POST(self) -> None:
                self._upload("POST")

            def do_PUT(self) -> None:
                self._upload("PUT")

        return Handler


# -- fixtures ----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def anonymous_registry(tmp_path_factory):
    if DOCKER_REGISTRY is None or SKOPEO is None:
        pytest.skip("needs docker-registry and skopeo (apt-get install docker-registry skopeo)")
    registry = Registry(tmp_path_factory.mktemp("registry-anonymous")).start()
    yield registry
    registry.stop()


@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory):
    if DOCKER_REGISTRY is None or SKOPEO is None:
        pytest.skip("needs docker-registry and skopeo (apt-get install docker-registry skopeo)")
    registry = Registry(tmp_path_factory.mktemp("registry-basic"), auth="htpasswd").start()
    yield registry
    registry.stop()


@pytest.fixture(scope="session")
def token_server(tmp_path_factory):
    server = TokenServer(tmp_path_factory.mktemp("token-server")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory, token_server):
    if DOCKER_REGISTRY is None or SKOPEO is None:
        pytest.skip("needs docker-registry and skopeo (apt-get install docker-registry skopeo)")
    registry = Registry(tmp_path_factory.mktemp("registry-token"), auth=token_server).start()
    yield registry
    registry.stop()


@pytest.fixture(scope="session")
def _hostile_server():
    server = HostileRegistry().start()
    yield server
    server.stop()


@pytest.fixture
def hostile(_hostile_server):
    """The hostile registry, emptied for this test."""
    _hostile_server.reset()
    yield _hostile_server
    _hostile_server.reset()


@pytest.fixture
def repo(request):
    """A repository name of this test's own, so tests sharing a registry do not meet."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60]
    return f"t/{name}-{secrets.token_hex(3)}"
