"""The registry API calls a pull and a push make, on one repository (OCI distribution spec, ``/v2/``).

Requests go through one `httpx.Client` (HTTP/1.1, shared by the transfer's
threads), HTTPS unless `plain_http`, following redirects (blob downloads
are often redirected to storage; a cross-origin redirect drops the
Authorization header). A 401 is answered once per request from its
``WWW-Authenticate`` challenge: basic auth with the credentials, or a bearer
token from the challenge's realm for the repository scopes the call needs
(``repository:<path>:pull[,push]``, plus ``pull`` on a repository a blob is
mounted from); later requests send what worked without waiting for a 401.

Every failure raises a cargohold error naming what was asked for: NotFound
(404), FailedPrecondition (401, 403: authentication refused or access
denied), Unavailable (429, 5xx, timeouts, refused or dropped connections,
redirect loops), Unsupported (405, 501), InvalidArgument (other statuses,
malformed challenges or answers, content longer or shorter than its
descriptor, a body sent with a ``Content-Encoding``).

Bodies are read as they come off the wire: the client asks for
``Accept-Encoding: identity`` and refuses an encoded answer instead of
decoding it, since a decoder hands over a whole chunk's expansion before any
size limit sees it (a few KiB of nested gzip would become gigabytes).
"""

from __future__ import annotations

import base64
import io
import ssl
import threading
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Optional, Union

import httpx

from ... import __version__
from ...errors import Error, FailedPrecondition, InvalidArgument, NotFound, Unavailable, Unsupported
from ...model import Descriptor
from ...oci import mediatypes
from ...oci.digests import VerifiedReader, digest_bytes
from ...oci.documents import check_document_size, load_json
from ...oci.walk import describe
from ...validation import validate_digest
from .auth import BASIC, Challenge, Credentials, docker_config_credentials, merge_scopes, pick_challenge
from ...oci.reference import Reference

MAX_MANIFEST_SIZE = 4 << 20
"""Largest manifest or index accepted from a registry (containerd's limit is about as large)."""

MAX_SMALL_BODY = 1 << 20
"""Most bytes read of a body that is not content: errors, token answers, upload responses."""

TIMEOUT = httpx.Timeout(60.0, connect=15.0)
MAX_REDIRECTS = 10

MANIFEST_ACCEPT = ", ".join([mediatypes.OCI_INDEX, mediatypes.DOCKER_MANIFEST_LIST, mediatypes.OCI_MANIFEST,
                             mediatypes.DOCKER_MANIFEST, "*/*"])

Body = Union[bytes, Callable[[], Iterable[bytes]], None]
"""A request body: bytes, or a callable giving a fresh iterator of chunks (so a request can be resent)."""


def _status_error(status: int) -> type:
    if status == 404:
        return NotFound
    if status in (401, 403):
        return FailedPrecondition
    if status in (408, 429) or status >= 500 and status != 501:
        return Unavailable
    if status in (405, 501):
        return Unsupported
    return InvalidArgument


def _registry_message(data: bytes) -> str:
    """The distribution error body's first code and message ("" when it has none)."""
    try:
        first = load_json(data, "error body")["errors"][0]
        code, message = first.get("code", ""), first.get("message", "")
    except (InvalidArgument, KeyError, IndexError, TypeError, AttributeError):
        return ""
    return ": ".join(str(part) for part in (code, message) if part)


class ResponseReader(io.RawIOBase):
    """A streamed response body as a binary file, network errors raised as cargohold errors."""

    def __init__(self, client: "RegistryClient", response: httpx.Response, what: str) -> None:
        super().__init__()
        self._chunks = client.chunks(response, what)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self._pending:
            self._pending = memoryview(next(self._chunks, b""))
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


