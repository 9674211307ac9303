"""One layer's tar unpacked into a directory that overlayfs can stack as a lower layer.

`run` layers execute over the image layers below them (dream/builders/sandbox.py): each of those
is unpacked once, by itself, and overlayfs stacks them, so a step costs no copy of the image.
For that, a layer's OCI whiteouts become overlayfs's own:

- ``.wh.<name>`` becomes a character device 0:0 named ``<name>`` (it hides ``<name>`` below);
- ``.wh..wh..opq`` becomes the ``trusted.overlay.opaque`` attribute ``y`` on its directory.

Owners, modes (setuid bits included), hard and symbolic links, device nodes, extended
attributes and mtimes are as the tar says. That takes root (owners, device nodes and
``trusted.*`` attributes), which the sandbox needs anyway.

What this does not do is apply a layer through the symlinks of the layers below it (``bin/x``
over a base's ``bin -> usr/bin``): each layer is unpacked alone, so its entries land at the
paths the tar names, and overlayfs shows a directory there. Members may not climb out of the
directory (``..``) nor go through a symlink of their own layer: either is refused, as is
anything but a file, directory, link or device.
"""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path
from typing import IO

from dream.errors import DreamError
from dream.oci.tree import clean_path

WHITEOUT = ".wh."  # OCI's marks, as dream/vm/layers.py reads them too
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
CHUNK = 1 << 20


def unpack_layer(stream: IO[bytes], target: Path) -> int:
    """Unpack the tar ``stream`` into the new directory ``target``; return the file bytes written."""
    target.mkdir(mode=0o755)
    directories: list[tuple[Path, tarfile.TarInfo]] = []
    written = 0
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            try:
                relative = clean_path(member.name)
            except ValueError as exc:
                raise DreamError(str(exc)) from None
            if not relative:
                continue
            parent_name, name = os.path.split(relative)
            parent = _directory(target, parent_name)
            path = parent / name
            if name == OPAQUE:
                os.setxattr(parent, OPAQUE_XATTR, b"y")
                continue
            if name.startswith(WHITEOUT):
                hidden = parent / name[len(WHITEOUT):]
                _clear(hidden)
                os.mknod(hidden, stat.S_IFCHR | 0o600, os.makedev(0, 0))
                continue
            if member.isdir():
                if not path.is_dir() or path.is_symlink():
                    _clear(path)
                    path.mkdir(mode=0o700)
                directories.append((path, member))
                continue
            _clear(path)
            if member.isfile():
                source = archive.extractfile(member)
                assert source is not None
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(descriptor, "wb") as out:
                    while chunk := source.read(CHUNK):
                        out.write(chunk)
                written += member.size
            elif member.issym():
                os.symlink(member.linkname, path)
            elif member.islnk():
                try:
                    os.link(target / clean_path(member.linkname), path, follow_symlinks=False)
                except (ValueError, OSError) as exc:
                    raise DreamError(f"/{relative}: its hard link to /{member.linkname} is not in the "
                                     f"layer ({exc})") from None
                continue  # a hard link shares its target's owner, mode and times
            elif member.ischr() or member.isblk() or member.isfifo():
                kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() else stat.S_IFIFO
                os.mknod(path, kind | 0o600, os.makedev(member.devmajor, member.devminor))
            else:
                raise DreamError(f"/{relative}: a tar member of type {member.type!r} cannot be unpacked")
            _metadata(path, member)
    for path, member in reversed(directories):  # children first: writing into one moves its mtime
        _metadata(path, member)
    return written


def _directory(target: Path, relative: str) -> Path:
    """``target/relative``, made (0755, root) where missing; never through a symlink."""
    path = target
    for part in (p for p in relative.split("/") if p):
        path = path / part
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            path.mkdir(mode=0o755)
            continue
        if not stat.S_ISDIR(mode):
            raise DreamError(f"/{relative}: the layer puts files below /{path.relative_to(target)}, "
                             "which it made a symlink or a file")
    return path


def _clear(path: Path) -> None:
    """Remove what a later member at the same path replaces (a directory only if empty)."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        path.rmdir()
    else:
        path.unlink()


def _metadata(path: Path, member: tarfile.TarInfo) -> None:
    os.lchown(path, member.uid, member.gid)
    if not member.issym():
        os.chmod(path, member.mode & 0o7777)  # after chown, which clears setuid bits
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            os.setxattr(path, key[len("SCHILY.xattr."):], value.encode("utf-8", "surrogateescape"),
                        follow_symlinks=False)
    os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
