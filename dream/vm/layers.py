"""An image's layers, applied one on the other into one `Tree`, as a container runtime would.

The very blobs of the image's manifest are read (streamed and decompressed, never unpacked to
disk nor mounted), in order, with the OCI rules for a layer on top of the ones below it:

- ``.wh.<name>`` removes ``<name>`` (and what is below it) from the layers below;
- ``.wh..wh..opq`` in a directory removes everything the layers below put in it;
- whiteouts apply to the layers below only: a layer's own entries are added after them;
- a path written again replaces the earlier entry (a directory keeps what is below it);
- an entry whose parent is a symlink laid down earlier is written where the symlink points
  (inside the root: ``bin/x`` under a base's ``bin -> usr/bin`` lands on ``usr/bin/x``).

Small files stay in memory, large ones are copied to a scratch directory that the entry
points at (as dream/debian/unpack.py does), so assembling a root needs no privilege.
"""

from __future__ import annotations

import posixpath
import tarfile
from pathlib import Path
from typing import Any, Iterable

from dream.errors import DreamError
from dream.oci.blobs import BlobSource
from dream.oci.descriptor import Descriptor
from dream.oci.read import open_layer
from dream.oci.tree import BLOCK, CHAR, DIR, FIFO, FILE, HARDLINK, SYMLINK, Entry, Tree, clean_path
from dream.oci.unpack import OPAQUE, WHITEOUT

IN_MEMORY = 1 << 20
MAX_LINKS = 40  # symlinks followed resolving one path, as the kernel's limit


def resolve(tree: Tree, path: str) -> str:
    """``path`` with every symlink among its parent directories followed, inside the root."""
    parts = [p for p in path.split("/") if p]
    done: list[str] = []
    hops = 0
    while len(parts) > 1:
        head = parts.pop(0)
        candidate = "/".join(done + [head])
        entry = tree.entries.get(candidate)
        if entry is not None and entry.kind == SYMLINK:
            hops += 1
            if hops > MAX_LINKS:
                raise DreamError(f"too many symlinks resolving /{path}")
            base = "/" if entry.link.startswith("/") else "/" + "/".join(done)
            target = posixpath.normpath(posixpath.join(base, entry.link)).lstrip("/")
            done = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        if head == "..":
            if done:
                done.pop()
            continue
        done.append(head)
    return "/".join(done + parts)


def apply_layer(tree: Tree, members: Iterable[tuple[tarfile.TarInfo, Any]], scratch: Path) -> None:
    """One layer on top of ``tree``: ``members`` are (header, reader of its bytes or None)."""
    entries: list[Entry] = []
    removed: list[str] = []
    opaque: list[str] = []
    budget = [256 << 20]
    for number, (member, reader) in enumerate(members):
        try:
            path = clean_path(member.name)
        except ValueError as exc:
            raise DreamError(str(exc)) from None
        if not path:
            continue
        parent, name = posixpath.split(path)
        if name == OPAQUE:
            opaque.append(parent)
            continue
        if name.startswith(WHITEOUT):
            removed.append(posixpath.join(parent, name[len(WHITEOUT):]))
            continue
        entry = _entry(member, path, reader, scratch / str(number), budget)
        if entry is not None:
            entries.append(entry)
    for directory in opaque:
        where = resolve(tree, directory + "/x").rpartition("/")[0] if directory else ""
        prefix = where + "/" if where else ""
        for key in [k for k in tree.entries if k.startswith(prefix) and k != where]:
            del tree.entries[key]
    for path in removed:
        tree.remove(resolve(tree, path))
    for entry in entries:
        path = resolve(tree, entry.path)
        old = tree.entries.get(path)
        if entry.kind == DIR and old is not None and old.kind == SYMLINK:
            continue  # a directory over a symlink to one: the runtime keeps the symlink
        if old is not None and old.kind == DIR and entry.kind != DIR:
            tree.remove(path)
        if entry.kind == HARDLINK:
            entry = Entry(path, HARDLINK, entry.mode, entry.uid, entry.gid, link=resolve(tree, entry.link))
        tree.add(Entry(path, entry.kind, entry.mode, entry.uid, entry.gid, entry.size, entry.link,
                       entry.source, data=entry.data, devmajor=entry.devmajor, devminor=entry.devminor,
                       xattrs=entry.xattrs))


def _entry(member: tarfile.TarInfo, path: str, reader: Any, target: Path, budget: list[int]) -> Entry | None:
    common: dict[str, Any] = dict(mode=member.mode & 0o7777, uid=member.uid, gid=member.gid)
    xattrs = tuple(sorted((key[len("SCHILY.xattr."):], value.encode("utf-8", "surrogateescape"))
                          for key, value in member.pax_headers.items() if key.startswith("SCHILY.xattr.")))
    if member.isdir():
        return Entry(path, DIR, **common, xattrs=xattrs)
    if member.isfile():
        if member.size < IN_MEMORY and member.size <= budget[0]:
            budget[0] -= member.size
            return Entry(path, FILE, size=member.size, data=reader.read() if reader else b"", xattrs=xattrs, **common)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as out:
            while chunk := reader.read(1 << 20):
                out.write(chunk)
        return Entry(path, FILE, size=member.size, source=target, xattrs=xattrs, **common)
    if member.issym():
        return Entry(path, SYMLINK, 0o777, member.uid, member.gid, link=member.linkname)
    if member.islnk():
        try:
            return Entry(path, HARDLINK, link=clean_path(member.linkname), **common)
        except ValueError as exc:
            raise DreamError(str(exc)) from None
    if member.ischr() or member.isblk() or member.isfifo():
        kind = CHAR if member.ischr() else BLOCK if member.isblk() else FIFO
        return Entry(path, kind, devmajor=member.devmajor, devminor=member.devminor, **common)
    return None


def image_tree(blobs: BlobSource, layers: list[Descriptor], scratch: Path) -> Tree:
    """The root file system the image's ``layers`` (bottom first) make together."""
    tree = Tree("vm")
    for number, descriptor in enumerate(layers):
        with open_layer(blobs, descriptor) as stream, tarfile.open(fileobj=stream, mode="r|") as archive:
            def members() -> Iterable[tuple[tarfile.TarInfo, Any]]:
                for member in archive:
                    yield member, archive.extractfile(member) if member.isfile() else None
            try:
                apply_layer(tree, members(), scratch / f"layer{number}")
            except DreamError as exc:
                raise DreamError(f"layer {descriptor.digest[:19]}…: {exc}") from None
    return tree
