"""`files` layers: host files and directories, inline text, links and empty directories.

Modes are normalized (0644, or 0755 for directories and host files with an execute bit) unless
the recipe sets one; owners are 0:0 unless it sets ``owner``. Host symlinks are kept as links
(never ones whose relative target climbs above the image root), host hard links as tar hard
links, and the extended attributes an image needs (file capabilities, ``user.*``) as PAX
records; later items replace earlier ones at the same path.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import stat
from pathlib import Path
from dataclasses import replace
from typing import Any, NoReturn

from dream.builders.base import BuildContext, LayerBuilder
from dream.errors import DreamError
from dream.oci.tree import DIR, FILE, HARDLINK, SYMLINK, Entry, Tree, climbing_symlink

Inode = tuple[int, int]  # (st_dev, st_ino)


class FilesBuilder(LayerBuilder):
    """Its key and its tar come from one read of the files: `key_inputs` takes a snapshot
    (entries with the size and sha256 of every file, from the same read) and `tree` gives that
    snapshot back, so the tar holds exactly what the key describes; the tar re-hashes each file
    as it streams it and refuses bytes that changed since (`dream.oci.tar.SourceChanged`)."""

    kind = "files"
    version = "2"
    needs_lock = False

    def __init__(self) -> None:
        # id(layer spec) → (the spec, its latest snapshot): the one its job's input key came
        # from (dream.tasks makes one job per layer spec and computes its key once, first)
        self._snapshots: dict[int, tuple[Any, Tree]] = {}

    def tree(self, ctx: BuildContext, scratch: Path | None = None) -> Tree:
        kept = self._snapshots.get(id(ctx.layer))
        if kept is not None and kept[0] is ctx.layer:
            return kept[1]
        return self._snapshot(ctx)

    def _snapshot(self, ctx: BuildContext) -> Tree:
        label = f"{ctx.recipe.name}/{ctx.layer.name}"
        tree = Tree(label)
        inodes: dict[Path, Inode] = {}
        for index, item in enumerate(ctx.layer.spec):
            uid, gid = (int(part) for part in item.get("owner", "0:0").split(":"))
            mode = int(item["mode"], 8) if "mode" in item else None
            dest = item["dest"]
            if "content" in item:
                tree.add_bytes(dest, item["content"].encode(), mode or 0o644, uid, gid)
            elif "symlink" in item:
                why = climbing_symlink(dest, item["symlink"])
                if why is not None:  # the loader refuses it first; this covers specs made in code
                    raise DreamError(why, ctx.layer.places.get(f"[{index}].symlink", ctx.layer.location),
                                     f"layers.{ctx.layer.name}.files[{index}].symlink")
                tree.add_symlink(dest, item["symlink"], uid, gid)
            elif "directory" in item:
                tree.add_dir(dest, mode or 0o755, uid, gid)
            else:
                add_host_path(tree, Path(item["src"]), dest, mode, uid, gid, item["exclude"],
                              xattrs=True, inodes=inodes)
        _link_hard(tree, inodes)
        for path, entry in list(tree.entries.items()):
            if entry.kind == FILE and entry.source is not None:
                digest, size = _read_hash(entry.source, label)
                tree.entries[path] = replace(entry, sha256=digest, size=size)
        self._snapshots[id(ctx.layer)] = (ctx.layer, tree)
        return tree

    def key_inputs(self, ctx: BuildContext) -> Any:
        """Every entry's metadata plus the sha256 of every file's bytes (never host paths).

        Hard links are rows of kind ``hardlink`` naming the file they link to, so the key
        changes with the link structure. Extended attributes (name, hex value) end a row only
        when there are some: the key of a layer without any stays what it was before they were
        kept (the bytes of such a layer did not change either), while one with some gets a new
        key, as its bytes are new."""
        rows: list[list[Any]] = []
        for e in self._snapshot(ctx).sorted_entries():
            row: list[Any] = [e.path, e.kind, e.mode, e.uid, e.gid, e.link, _content_hash(e)]
            if e.xattrs:
                row.append([[name, value.hex()] for name, value in e.xattrs])
            rows.append(row)
        return rows


def add_host_path(tree: Tree, source: Path, dest: str, mode: int | None, uid: int, gid: int,
                   exclude: list[str], xattrs: bool = False, inodes: dict[Path, Inode] | None = None,
                   ) -> None:
    """Add the host file or directory tree ``source`` at ``dest``.

    Opt-in, so that other builders that copy a scratch tree (wheel installs) keep their bytes:
    ``xattrs`` keeps the extended attributes of files and directories below ``source`` (see
    `host_xattrs`); ``inodes`` collects the (st_dev, st_ino) of files with several hard links,
    for `_link_hard` once every item of the layer is in the tree."""
    try:
        info = source.lstat()
    except OSError as exc:
        raise DreamError(f"cannot read {source}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        tree.add(_entry(source, dest, info, mode, uid, gid, xattrs, inodes))
        return
    tree.add_dir(dest, 0o755, uid, gid)
    for directory, dirnames, filenames in os.walk(source, onerror=_unreadable):
        dirnames.sort()
        base = Path(directory)
        for name in sorted(dirnames + filenames):
            path = base / name
            relative = path.relative_to(source).as_posix()
            if _excluded(relative, name, exclude):
                if name in dirnames:
                    dirnames.remove(name)
                continue
            _utf8(name, path)
            try:
                info = path.lstat()
            except OSError as exc:
                _unreadable(exc)
            tree.add(_entry(path, f"{dest.rstrip('/')}/{relative}", info, mode, uid, gid, xattrs, inodes))


def _utf8(text: str, path: Path, what: str = "its name") -> None:
    """Refuse a name that is not UTF-8 (os gives its bytes as surrogate escapes): the layer's
    key and an OCI tar's names are UTF-8, and no reader agrees on anything else."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise DreamError(f"{shown}: {what} is not UTF-8; rename it, or exclude it from the layer") from None


