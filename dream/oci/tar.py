"""Deterministic tar: the same `Tree` gives the same bytes on any machine, at any time.

Headers are built with `tarfile.TarInfo.tobuf` (PAX, so long and non-ASCII names work) and file
bytes are copied in 1 MiB reads; measured 3–4× faster than `tarfile` in stream mode
(shared research, image-anchors.md §5.2). Normalized: mtime from SOURCE_DATE_EPOCH (fixed
default), no user or group names, no atime/ctime, no host-specific PAX records.
"""

from __future__ import annotations

import tarfile
from typing import Iterator

from dream.oci.tree import BLOCK, CHAR, DIR, FIFO, FILE, HARDLINK, SYMLINK, Entry

CHUNK = 1 << 20
BLOCK_SIZE = 512
_TYPES = {FILE: tarfile.REGTYPE, DIR: tarfile.DIRTYPE, SYMLINK: tarfile.SYMTYPE,
          HARDLINK: tarfile.LNKTYPE, CHAR: tarfile.CHRTYPE, BLOCK: tarfile.BLKTYPE,
          FIFO: tarfile.FIFOTYPE}


def header(entry: Entry, mtime: int) -> bytes:
    """The tar header block(s) for one entry."""
    info = tarfile.TarInfo(entry.path + ("/" if entry.kind == DIR else ""))
    info.type = _TYPES[entry.kind]
    info.mode = entry.mode & 0o7777
    info.uid, info.gid = entry.uid, entry.gid
    info.uname = info.gname = ""
    info.mtime = mtime
    info.size = entry.size if entry.kind == FILE else 0
    info.linkname = entry.link if entry.kind in (SYMLINK, HARDLINK) else ""
    info.devmajor, info.devminor = entry.devmajor, entry.devminor
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def tar_chunks(entries: list[Entry], mtime: int) -> Iterator[bytes]:
    """Yield the tar stream of ``entries`` (already in order) in chunks of up to 1 MiB."""
    for entry in entries:
        yield header(entry, mtime)
        if entry.kind != FILE:
            continue
        if entry.data is not None:
            yield entry.data
            written = len(entry.data)
        else:
            written = 0
            assert entry.source is not None, entry.path
            with open(entry.source, "rb") as handle:
                while chunk := handle.read(CHUNK):
                    written += len(chunk)
                    yield chunk
        if written != entry.size:
            raise OSError(f"{entry.source or entry.path} changed size while being read "
                          f"({entry.size} → {written} bytes)")
        if written % BLOCK_SIZE:
            yield b"\0" * (BLOCK_SIZE - written % BLOCK_SIZE)
    yield b"\0" * (2 * BLOCK_SIZE)
