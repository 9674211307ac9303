"""Load an image from the store into the Docker engine, streamed, with no archive on disk.

Docker 20.10 reads `docker save`'s format (manifest.json + config + layer files), not an OCI
layout, so the same bytes are framed that way on the fly; compressed layer blobs are sent as they
are (the engine decompresses them), and the config blob keeps its digest, so the engine's image
ID equals the config digest in the store.
"""

from __future__ import annotations

import json
import tarfile
from typing import Iterator

from dream.errors import DreamError
from dream.oci.tar import BLOCK_SIZE, CHUNK
from dream.store import Descriptor, Store


def _member(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    return info.tobuf(tarfile.PAX_FORMAT)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK_SIZE)


def docker_archive(store: Store, manifest: Descriptor, repo_tags: list[str]) -> Iterator[bytes]:
    """Yield a `docker load` stream for the image whose manifest is ``manifest``."""
    body = store.read_json(manifest.digest)
    config = body["config"]["digest"].split(":")[1]
    layers = [layer["digest"].split(":")[1] for layer in body["layers"]]
    index = json.dumps([{"Config": f"{config}.json", "RepoTags": repo_tags,
                         "Layers": [f"{digest}/layer.tar" for digest in layers]}]).encode()
    yield _member("manifest.json", len(index)) + index + _padding(len(index))
    config_bytes = store.read_blob(body["config"]["digest"])
    yield _member(f"{config}.json", len(config_bytes)) + config_bytes + _padding(len(config_bytes))
    for digest in layers:
        path = store.blob_path("sha256:" + digest)
        size = path.stat().st_size
        yield _member(f"{digest}/layer.tar", size)
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk
        yield _padding(size)
    yield b"\0" * (2 * BLOCK_SIZE)


def _check_zstd_support(store: Store, manifest: Descriptor, engine_version: str) -> None:
    """Docker reads zstd layers from 23.0 on; older engines fail with a bare "unexpected EOF"."""
    layers = store.read_json(manifest.digest)["layers"]
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
