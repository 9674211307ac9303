"""Read files back out of a stored layer blob, streaming (nothing is unpacked to disk)."""

from __future__ import annotations

from typing import IO

from dream.oci.blobs import BlobSource
from dream.oci.compress import decompressed
from dream.oci.descriptor import Descriptor


def open_layer(blobs: BlobSource, descriptor: Descriptor) -> IO[bytes]:
    """The uncompressed tar stream of a layer blob (fetched first if only a registry has it)."""
    return decompressed(open(blobs.local_blob(descriptor), "rb"), descriptor.mediaType)


def read_files(blobs: BlobSource, descriptor: Descriptor, paths: set[str]) -> dict[str, bytes]:
    """The regular files among ``paths`` (no leading slash) that the layer contains.

    Stops reading once every path was seen; our layers are sorted, so ``etc/…`` comes early.
    """
    found: dict[str, bytes] = {}
    import tarfile  # here: only a build that reads a layer pays for it
    with open_layer(blobs, descriptor) as stream, tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            name = member.name.removeprefix("./")
            if name in paths and member.isfile():
                extracted = archive.extractfile(member)
                assert extracted is not None
                found[name] = extracted.read()
                if len(found) == len(paths):
                    break
    return found
