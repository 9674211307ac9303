"""The client's retry rules against a scripted HTTP server on loopback (our logic, not a registry's):
5xx and broken connections are retried with the body re-sent from its start; 4xx never are."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path
from typing import Iterator

import pytest

from dream.registry import client as client_module
from dream.registry.client import RegistryClient, RegistryError


class Script:
    """What the server answers, request by request; what it received."""

    def __init__(self) -> None:
        self.answers: list[int | str | tuple[int, str]] = []  # a status, (status, error code), or "reset"
        self.seen: list[tuple[str, str, int]] = []  # method, path, body length
        self.probes: list[int | str] = []  # answers to GET /v2/ (then 200)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Script]]:
    script = Script()
    monkeypatch.setattr(client_module, "RETRY_DELAYS", (0.01, 0.01, 0.01))

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.path == "/v2/":
                status: int | str = script.probes.pop(0) if script.probes else 200
            else:
                self.server_seen.append((self.command, self.path.split("?")[0], len(body)))
                status = script.answers.pop(0) if script.answers else 201
            if status == "reset":
                self.close_connection = True
                self.connection.shutdown(2)
                return
            code, error = status if isinstance(status, tuple) else (status, "")
            payload = json.dumps({"errors": [{"code": error, "message": "m"}]}).encode() if error else b""
            self.send_response(int(code))
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Docker-Content-Digest", "sha256:" + hashlib.sha256(b"{}").hexdigest())
            self.end_headers()
            self.wfile.write(payload)

        server_seen = script.seen
        do_GET = do_PUT = do_HEAD = do_POST = _answer

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}", script
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def anonymous(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.delenv("DREAM_REGISTRY_USERNAME", raising=False)


def test_5xx_and_resets_are_retried_and_the_body_is_sent_whole_each_time(
        server: tuple[str, Script], anonymous: None, tmp_path: Path) -> None:
    host, script = server
    blob = tmp_path / "blob"
    blob.write_bytes(b"x" * 3_000_000)
    client = RegistryClient(host)
    script.answers = [503, "reset", 201]
    client.upload(f"http://{host}/v2/r/blobs/uploads/u1", "sha256:" + hashlib.sha256(b"{}").hexdigest(),
                  blob, lambda n: None)
    assert [length for method, _, length in script.seen] == [3_000_000] * 3


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_client_errors_are_never_retried(server: tuple[str, Script], anonymous: None, status: int) -> None:
    host, script = server
    client = RegistryClient(host)
    script.answers = [status, 201, 201]
    with pytest.raises(RegistryError):
        client.put_manifest("r", "latest", b"{}", "application/vnd.oci.image.manifest.v1+json")
    assert len(script.seen) == 1


def test_retries_end(server: tuple[str, Script], anonymous: None) -> None:
    host, script = server
    client = RegistryClient(host)
    script.answers = [502] * 10
    with pytest.raises(RegistryError, match="failed with 502"):
        client.put_manifest("r", "latest", b"{}", "application/vnd.oci.image.manifest.v1+json")
    assert len(script.seen) == 4  # one try and three retries


def test_a_manifest_naming_a_blob_another_client_is_committing_is_retried(
        server: tuple[str, Script], anonymous: None) -> None:
    host, script = server
    client = RegistryClient(host)
    script.answers = [(400, "MANIFEST_BLOB_UNKNOWN"), 201]
    client.put_manifest("r", "latest", b"{}", "application/vnd.oci.image.manifest.v1+json")
    assert len(script.seen) == 2
    script.seen.clear()
    script.answers = [(400, "MANIFEST_INVALID"), 201]  # any other 400 is final
    with pytest.raises(RegistryError, match="MANIFEST_INVALID"):
        client.put_manifest("r", "latest", b"{}", "application/vnd.oci.image.manifest.v1+json")
    assert len(script.seen) == 1


def test_the_first_get_v2_is_retried_on_5xx_and_resets(server: tuple[str, Script], anonymous: None) -> None:
    host, script = server
    script.probes = [500, "reset", 503]
    RegistryClient(host)  # connects: three transient failures, then 200
    assert script.probes == []


def test_a_get_v2_that_keeps_failing_is_one_line(server: tuple[str, Script], anonymous: None) -> None:
    host, script = server
    script.probes = [500, 500, 500, 500]
    with pytest.raises(RegistryError, match=r"GET /v2/ answered 500"):
        RegistryClient(host)
