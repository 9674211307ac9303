"""Load an image from the store into the Docker engine: by a pull from the store, or streamed
as an archive.

**The pull (the default).** For the length of one load the store's image is served as a
read-only registry on 127.0.0.1, on a port the OS chose (`dream.registry.serve.StoreRegistry`),
and the engine pulls ``127.0.0.1:PORT/<name>@<manifest digest>`` (Docker treats 127.0.0.0/8 as an
insecure registry, plain http, by default; `docker info` lists it under Insecure Registries). The
engine asks only for the layers it lacks, several at once, and decompresses them itself; then
the image is tagged with the recipe's tags and the temporary ``127.0.0.1:PORT/<name>`` reference
is removed (the image stays). The server is stopped when the pull ends, however it ends. The pull
has no client timeout (a 7 GB first load takes what it takes); its progress is the engine's.

**The archive (the fallback).** Where the pull cannot work, the whole image is streamed in
`docker save`'s format into `docker load` (Docker 20.10 reads that, not an OCI layout): framed on
the fly, compressed layer blobs sent as they are. `choose_route` says where, with its reason:

- ``DREAM_LOAD_VIA=archive`` (or ``registry``) forces one; ``auto`` (the default) decides:
- an engine reached over TCP or SSH (``DOCKER_HOST``) is not on this machine: its 127.0.0.1 is
  not ours, so it could not reach the server;
- a rootless engine (`docker info` security option ``rootless``) and Docker Desktop run the
  daemon in a network namespace or VM of their own: the same;
- an engine whose insecure registries do not cover 127.0.0.1 would insist on TLS;
- and at run time: a pull that failed before the engine made a single request to the server
  (it could not reach it after all) is retried as an archive load, saying so.

Either way the config blob keeps its digest, so the engine's image ID equals the config digest
in the store, and no unverified byte is sent: every blob is checked against its digest before
the load starts (`Store.verified_path`: hashed once on this machine, trusted while unchanged),
and hashed again as it streams, its last piece held back until the hash matched, so a file
changed meanwhile breaks the load off (the engine never commits a partial or wrong layer).
"""

from __future__ import annotations

import ipaddress
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from dream.errors import DreamError
from dream.oci.descriptor import Descriptor
from dream.oci.tar import BLOCK_SIZE
from dream.progress import bar
from dream.registry.serve import StoreRegistry, checked_stream
from dream.store import Store

LOAD_VIA = "DREAM_LOAD_VIA"  # auto (default) | registry | archive


def _member(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    return info.tobuf(tarfile.PAX_FORMAT)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK_SIZE)


def docker_archive(store: Store, manifest: Descriptor, repo_tags: list[str]) -> Iterator[bytes]:
    """A `docker load` stream for the image whose manifest is ``manifest``; every blob is
    checked here, before the first byte is produced (a bad one is a `DreamError` now)."""
    body = store.read_manifest(manifest.digest)
    descriptors = [Descriptor.from_json(layer) for layer in body["layers"]]
    paths = [store.verified_path(descriptor) for descriptor in descriptors]
    config_bytes = store.read_blob(body["config"]["digest"])
    return _archive(body, descriptors, paths, config_bytes, repo_tags)


def _archive(body: dict[str, Any], descriptors: list[Descriptor], paths: list[Path],
             config_bytes: bytes, repo_tags: list[str]) -> Iterator[bytes]:
    config = body["config"]["digest"].split(":")[1]
    layers = [descriptor.digest.split(":")[1] for descriptor in descriptors]
    index = json.dumps([{"Config": f"{config}.json", "RepoTags": repo_tags,
                         "Layers": [f"{digest}/layer.tar" for digest in layers]}]).encode()
    yield _member("manifest.json", len(index)) + index + _padding(len(index))
    yield _member(f"{config}.json", len(config_bytes)) + config_bytes + _padding(len(config_bytes))
    for digest, descriptor, path in zip(layers, descriptors, paths):
        yield _member(f"{digest}/layer.tar", descriptor.size)
        yield from checked_stream(path, descriptor)
        yield _padding(descriptor.size)
    yield b"\0" * (2 * BLOCK_SIZE)


