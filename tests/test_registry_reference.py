"""Image references, normalized as containerd's reference/docker does (cases from its tests), and the
distribution-source label rules of containerd's remotes/docker."""

from __future__ import annotations

import pytest

from cargohold.errors import InvalidArgument
from cargohold.transfer.registry import parse_reference
from cargohold.oci.reference import Reference
from cargohold.transfer.registry.sources import append_source, mount_candidate, source_label, source_label_key

DIGEST = "sha256:" + "7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5aa"


@pytest.mark.parametrize("given, domain, path, full", [
    ("alpine", "docker.io", "library/alpine", "docker.io/library/alpine:latest"),
    ("docker.io/library/alpine:3.19", "docker.io", "library/alpine", "docker.io/library/alpine:3.19"),
    ("index.docker.io/debian", "docker.io", "library/debian", "docker.io/library/debian:latest"),
    ("library/debian", "docker.io", "library/debian", "docker.io/library/debian:latest"),
    ("fooo/bar", "docker.io", "fooo/bar", "docker.io/fooo/bar:latest"),
    ("library/foo/bar", "docker.io", "library/foo/bar", "docker.io/library/foo/bar:latest"),
    ("127.0.0.1:8000/private/moonbase", "127.0.0.1:8000", "private/moonbase",
     "127.0.0.1:8000/private/moonbase:latest"),
    ("localhost/app:1", "localhost", "app", "localhost/app:1"),
    ("localhost:5000/a/b@" + DIGEST, "localhost:5000", "a/b", "localhost:5000/a/b@" + DIGEST),
    ("busybox:latest@" + DIGEST, "docker.io", "library/busybox", "docker.io/library/busybox@" + DIGEST),
    ("example.com:8000/privatebase", "example.com:8000", "privatebase", "example.com:8000/privatebase:latest"),
    ("[fc00::1]:5000/docker", "[fc00::1]:5000", "docker", "[fc00::1]:5000/docker:latest"),
    ("Docker/docker", "Docker", "docker", "Docker/docker:latest"),
    ("192.168.0.1", "docker.io", "library/192.168.0.1", "docker.io/library/192.168.0.1:latest"),
    ("docker---rules/docker", "docker.io", "docker---rules/docker", "docker.io/docker---rules/docker:latest"),
    ("dock__er/docker:Tag_1.0", "docker.io", "dock__er/docker", "docker.io/dock__er/docker:Tag_1.0"),
])
def test_references_normalize_as_docker_does(given, domain, path, full):
    ref = parse_reference(given)
    assert (ref.domain, ref.path, str(ref)) == (domain, path, full)


@pytest.mark.parametrize("given", [
    "https://github.com/docker/docker", "docker/Docker", "-docker", "-docker/docker", "docker///docker",
    "docker.io/docker/Docker", "[fc00::1]:5000", "fc00::1:5000/debian", "[fe80::1%eth0]:5000/debian",
    "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a", "docker-/docker", "____/____",
    "dock..er/docker", "docker/", "", "a:" + "t" * 129, "a@sha256:abc", "a@md5:" + "0" * 32,
    "x/" + "a" * 300,
])
def test_bad_references_are_refused(given):
    with pytest.raises(InvalidArgument, match="reference"):
        parse_reference(given)


def test_reference_parts():
    ref = parse_reference("localhost:5000/a/b:1")
    assert (ref.name, ref.object, ref.hostname, ref.api_host) == ("localhost:5000/a/b", "1", "localhost",
                                                                  "localhost:5000")
    hub = parse_reference("alpine@" + DIGEST)
    assert (hub.object, hub.tag, hub.api_host) == (DIGEST, "", "registry-1.docker.io")
    assert parse_reference("[fc00::1]:5000/x").hostname == "fc00::1"
    with pytest.raises(InvalidArgument, match="must be a string"):
        parse_reference(None)


def test_distribution_source_labels():
    ref = Reference("docker.io", "library/alpine", "3")
    assert source_label_key(ref) == "containerd.io/distribution.source.docker.io"
    assert source_label_key(Reference("127.0.0.1:5000", "a")) == "containerd.io/distribution.source.127.0.0.1"
    assert append_source("", "") == ""
    assert append_source("", "library/busybox") == "library/busybox"
    assert append_source("library/busybox", "library/busybox") == "library/busybox"
    assert append_source("library/busybox,library/redis,library/busybox", "library/alpine") == \
        "library/alpine,library/busybox,library/redis"
    assert append_source("library/busybox,library/redis,library/busybox", "") == "library/busybox,library/redis"
    key = source_label_key(ref)
    assert source_label(ref, {key: "x/y"}) == {key: "library/alpine,x/y"}
    assert source_label(ref, {key: ",".join(f"repo{i:04d}/" + "n" * 40 for i in range(100))}) == {}


def test_mount_candidates():
    key = "containerd.io/distribution.source.host"
    target = Reference("host", "path")
    assert mount_candidate(target, {key: "foo,path,bar"}) == "bar"
    assert mount_candidate(target, {key: "foo,bar,path"}) == "bar"
    assert mount_candidate(target, {key: "path"}) == ""
    assert mount_candidate(target, {}) == ""
    deep = Reference("host", "team/app")
    assert mount_candidate(deep, {key: "team/base,other/app,team/app"}) == "team/base"
    assert mount_candidate(Reference("other", "team/app"), {key: "team/base"}) == ""
