"""Registry authentication: challenges, the Docker config file, --user, and real registries with htpasswd
basic auth and with distribution's token auth (a token server of the test's own)."""

from __future__ import annotations

import base64
import json
import os

import pytest
from cliutil import fails, invoke, parsed
from registry_server import PASSWORD, USER, needs_registry, seed

import cargohold
from cargohold import transfer
from cargohold.errors import FailedPrecondition, InvalidArgument
from cargohold.oci.build import LayerBuilder
from cargohold.transfer import Credentials
from cargohold.transfer.registry.auth import (docker_config_credentials, merge_scopes, parse_challenges, parse_user,
                                              pick_challenge)

pytest_plugins = ("registry_server",)

CREDS = Credentials(USER, PASSWORD)


def tars() -> list:
    return [LayerBuilder().file("secret", os.urandom(5000)).tar()]


@pytest.fixture
def ns(tmp_path):
    with cargohold.open(tmp_path / "root") as db:
        yield db.namespace("default")


def docker_config(tmp_path, monkeypatch, auths: dict) -> None:
    directory = tmp_path / "docker-config"
    directory.mkdir(exist_ok=True)
    (directory / "config.json").write_text(json.dumps({"auths": auths}))
    monkeypatch.setenv("DOCKER_CONFIG", str(directory))


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# -- challenges and credentials ------------------------------------------------------------

def test_challenges_parse_as_rfc_7235_says():
    bearer = 'Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull"'
    (challenge,) = parse_challenges(bearer)
    assert challenge.scheme == "bearer"
    assert challenge.params == {"realm": "https://auth.example.com/token", "service": "registry.example.com",
                                "scope": "repository:a/b:pull"}
    both = parse_challenges('Basic realm="x" , BEARER realm = "https://t/\\"q\\"", error=insufficient_scope')
    assert [(c.scheme, dict(c.params)) for c in both] == [
        ("basic", {"realm": "x"}), ("bearer", {"realm": 'https://t/"q"', "error": "insufficient_scope"})]
    assert pick_challenge(['Basic realm="x"', 'Bearer realm="https://t/"']).scheme == "bearer"
    assert pick_challenge(["Negotiate abc"]) is None


@pytest.mark.parametrize("header", ['', 'Bearer realm="x', 'Bearer realm=x;y', '=x', 'Bearer ,',
                                    'Bearer realm="x" junk'])
def test_malformed_challenges_are_refused(header):
    with pytest.raises(InvalidArgument, match="malformed WWW-Authenticate"):
        pick_challenge([header])


def test_a_bearer_challenge_needs_an_http_realm():
    with pytest.raises(InvalidArgument, match="realm 'ftp://x' is not an http"):
        pick_challenge(['Bearer realm="ftp://x"'])


def test_token_scopes_merge_the_actions_of_a_repository():
    assert merge_scopes(["repository:a/b:pull,push", "repository:a/b:pull", "repository:c:pull",
                         "registry:catalog:*"]) == ["registry:catalog:*", "repository:a/b:pull,push",
                                                    "repository:c:pull"]


def test_user_flag():
    assert parse_user("bob:pa:ss") == ("bob", "pa:ss")
    assert parse_user("bob") == ("bob", None)
    assert parse_user("bob:") == ("bob", "")
    with pytest.raises(InvalidArgument, match="must not be empty"):
        parse_user(":pw")
    assert "hunter2" not in repr(Credentials("bob", "hunter2"))


def test_docker_config_file(tmp_path, monkeypatch):
    docker_config(tmp_path, monkeypatch, {
        "https://index.docker.io/v1/": {"auth": b64("hub:hubpw")},
        "http://127.0.0.1:5000": {"auth": b64("local:pw:with:colons")},
        "registry.example.com": {"username": "u", "password": "p"},
        "broken.example.com": {"auth": "***"},
    })
    assert docker_config_credentials("docker.io") == Credentials("hub", "hubpw")
    assert docker_config_credentials("127.0.0.1:5000") == Credentials("local", "pw:with:colons")
    assert docker_config_credentials("registry.example.com") == Credentials("u", "p")
    assert docker_config_credentials("127.0.0.1:5001") is None
    with pytest.raises(InvalidArgument, match=r"auths\['broken.example.com'\].auth is not base64"):
        docker_config_credentials("broken.example.com")
    (tmp_path / "docker-config" / "config.json").write_text("{nope")
    with pytest.raises(InvalidArgument, match="is not valid JSON"):
        docker_config_credentials("docker.io")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "absent"))
    assert docker_config_credentials("docker.io") is None


def test_docker_config_defaults_to_the_home_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".docker").mkdir()
    (tmp_path / ".docker" / "config.json").write_text(json.dumps({"auths": {"h:1": {"auth": b64("a:b")}}}))
    assert docker_config_credentials("h:1") == Credentials("a", "b")


# -- basic auth (htpasswd) -----------------------------------------------------------------

@needs_registry
def test_basic_auth_with_credentials_given_or_from_the_docker_config(basic_registry, repo, tmp_path, ns,
                                                                       monkeypatch):
    manifest = seed(basic_registry, tmp_path, f"{repo}:1", tars())
    ref = f"{basic_registry.host}/{repo}:1"
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
    assert transfer.pull(ns, ref, plain_http=True, credentials=CREDS).target.digest == manifest.digest
    docker_config(tmp_path, monkeypatch, {basic_registry.host: {"auth": b64(f"{USER}:{PASSWORD}")}})
    other = ns.db.namespace("other")
    assert transfer.pull(other, ref, plain_http=True).target.digest == manifest.digest
    transfer.push(other, ref, f"{basic_registry.host}/{repo}:2", plain_http=True)