class RegistryClient:
    """One repository of a registry, as `reference` names it; a context manager (closes its connections).

    `credentials` None means: those of the Docker config file, if any. `push`
    asks for push access as well as pull.
    """

    def __init__(self, reference: Reference, *, plain_http: bool = False,
                 credentials: Optional[Credentials] = None, push: bool = False) -> None:
        self.reference = reference
        origin = httpx.URL(f"{'http' if plain_http else 'https'}://{reference.api_host}")
        self._origin = (origin.scheme, origin.host, origin.port)
        self._base = f"{origin}/v2/{reference.path}"
        self._scope = f"repository:{reference.path}:{'pull,push' if push else 'pull'}"
        self._credentials = credentials
        self._looked_up = credentials is not None
        self._http = httpx.Client(timeout=TIMEOUT, follow_redirects=True, max_redirects=MAX_REDIRECTS,
                                  verify=ssl.create_default_context(),  # the system's CAs, as ctr trusts
                                  headers={"User-Agent": f"cargohold/{__version__}",
                                           "Accept-Encoding": "identity"})
        self._lock = threading.Lock()
        self._challenge: Optional[Challenge] = None
        self._tokens: dict[frozenset, str] = {}

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- authentication ----------------------------------------------------------------

    @staticmethod
    def _origin_of(url: httpx.URL) -> tuple:
        return url.scheme, url.host, url.port

    def _creds(self) -> Optional[Credentials]:
        if not self._looked_up:
            self._credentials = docker_config_credentials(self.reference.domain)
            self._looked_up = True
        return self._credentials

    def _authorization(self, scopes: frozenset) -> dict:
        """The Authorization header to send for `scopes`, from what earlier challenges asked for."""
        with self._lock:
            challenge = self._challenge
            if challenge is None:
                return {}
            if challenge.scheme == BASIC:
                creds = self._creds()
                return {} if creds is None else {"Authorization": _basic(creds)}
            token = self._tokens.get(scopes)
            if token is None:
                token = self._tokens[scopes] = self._fetch_token(challenge, scopes)
            return {"Authorization": f"Bearer {token}"}

    def _answer(self, response: httpx.Response, scopes: frozenset, sent: dict) -> None:
        """Take in a 401's challenge so that the next try authenticates; raise if it cannot."""
        headers = response.headers.get_list("www-authenticate")
        host = self.reference.domain
        if not headers:
            raise FailedPrecondition(f"registry {host} answered 401 Unauthorized without a "
                                     "WWW-Authenticate challenge")
        challenge = pick_challenge(headers)
        if challenge is None:
            raise Unsupported(f"registry {host} asks for authentication cargohold does not support: "
                              f"{'; '.join(headers)!r}")
        with self._lock:
            if challenge.scheme == BASIC:
                if self._creds() is None:
                    raise FailedPrecondition(f"registry {host} requires authentication (401 Unauthorized): "
                                             "give --user USER[:PASSWORD] or an auths entry in the Docker config")
                if sent and self._challenge == challenge:
                    raise self._refused(challenge)
            else:
                # A token we sent may have expired, or lack a scope the challenge names: ask afresh.
                extra = frozenset(challenge.params.get("scope", "").split())
                self._tokens[scopes] = self._fetch_token(challenge, scopes | extra)
            self._challenge = challenge

    def _refused(self, challenge: Optional[Challenge]) -> FailedPrecondition:
        creds = self._creds()
        who = f"the credentials of user {creds.username!r}" if creds else "anonymous access"
        error = (challenge.params.get("error", "") if challenge else "") or "401 Unauthorized"
        return FailedPrecondition(f"registry {self.reference.domain} refused {who} ({error})")

    def _fetch_token(self, challenge: Challenge, scopes: frozenset) -> str:
        """A bearer token for `scopes` from the challenge's realm (distribution's token protocol)."""
        realm = challenge.params["realm"]
        creds = self._creds()
        params = [("scope", scope) for scope in merge_scopes(scopes)]
        if challenge.params.get("service"):
            params.insert(0, ("service", challenge.params["service"]))
        if creds is not None:
            params.insert(0, ("account", creds.username))
        headers = {} if creds is None else {"Authorization": _basic(creds)}
        what = f"token server {realm}"
        try:
            response = self._http.send(self._http.build_request("GET", realm, params=params, headers=headers),
                                       stream=True)
        except httpx.HTTPError as exc:
            raise self._network_error(exc, what) from None
        try:
            if response.status_code in (401, 403):
                who = f"the credentials of user {creds.username!r}" if creds else "anonymous access"
                raise FailedPrecondition(f"{what} refused {who} ({response.status_code} {response.reason_phrase})")
            if response.status_code != 200:
                self._raise_status(response, what)
            data = self._bounded(response, MAX_SMALL_BODY, what)
        finally:
            response.close()
        body = load_json(data, f"the answer of {what}")
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str) or not token:
            raise InvalidArgument(f"the answer of {what} has no token")
        return token

    # -- requests ----------------------------------------------------------------------

    def _network_error(self, exc: httpx.HTTPError, what: str) -> Error:
        host = self.reference.domain
        if isinstance(exc, httpx.TooManyRedirects):
            return Unavailable(f"{what}: more than {MAX_REDIRECTS} redirects (a redirect loop?)")
        if isinstance(exc, httpx.TimeoutException):
            return Unavailable(f"{what}: registry {host} did not answer in time ({type(exc).__name__})")
        if isinstance(exc, httpx.UnsupportedProtocol):
            return InvalidArgument(f"{what}: {exc}")
        if isinstance(exc, httpx.ConnectError):
            text = str(exc)
            if "CERTIFICATE" in text.upper():
                return Unavailable(f"{what}: registry {host} has a certificate the system does not trust ({text})")
            if "SSL" in text:
                return Unavailable(f"{what}: TLS with registry {host} failed ({text}); a registry serving "
                                   "plain HTTP needs --plain-http (plain_http=True)")
            return Unavailable(f"{what}: cannot connect to registry {host}: {text}")
        return Unavailable(f"{what}: the connection to registry {host} failed: {exc}")

    def _bounded(self, response: httpx.Response, limit: int, what: str) -> bytes:
        """At most `limit` bytes of a streamed body (a registry's answers other than content are small)."""
        data = bytearray()
        for chunk in self.chunks(response, what):
            data += chunk
            if len(data) > limit:
                break
        return bytes(data[:limit])

    def _raise_status(self, response: httpx.Response, what: str) -> None:
        try:
            detail = _registry_message(self._bounded(response, MAX_SMALL_BODY, what))
        except (Unavailable, InvalidArgument):  # a dropped or an encoded body: the status says enough
            detail = ""
        status = response.status_code
        message = f"{what}: registry {self.reference.domain} answered {status} {response.reason_phrase}"
        if status in (401, 403) and not detail:
            detail = "access denied" if status == 403 else "authentication failed"
        raise _status_error(status)(f"{message}{': ' + detail if detail else ''}")

    def request(self, method: str, url: Union[str, httpx.URL], what: str, *, ok: tuple = (200,),
                headers: Optional[dict] = None, params: Optional[dict] = None, body: Body = None,
                extra_scopes: Iterable[str] = (), stream: bool = False) -> httpx.Response:
        """Send a request, authenticating as the registry asks; a response with a status in `ok`.

        With `stream` the body is left unread (close the response); else it is read and closed.
        """
        scopes = frozenset([self._scope, *extra_scopes])
        ours = self._origin_of(httpx.URL(url)) == self._origin  # credentials go to the registry only
        for attempt in range(2):
            sent = self._authorization(scopes) if ours else {}
            content = body() if callable(body) else body
            request = self._http.build_request(method, url, headers={**(headers or {}), **sent},
                                               params=params, content=content)
            try:
                response = self._http.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise self._network_error(exc, what) from None
            if response.status_code == 401 and self._origin_of(response.url) != self._origin:
                response.close()  # a host a redirect led to: the registry's credentials are not for it
                raise FailedPrecondition(f"{what}: {response.url.host}, where registry {self.reference.domain} "
                                         "redirected, asks for authentication (401 Unauthorized); cargohold "
                                         "authenticates to the registry only")
            if response.status_code == 401 and attempt == 0:
                response.close()
                self._answer(response, scopes, sent)
                continue
            if response.status_code == 401 and sent:
                response.close()
                try:
                    challenge = pick_challenge(response.headers.get_list("www-authenticate"))
                except InvalidArgument:
                    challenge = None
                raise self._refused(challenge)
            if response.status_code not in ok:
                try:
                    self._raise_status(response, what)
                finally:
                    response.close()
            if not stream:
                try:
                    self._bounded(response, MAX_SMALL_BODY, what)
                finally:
                    response.close()
            return response
        raise AssertionError("unreachable")

    def chunks(self, response: httpx.Response, what: str) -> Iterator[bytes]:
        """The body of a streamed response, chunk by chunk, as sent; a dropped connection raises
        Unavailable, an encoded body InvalidArgument (see the module docstring)."""
        encoding = response.headers.get("content-encoding", "").strip()
        if encoding and encoding.lower() != "identity":
            raise InvalidArgument(f"{what}: registry {self.reference.domain} sent it with Content-Encoding "
                                  f"{encoding!r}, which cargohold did not ask for (it asks for identity)")
        try:
            yield from response.iter_raw()
        except httpx.HTTPError as exc:
            raise Unavailable(f"{what}: the connection to registry {self.reference.domain} broke "
                              f"mid-transfer ({exc})") from None

    # -- pull --------------------------------------------------------------------------

    def resolve(self) -> Descriptor:
        """The descriptor of the manifest or index the reference names (HEAD, else GET)."""
        reference = self.reference
        url = f"{self._base}/manifests/{reference.object}"
        what = f"manifest {reference.object}"
        accept = {"Accept": MANIFEST_ACCEPT}
        head = self.request("HEAD", url, what, ok=(200, 405), headers=accept)
        media_type = head.headers.get("content-type", "").partition(";")[0].strip()
        digest = reference.digest or head.headers.get("docker-content-digest", "")
        size = head.headers.get("content-length", "")
        known = mediatypes.is_manifest(media_type) or mediatypes.is_index(media_type)
        if head.status_code == 200 and digest and size.isdigit() and known:
            _check_manifest_size(int(size), what)
            validate_digest(digest, f"Docker-Content-Digest of {what}")
            return Descriptor(media_type, digest, int(size))
        response = self.request("GET", url, what, headers=accept, stream=True)
        try:
            declared = response.headers.get("content-length", "")
            if declared.isdigit():
                _check_manifest_size(int(declared), what)
            data = bytearray()
            for chunk in self.chunks(response, what):
                data += chunk
                _check_manifest_size(len(data), what)
        finally:
            response.close()
        actual = digest_bytes(bytes(data))
        if reference.digest and actual != reference.digest:
            raise InvalidArgument(f"{what}: digest mismatch, content is {actual}")
        media_type = response.headers.get("content-type", "").partition(";")[0].strip()
        if not (mediatypes.is_manifest(media_type) or mediatypes.is_index(media_type)):
            declared_type = load_json(bytes(data), what).get("mediaType")
            media_type = declared_type if isinstance(declared_type, str) else media_type
        return Descriptor(media_type, actual, len(data))

    def fetch_document(self, descriptor: Descriptor) -> bytes:
        """The verified bytes of an index, manifest or config."""
        what = describe(descriptor)
        check_document_limit(descriptor)
        document = mediatypes.is_manifest(descriptor.media_type) or mediatypes.is_index(descriptor.media_type)
        kind = "manifests" if document else "blobs"
        headers = {"Accept": descriptor.media_type or "*/*"}
        response = self.request("GET", f"{self._base}/{kind}/{descriptor.digest}", what, headers=headers,
                                stream=True)
        try:
            _check_length(response, descriptor.size, what)
            return VerifiedReader(ResponseReader(self, response, what), descriptor.digest, descriptor.size,
                                  what).read()
        finally:
            response.close()

    @contextmanager
    def open_blob(self, descriptor: Descriptor, offset: int = 0) -> Iterator[tuple[int, Iterator[bytes]]]:
        """(start, chunks): the blob's bytes from `start`, which is `offset` if the registry honoured the
        Range request, else 0. The response's length is checked against the descriptor's size."""
        what = describe(descriptor)
        headers = {"Accept": "*/*"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        response = self.request("GET", f"{self._base}/blobs/{descriptor.digest}", what, ok=(200, 206),
                                headers=headers, stream=True)
        try:
            start = 0
            if response.status_code == 206:
                served = response.headers.get("content-range", "")
                if not served.startswith(f"bytes {offset}-"):
                    raise InvalidArgument(f"{what}: asked for bytes from {offset}, the registry sent "
                                          f"Content-Range {served!r}")
                start = offset
            _check_length(response, descriptor.size - start, what)
            yield start, self.chunks(response, what)
        finally:
            response.close()

    # -- push --------------------------------------------------------------------------

    def exists(self, descriptor: Descriptor) -> bool:
        """Whether the repository has the blob or manifest (HEAD)."""
        document = mediatypes.is_manifest(descriptor.media_type) or mediatypes.is_index(descriptor.media_type)
        url = f"{self._base}/{'manifests' if document else 'blobs'}/{descriptor.digest}"
        headers = {"Accept": descriptor.media_type} if document else None
        return self.request("HEAD", url, describe(descriptor), ok=(200, 404), headers=headers).status_code == 200

    def start_upload(self, descriptor: Descriptor, mount_from: str = "") -> Optional[httpx.URL]:
        """Start an upload session; None if the blob was mounted from repository `mount_from` instead."""
        what = describe(descriptor)
        params = {"mount": descriptor.digest, "from": mount_from} if mount_from else None
        scopes = [f"repository:{mount_from}:pull"] if mount_from else []
        response = self.request("POST", f"{self._base}/blobs/uploads/", what, ok=(201, 202), params=params,
                                extra_scopes=scopes)
        if response.status_code == 201:
            return None
        location = response.headers.get("location")
        if not location:
            raise InvalidArgument(f"{what}: the registry started an upload without a Location")
        return response.url.join(location)

    def finish_upload(self, location: httpx.URL, descriptor: Descriptor, chunks: Callable[[], Iterable[bytes]]
                      ) -> None:
        """Send the whole blob to the upload session at `location` and complete it."""
        self.request("PUT", location.copy_merge_params({"digest": descriptor.digest}), describe(descriptor),
                     ok=(201, 204), body=chunks, headers={"Content-Type": "application/octet-stream",
                                                          "Content-Length": str(descriptor.size)})

    def put_manifest(self, descriptor: Descriptor, data: bytes, tag: str = "") -> None:
        """Store a manifest or index under its digest, or under `tag`."""
        what = describe(descriptor)
        response = self.request("PUT", f"{self._base}/manifests/{tag or descriptor.digest}", what,
                                ok=(200, 201, 204), body=data, headers={"Content-Type": descriptor.media_type})
        stored = response.headers.get("docker-content-digest")
        if stored and stored != descriptor.digest:
            raise InvalidArgument(f"{what}: the registry stored it as {stored}")


@contextmanager
def naming(prefix: str) -> Iterator[None]:
    """Re-raise a cargohold error with `prefix` (the transfer and its reference) before its message."""
    try:
        yield
    except Error as exc:
        raise type(exc)(f"{prefix}: {exc}").with_traceback(exc.__traceback__) from None


def _basic(creds: Credentials) -> str:
    encoded = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode("ascii")
    return f"Basic {encoded}"


def check_document_limit(descriptor: Descriptor) -> None:
    """InvalidArgument unless the index, manifest or config `descriptor` declares a size within its limit."""
    what = describe(descriptor)
    if mediatypes.is_manifest(descriptor.media_type) or mediatypes.is_index(descriptor.media_type):
        _check_manifest_size(descriptor.size, what)
    else:
        check_document_size(descriptor.size, what)


def _check_manifest_size(size: int, what: str) -> None:
    if size > MAX_MANIFEST_SIZE:
        raise InvalidArgument(f"{what} is {size} bytes or more, larger than the {MAX_MANIFEST_SIZE}-byte limit "
                              "for manifests")


def _check_length(response: httpx.Response, expected: int, what: str) -> None:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) != expected:
        raise InvalidArgument(f"{what}: the registry sends {declared} bytes, its descriptor says {expected}")
