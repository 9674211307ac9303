"""The two ends of a blob, as the OCI code sees them: somewhere to write one, somewhere to read one.

The store implements both (`dream.store.layout.Store`); the code in `dream.oci` takes these
protocols, so it never imports the store (nor, through it, the registry).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from dream.oci.descriptor import Descriptor


class BlobWriter(Protocol):
    """A blob being written: bytes go in, hashed; `commit` makes it visible as (digest, size)."""

    def write(self, data: bytes) -> None: ...
    def commit(self) -> tuple[str, int]: ...


class BlobSink(Protocol):
    """Where new blobs go (layers, configs, manifests)."""

    def blob_writer(self) -> AbstractContextManager[BlobWriter]: ...
    def put_bytes(self, data: bytes, media_type: str) -> Descriptor: ...


class BlobSource(Protocol):
    """Where a blob's verified bytes can be had, as a local file (fetched first if need be)."""

    def local_blob(self, descriptor: Descriptor) -> Path: ...
