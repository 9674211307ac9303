"""A layer's file tree before it becomes a tar: what goes where, with which metadata.

Builders fill a `Tree`; `tar.tar_chunks` turns it into bytes. Keeping metadata here (and not on
disk) is what lets a non-root user build root-owned files, and what makes the result independent
of the host's umask, uid and clock.
"""

from __future__ import annotations

import fnmatch
import posixpath
from dataclasses import dataclass, replace
from pathlib import Path

FILE, DIR, SYMLINK, HARDLINK, CHAR, BLOCK, FIFO = "file", "dir", "symlink", "hardlink", "char", "block", "fifo"


@dataclass(frozen=True)
class Entry:
    """One tar member. ``path`` is relative to the image root, without a leading slash."""

    path: str
    kind: str
    mode: int
    uid: int = 0
    gid: int = 0
    size: int = 0
    link: str = ""              # symlink target, or the path a hard link points at
    source: Path | None = None  # where a file's bytes are read from
    member: str = ""            # with ``source`` a zip archive (a wheel): the member holding them
    data: bytes | None = None   # or the bytes themselves
    devmajor: int = 0
    devminor: int = 0
    sha256: str = ""            # for a ``source``: the hex sha256 its bytes had when the layer's
                                # key was computed; the tar refuses other bytes (`tar_chunks`)
    xattrs: tuple[tuple[str, bytes], ...] = ()  # (name, value), sorted by name: PAX
                                # ``SCHILY.xattr.<name>`` records. Empty by default, so a
                                # builder that sets none writes the bytes it always did


def clean_path(path: str) -> str:
    """``/usr//bin/./x`` → ``usr/bin/x``; refuses paths that climb out of the root."""
    normal = posixpath.normpath(path.lstrip("/")) if path.strip("/") else "."
    if normal == ".":
        return ""
    if normal == ".." or normal.startswith("../"):
        raise ValueError(f"path escapes the image root: {path}")
    return normal


def target_climbs(depth: int, target: str) -> bool:
    """Whether the symlink ``target``, read from a directory ``depth`` levels below the root,
    climbs above the root with its ``..`` (lexically, as `dream.oci.safety` checks a layer).

    An absolute target never does: the runtime resolves it inside the container's root."""
    if target.startswith("/"):
        return False
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part and part != ".":
            depth += 1
    return False


def climbing_symlink(path: str, target: str) -> str | None:
    """Why a symlink at image path ``path`` to ``target`` is refused, or None when it is fine.

    A relative target that climbs above the image root makes a layer that dream itself (and
    other careful unpackers) refuse to unpack, so such an image could never be a ``from:`` base;
    the message names the absolute target a runtime would have clamped it to."""
    parts = [part for part in clean_path(path).split("/") if part]
    if not target_climbs(len(parts) - 1, target):
        return None
    meant = posixpath.normpath(posixpath.join("/", *parts[:-1], target))
    return (f"symlink target {target!r} climbs above the image root from /{'/'.join(parts)}; "
            f"write the absolute target it means ({meant}): absolute targets resolve inside the image")


class Tree:
    """Entries keyed by path; adding a path again replaces it (later wins)."""

    def __init__(self, label: str = "") -> None:
        self.entries: dict[str, Entry] = {}
        self.label = label  # "image/layer", for the one line that names a file that changed

    def add(self, entry: Entry) -> None:
        path = clean_path(entry.path)
        if not path:
            return  # the root directory itself is implicit
        self.entries[path] = replace(entry, path=path)

    def add_bytes(self, path: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
        self.add(Entry(path, FILE, mode, uid, gid, size=len(data), data=data))

    def add_dir(self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        self.add(Entry(path, DIR, mode, uid, gid))

    def add_symlink(self, path: str, target: str, uid: int = 0, gid: int = 0) -> None:
        self.add(Entry(path, SYMLINK, 0o777, uid, gid, link=target))

    def remove(self, path: str) -> None:
        """Remove ``path`` and everything below it."""
        path = clean_path(path)
        prefix = path + "/"
        for key in [k for k in self.entries if k == path or k.startswith(prefix)]:
            del self.entries[key]

    def remove_matching(self, pattern: str) -> None:
        """Remove the entries whose absolute path matches the glob ``pattern`` (and below them).

        One pass over the tree, each path checked against the matches by its ancestors: a
        Debian layer's `/usr/share/doc/*` matches thousands of its 7,500 entries, and removing
        them one `remove` at a time was quadratic (4 s of its build)."""
        matched = {p for p in self.entries if fnmatch.fnmatch("/" + p, pattern)}
        if matched:
            self.entries = {path: entry for path, entry in self.entries.items()
                            if not _at_or_below(path, matched)}

    def get(self, path: str) -> Entry | None:
        return self.entries.get(clean_path(path))

    def sorted_entries(self) -> list[Entry]:
        """All entries in tar order: sorted by path, missing parent directories added (0755).

        Hard links are re-pointed so the first path of each group in that order carries the
        bytes and the others link to it; a tar reader needs the target before the link.
        """
        entries = dict(self.entries)
        for path in list(entries):
            parent = posixpath.dirname(path)
            while parent and parent not in entries:
                entries[parent] = Entry(parent, DIR, 0o755)
                parent = posixpath.dirname(parent)
        _order_hardlinks(entries)
        return [entries[path] for path in sorted(entries)]


def _at_or_below(path: str, paths: set[str]) -> bool:
    """Whether ``path`` or one of its parent directories is in ``paths``."""
    while path:
        if path in paths:
            return True
        path = posixpath.dirname(path)
    return False


def _order_hardlinks(entries: dict[str, Entry]) -> None:
    groups: dict[str, list[str]] = {}
    for path, entry in entries.items():
        if entry.kind == HARDLINK:
            target = clean_path(entry.link)
            if target not in entries or entries[target].kind != FILE:
                raise ValueError(f"hard link {path} points at {entry.link}, which is not a file in the layer")
            groups.setdefault(target, []).append(path)
    for target, links in groups.items():
        first = min([target] + links)
        if first == target:
            continue
        entries[first] = replace(entries[target], path=first)
        for path in [target] + links:
            if path != first:
                entries[path] = replace(entries[path] if path != target else entries[first],
                                        path=path, kind=HARDLINK, link=first, size=0,
                                        source=None, member="", data=None, sha256="")
