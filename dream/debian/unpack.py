"""Unpack .debs into a `Tree` without running any maintainer script.

File bytes go to a staging directory (the tree's entries point at them); ownership, modes and
link targets stay in the tree, so no root privilege is needed to unpack. Paths are laid out
merged-/usr (``/bin`` → ``usr/bin`` …), as debootstrap does for bookworm and later.
"""

from __future__ import annotations

import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dream.errors import DreamError
from dream.oci.tree import BLOCK, CHAR, DIR, FIFO, FILE, HARDLINK, SYMLINK, Entry, Tree, clean_path

MERGED_USR = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


@dataclass
class Unpacked:
    """What unpacking left: the tree, each package's control text, files and postinst."""

    tree: Tree
    staging: Path
    control: dict[str, str] = field(default_factory=dict)
    files: dict[str, list[str]] = field(default_factory=dict)
    postinst: dict[str, str] = field(default_factory=dict)


def merged_usr(path: str) -> str:
    """``bin/sh`` → ``usr/bin/sh``; other paths unchanged."""
    top, _, rest = path.partition("/")
    return f"usr/{top}/{rest}".rstrip("/") if top in MERGED_USR else path


def unpack(debs: dict[str, Path], staging: Path) -> Unpacked:
    """Unpack every deb (in name order) into one tree; file bytes land under ``staging``."""
    result = Unpacked(Tree(), staging)
    for number, (name, deb) in enumerate(sorted(debs.items())):
        result.control[name] = _deb_text(deb, "-f")
        result.postinst[name] = _control_member(deb, "postinst")
        result.files[name] = _unpack_one(deb, staging / str(number), result.tree)
    for top in MERGED_USR:
        if result.tree.get(f"usr/{top}") is not None:
            result.tree.add_symlink(top, f"usr/{top}")
    return result


def _deb_text(deb: Path, *args: str) -> str:
    run = subprocess.run(["dpkg-deb", *args, str(deb)], capture_output=True, text=True)
    if run.returncode != 0:
        raise DreamError(f"{deb.name}: dpkg-deb {' '.join(args)} failed: {run.stderr.strip()}")
    return run.stdout


def _control_member(deb: Path, member: str) -> str:
    run = subprocess.run(["dpkg-deb", "--info", str(deb), member], capture_output=True, text=True)
    return run.stdout if run.returncode == 0 else ""


def _unpack_one(deb: Path, staging: Path, tree: Tree) -> list[str]:
    staging.mkdir(parents=True, exist_ok=True)
    listed: list[str] = []
    process = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert process.stdout is not None
    try:
        with tarfile.open(fileobj=process.stdout, mode="r|") as archive:
            for number, member in enumerate(archive):
                original = clean_path(member.name)
                if not original:
                    continue
                listed.append("/" + original)  # dpkg records the path as the package ships it
                path = merged_usr(original)
                common: dict[str, Any] = dict(mode=member.mode, uid=member.uid, gid=member.gid)
                if member.isdir():
                    tree.add(Entry(path, DIR, **common))
                elif member.isfile():
                    target = staging / str(number)
                    with archive.extractfile(member) as source, open(target, "wb") as out:  # type: ignore[union-attr]
                        while chunk := source.read(1 << 20):
                            out.write(chunk)
                    tree.add(Entry(path, FILE, size=member.size, source=target, **common))
                elif member.issym():
                    tree.add(Entry(path, SYMLINK, 0o777, member.uid, member.gid, link=member.linkname))
                elif member.islnk():
                    tree.add(Entry(path, HARDLINK, link=merged_usr(clean_path(member.linkname)), **common))
                elif member.ischr() or member.isblk() or member.isfifo():
                    kind = CHAR if member.ischr() else BLOCK if member.isblk() else FIFO
                    tree.add(Entry(path, kind, devmajor=member.devmajor, devminor=member.devminor, **common))
    except (tarfile.TarError, ValueError) as exc:
        raise DreamError(f"{deb.name}: cannot unpack: {exc}") from None
    finally:
        process.stdout.close()
        if process.wait() != 0:
            raise DreamError(f"{deb.name}: dpkg-deb --fsys-tarfile failed")
    return listed