def _excluded(relative: str, name: str, patterns: list[str]) -> bool:
    """A pattern with a ``/`` matches the path below ``src``; one without matches a name at any
    depth (as in .gitignore), so ``__pycache__`` drops every such directory."""
    return any(fnmatch.fnmatch(relative if "/" in pattern else name, pattern) for pattern in patterns)


def _entry(path: Path, dest: str, info: os.stat_result, mode: int | None, uid: int, gid: int,
           xattrs: bool = False, inodes: dict[Path, Inode] | None = None) -> Entry:
    if stat.S_ISLNK(info.st_mode):
        try:
            target = os.readlink(path)
        except OSError as exc:
            _unreadable(exc)
        _utf8(target, path, "its symlink target")
        why = climbing_symlink(dest, target)
        if why is not None:
            raise DreamError(f"{path}: {why}")
        return Entry(dest, SYMLINK, 0o777, uid, gid, link=target)
    kept = host_xattrs(path) if xattrs else ()
    if stat.S_ISDIR(info.st_mode):
        return Entry(dest, DIR, 0o755, uid, gid, xattrs=kept)
    if not stat.S_ISREG(info.st_mode):
        raise DreamError(f"{path}: only regular files, directories and symlinks can be copied")
    if inodes is not None and info.st_nlink > 1:
        inodes[path] = (info.st_dev, info.st_ino)
    default = 0o755 if info.st_mode & 0o111 else 0o644
    return Entry(dest, FILE, mode if mode is not None else default, uid, gid, size=info.st_size,
                 source=path, xattrs=kept)


def _kept_xattr(name: str) -> bool:
    """File capabilities (what ``setcap`` sets: ping, a server binding port 80) and the user
    namespace; not ``security.selinux`` and the like, which label the build host, not the image."""
    return name == "security.capability" or name.startswith("user.")


_NO_XATTRS = (errno.ENOTSUP, errno.EOPNOTSUPP)


def host_xattrs(path: Path) -> tuple[tuple[str, bytes], ...]:
    """The kept extended attributes of ``path`` (not followed if a symlink), sorted by name.

    A file system without extended attributes has none; one removed between listing and reading
    is gone. A name with ``=`` cannot be a PAX keyword (Go's tar refuses it too): one line."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _NO_XATTRS:
            return ()
        _unreadable(exc)
    kept: list[tuple[str, bytes]] = []
    for name in sorted(filter(_kept_xattr, names)):
        if "=" in name:
            raise DreamError(f"{path}: extended attribute {name!r} cannot be stored in a layer "
                             "(its name holds '=')")
        try:
            kept.append((name, os.getxattr(path, name, follow_symlinks=False)))
        except OSError as exc:
            if exc.errno not in (errno.ENODATA, *_NO_XATTRS):
                _unreadable(exc)
    return tuple(kept)


def _link_hard(tree: Tree, inodes: dict[Path, Inode]) -> None:
    """Files of the layer that are one host inode become one file and tar hard links to it.

    Grouped once every item is in the tree, so a path a later item replaced is no longer part
    of a group; only files with the same mode, owner and extended attributes are grouped, since
    a hard link shares its target's (an item's ``mode`` or ``owner`` that differs keeps a copy).
    The first path in tar order carries the bytes, as `Tree.sorted_entries` wants."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    for path, entry in tree.entries.items():
        if entry.kind == FILE and entry.source is not None and entry.source in inodes:
            same = (inodes[entry.source], entry.mode, entry.uid, entry.gid, entry.xattrs)
            groups.setdefault(same, []).append(path)
    for paths in groups.values():
        first, *others = sorted(paths)
        for path in others:
            tree.entries[path] = replace(tree.entries[path], kind=HARDLINK, link=first, size=0, source=None)


def _unreadable(exc: OSError) -> NoReturn:
    """A directory or file of a source tree that cannot be read stops the build (os.walk would
    skip it silently, and the layer would lack its contents)."""
    raise DreamError(f"cannot read {exc.filename}: {exc.strerror or exc}") from None


def _read_hash(path: Path, label: str) -> tuple[str, int]:
    """sha256 and size of a file's bytes, from one read."""
    digest, size = hashlib.sha256(), 0
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise DreamError(f"layer {label}: cannot read {path}: {exc.strerror or exc}") from None
    return digest.hexdigest(), size


def _content_hash(entry: Entry) -> str:
    if entry.kind != FILE:
        return ""
    if entry.data is not None:
        return hashlib.sha256(entry.data).hexdigest()
    assert entry.sha256, entry.path
    return entry.sha256
