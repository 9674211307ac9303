"""Our own registry logic without a registry: references, credentials, retry classification."""

from __future__ import annotations

import base64
import http.client
import json
import os
import stat
from pathlib import Path

import pytest
import requests
import urllib3

from dream.errors import DreamError
from dream.registry.client import _transient
from dream.registry.credentials import credentials_for
from dream.oci.reference import is_loopback, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("text, host, repository, tag, digest", [
    ("127.0.0.1:5000/team/app:1.0", "127.0.0.1:5000", "team/app", "1.0", ""),
    ("localhost/app", "localhost", "app", "", ""),
    ("Registry.Example/a_b/c-d@" + DIGEST, "registry.example", "a_b/c-d", "", DIGEST),
    ("[::1]:5000/x:t@" + DIGEST, "[::1]:5000", "x", "t", DIGEST),
])
def test_references_parse(text: str, host: str, repository: str, tag: str, digest: str) -> None:
    reference = parse_reference(text)
    assert (reference.host, reference.repository, reference.tag, reference.digest) == (host, repository, tag, digest)
    assert reference.selector == (digest or tag or "latest")


@pytest.mark.parametrize("text, words", [
    ("ubuntu:22.04", "must start with the registry host"),
    ("library/ubuntu", "must start with the registry host"),
    ("127.0.0.1:5000/Team/app", "lower-case"),
    ("127.0.0.1:5000/app:bad/tag", "lower-case"),
    ("127.0.0.1:5000/app:-x", "not a valid tag"),
    ("127.0.0.1:5000/app@sha256:12", "64 hex digits"),
    ("[::1/x", "not a registry host"),
    ("ci:s3cret@registry.example/team/app:1", "credentials must not be written into a reference"),
])
def test_bad_references_say_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(DreamError, match=words) as caught:
        parse_reference(text)
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1:5000", True), ("127.3.2.1", True), ("localhost:80", True), ("[::1]:5000", True),
    ("10.0.0.1:5000", False), ("registry.example", False), ("[fe80::1]:5000", False),
])
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.delenv("DREAM_REGISTRY_USERNAME", raising=False)
    monkeypatch.delenv("DREAM_REGISTRY_PASSWORD", raising=False)
    return tmp_path


def _write(directory: Path, config: dict) -> None:
    (directory / "config.json").write_text(json.dumps(config))


def test_credentials_from_auths_entry_in_its_url_and_plain_spellings(docker_config: Path) -> None:
    token = base64.b64encode(b"alice:s3:cr3t").decode()
    _write(docker_config, {"auths": {"https://reg.example:5000/v1/": {"auth": token},
                                     "other.example": {"username": "bob", "password": "pw"}}})
    alice = credentials_for("reg.example:5000")
    assert alice and (alice.username, alice.secret) == ("alice", "s3:cr3t")
    bob = credentials_for("other.example")
    assert bob and (bob.username, bob.secret) == ("bob", "pw")
    assert credentials_for("third.example") is None
    assert "s3:cr3t" not in repr(alice) and "s3:cr3t" not in str(alice)


def _helper(directory: Path, name: str, script: str) -> None:
    path = directory / f"docker-credential-{name}"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_credential_helpers_are_run_like_docker_runs_them(docker_config: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = docker_config / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    # the helper protocol: the server on stdin, JSON with Username/Secret on stdout
    _helper(bin_dir, "per-host", 'read host; printf \'{"ServerURL":"%s","Username":"h-%s","Secret":"x"}\' "$host" "$host"\n')
    _helper(bin_dir, "store", 'read host; [ "$host" = known.example ] || { echo "credentials not found in native keychain"; exit 1; }\n'
                              'echo \'{"Username":"s","Secret":"y"}\'\n')
    _write(docker_config, {"credHelpers": {"a.example": "per-host"}, "credsStore": "store",
                           "auths": {"a.example": {}}})
    per_host = credentials_for("a.example")
    assert per_host and per_host.username == "h-a.example"
    stored = credentials_for("known.example")
    assert stored and (stored.username, stored.secret) == ("s", "y")
    assert credentials_for("unknown.example") is None  # "not found" means anonymous, not an error


def test_a_missing_helper_is_one_clear_error(docker_config: Path) -> None:
    _write(docker_config, {"credsStore": "nonexistent-helper"})
    with pytest.raises(DreamError, match="docker-credential-nonexistent-helper is not on PATH"):
        credentials_for("a.example")


def test_environment_credentials_go_only_to_the_hosts_named(docker_config: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _write(docker_config, {"auths": {"a.example": {"username": "file", "password": "f"}}})
    monkeypatch.setenv("DREAM_REGISTRY_USERNAME", "env")
    monkeypatch.setenv("DREAM_REGISTRY_PASSWORD", "e")
    with pytest.raises(DreamError, match="DREAM_REGISTRY_HOST"):
        credentials_for("a.example")
    monkeypatch.setenv("DREAM_REGISTRY_HOST", "a.example, c.example:5000")
    found = credentials_for("a.example")
    assert found and found.username == "env"  # before the Docker config
    assert credentials_for("evil.example") is None  # never sent to a host not named


def test_unreadable_docker_config_names_the_file(docker_config: Path) -> None:
    (docker_config / "config.json").write_text("{not json")
    with pytest.raises(DreamError, match="config.json"):
        credentials_for("a.example")


def _wrapped(error: BaseException) -> requests.ConnectionError:
    return requests.ConnectionError(urllib3.exceptions.ProtocolError("Connection aborted.", error))


def test_only_broken_connections_are_transient() -> None:
    assert _transient(_wrapped(ConnectionResetError(104, "Connection reset by peer")))
    assert _transient(_wrapped(http.client.RemoteDisconnected("closed")))
    assert _transient(requests.exceptions.ChunkedEncodingError("cut short"))
    refused = requests.ConnectionError(urllib3.exceptions.NewConnectionError(
        None, "Failed to establish a new connection: [Errno 111] Connection refused"))
    assert not _transient(refused)
    assert not _transient(requests.exceptions.SSLError("certificate verify failed"))
