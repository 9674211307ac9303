"""The remote layer cache: a registry repository mapping layer input keys to layer blobs.

Each entry is a small OCI artifact manifest tagged ``layer-<input key>`` in the cache
repository (docs/registries.md shows one)::

    artifactType  application/vnd.dream.layer.v1
    config        the empty descriptor ({}), as OCI 1.1 says artifacts without config use
    layers        [the layer's descriptor, annotated with its diff_id]
    annotations   dev.dream.key = the input key

The manifest's bytes depend only on the layer, so two CI jobs that publish the same key at the
same time PUT the same bytes: the registry ends with one valid entry whichever lands last, and
a reader never sees a half entry (a tag points at a complete manifest whose blobs were pushed
first). Anything that goes wrong with the cache is a warning: the build goes on locally.
"""

from __future__ import annotations

import json
import sys
import threading

from dream.errors import DreamError
from dream.registry.client import client_for
from dream.registry.push import PushReport, push_blob
from dream.oci.descriptor import Descriptor
from dream.oci.digest import canonical_json
from dream.oci.mediatypes import DREAM_LAYER_ARTIFACT as ARTIFACT_TYPE
from dream.oci.mediatypes import EMPTY as EMPTY_MEDIA_TYPE
from dream.oci.mediatypes import MANIFEST as MANIFEST_MEDIA_TYPE
from dream.oci.reference import Reference, parse_reference
from dream.store.layout import Store
EMPTY = b"{}"
DIFF_ID = "dev.dream.diff-id"
KEY = "dev.dream.key"

# (cache, "lookup" | "publish") pairs that failed once in this process: not tried again. Apart,
# because a job that may read a cache but not write it must keep its hits.
_disabled: set[tuple[str, str]] = set()
_warning = threading.Lock()  # parallel layer tasks fail at once: one of them says it


def entry_tag(key: str) -> str:
    return f"layer-{key}"


def entry_manifest(key: str, layer: Descriptor, empty: Descriptor) -> bytes:
    layer_entry = {**layer.oci(), "annotations": {**layer.annotations, DIFF_ID: layer.diffID}}
    return canonical_json({"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE,
                           "artifactType": ARTIFACT_TYPE, "config": empty.oci(),
                           "layers": [layer_entry], "annotations": {KEY: key}})


def _entry_layer(data: bytes, key: str, media_type: str) -> Descriptor:
    """The layer descriptor of a cache entry, or a DreamError if it is not a dream entry for
    ``key`` with a ``media_type`` layer (anything else must never be used as a layer)."""
    try:
        manifest = json.loads(data)
        layer = manifest["layers"][0]
        annotations = dict(layer.get("annotations") or {})
        found = Descriptor(layer["mediaType"], layer["digest"], int(layer["size"]), annotations,
                           annotations.pop(DIFF_ID))
        if manifest.get("annotations", {}).get(KEY) != key or found.mediaType != media_type:
            raise ValueError
        return found
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise DreamError(f"entry layer-{key[:12]}… is not a dream cache entry for this layer") from None


class LayerCache:
    """One cache repository, asked before a layer is built and told after."""

    def __init__(self, repository: str) -> None:
        self.reference: Reference = parse_reference(repository, "layer cache")
        if self.reference.tag or self.reference.digest:
            raise DreamError(f"layer cache {repository!r} must be a repository, without a tag or digest")

    def _warn(self, what: str, exc: DreamError) -> None:
        """Say it once; a cache that cannot be read is not written either, while one that
        refuses a write may still be read."""
        consequence = "building locally" if what == "lookup" else "not publishing to it"
        with _warning:
            if (self.reference.name, what) in _disabled:
                return
            print(f"warning: layer cache {self.reference.name} unavailable ({exc}); {consequence}",
                  file=sys.stderr)
            _disabled.add((self.reference.name, what))
            if what == "lookup":
                _disabled.add((self.reference.name, "publish"))

    def lookup(self, store: Store, key: str, media_type: str) -> Descriptor | None:
        """The layer built for ``key`` by anyone who published it (recorded in ``store`` as a
        blob the cache repository holds, nothing downloaded); None on a miss or a failure.

        The entry must name a layer of ``media_type`` (the key's codec) whose blob the
        repository still has: a cleaned-up cache is a miss, not a broken build later."""
        if (self.reference.name, "lookup") in _disabled:
            return None
        try:
            client = client_for(self.reference.host)
            data = client.manifest_exists(self.reference.repository, entry_tag(key))
            if data is None:
                return None
            found = _entry_layer(data, key, media_type)
            if not client.has_blob(self.reference.repository, found.digest):
                return None
            store.add_source(found.digest, self.reference.name)
            return found
        except DreamError as exc:
            self._warn("lookup", exc)
        return None

    def publish(self, store: Store, key: str, layer: Descriptor) -> None:
        """Push the layer blob (skipped when present) and the entry manifest for ``key``."""
        if (self.reference.name, "publish") in _disabled:
            return
        try:
            client = client_for(self.reference.host)
            repository = self.reference.repository
            empty = store.put_bytes(EMPTY, EMPTY_MEDIA_TYPE)
            report = PushReport(self.reference.name, "")
            for blob in (empty, layer):
                push_blob(store, client, repository, blob, report)
            client.put_manifest(repository, entry_tag(key), entry_manifest(key, layer, empty),
                                MANIFEST_MEDIA_TYPE)
        except DreamError as exc:
            self._warn("publish", exc)
