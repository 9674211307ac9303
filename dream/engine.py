"""Load an image from the store into the Docker engine, streamed, with no archive on disk.

Docker 20.10 reads `docker save`'s format (manifest.json + config + layer files), not an OCI
layout, so the same bytes are framed that way on the fly; compressed layer blobs are sent as they
are (the engine decompresses them), and the config blob keeps its digest, so the engine's image
ID equals the config digest in the store.

No unverified byte is sent: every blob is checked against its digest before the stream starts
(`Store.verified_path`: hashed once on this machine, trusted while unchanged), and each layer is
hashed again as it streams, its last piece held back until the hash matched, so a file changed
meanwhile breaks the load off (the engine never commits a partial or wrong layer).
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path
from typing import Any, Iterator

from dream.errors import DreamError
from dream.oci.descriptor import Descriptor
from dream.oci.tar import BLOCK_SIZE, CHUNK
from dream.store import Store


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
        yield from _checked_stream(path, descriptor)
        yield _padding(descriptor.size)
    yield b"\0" * (2 * BLOCK_SIZE)


def _checked_stream(path: Path, descriptor: Descriptor) -> Iterator[bytes]:
    """The blob's bytes, hashed on the way; the last piece is yielded only once the size and
    digest matched, so nothing that is not the blob is ever sent whole."""
    hasher, seen, held = hashlib.sha256(), 0, b""
    with open(path, "rb") as handle:
        while seen <= descriptor.size and (chunk := handle.read(CHUNK)):
            if held:
                yield held
            hasher.update(chunk)
            seen += len(chunk)
            held = chunk
    if seen != descriptor.size or "sha256:" + hasher.hexdigest() != descriptor.digest:
        raise DreamError(f"blob {descriptor.digest} changed while it was loaded; "
                         "run `doit verify` and build again")
    if held:
        yield held


def _check_zstd_support(store: Store, manifest: Descriptor, engine_version: str) -> None:
    """Docker reads zstd layers from 23.0 on; older engines fail with a bare "unexpected EOF"."""
    layers = store.read_manifest(manifest.digest)["layers"]
    major = int(engine_version.split(".")[0]) if engine_version.split(".")[0].isdigit() else 0
    if major < 23 and any(layer["mediaType"].endswith("+zstd") for layer in layers):
        raise DreamError(f"this Docker engine ({engine_version}) cannot load zstd layers (Docker 23 "
                         "or later can); set `image.compression: gzip` to load it here")


def load(store: Store, manifest: Descriptor, name: str, tags: list[str]) -> list[str]:
    """Stream the image whose manifest is ``manifest`` (every blob in the store) into the
    Docker engine as ``name:tag`` for each tag."""
    import docker  # imported here: only `load` needs the engine
    from docker.errors import DockerException

    try:
        client = docker.from_env()
        _check_zstd_support(store, manifest, client.version().get("Version", "0"))
        images = client.images.load(docker_archive(store, manifest, [f"{name}:{t}" for t in tags]))
    except DockerException as exc:
        raise DreamError(f"docker load failed: {exc}") from None
    return sorted({tag for image in images for tag in image.tags})


class EnginePublisher:
    """The Docker engine as a `dream.managers.base.Publisher`: ``load:<image>`` publishes there,
    as ``name:tag`` for each tag (every blob must be in the store: `doit pull` first)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def publish(self, store: Store, manifest: Descriptor, tags: list[str]) -> str:
        return f"loaded {', '.join(load(store, manifest, self.name, tags))}"