def _check_zstd_support(store: Store, manifest: Descriptor, engine_version: str) -> None:
    """Docker reads zstd layers from 23.0 on; older engines fail with a bare "unexpected EOF"."""
    layers = store.read_manifest(manifest.digest)["layers"]
    major = int(engine_version.split(".")[0]) if engine_version.split(".")[0].isdigit() else 0
    if major < 23 and any(layer["mediaType"].endswith("+zstd") for layer in layers):
        raise DreamError(f"this Docker engine ({engine_version}) cannot load zstd layers (Docker 23 "
                         "or later can); set `image.compression: gzip` to load it here")


_UNIX_SOCKET = "http+docker://localhost"  # docker-py's base_url for a unix socket (ssh: http+docker://ssh)


@dataclass(frozen=True)
class Route:
    """How a load reaches the engine: ``registry`` (a pull from the store) or ``archive``."""

    via: str
    reason: str


def choose_route(info: dict[str, Any], base_url: str, setting: str = "") -> Route:
    """Pull from the store, or stream an archive: pure, from the engine's `docker info`, the
    client's endpoint and ``DREAM_LOAD_VIA`` (module docstring: where the pull cannot work)."""
    setting = setting.strip().lower() or "auto"
    if setting in ("registry", "archive"):
        return Route(setting, f"{LOAD_VIA}={setting}")
    if setting != "auto":
        raise DreamError(f"{LOAD_VIA}={setting!r}: one of auto, registry, archive")
    if base_url != _UNIX_SOCKET and not base_url.startswith(("http+unix://", "unix://")):
        return Route("archive", f"the engine at {base_url} is not on this machine: it cannot reach "
                                "a registry on this machine's 127.0.0.1")
    security = " ".join(str(option) for option in info.get("SecurityOptions") or [])
    if "rootless" in security:
        return Route("archive", "a rootless engine has a network namespace of its own: its "
                                "127.0.0.1 is not this machine's")
    if "docker desktop" in str(info.get("OperatingSystem", "")).lower():
        return Route("archive", "Docker Desktop runs the engine in a VM: its 127.0.0.1 is not this machine's")
    cidrs = (info.get("RegistryConfig") or {}).get("InsecureRegistryCIDRs") or []
    loopback = ipaddress.ip_address("127.0.0.1")
    insecure = False
    for cidr in cidrs:
        try:
            insecure = insecure or loopback in ipaddress.ip_network(str(cidr), strict=False)
        except ValueError:
            continue
    if not insecure:
        return Route("archive", "the engine does not pull from 127.0.0.0/8 without TLS "
                                "(not among its insecure registries)")
    return Route("registry", "the engine pulls from 127.0.0.0/8 without TLS")


@dataclass(frozen=True)
class Loaded:
    """What a load did: the engine's tags, how, and (a pull) how much of the image it took."""

    tags: list[str]
    via: str
    layers: int
    layers_sent: int
    bytes_sent: int
    note: str = ""

    def __str__(self) -> str:
        line = (f"loaded {', '.join(self.tags)} ({self.layers_sent} of {self.layers} layers sent, "
                f"{self.bytes_sent:,} bytes)")
        return line + (f"; {self.note}" if self.note else "")


class _Unreachable(Exception):
    """The engine made no request to the server: it cannot reach this machine's 127.0.0.1."""


