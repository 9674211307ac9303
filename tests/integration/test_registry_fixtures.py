"""The registry fixtures themselves, checked with plain ``requests`` before any push/pull test
leans on them: each setup is up and enforces its auth, the token server grants exactly what is
asked, and ``requests()``/``blob_uploads()`` count exactly what a client did."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import require
from tests.registries import Request, RunningRegistry, start_registry

pytestmark = pytest.mark.integration


def _challenge(response: requests.Response) -> dict[str, str]:
    """``Bearer realm="..",service="..",scope=".."`` → its parameters."""
    header = response.headers["Www-Authenticate"]
    return {"scheme": header.split()[0], **dict(re.findall(r'(\w+)="([^"]*)"', header))}


def _token(registry: RunningRegistry, scope: str, password: str | None = None) -> requests.Response:
    """Ask the registry's token server the way docker and skopeo do: GET, basic auth."""
    challenge = _challenge(requests.get(registry.url("/v2/")))
    return requests.get(challenge["realm"], params={"service": challenge["service"], "scope": scope},
                        auth=(str(registry.username), password or str(registry.password)))


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_each_registry_is_up(any_registry: RunningRegistry) -> None:
    auth = (any_registry.username, any_registry.password) if any_registry.mode == "basic-tls" else None
    verify = str(any_registry.ca_file) if any_registry.ca_file else True
    since = any_registry.mark()
    status = requests.get(any_registry.url("/v2/"), auth=auth, verify=verify).status_code
    assert status == (401 if any_registry.mode == "token" else 200)
    assert any_registry.requests(since) == [Request("GET", "/v2/", status)]
    assert any_registry.process is not None and any_registry.process.poll() is None
    assert any_registry.host.startswith("127.0.0.1:")


def test_anonymous_answers_without_auth(registry_anonymous: RunningRegistry) -> None:
    since = registry_anonymous.mark()
    assert registry_anonymous.scheme == "http" and registry_anonymous.username is None
    assert requests.get(registry_anonymous.url("/v2/")).status_code == 200
    assert requests.get(registry_anonymous.url("/v2/t/x/tags/list")).status_code == 404
    assert registry_anonymous.requests(since) == [Request("GET", "/v2/", 200),
                                                  Request("GET", "/v2/t/x/tags/list", 404)]


def test_basic_tls_needs_credentials_and_the_ca(registry_basic_tls: RunningRegistry) -> None:
    registry, ca = registry_basic_tls, str(registry_basic_tls.ca_file)
    since = registry.mark()
    refused = requests.get(registry.url("/v2/"), verify=ca)
    assert refused.status_code == 401 and _challenge(refused)["scheme"] == "Basic"
    assert requests.get(registry.url("/v2/"), verify=ca,
                        auth=(registry.username, registry.password)).status_code == 200
    assert requests.get(registry.url("/v2/"), verify=ca,
                        auth=(registry.username, "wrong")).status_code == 401
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(registry.url("/v2/"), auth=(registry.username, registry.password))
    # The refused handshake never reaches HTTP: three requests, not four.
    assert [r.status for r in registry.requests(since)] == [401, 200, 401]


def test_token_push_of_one_blob(registry_token: RunningRegistry) -> None:
    registry, data = registry_token, b"one blob for the token registry\n"
    since, asked = registry.mark(), len(registry.token_requests)
    anonymous = requests.post(registry.url("/v2/t/x/blobs/uploads/"))
    assert anonymous.status_code == 401
    kind, name, actions = _challenge(anonymous)["scope"].split(":")
    assert (kind, name, set(actions.split(","))) == ("repository", "t/x", {"pull", "push"})  # any order
    token = _token(registry, "repository:t/x:pull,push").json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    started = requests.post(registry.url("/v2/t/x/blobs/uploads/"), headers=bearer)
    assert started.status_code == 202
    done = requests.put(started.headers["Location"], params={"digest": _digest(data)}, data=data,
                        headers=bearer)
    assert done.status_code == 201, done.text
    assert requests.head(registry.url(f"/v2/t/x/blobs/{_digest(data)}"), headers=bearer).status_code == 200

    assert [(r.method, r.status) for r in registry.requests(since)] == [
        ("POST", 401), ("GET", 401), ("POST", 202), ("PUT", 201), ("HEAD", 200)]
    [upload] = registry.blob_uploads(since)
    assert upload.method == "PUT" and upload.status == 201
    assert f"digest={_digest(data).replace(':', '%3A')}" in upload.path
    assert registry.token_requests[asked:] == [
        {"scopes": ["repository:t/x:pull,push"], "user": registry.username, "granted": True}]
    claims = _claims(token)
    assert claims["access"] == [{"type": "repository", "name": "t/x", "actions": ["pull", "push"]}]
    assert claims["aud"] == _challenge(anonymous)["service"]


