"""One image of the store served as a read-only OCI distribution registry on 127.0.0.1.

`doit load:<image>` starts this for the length of one `docker pull` (dream/engine.py): the engine
asks for the manifest, then fetches only the layer blobs it does not have, in parallel, and
decompresses them itself. Only what `docker pull` needs is answered:

- ``GET /v2/`` → 200 (no auth: the socket is bound to 127.0.0.1 and lives for one pull);
- ``HEAD``/``GET /v2/<name>/manifests/<digest or tag>`` → the image's manifest, with its media
  type as Content-Type and Docker-Content-Digest;
- ``HEAD``/``GET /v2/<name>/blobs/<digest>`` → the config or a layer of that image, streamed
  from the store's blob file, with Content-Length; a single ``Range: bytes=a-b`` gets a 206;
- anything else → 404 in the OCI error form; a write (POST, PUT, PATCH, DELETE) → 405.

Only that one image's manifest, config and layers are served (no other blob of the store, no
other name). No unverified byte leaves: a blob is served only if the store counts it good
(`Store.verified_path`: hashed on this machine, its file unchanged since), and it is hashed again
as it streams, the last piece held back until the digest matched, so a file changed meanwhile
breaks the response off short of its Content-Length (the engine retries, gets a 404, and fails;
it never commits a wrong layer). A blob the store knows only by a registry source must be fetched
into the store before the server starts (`ImageJob.fetch_missing`): this server never fetches.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

from dream.errors import DreamError
from dream.oci.descriptor import Descriptor
from dream.oci.tar import CHUNK
from dream.store import Store

__all__ = ["ServedCounts", "StoreRegistry", "checked_stream"]

_MANIFEST = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<reference>[^/]+)$")
_BLOB = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def checked_stream(path: Path, descriptor: Descriptor, start: int = 0,
                   end: int | None = None) -> Iterator[bytes]:
    """Bytes ``start``..``end`` (inclusive; default: to the end) of the blob at ``path``. The
    whole file is hashed on the way (a range's prefix is read, not sent); the last piece is
    yielded only once the size and digest matched, so nothing that is not the blob is sent whole."""
    last = descriptor.size - 1 if end is None else end
    hasher, seen, held = hashlib.sha256(), 0, b""
    with open(path, "rb") as handle:
        while seen <= descriptor.size and (chunk := handle.read(CHUNK)):
            hasher.update(chunk)
            piece = chunk[max(0, start - seen):max(0, last + 1 - seen)]
            seen += len(chunk)
            if piece:
                if held:
                    yield held
                held = piece
    if seen != descriptor.size or "sha256:" + hasher.hexdigest() != descriptor.digest:
        raise DreamError(f"blob {descriptor.digest} changed while it was served; "
                         "run `doit verify` and build again")
    if held:
        yield held


@dataclass
class ServedCounts:
    """What the server sent: bytes of blob bodies, the layers sent whole, every request."""

    bytes: int = 0
    layers: set[str] = field(default_factory=set)
    requests: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path, status)
    refused: list[str] = field(default_factory=list)  # blobs it would not serve, and why


class StoreRegistry:
    """A context manager: ``with StoreRegistry(store, manifest, name) as registry:`` serves the
    image on ``registry.host`` (127.0.0.1, a port the OS chose) and stops, closing the port, on
    leaving the block, whatever ended it (an error, Ctrl-C)."""

    def __init__(self, store: Store, manifest: Descriptor, name: str, tags: list[str] | None = None,
                 advance: Callable[[int], None] | None = None) -> None:
        self.store, self.manifest, self.name = store, manifest, name
        self.manifest_bytes = store.read_blob(manifest.digest)  # hashed: these exact bytes
        body = store.read_manifest(manifest.digest)
        self.config = Descriptor.from_json(body["config"])
        self.layers = [Descriptor.from_json(layer) for layer in body["layers"]]
        self.blobs = {d.digest: d for d in [self.config, *self.layers]}
        self.references = {manifest.digest, *(tags or [])}
        self.advance = advance or (lambda n: None)
        self.counts = ServedCounts()
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._port = 0
        self._thread: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> "StoreRegistry":
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        self._port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="dream-load-registry",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering and close the port (safe to call twice)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "StoreRegistry":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port it listens on (after `stop`: the one it listened on, closed now)."""
        assert self._port, "the registry was never started"
        return self._port

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- bookkeeping (called from the handler threads) ------------------------------------------
    def _record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.counts.requests.append((method, path, status))

    def _sent(self, n: int) -> None:
        with self._lock:
            self.counts.bytes += n
        self.advance(n)

    def _sent_whole(self, digest: str) -> None:
        if digest != self.config.digest:
            with self._lock:
                self.counts.layers.add(digest)

    def _refuse(self, reason: str) -> None:
        with self._lock:
            self.counts.refused.append(reason)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 registry: StoreRegistry) -> None:
        super().__init__(address, handler)
        self.registry = registry


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: the engine reuses its connections

    # -- routing -----------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._route(body=True)

    def do_HEAD(self) -> None:
        self._route(body=False)

    def _refuse_write(self) -> None:
        self._error(405, "UNSUPPORTED", "this registry is read-only (dream serves its store for a load)")

    do_POST = do_PUT = do_PATCH = do_DELETE = _refuse_write

    def _route(self, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        registry = self.server.registry
        if path in ("/v2", "/v2/"):
            return self._send(200, b"{}", {"Content-Type": "application/json"}, body)
        if match := _MANIFEST.match(path):
            if match["name"] != registry.name:
                return self._error(404, "NAME_UNKNOWN", f"repository {match['name']} is not served here")
            if match["reference"] not in registry.references:
                return self._error(404, "MANIFEST_UNKNOWN", f"manifest {match['reference']} is not served here")
            return self._send(200, registry.manifest_bytes,
                              {"Content-Type": registry.manifest.mediaType,
                               "Docker-Content-Digest": registry.manifest.digest}, body)
        if match := _BLOB.match(path):
            if match["name"] != registry.name:
                return self._error(404, "NAME_UNKNOWN", f"repository {match['name']} is not served here")
            return self._blob(match["digest"], body)
        return self._error(404, "NOT_FOUND", f"{self.command} {path} is not served here")

    # -- blobs -------------------------------------------------------------------------------
    def _blob(self, digest: str, body: bool) -> None:
        registry = self.server.registry
        descriptor = registry.blobs.get(digest) if digest != registry.manifest.digest else registry.manifest
        if descriptor is None:
            return self._error(404, "BLOB_UNKNOWN", f"blob {digest} is not part of this image")
        try:
            path = registry.store.verified_path(descriptor)  # hashed here once, trusted while unchanged
        except DreamError as exc:
            registry._refuse(str(exc))
            return self._error(404, "BLOB_UNKNOWN", str(exc))
        start, end, status = 0, descriptor.size - 1, 200
        headers = {"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest,
                   "Accept-Ranges": "bytes", "ETag": f'"{digest}"'}
        wanted = self.headers.get("Range")
        if wanted and descriptor.size:
            parsed = _parse_range(wanted, descriptor.size)
            if parsed is None:
                headers = {"Content-Range": f"bytes */{descriptor.size}"}
                return self._error(416, "BLOB_UNKNOWN", f"range {wanted!r} not satisfiable", headers)
            start, end, status = *parsed, 206
            headers["Content-Range"] = f"bytes {start}-{end}/{descriptor.size}"
        headers["Content-Length"] = str(end - start + 1 if descriptor.size else 0)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        registry._record(self.command, self.path, status)
        if not body or not descriptor.size:
            return
        try:
            for piece in checked_stream(path, descriptor, start, end):
                self.wfile.write(piece)
                registry._sent(len(piece))
        except DreamError as exc:  # changed under us: cut the response short, never finish it
            registry._refuse(str(exc))
            self.close_connection = True
            return
        except (BrokenPipeError, ConnectionResetError):  # the engine went away (Ctrl-C, its retry)
            self.close_connection = True
            return
        if start == 0 and end == descriptor.size - 1:
            registry._sent_whole(digest)

    # -- answers -----------------------------------------------------------------------------
    def _send(self, status: int, data: bytes, headers: dict[str, str], body: bool = True) -> None:
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(data))}.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(data)
        self.server.registry._record(self.command, self.path, status)

    def _error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        data = json.dumps({"errors": [{"code": code, "message": message, "detail": {}}]}).encode()
        if self.command != "HEAD" and self.headers.get("Content-Length"):
            self.close_connection = True  # a write's body is never read: the connection is done
        self._send(status, data, {"Content-Type": "application/json", **(headers or {})},
                   body=self.command != "HEAD")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: `ServedCounts.requests` is the record; the load prints its own summary."""


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-b``, ``bytes=a-`` or ``bytes=-n`` → (first, last) within the blob, or None."""
    match = _RANGE.match(header.strip())
    if not match or (not match[1] and not match[2]):
        return None
    if not match[1]:  # the last n bytes
        count = int(match[2])
        return (size - min(count, size), size - 1) if count else None
    first = int(match[1])
    last = min(int(match[2]), size - 1) if match[2] else size - 1
    return (first, last) if first <= last else None