@needs_registry
def test_basic_auth_refusals(basic_registry, repo, tmp_path, ns, monkeypatch):
    seed(basic_registry, tmp_path, f"{repo}:1", tars())
    ref = f"{basic_registry.host}/{repo}:1"
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
    with pytest.raises(FailedPrecondition, match=rf"pull {ref}: registry .* requires authentication"):
        transfer.pull(ns, ref, plain_http=True)
    with pytest.raises(FailedPrecondition, match=rf"pull {ref}: registry .* refused the credentials of user 'x'"):
        transfer.pull(ns, ref, plain_http=True, credentials=Credentials("x", "wrong"))
    assert ns.images.list() == []


@needs_registry
def test_cli_user_flag_and_password_prompt(basic_registry, repo, tmp_path, monkeypatch):
    manifest = seed(basic_registry, tmp_path, f"{repo}:1", tars())
    ref = f"{basic_registry.host}/{repo}:1"
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
    root = tmp_path / "cli"
    out = invoke(root, "images", "pull", "--plain-http", "--json", "--user", f"{USER}:{PASSWORD}", ref)
    assert parsed(out)["target"]["digest"] == manifest.digest
    out = invoke(root, "images", "push", "--plain-http", "-u", USER, ref, f"{basic_registry.host}/{repo}:2",
                 input=f"{PASSWORD}\n")
    assert out.stdout.endswith(f"({manifest.digest})\n")
    assert PASSWORD not in out.stdout and PASSWORD not in out.stderr
    line = fails(root, "images", "pull", "--plain-http", "--user", f"{USER}:bad", ref)
    assert line.startswith(f"cargohold: FailedPrecondition: pull {ref}: ") and "refused" in line


# -- token auth ---------------------------------------------------------------------------

@needs_registry
def test_token_auth_pull_and_push(token_registry, token_server, repo, tmp_path, ns, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
    manifest = seed(token_registry, tmp_path, f"{repo}/src:1", tars())
    ref = f"{token_registry.host}/{repo}/src:1"
    start = len(token_server.grants)
    assert transfer.pull(ns, ref, plain_http=True, credentials=CREDS).target.digest == manifest.digest
    assert token_server.grants[start:] == [(USER, (f"repository:{repo}/src:pull",))]
    start = len(token_registry.access())
    grants = len(token_server.grants)
    target = f"{token_registry.host}/{repo}/dst:1"
    transfer.push(ns, ref, target, plain_http=True, credentials=CREDS)
    scopes = {scope for _, asked in token_server.grants[grants:] for scope in asked}
    assert scopes == {f"repository:{repo}/dst:pull,push", f"repository:{repo}/src:pull"}
    posts = [a for a in token_registry.access()[start:] if a.method == "POST"]
    assert posts and all("mount=" in a.path and a.status == 201 for a in posts)  # the token allowed the mounts


@needs_registry
def test_token_auth_anonymous_and_refusals(token_registry, token_server, tmp_path, ns, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
    public = f"public/{os.urandom(3).hex()}"
    manifest = seed(token_registry, tmp_path, f"{public}:1", tars())
    assert transfer.pull(ns, f"{token_registry.host}/{public}:1", plain_http=True).target.digest == manifest.digest
    private = f"private/{os.urandom(3).hex()}"
    seed(token_registry, tmp_path, f"{private}:1", tars())
    ref = f"{token_registry.host}/{private}:1"
    with pytest.raises(FailedPrecondition, match=rf"pull {ref}: registry .* refused anonymous access"):
        transfer.pull(ns, ref, plain_http=True)
    with pytest.raises(FailedPrecondition, match=rf"pull {ref}: token server http://127.0.0.1:\d+/token refused "
                                                 "the credentials of user 'tester'"):
        transfer.pull(ns, ref, plain_http=True, credentials=Credentials(USER, "wrong"))
    with pytest.raises(FailedPrecondition, match=rf"push {token_registry.host}/{public}:2: .*refused anonymous"):
        transfer.push(ns, f"{token_registry.host}/{public}:1", f"{token_registry.host}/{public}:2", plain_http=True)
    assert [i.name for i in ns.images.list()] == [f"{token_registry.host}/{public}:1"]


def test_a_host_a_redirect_leads_to_never_gets_the_registrys_credentials():
    """The registry redirects to another host, which answers 401 with a token realm on a third:
    the registry's credentials must reach neither of them (containerd answers a challenge with the
    credentials of the host that sent it), and the call fails naming that host."""
    import http.server
    import threading

    from cargohold.oci.reference import parse
    from cargohold.transfer.registry.client import RegistryClient

    seen = []

    def serve(respond):
        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                seen.append((self.server.server_port, self.headers.get("Authorization")))
                respond(self)

            do_HEAD = do_GET

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def token(handler):
        body = json.dumps({"token": "from-the-third-host"}).encode()
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    realm = serve(token)

    def challenge(handler):
        handler.send_response(401)
        handler.send_header("WWW-Authenticate",
                            f'Bearer realm="http://127.0.0.1:{realm.server_port}/token",service="x"')
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    storage = serve(challenge)

    def redirect(handler):
        handler.send_response(307)
        handler.send_header("Location", f"http://localhost:{storage.server_port}{handler.path}")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    registry = serve(redirect)
    try:
        reference = parse(f"127.0.0.1:{registry.server_port}/lib/app:1")
        with RegistryClient(reference, plain_http=True, credentials=Credentials(USER, PASSWORD)) as client:
            with pytest.raises(FailedPrecondition, match="localhost"):
                client.resolve()
    finally:
        for server in (registry, storage, realm):
            server.shutdown()
    assert all(auth is None for _, auth in seen), seen
    assert realm.server_port not in [port for port, _ in seen]
