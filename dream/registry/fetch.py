"""Fetching a blob the store knows only by its sources (a base image's layer, a cached layer).

The bytes stream from the registry into a temporary file of the store while they are hashed;
a blob whose digest or size is wrong never becomes visible. A layer is also checked for path
traversal before it is committed, so nothing in dream (nor an engine it is loaded into)
ever unpacks an entry that points outside the image's root.
"""

from __future__ import annotations

from dream.errors import DreamError
from dream.oci.descriptor import Descriptor
from dream.oci.mediatypes import is_layer
from dream.oci.reference import parse_reference
from dream.oci.safety import check_layer_file
from dream.progress import bar
from dream.registry.client import RegistryError, client_for
from dream.store.layout import Store


def fetch_blob(store: Store, descriptor: Descriptor) -> None:
    """Download ``descriptor``'s blob from the first of its sources that has it.

    A source that answers "not found" is forgotten, so that the layer counts as missing and
    the next build makes it again (a cleaned-up layer cache must not break a store for good).
    """
    problems = []
    for location in store.sources(descriptor.digest):
        source = parse_reference(location, "blob source")
        try:
            _fetch_from(store, descriptor, source.host, source.repository)
            return
        except RegistryError as exc:
            if exc.status == 404:
                store.drop_source(descriptor.digest, location)
            problems.append(str(exc))
    if not store.sources(descriptor.digest):
        problems.append("no registry has it any more; run the build again to make it")
    raise DreamError(f"cannot fetch blob {descriptor.digest}: " + "; ".join(problems))


def _fetch_from(store: Store, descriptor: Descriptor, host: str, repository: str) -> None:
    """Stream the blob into the store; a download that breaks off starts again (3 tries)."""
    client = client_for(host)
    label = f"{host}/{repository}@{descriptor.digest[7:19]}"
    for attempt in range(3):
        try:
            with store.blob_writer() as writer, bar(f"fetch {label}", descriptor.size) as advance:
                for piece in client.fetch_blob(repository, descriptor.digest, descriptor.size):
                    writer.write(piece)
                    advance(len(piece))
                writer.file.flush()
                if is_layer(descriptor.mediaType):
                    check_layer_file(writer.path, descriptor.mediaType, label)
                digest, _ = writer.commit()
            if digest != descriptor.digest:  # fetch_blob checked it; a second look costs nothing
                raise DreamError(f"{label}: stored bytes hash to {digest}")
            return
        except RegistryError as exc:
            if not exc.transient or attempt == 2:
                raise
