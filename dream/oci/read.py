"""Read files back out of a stored layer blob, streaming (nothing is unpacked to disk)."""

from __future__ import annotations

import tarfile
from typing import IO

import zstandard
from isal import igzip

from dream.oci.compress import ZSTD_MEDIA_TYPE
from dream.store import Descriptor, Store


def open_layer(store: Store, descriptor: Descriptor) -> IO[bytes]:
    """The uncompressed tar stream of a layer blob."""
    raw = open(store.blob_path(descriptor.digest), "rb")
    if descriptor.mediaType == ZSTD_MEDIA_TYPE:
        return zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
    if descriptor.mediaType.endswith("+gzip") or descriptor.mediaType.endswith(".gzip"):
        return igzip.IGzipFile(fileobj=raw, mode="rb")
    return raw


def read_files(store: Store, descriptor: Descriptor, paths: set[str]) -> dict[str, bytes]:
    """The regular files among ``paths`` (no leading slash) that the layer contains.

    Stops reading once every path was seen; our layers are sorted, so ``etc/…`` comes early.
    """
    found: dict[str, bytes] = {}
    with open_layer(store, descriptor) as stream, tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            name = member.name.lstrip("./")
            if name in paths and member.isfile():
                extracted = archive.extractfile(member)
                assert extracted is not None
                found[name] = extracted.read()
                if len(found) == len(paths):
                    break
    return found
