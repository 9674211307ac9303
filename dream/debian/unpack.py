"""Unpack .debs into a `Tree` without running any maintainer script.

A file's bytes stay in its tree entry, or for a large one go to a staging directory that the
entry points at (the ld.so.cache fix-up hard-links those into ldconfig's scratch root);
ownership, modes and link targets stay in the tree, so no root privilege is needed to unpack.
Paths are laid out merged-/usr (``/bin`` → ``usr/bin`` …), as debootstrap does for bookworm and
later.

Packages are read in threads (`dream.debian.deb`: decompression and file writes release the
GIL) and applied to the tree one after the other in name order, so a path two packages ship
ends as the later one's, whatever thread finished first.
"""

from __future__ import annotations

import tarfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dream.debian.deb import Deb
from dream.errors import DreamError
from dream.oci.compress import usable_cores
from dream.oci.tree import BLOCK, CHAR, DIR, FIFO, FILE, HARDLINK, SYMLINK, Entry, Tree, clean_path

MERGED_USR = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
JOBS = 4  # lzma is ~3/4 of the work and runs outside the GIL, tar parsing holds it: more
          # threads than this would mostly wait for the GIL (and there are layers in parallel)
MEMORY_BUDGET = 512 << 20  # at most this many bytes of one unpack's files in memory; the rest staged
IN_MEMORY = 1 << 20  # smaller files stay in memory: 7,513 of 7,538 in the reference image's
                     # layer (153 of 212 MB); creating that many staged files took seconds


@dataclass
class Unpacked:
    """What unpacking left: the tree, each package's control text, files and postinst."""

    tree: Tree
    staging: Path
    control: dict[str, str] = field(default_factory=dict)
    files: dict[str, list[str]] = field(default_factory=dict)
    postinst: dict[str, str] = field(default_factory=dict)


@dataclass
class _Package:
    """One .deb read: its control text, postinst, listed paths and the entries to add."""

    control: str
    postinst: str
    files: list[str]
    entries: list[Entry]


def merged_usr(path: str) -> str:
    """``bin/sh`` → ``usr/bin/sh``; other paths unchanged."""
    top, _, rest = path.partition("/")
    return f"usr/{top}/{rest}".rstrip("/") if top in MERGED_USR else path


def unpack(debs: dict[str, Path], staging: Path) -> Unpacked:
    """Unpack every deb (in name order) into one tree; large files' bytes land under ``staging``."""
    result = Unpacked(Tree(), staging)
    names = sorted(debs)
    pool = ThreadPoolExecutor(min(JOBS, usable_cores()), thread_name_prefix="unpack")
    budget = _Budget(MEMORY_BUDGET)
    try:
        read = pool.map(_read_package, names, [debs[n] for n in names],
                        [staging / str(number) for number in range(len(names))], [budget] * len(names))
        for name, package in zip(names, read):
            result.control[name], result.postinst[name] = package.control, package.postinst
            result.files[name] = package.files
            for entry in package.entries:
                result.tree.add(entry)
    finally:
        pool.shutdown(cancel_futures=True)  # on a failure, the packages not yet started never are
    for top in MERGED_USR:
        if result.tree.get(f"usr/{top}") is not None:
            result.tree.add_symlink(top, f"usr/{top}")
    return result


class _Budget:
    """Bytes of file content the unpack may still keep in memory, shared by its threads: a
    layer of many small files (or several Debian layers at once) never holds more than this."""

    def __init__(self, size: int) -> None:
        self.left, self.lock = size, threading.Lock()

    def take(self, size: int) -> bool:
        with self.lock:
            if size > self.left:
                return False
            self.left -= size
            return True


def _read_package(name: str, path: Path, staging: Path, budget: _Budget) -> _Package:
    try:
        deb = Deb(path)
        control = deb.control_files()
        files, entries = _data(deb, staging, budget)
        return _Package(_text(control["control"], path, "control"),
                        control.get("postinst", b"").decode("utf-8", "replace"), files, entries)
    except DreamError as exc:
        raise DreamError(f"Debian package {name}: {exc}") from None


def _text(data: bytes, path: Path, member: str) -> str:
    """Control fields are UTF-8 (Debian policy 5.1): they go into /var/lib/dpkg/status as text."""
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise DreamError(f"{path}: its {member} file is not UTF-8 ({exc.reason} at byte {exc.start})") from None


def _data(deb: Deb, staging: Path, budget: _Budget) -> tuple[list[str], list[Entry]]:
    """The data tar's paths as the package ships them, and its entries laid out merged-/usr."""
    listed: list[str] = []
    entries: list[Entry] = []
    with deb.data() as archive:
        for number, member in enumerate(archive):
            try:
                original = clean_path(member.name)
                if not original:
                    continue
                listed.append("/" + original)  # dpkg records the path as the package ships it
                entry = _entry(archive, member, merged_usr(original), staging / str(number), budget)
            except ValueError as exc:  # a path or hard link that climbs out of the root
                raise DreamError(f"{deb.path}: {exc}") from None
            if entry is not None:
                entries.append(entry)
    return listed, entries


def _entry(archive: tarfile.TarFile, member: tarfile.TarInfo, path: str, target: Path,
           budget: _Budget) -> Entry | None:
    """The tree entry for one data tar member (None for a kind a layer cannot hold); a small
    file's bytes stay in memory while the budget lasts, others are copied to ``target``."""
    common: dict[str, Any] = dict(mode=member.mode, uid=member.uid, gid=member.gid)
    if member.isdir():
        return Entry(path, DIR, **common)
    if member.isfile():
        with archive.extractfile(member) as source:  # type: ignore[union-attr]
            if member.size < IN_MEMORY and budget.take(member.size):
                return Entry(path, FILE, size=member.size, data=source.read(), **common)
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as out:
                while chunk := source.read(1 << 20):
                    out.write(chunk)
        return Entry(path, FILE, size=member.size, source=target, **common)
    if member.issym():
        return Entry(path, SYMLINK, 0o777, member.uid, member.gid, link=member.linkname)
    if member.islnk():
        return Entry(path, HARDLINK, link=merged_usr(clean_path(member.linkname)), **common)
    if member.ischr() or member.isblk() or member.isfifo():
        kind = CHAR if member.ischr() else BLOCK if member.isblk() else FIFO
        return Entry(path, kind, devmajor=member.devmajor, devminor=member.devminor, **common)
    return None
