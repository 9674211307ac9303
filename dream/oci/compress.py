"""Pinned, deterministic layer compressors.

gzip uses ISA-L at level 1 (~1 GB/s here, 10–20× Python's zlib level 6, which is never used);
zstd uses level 3 in multi-threaded mode, whose output does not depend on the thread count.
Library versions are part of every layer's input key, so an upgrade that changes bytes
rebuilds layers instead of silently changing digests.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import IO, Protocol, cast

import isal
import zstandard
from isal import igzip, isal_zlib

from dream.oci.mediatypes import LAYER_GZIP as GZIP_MEDIA_TYPE
from dream.oci.mediatypes import LAYER_ZSTD as ZSTD_MEDIA_TYPE


class Compressor(Protocol):
    def compress(self, data: bytes) -> bytes: ...
    def flush(self) -> bytes: ...


@dataclass(frozen=True)
class Codec:
    """A compression choice: its name, media type, and what pins its output bytes."""

    name: str
    media_type: str
    fingerprint: str

    def compressor(self) -> Compressor:
        if self.name == "gzip":
            # wbits 31 = gzip container; ISA-L writes mtime 0 and OS 255, so no clock leaks in.
            return isal_zlib.compressobj(1, zlib.DEFLATED, 31)
        return zstandard.ZstdCompressor(level=3, threads=-1, write_checksum=False).compressobj()


CODECS = {
    "gzip": Codec("gzip", GZIP_MEDIA_TYPE, f"isal-{isal.__version__}-gzip-1"),
    "zstd": Codec("zstd", ZSTD_MEDIA_TYPE, f"zstandard-{zstandard.__version__}-libzstd-"
                  f"{'.'.join(map(str, zstandard.ZSTD_VERSION))}-3-mt"),
}


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
        return cast(IO[bytes], stream)  # a BufferedIOBase, which typeshed does not count as IO
    return raw
