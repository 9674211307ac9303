"""Read files back out of a stored layer blob, streaming (nothing is unpacked to disk)."""

from __future__ import annotations

import tarfile
from typing import IO

import zstandard
from isal import igzip

from dream.oci.compress import ZSTD_MEDIA_TYPE
from dream.store import Descriptor, Store


def decompressed(raw: IO[bytes], media_type: str) -> IO[bytes]:
    """The uncompressed stream of a layer blob ``raw`` with ``media_type``; it owns ``raw``.

    The one place that maps a layer media type to its decompressor, so that reading our own
    layers and checking pulled ones can never disagree about what a blob contains. Closing the
    result closes ``raw`` whatever the type. zstd reads fill across frame boundaries instead of
    coming back short at each one: zstd:chunked layers (as pushed by podman) are many frames.
    """
    if media_type == ZSTD_MEDIA_TYPE:
        return zstandard.ZstdDecompressor().stream_reader(raw, closefd=True,
                                                          read_across_frames=True)
    if media_type.endswith(("+gzip", ".gzip")):  # OCI, Docker v2
        stream = igzip.IGzipFile(fileobj=raw, mode="rb")
        # GzipFile never closes a fileobj it was given; `myfileobj` is what it closes itself.
        stream.myfileobj = raw  # type: ignore[assignment]
        return stream
    return raw


def open_layer(store: Store, descriptor: Descriptor) -> IO[bytes]:
    """The uncompressed tar stream of a layer blob (fetched first if only a registry has it)."""
    return decompressed(open(store.local_blob(descriptor), "rb"), descriptor.mediaType)


def read_files(store: Store, descriptor: Descriptor, paths: set[str]) -> dict[str, bytes]:
    """The regular files among ``paths`` (no leading slash) that the layer contains.

    Stops reading once every path was seen; our layers are sorted, so ``etc/…`` comes early.
    """
    found: dict[str, bytes] = {}
    with open_layer(store, descriptor) as stream, tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            name = member.name.removeprefix("./")
            if name in paths and member.isfile():
                extracted = archive.extractfile(member)
                assert extracted is not None
                found[name] = extracted.read()
                if len(found) == len(paths):
                    break
    return found
