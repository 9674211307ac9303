"""Image config and manifest from the recipe's image fields and the layers' descriptors."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from typing import Any

from dream.errors import DreamError
from dream.oci.blobs import BlobSink
from dream.oci.descriptor import Descriptor
from dream.oci.digest import canonical_json
from dream.oci.mediatypes import CONFIG as CONFIG_MEDIA_TYPE
from dream.oci.mediatypes import MANIFEST as MANIFEST_MEDIA_TYPE

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


LATEST_EPOCH = 253402300799  # 9999-12-31T23:59:59Z: the last time RFC 3339 and tar can write


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH if set (the reproducible-builds convention), else 0; anything but
    whole seconds from 0 to `LATEST_EPOCH` is refused rather than quietly read as 0."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not value:
        return 0
    if not value.isdigit() or int(value) > LATEST_EPOCH:
        raise DreamError(f"SOURCE_DATE_EPOCH must be whole seconds since 1970, at most "
                         f"{LATEST_EPOCH} (9999-12-31); got {value[:40]!r}")
    return int(value)


def rfc3339(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def image_config(image: dict[str, Any], layers: list[tuple[str, str, Descriptor]]) -> dict[str, Any]:
    """The OCI image config. ``layers`` holds (name, comment, descriptor) per layer, bottom first."""
    created = image.get("created") or rfc3339(source_date_epoch())
    env = dict(image.get("env", {}))
    env.setdefault("PATH", DEFAULT_PATH)
    labels = {"org.opencontainers.image.created": created, **image.get("labels", {})}
    config: dict[str, Any] = {"Env": [f"{k}={v}" for k, v in env.items()], "Labels": labels}
    if image.get("ports"):
        config["ExposedPorts"] = {port: {} for port in image["ports"]}
    for field, key in (("user", "User"), ("workdir", "WorkingDir"), ("entrypoint", "Entrypoint"),
                       ("cmd", "Cmd"), ("stop_signal", "StopSignal")):
        if image.get(field) is not None:
            config[key] = image[field]
    if image.get("healthcheck"):  # Docker's field (OCI's config has none): a services layer's probe
        config["Healthcheck"] = image["healthcheck"]
    return {
        "created": created,
        "architecture": image.get("architecture", "amd64"),
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [d.diffID for _, _, d in layers]},
        # Every entry has `created`: umoci stat crashes without it (deps.md §4.4).
        "history": [{"created": created, "created_by": f"dream layer {name}",
                     **({"comment": comment} if comment else {})} for name, comment, _ in layers],
    }


def image_blobs(image: dict[str, Any], layers: list[tuple[str, str, Descriptor]]) -> tuple[bytes, bytes]:
    """The config's and the manifest's bytes, written nowhere: what `write_image` stores, so
    that "is the tagged image the one these layers make?" needs no write (dream/verbs.py)."""
    return config_blobs(image_config(image, layers), [d.oci() for _, _, d in layers])


def config_blobs(config: dict[str, Any], layers: list[dict[str, Any]]) -> tuple[bytes, bytes]:
    """The bytes of ``config`` and of the manifest of it and ``layers`` (descriptors as a
    manifest lists them), written nowhere: for an image made from another one's config."""
    data = canonical_json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": Descriptor(CONFIG_MEDIA_TYPE, "sha256:" + hashlib.sha256(data).hexdigest(), len(data)).oci(),
        "layers": layers,
    }
    return data, canonical_json(manifest)


def write_image(sink: BlobSink, image: dict[str, Any],
                layers: list[tuple[str, str, Descriptor]]) -> Descriptor:
    """Store config and manifest blobs; return the manifest's descriptor (not yet tagged)."""
    return write_blobs(sink, *image_blobs(image, layers))


def write_blobs(sink: BlobSink, config: bytes, manifest: bytes) -> Descriptor:
    """Store a config's and its manifest's bytes (`image_blobs`, `config_blobs`); return the
    manifest's descriptor."""
    sink.put_bytes(config, CONFIG_MEDIA_TYPE)
    return sink.put_bytes(manifest, MANIFEST_MEDIA_TYPE)
