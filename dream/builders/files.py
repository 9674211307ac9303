"""`files` layers: host files and directories, inline text, links and empty directories.

Modes are normalized (0644, or 0755 for directories and host files with an execute bit) unless
the recipe sets one; owners are 0:0 unless it sets ``owner``. Host symlinks are kept as links;
later items replace earlier ones at the same path.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
from pathlib import Path
from dataclasses import replace
from typing import Any, NoReturn

from dream.builders.base import BuildContext
from dream.errors import DreamError
from dream.oci.tree import DIR, FILE, SYMLINK, Entry, Tree


class FilesBuilder:
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
        for item in ctx.layer.spec:
            uid, gid = (int(part) for part in item.get("owner", "0:0").split(":"))
            mode = int(item["mode"], 8) if "mode" in item else None
            dest = item["dest"]
            if "content" in item:
                tree.add_bytes(dest, item["content"].encode(), mode or 0o644, uid, gid)
            elif "symlink" in item:
                tree.add_symlink(dest, item["symlink"], uid, gid)
            elif "directory" in item:
                tree.add_dir(dest, mode or 0o755, uid, gid)
            else:
                add_host_path(tree, Path(item["src"]), dest, mode, uid, gid, item["exclude"])
        for path, entry in list(tree.entries.items()):
            if entry.kind == FILE and entry.source is not None:
                digest, size = _read_hash(entry.source, label)
                tree.entries[path] = replace(entry, sha256=digest, size=size)
        self._snapshots[id(ctx.layer)] = (ctx.layer, tree)
        return tree

    def key_inputs(self, ctx: BuildContext) -> Any:
        """Every entry's metadata plus the sha256 of every file's bytes (never host paths)."""
        return [[e.path, e.kind, e.mode, e.uid, e.gid, e.link, _content_hash(e)]
                for e in self._snapshot(ctx).sorted_entries()]

    def lock_inputs(self, layer: Any, recipe: Any) -> Any:
        return None

    def lock(self, layer: Any, recipe: Any, earlier: Any, previous: Any) -> Any:
        return None


def add_host_path(tree: Tree, source: Path, dest: str, mode: int | None, uid: int, gid: int,
                   exclude: list[str]) -> None:
    try:
        info = source.lstat()
    except OSError as exc:
        raise DreamError(f"cannot read {source}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        tree.add(_entry(source, dest, info, mode, uid, gid))
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
            try:
                info = path.lstat()
            except OSError as exc:
                _unreadable(exc)
            tree.add(_entry(path, f"{dest.rstrip('/')}/{relative}", info, mode, uid, gid))


def _excluded(relative: str, name: str, patterns: list[str]) -> bool:
    """A pattern with a ``/`` matches the path below ``src``; one without matches a name at any
    depth (as in .gitignore), so ``__pycache__`` drops every such directory."""
    return any(fnmatch.fnmatch(relative if "/" in pattern else name, pattern) for pattern in patterns)


def _entry(path: Path, dest: str, info: os.stat_result, mode: int | None, uid: int, gid: int) -> Entry:
    if stat.S_ISLNK(info.st_mode):
        try:
            target = os.readlink(path)
        except OSError as exc:
            _unreadable(exc)
        return Entry(dest, SYMLINK, 0o777, uid, gid, link=target)
    if stat.S_ISDIR(info.st_mode):
        return Entry(dest, DIR, 0o755, uid, gid)
    if not stat.S_ISREG(info.st_mode):
        raise DreamError(f"{path}: only regular files, directories and symlinks can be copied")
    default = 0o755 if info.st_mode & 0o111 else 0o644
    return Entry(dest, FILE, mode if mode is not None else default, uid, gid, size=info.st_size, source=path)


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
