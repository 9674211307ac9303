"""Resolving a base image reference to what the lock pins: manifest digest, config, layers.

Only manifests and the small config are read; no layer byte moves. A multi-platform index is
narrowed to the manifest for the image's architecture. Docker's media types name the same
bytes as OCI's, so their layers are re-labelled as OCI layers (the digests do not change).
"""

from __future__ import annotations

import json
from typing import Any

from dream.errors import DreamError
from dream.oci.mediatypes import CONFIG as CONFIG_TYPE
from dream.oci.mediatypes import INDEX_TYPES, MANIFEST_TYPES, OCI_LAYER_TYPES
from dream.oci.reference import Reference
from dream.registry.client import client_for


def _platform_manifest(reference: Reference, index: dict[str, Any],
                       architecture: str) -> Reference:
    for entry in index.get("manifests", []):
        platform = entry.get("platform", {})
        if platform.get("os") == "linux" and platform.get("architecture") == architecture:
            return reference.with_digest(entry["digest"])
    offered = sorted(f"{m.get('platform', {}).get('os')}/{m.get('platform', {}).get('architecture')}"
                     for m in index.get("manifests", []))
    raise DreamError(f"{reference} has no linux/{architecture} image (it offers {', '.join(offered)})")


def resolve_base(reference: Reference, architecture: str) -> dict[str, Any]:
    """The lock entry for a base image: ref, manifest digest, config and layer descriptors."""
    try:
        return _resolve(reference, architecture)
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        raise DreamError(f"{reference}: the registry's manifest or config is not an image's") from None


def _resolve(reference: Reference, architecture: str) -> dict[str, Any]:
    client = client_for(reference.host)
    data, media_type, digest = client.get_manifest(reference)
    if media_type in INDEX_TYPES:
        pinned = _platform_manifest(reference, json.loads(data), architecture)
        data, media_type, digest = client.get_manifest(pinned)
    if media_type not in MANIFEST_TYPES:
        raise DreamError(f"{reference} is a {media_type or 'manifest of unknown type'}, not an image")
    manifest = json.loads(data)
    config_descriptor = manifest["config"]
    config = b"".join(client.fetch_blob(reference.repository, config_descriptor["digest"],
                                        config_descriptor["size"]))
    diff_ids = json.loads(config).get("rootfs", {}).get("diff_ids", [])
    if len(diff_ids) != len(manifest["layers"]):
        raise DreamError(f"{reference}: its config lists {len(diff_ids)} layers, its manifest "
                         f"{len(manifest['layers'])}")
    layers = []
    for layer, diff_id in zip(manifest["layers"], diff_ids):
        oci_type = OCI_LAYER_TYPES.get(layer["mediaType"])
        if oci_type is None:
            raise DreamError(f"{reference}: layer {layer['digest'][:19]} has media type "
                             f"{layer['mediaType']}, which dream cannot reuse")
        layers.append({"mediaType": oci_type, "digest": layer["digest"], "size": layer["size"],
                       "diffID": diff_id})
    return {"ref": str(reference), "architecture": architecture, "digest": digest,
            "source": reference.name,
            "config": {"mediaType": CONFIG_TYPE, "digest": config_descriptor["digest"], "size": len(config)},
            "layers": layers}
