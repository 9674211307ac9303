"""Refuse layer tars that would write outside the directory they are unpacked into.

A base image pulled from a registry is input from outside: before anything unpacks one of its
layers, every entry is checked here against the classic tar escapes. Names that are absolute or
climb with ``..``; hard links to such paths; relative symlinks that climb above the layer root;
and entries that go *through* a symlink laid down earlier in the same layer (``link -> /etc``
then ``link/passwd``), which is how an unpacker that follows its own symlinks gets tricked.

What is allowed on purpose: absolute symlink targets (``/usr/bin/python3`` is normal in images;
the runtime resolves them inside the container root), device nodes (OCI allows them), and
whiteouts (``.wh.`` names), which are ordinary names here. Symlinks laid down by *earlier*
layers are not tracked: Debian's merged ``/usr`` (``lib -> usr/lib``) makes writing through
them normal across layers, and resolving those is the unpacker's job (inside its root).

The check is one pass over the headers, with names split once and symlinks kept in a set, so a
Debian layer's ~10k entries cost milliseconds beyond decompression.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Self, cast

import zstandard
from isal import igzip_lib

from dream.errors import DreamError
from dream.oci.compress import decompressed
from dream.oci.tree import target_climbs

# isal's stubs declare IsalError as an instance of Exception, not a class: say what it is
IsalError = cast(type[Exception], igzip_lib.IsalError)


def _parts(name: str) -> list[str]:
    """The components of a tar name, without a leading ``./``, empty or ``.`` components."""
    return [part for part in name.split("/") if part and part != "."]


def _through_symlink(parts: list[str], symlinks: set[str]) -> str | None:
    """The first proper ancestor of ``parts`` that is a known symlink, if any."""
    if not symlinks:
        return None
    prefix = ""
    for part in parts[:-1]:
        prefix = f"{prefix}/{part}" if prefix else part
        if prefix in symlinks:
            return prefix
    return None


def _escape(member: tarfile.TarInfo, parts: list[str], path: str, symlinks: set[str],
            ) -> str | None:
    """Why ``member`` (already split into ``parts``, joined as ``path``) is unsafe, or None."""
    name = member.name
    while name.startswith("./"):
        name = name[2:]
    if name.startswith("/"):
        return "absolute name"
    if ".." in parts:
        return "name climbs out with '..'"
    if not parts:
        return None if member.isdir() else "replaces the layer root"
    link = _through_symlink(parts, symlinks)
    if link is not None:
        return f"goes through symlink {link!r} laid down earlier in this layer"
    if path in symlinks and not member.issym():
        # tarfile and others open, chmod or mkdir the existing path, following the link.
        return f"replaces symlink {path!r} laid down earlier in this layer"
    if member.issym():
        # from the link's own directory; absolute targets resolve inside the container root
        if target_climbs(len(parts) - 1, member.linkname):  # the rule files layers are built by
            return f"symlink target {member.linkname!r} climbs above the layer root"
    elif member.islnk():
        target = member.linkname
        while target.startswith("./"):
            target = target[2:]
        if target.startswith("/"):
            return f"hard link to absolute path {member.linkname!r}"
        target_parts = _parts(target)
        if ".." in target_parts:
            return f"hard link target {member.linkname!r} climbs out with '..'"
        link = _through_symlink(target_parts, symlinks)
        if link is not None:
            return (f"hard link target {member.linkname!r} goes through symlink {link!r} "
                    "laid down earlier in this layer")
    return None


def check_members(members: Iterable[tarfile.TarInfo], label: str) -> int:
    """Raise `DreamError` on the first unsafe entry; return how many entries were checked.

    ``label`` names the layer in the message (an image and layer digest, say), which is one line:
    ``{label}: unsafe layer entry {name!r}: {why}``.
    """
    symlinks: set[str] = set()
    count = 0
    for member in members:
        count += 1
        parts = _parts(member.name)
        path = "/".join(parts)
        why = _escape(member, parts, path, symlinks)
        if why is not None:
            raise DreamError(f"{label}: unsafe layer entry {member.name!r}: {why}")
        if member.issym() or (member.islnk() and "/".join(_parts(member.linkname)) in symlinks):
            # A hard link to a symlink is another symlink (link(2) does not follow it).
            symlinks.add(path)
    return count


class _StrictTarInfo(tarfile.TarInfo):
    """A TarInfo whose bad headers fail the read instead of quietly ending it.

    `tarfile` treats a corrupt header after the first as the end of the archive. Another
    unpacker may read on past it, so stopping there would leave the rest of the layer unchecked.
    A zero block (the normal end) and the stream's end on a block boundary still end it.
    """

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> Self:
        try:
            return super().fromtarfile(tarfile_)
        # both are private to tarfile (typeshed omits them), and the only way to tell the
        # archive's normal end from a corrupt header
        except (tarfile.EOFHeaderError, tarfile.EmptyHeaderError):  # type: ignore[attr-defined]
            raise
        except tarfile.HeaderError as error:
            raise tarfile.ReadError(f"bad tar header at byte {tarfile_.offset}: {error}") from None


def _each(archive: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The archive's members one by one, forgetting each after use.

    Iterating a TarFile keeps every TarInfo in ``archive.members``; a layer of a million files
    would hold them all. Nothing here needs them again (no extraction, no link lookups).
    """
    while (member := archive.next()) is not None:
        archive.members.clear()  # type: ignore[attr-defined]  # undocumented: the list `next` appends to
        yield member


MAX_RATIO = 200  # uncompressed / compressed: real layers stay far below (a Debian base: ~3)
MIN_ALLOWANCE = 64 * 2**20  # small layers may expand more (a few KB of zeros)
MAX_EXPANDED = 256 * 2**30  # no layer, whatever its compressed size


def expansion_limit(compressed: int) -> int:
    """How many bytes a pulled layer of ``compressed`` bytes may decompress to: a 2 MB layer
    that expands to 2 GiB (a decompression bomb) is refused before it fills a disk."""
    return min(MAX_RATIO * compressed + MIN_ALLOWANCE, MAX_EXPANDED)


class _Bounded:
    """A read-only stream that fails once more than ``limit`` bytes came through."""

    def __init__(self, stream: IO[bytes], limit: int, label: str) -> None:
        self.stream, self.limit, self.label, self.seen = stream, limit, label, 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.seen += len(data)
        if self.seen > self.limit:
            raise DreamError(f"{self.label}: the layer expands past {self.limit:,} bytes "
                             f"({MAX_RATIO}× its compressed size + {MIN_ALLOWANCE // 2**20} MiB): "
                             "refused as a decompression bomb")
        return data


def check_layer_file(path: Path, media_type: str, label: str) -> int:
    """Check the layer blob at ``path`` with `check_members`; return how many entries it has.

    The blob is decompressed per ``media_type`` (the same `decompressed` that reads our own
    layers) and the tar read in stream mode (``r|``): file data is skipped as it streams by,
    so memory stays flat whatever the layer's size. A blob that does not decompress or is not
    a well-formed tar is a `DreamError` as well: what cannot be checked must not be unpacked.
    """
    limit = expansion_limit(path.stat().st_size)
    with decompressed(open(path, "rb"), media_type) as raw:
        stream = _Bounded(raw, limit, label)
        try:
            with tarfile.open(fileobj=cast(IO[bytes], stream), mode="r|", tarinfo=_StrictTarInfo) as archive:
                return check_members(_each(archive), label)
        except (tarfile.TarError, zstandard.ZstdError, IsalError, EOFError, OSError) as error:
            raise DreamError(f"{label}: unreadable layer: {error}") from None