def load(store: Store, manifest: Descriptor, name: str, tags: list[str]) -> Loaded:
    """Load the image whose manifest is ``manifest`` (every blob in the store: the caller fetched
    what only a registry held) into the Docker engine as ``name:tag`` for each tag."""
    import docker  # imported here: only `load` needs the engine
    from docker.errors import DockerException

    body = store.read_manifest(manifest.digest)
    for blob in [body["config"], *body["layers"]]:  # a corrupt or missing blob: one line, before anything
        store.verified_path(Descriptor.from_json(blob))
    try:
        client = docker.from_env(timeout=None)  # no client timeout: a long load is not an error
        info = client.info()
        _check_zstd_support(store, manifest, str(info.get("ServerVersion") or client.version().get("Version", "0")))
        route = choose_route(info, client.api.base_url, os.environ.get(LOAD_VIA, ""))
        if route.via == "registry":
            try:
                return _pull(client, store, manifest, name, tags)
            except _Unreachable as exc:
                route = Route("archive", f"the engine could not reach the store's registry ({exc})")
        return _archive_load(client, store, manifest, name, tags, route)
    except DockerException as exc:
        raise DreamError(f"docker load failed: {exc}") from None


def _archive_load(client: Any, store: Store, manifest: Descriptor, name: str, tags: list[str],
                  route: Route) -> Loaded:
    """The fallback: the whole image as a `docker load` stream."""
    layers = store.read_manifest(manifest.digest)["layers"]
    images = client.images.load(docker_archive(store, manifest, [f"{name}:{t}" for t in tags]))
    loaded = sorted({tag for image in images for tag in image.tags})
    return Loaded(loaded, "archive", len(layers), len(layers), sum(layer["size"] for layer in layers),
                  f"sent as an archive: {route.reason}")


_QUIET = {"Downloading", "Extracting", "Waiting", "Verifying Checksum"}


def _pull(client: Any, store: Store, manifest: Descriptor, name: str, tags: list[str]) -> Loaded:
    """Serve the store on 127.0.0.1 for one `docker pull` by digest, then tag; the server is
    stopped when the pull ends, and the temporary reference removed once the tags are set."""
    from docker.errors import DockerException, NotFound

    tags_done: list[str] = []
    with bar(f"load {name}", None) as advance:
        registry = StoreRegistry(store, manifest, name, advance=advance)
        sizes = {layer.digest.split(":")[1][:12]: layer.size for layer in registry.layers}
        with registry:
            repository = f"{registry.host}/{name}"
            print(f"{name}: serving the store on {registry.host} while the engine pulls "
                  f"{repository}@{manifest.digest}", flush=True)
            error = None
            try:
                for event in client.api.pull(repository, tag=manifest.digest, stream=True, decode=True):
                    if "error" in event:
                        error = str(event.get("errorDetail", {}).get("message") or event["error"])
                        break
                    status, layer = str(event.get("status", "")), str(event.get("id", ""))
                    if status and status not in _QUIET and layer in sizes:
                        print(f"{name}: layer {layer}: {status.lower()}"
                              + (f" ({sizes[layer]:,} bytes)" if status == "Pull complete" else ""), flush=True)
            except DockerException as exc:
                error = str(exc)
            counts = registry.counts
        # the server is stopped here: the port is closed
        if error is not None:
            if not counts.requests:
                raise _Unreachable(error)
            why = f" (the store refused: {counts.refused[0]})" if counts.refused else ""
            raise DreamError(f"docker pull from the store failed: {error}{why}")
        try:
            image_id = registry.config.digest  # the engine's image ID is the config's digest
            for tag in tags:
                client.api.tag(image_id, name, tag, force=True)
                tags_done.append(f"{name}:{tag}")
        finally:
            try:  # the temporary 127.0.0.1:PORT reference only: the image stays under its tags
                client.api.remove_image(f"{repository}@{manifest.digest}", noprune=True)
            except NotFound:
                pass
    return Loaded(sorted(tags_done), "registry", len(registry.layers), len(counts.layers), counts.bytes)

class EnginePublisher:
    """The Docker engine as a `dream.managers.base.Publisher`: ``load:<image>`` publishes there,
    as ``name:tag`` for each tag (every blob must be in the store: `doit pull` first)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def publish(self, store: Store, manifest: Descriptor, tags: list[str]) -> str:
        return str(load(store, manifest, self.name, tags))
