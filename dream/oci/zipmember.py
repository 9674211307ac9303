"""A zip member's bytes for the tar stream, inflated by ISA-L.

A wheel layer's tar is mostly the wheels' members (`dream.python.install`), and inflating them
with zlib, as `zipfile` does, was the biggest single cost of the cuBLAS layer (856 MB out of a
581 MB wheel). ISA-L inflates the same deflate streams 2–3× faster and, like zlib, outside the
GIL. The local header is read to find where the member's data starts; stored and deflated
members (all a wheel holds in practice) are read here, any other method through `zipfile`.
`zipfile`'s CRC check is not repeated for these: the tar checks every member it reads this
way against the sha256 its wheel's RECORD gives (`dream.oci.tar`), which is stronger.

A deflated member can also be read as its raw deflate stream beside the bytes it inflates to
(`OpenArchive.deflated`): a gzip layer then takes that stream as one gzip member as it is,
instead of compressing the same bytes again (`dream.oci.compress`), and the zip's CRC-32 is
what checks it.
"""

from __future__ import annotations

import struct
import zipfile
from typing import Any, BinaryIO, Iterator, Protocol, cast

from isal import isal_zlib

LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, …, file name length, extra field length
READ = 1 << 20
INFLATED = 16 << 20
INFLATE_ERROR = cast(type[Exception], isal_zlib.error)  # its stub calls it an instance


class Reader(Protocol):
    """What the tar needs of a member: reads, as a context manager (`zipfile`'s members too)."""

    def read(self, size: int, /) -> bytes: ...
    def __enter__(self) -> Reader: ...
    def __exit__(self, *exc: Any) -> Any: ...


class OpenArchive:
    """One zip archive opened twice: `zipfile` for its central directory, a raw handle for
    reading members' data."""

    def __init__(self, path: str) -> None:
        self.zip = zipfile.ZipFile(path)
        self.raw: BinaryIO = open(path, "rb")

    def close(self) -> None:
        self.zip.close()
        self.raw.close()

    def open(self, member: str) -> Reader:
        info = self.zip.getinfo(member)
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or info.flag_bits & 0x1:
            return self.zip.open(info)
        self.raw.seek(self._data_start(info))
        return _Member(self.raw, info.compress_size, info.compress_type == zipfile.ZIP_DEFLATED)

    def deflated(self, member: str) -> RawDeflate | None:
        """``member``'s raw deflate stream, or None when it is not a plain deflated member."""
        info = self.zip.getinfo(member)
        if info.compress_type != zipfile.ZIP_DEFLATED or info.flag_bits & 0x1:
            return None
        return RawDeflate(self.raw, self._data_start(info), info.compress_size, info.CRC)

    def _data_start(self, info: zipfile.ZipInfo) -> int:
        """Where the member's data begins: after its local header, whose name and extra field
        may differ in length from the central directory's."""
        self.raw.seek(info.header_offset)
        signature, name_length, extra_length = LOCAL_HEADER.unpack(self.raw.read(LOCAL_HEADER.size))
        if signature != b"PK\x03\x04":
            raise zipfile.BadZipFile(f"no local header for {info.filename}")
        return info.header_offset + LOCAL_HEADER.size + name_length + extra_length


class _Member:
    """The file-like bytes of one member: ``read(n)`` returns at most ``n`` bytes, b"" at its end."""

    def __init__(self, raw: BinaryIO, compressed: int, deflated: bool) -> None:
        self.raw, self.left = raw, compressed
        self.inflate = isal_zlib.decompressobj(-15) if deflated else None
        self.flushed = False

    def __enter__(self) -> _Member:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def read(self, size: int) -> bytes:
        if self.inflate is None:
            data = self.raw.read(min(size, self.left))
            self.left -= len(data)
            return data
        while True:
            try:
                out = self._inflate_some(self.inflate, size)
            except INFLATE_ERROR as exc:
                raise zipfile.BadZipFile(f"damaged deflate data: {exc}") from None
            if out is None or out:
                return out or b""

    def _inflate_some(self, inflate: Any, size: int) -> bytes | None:
        """Up to ``size`` more bytes, b"" when this step made none, None at the member's end."""
        if inflate.unconsumed_tail:
            return bytes(inflate.decompress(inflate.unconsumed_tail, size))
        if self.left:
            data = self.raw.read(min(READ, self.left))
            if not data:
                raise zipfile.BadZipFile("truncated member data")
            self.left -= len(data)
            return bytes(inflate.decompress(data, size))
        if not self.flushed:
            self.flushed = True
            return bytes(inflate.flush())
        return None


class RawDeflate:
    """One member's deflate stream, read as ``(deflate bytes, inflated bytes)`` pairs
    (`pieces`): in order, the first parts make the stream, the second its content, at most
    `INFLATED` bytes of content a piece (a bound on memory that common ratios never reach:
    each piece of input past it is copied again), and either part possibly empty.

    Read bytes are handed out only once the next ones are read, so that the last can be cut
    where the stream ends: bytes after the deflate stream's last block (which zip readers
    ignore) never reach a gzip member. The zip's CRC-32 is checked at the end, so a damaged
    archive fails here even where the member's sha256 is not known; `crc` is then the
    content's CRC-32, which a gzip member's trailer holds."""

    def __init__(self, raw: BinaryIO, start: int, compressed: int, crc: int) -> None:
        self.raw, self.start, self.compressed, self.crc = raw, start, compressed, crc

    def pieces(self) -> Iterator[tuple[bytes, bytes]]:
        """The pairs, read from the stream's start (the archive's handle is shared: other
        members may have been read since this one was found)."""
        inflate = isal_zlib.decompressobj(-15)
        crc, pending, left = 0, b"", self.compressed
        self.raw.seek(self.start)
        try:
            while not inflate.eof:
                data = inflate.unconsumed_tail
                if not data:
                    data = self.raw.read(min(READ, left))
                    if not data:
                        raise zipfile.BadZipFile("truncated member data")
                    left -= len(data)
                    if pending:
                        yield pending, b""
                    pending = data
                plain = bytes(inflate.decompress(data, INFLATED))
                crc = isal_zlib.crc32(plain, crc)
                if plain:
                    yield b"", plain
            rest = bytes(inflate.flush())
        except INFLATE_ERROR as exc:
            raise zipfile.BadZipFile(f"damaged deflate data: {exc}") from None
        crc = isal_zlib.crc32(rest, crc)
        yield pending[:len(pending) - len(inflate.unused_data)], rest
        if crc != self.crc:
            raise zipfile.BadZipFile("CRC-32 differs from the archive's")