def test_token_with_pull_only_cannot_push(registry_token: RunningRegistry) -> None:
    registry = registry_token
    token = _token(registry, "repository:t/x:pull").json()["token"]
    since = registry.mark()
    refused = requests.post(registry.url("/v2/t/x/blobs/uploads/"),
                            headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 401
    assert _challenge(refused)["error"] == "insufficient_scope"
    assert registry.requests(since) == [Request("POST", "/v2/t/x/blobs/uploads/", 401)]
    assert registry.blob_uploads(since) == []


def test_token_server_refuses_wrong_or_missing_credentials(registry_token: RunningRegistry) -> None:
    registry = registry_token
    asked = len(registry.token_requests)
    assert _token(registry, "repository:t/x:pull", password="wrong").status_code == 401
    realm = _challenge(requests.get(registry.url("/v2/")))["realm"]
    missing = requests.get(realm, params={"scope": "repository:t/x:pull"})
    assert missing.status_code == 401 and missing.headers["Www-Authenticate"].startswith("Basic")
    assert registry.token_requests[asked:] == [
        {"scopes": ["repository:t/x:pull"], "user": registry.username, "granted": False},
        {"scopes": ["repository:t/x:pull"], "user": None, "granted": False}]


def test_token_scopes_repeated_or_space_joined(registry_token: RunningRegistry) -> None:
    registry = registry_token
    realm = _challenge(requests.get(registry.url("/v2/")))["realm"]
    credentials = (str(registry.username), str(registry.password))
    scopes = ["repository:t/x:pull,push", "repository:t/base:pull"]
    asked = len(registry.token_requests)
    repeated = requests.get(realm, params={"scope": scopes}, auth=credentials)
    joined = requests.get(realm, params={"scope": " ".join(scopes)}, auth=credentials)
    oauth = requests.post(realm, data={"grant_type": "password", "username": credentials[0],
                                       "password": credentials[1], "scope": " ".join(scopes)})
    expected = [{"type": "repository", "name": "t/x", "actions": ["pull", "push"]},
                {"type": "repository", "name": "t/base", "actions": ["pull"]}]
    assert _claims(repeated.json()["token"])["access"] == expected
    assert _claims(joined.json()["token"])["access"] == expected
    assert _claims(oauth.json()["access_token"])["access"] == expected
    assert [r["scopes"] for r in registry.token_requests[asked:]] == [scopes] * 3


def test_blob_uploads_counts_chunks_not_mounts(registry_anonymous: RunningRegistry) -> None:
    registry, data = registry_anonymous, b"chunked upload, then mounted elsewhere\n"
    since = registry.mark()
    started = requests.post(registry.url("/v2/t/chunked/blobs/uploads/"))
    patched = requests.patch(started.headers["Location"], data=data,
                             headers={"Content-Type": "application/octet-stream"})
    assert patched.status_code == 202
    assert requests.put(patched.headers["Location"], params={"digest": _digest(data)}).status_code == 201
    mounted = requests.post(registry.url("/v2/t/mounted/blobs/uploads/"),
                            params={"mount": _digest(data), "from": "t/chunked"})
    assert mounted.status_code == 201
    assert [(r.method, r.status) for r in registry.requests(since)] == [
        ("POST", 202), ("PATCH", 202), ("PUT", 201), ("POST", 201)]
    assert [(r.method, r.status) for r in registry.blob_uploads(since)] == [("PATCH", 202), ("PUT", 201)]


def test_docker_config_holds_the_credentials(any_registry: RunningRegistry, tmp_path: Path) -> None:
    directory = any_registry.docker_config(tmp_path / "docker")
    auths = json.loads((directory / "config.json").read_text())["auths"]
    if any_registry.username is None:
        assert auths == {}
    else:
        decoded = base64.b64decode(auths[any_registry.host]["auth"]).decode()
        assert decoded == f"{any_registry.username}:{any_registry.password}"


def test_stop_ends_the_registry_and_its_token_server(tmp_path: Path) -> None:
    require("docker-registry")
    registry = start_registry("token", tmp_path)
    process, token_server = registry.process, registry.token_server
    assert process is not None and token_server is not None
    realm_port = int(token_server.realm.split(":")[2].split("/")[0])
    registry.stop()
    registry.stop()   # twice is harmless
    assert process.poll() is not None
    for port in (int(registry.host.split(":")[1]), realm_port):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0
