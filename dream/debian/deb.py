"""Read a .deb in-process: its control area's files and its data tar, as dpkg-deb gives them.

A .deb is an ``ar`` archive (``!<arch>\\n``, then per member a 60-byte header and its bytes,
padded to an even length) holding ``debian-binary``, ``control.tar[.gz|.xz|.zst]`` and
``data.tar[.gz|.xz|.zst|.bz2]``. Reading it here, not with three ``dpkg-deb`` runs per package
(405 processes for the reference image's 135 packages), lets packages unpack in threads (lzma,
zlib, bz2 and zstd release the GIL) and file bytes go straight into the tree. The ar reader is
these few lines rather than a dependency: on PyPI, arpy would be a pin for ~30 lines, and
python-debian is GPL and a whole toolkit for what is two members and `tarfile` here.

Every way a .deb can be damaged (not an ar, truncated, a member missing, a compression dpkg
does not write, bytes that do not decompress) is a `DreamError` naming the file: one line.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import os
import posixpath
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Protocol

import zstandard

from dream.errors import DreamError

MAGIC = b"!<arch>\n"
HEADER = 60


class _Readable(Protocol):
    """All tarfile's stream mode asks of a file: ``read``."""

    def read(self, size: int = -1, /) -> bytes: ...


_CODECS: dict[str, Callable[[BinaryIO], _Readable]] = {
    "": lambda raw: raw,
    ".gz": lambda raw: gzip.GzipFile(fileobj=raw),  # rare in Debian (xz): zlib's speed will do
    ".xz": lambda raw: lzma.LZMAFile(raw),
    ".bz2": lambda raw: bz2.BZ2File(raw),
    ".zst": lambda raw: zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True),
}
_CONTROL_CODECS = ("", ".gz", ".xz", ".zst")  # dpkg writes no control.tar.bz2
_DAMAGED = (EOFError, OSError, lzma.LZMAError, zlib.error, zstandard.ZstdError)


@dataclass(frozen=True)
class Member:
    """Where one ar member's bytes lie in the file."""

    name: str
    offset: int
    size: int


class Deb:
    """One .deb, its members indexed on opening (only headers are read)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.members = _index(path, self._damaged)
        first = next(iter(self.members.values()), None)
        if first is None or first.name != "debian-binary":
            raise self._damaged("its first member is not debian-binary")
        version = self._read(first)
        if not version.startswith(b"2."):
            raise self._damaged(f"format version {version.strip()[:20]!r}, not 2.x")

    def control_files(self) -> dict[str, bytes]:
        """The control area's regular files by name (``control``, ``postinst``, ``md5sums`` …)."""
        files: dict[str, bytes] = {}
        with self._tar("control.tar", _CONTROL_CODECS) as archive:
            for info in archive:
                source = archive.extractfile(info) if info.isfile() else None
                if source is not None:
                    files[posixpath.normpath(info.name).lstrip("/")] = source.read()
        if "control" not in files:
            raise self._damaged("its control.tar has no control file")
        return files

    def data(self) -> contextlib.AbstractContextManager[tarfile.TarFile]:
        """The data tar in stream mode: the bytes ``dpkg-deb --fsys-tarfile`` prints."""
        return self._tar("data.tar", tuple(_CODECS))

    @contextlib.contextmanager
    def _tar(self, stem: str, codecs: tuple[str, ...]) -> Iterator[tarfile.TarFile]:
        member = next((m for m in self.members.values() if m.name.startswith(stem)), None)
        if member is None:
            raise self._damaged(f"it has no {stem} member")
        suffix = member.name.removeprefix(stem)
        if suffix not in codecs:
            raise self._damaged(f"unknown compression of its {member.name} member")
        with open(self.path, "rb", buffering=0) as handle:
            raw = io.BufferedReader(_Slice(handle.fileno(), member), 1 << 16)
            stream = _Reported(_CODECS[suffix](raw), lambda exc: self._damaged(f"{member.name}: {exc}"))
            try:
                with tarfile.open(fileobj=stream, mode="r|") as archive:
                    yield archive
            except tarfile.TarError as exc:
                raise self._damaged(f"{member.name}: {exc}") from None

    def _read(self, member: Member) -> bytes:
        with open(self.path, "rb", buffering=0) as handle:
            return os.pread(handle.fileno(), member.size, member.offset)

    def _damaged(self, problem: str) -> DreamError:
        return DreamError(f"{self.path}: damaged .deb: {problem}")


def _index(path: Path, damaged: Callable[[str], DreamError]) -> dict[str, Member]:
    """The ar members in file order; the header fields other than name and size are unused."""
    members: dict[str, Member] = {}
    with open(path, "rb") as handle:
        if handle.read(len(MAGIC)) != MAGIC:
            raise damaged("not an ar archive")
        end = os.fstat(handle.fileno()).st_size
        offset = len(MAGIC)
        while offset < end:
            header = os.pread(handle.fileno(), HEADER, offset)
            if len(header) < HEADER or header[58:60] != b"`\n" or not header[48:58].strip().isdigit():
                raise damaged(f"bad ar member header at byte {offset}")
            name = header[:16].decode("ascii", "replace").rstrip(" ").removesuffix("/")
            size = int(header[48:58])
            if offset + HEADER + size > end:
                raise damaged(f"truncated in its {name} member")
            members.setdefault(name, Member(name, offset + HEADER, size))
            offset += HEADER + size + size % 2
    return members


class _Slice(io.RawIOBase):
    """One member's bytes as a file of its own."""

    def __init__(self, fd: int, member: Member) -> None:
        self._fd, self._position, self._end = fd, member.offset, member.offset + member.size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = os.pread(self._fd, min(len(buffer), self._end - self._position), self._position)
        buffer[:len(data)] = data
        self._position += len(data)
        return len(data)


class _Reported(io.RawIOBase):
    """A decompressing stream whose codec errors become `DreamError`s naming the .deb."""

    def __init__(self, inner: _Readable, damaged: Callable[[BaseException], DreamError]) -> None:
        self._inner, self._damaged = inner, damaged

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            return self._inner.read(size)
        except _DAMAGED as exc:
            raise self._damaged(exc) from None
