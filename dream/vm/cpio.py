"""A deterministic cpio archive in the "newc" format (the one the kernel unpacks as initramfs).

Members are written sorted by path, parents first (missing parent directories are added,
0755), owned by root, with one fixed mtime, inode numbers counted from 1 in that order and
every link count 1 (2 for a directory): the bytes depend only on the members given. The
kernel's unpacker (init/initramfs.c) reads regular files, directories, symlinks and device
nodes; a device node is only a header, so no privilege is needed to write ``dev/console``.

Format (cpio(5), "New ASCII Format"): a 110-byte header ``070701`` + 13 fields of 8 hex
digits, the NUL-terminated name, padding to a multiple of 4, the data, padding to 4; the
archive ends with the member ``TRAILER!!!``.
"""

from __future__ import annotations

import posixpath
import stat
from dataclasses import dataclass

MAGIC = b"070701"
TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Member:
    """One archive member: ``path`` relative to the root (no leading slash)."""

    path: str
    mode: int                  # the full st_mode: type bits and permissions
    data: bytes = b""          # a file's bytes, or a symlink's target
    rdevmajor: int = 0
    rdevminor: int = 0

    @staticmethod
    def file(path: str, data: bytes, perm: int = 0o644) -> "Member":
        return Member(path, stat.S_IFREG | perm, data)

    @staticmethod
    def directory(path: str, perm: int = 0o755) -> "Member":
        return Member(path, stat.S_IFDIR | perm)

    @staticmethod
    def symlink(path: str, target: str) -> "Member":
        return Member(path, stat.S_IFLNK | 0o777, target.encode())

    @staticmethod
    def char_device(path: str, major: int, minor: int, perm: int = 0o600) -> "Member":
        return Member(path, stat.S_IFCHR | perm, b"", major, minor)


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def header(ino: int, member: Member, name: str, mtime: int) -> bytes:
    """One member's header, name and the name's padding."""
    encoded = name.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(member.mode) else 1
    fields = [ino, member.mode, 0, 0, nlink, mtime, len(member.data), 0, 0,
              member.rdevmajor, member.rdevminor, len(encoded), 0]
    head = MAGIC + b"".join(f"{value:08x}".encode() for value in fields) + encoded
    return head + _pad(len(head))


def _clean(path: str) -> str:
    normal = posixpath.normpath(path.lstrip("/"))
    if normal in ("", ".") or normal == ".." or normal.startswith("../"):
        raise ValueError(f"cpio member path {path!r} is not below the root")
    return normal


def archive(members: list[Member], mtime: int = 0) -> bytes:
    """The archive of ``members`` (a path given twice: the later one wins)."""
    by_path: dict[str, Member] = {}
    for member in members:
        path = _clean(member.path)
        by_path[path] = Member(path, member.mode, member.data, member.rdevmajor, member.rdevminor)
    for path in list(by_path):
        parent = posixpath.dirname(path)
        while parent and parent not in by_path:
            by_path[parent] = Member.directory(parent)
            parent = posixpath.dirname(parent)
    out = bytearray()
    for ino, path in enumerate(sorted(by_path), start=1):
        member = by_path[path]
        out += header(ino, member, path, mtime)
        out += member.data + _pad(len(member.data))
    out += header(0, Member(TRAILER, 0), TRAILER, 0)
    return bytes(out)


def read(data: bytes) -> list[Member]:
    """The members of a newc archive (for tests and checks), the trailer left out."""
    members: list[Member] = []
    offset = 0
    while True:
        if data[offset:offset + 6] != MAGIC:
            raise ValueError(f"no newc header at offset {offset}")
        fields = [int(data[offset + 6 + 8 * i: offset + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        start = offset + 110
        name = data[start:start + namesize - 1].decode()
        body = start + namesize + (-(110 + namesize) % 4)
        if name == TRAILER:
            return members
        members.append(Member(name, fields[1], data[body:body + filesize], fields[9], fields[10]))
        offset = body + filesize + (-filesize % 4)
