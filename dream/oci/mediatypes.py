"""Every media type dream writes or reads, once: the one table of these strings in dream/.

The strings are part of the bytes dream hashes (configs, manifests, cache entries), so a change
here changes digests. Docker's schema-2 types name the same bytes as their OCI counterparts.
"""

from __future__ import annotations

# -- layers ---------------------------------------------------------------------------------
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

# -- configs, manifests, indexes --------------------------------------------------------------
CONFIG = "application/vnd.oci.image.config.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"

# -- artifacts (the remote layer cache) --------------------------------------------------------
EMPTY = "application/vnd.oci.empty.v1+json"
DREAM_LAYER_ARTIFACT = "application/vnd.dream.layer.v1"

MANIFEST_TYPES = (MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (INDEX, DOCKER_MANIFEST_LIST)

# A base image's layer types dream reuses, relabelled as OCI's (the digests do not change).
OCI_LAYER_TYPES = {
    DOCKER_LAYER_GZIP: LAYER_GZIP,
    LAYER_GZIP: LAYER_GZIP,
    LAYER_ZSTD: LAYER_ZSTD,
    LAYER_TAR: LAYER_TAR,
}


def is_layer(media_type: str) -> bool:
    """An OCI or a Docker layer type (what a fetch checks for path traversal)."""
    return ".layer." in media_type or ".rootfs.diff." in media_type
