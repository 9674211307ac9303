"""Kernel modules: which ones the root disk needs, in load order, and depmod's index files.

A kernel .deb ships its modules but no ``modules.dep``: the package's postinst runs depmod.
dream runs no maintainer script, so:

- the initramfs's few modules come with their dependencies from each module's own
  ``.modinfo`` section (``depends=``), read here from the ELF file (`modinfo`, `load_order`);
- the root disk's ``modules.dep``/``modules.alias`` and their ``.bin`` indexes (what udev needs to
  load a device's driver by its modalias) are written by the *disk's own* depmod: kmod from the
  locked packages, run from the assembled root directory through that root's dynamic loader
  (``ld.so --argv0 depmod``), without chroot or privilege. Its output depends only on the
  modules, so two builds write the same bytes.
"""

from __future__ import annotations

import posixpath
import struct
from pathlib import Path
from typing import Mapping

from dream.errors import DreamError
from dream.vm.rootexec import run_from_root

KMOD = "usr/bin/kmod"


def module_name(path: str) -> str:
    """``kernel/drivers/block/virtio_blk.ko`` → ``virtio_blk`` (``-`` and ``_`` are one)."""
    name = posixpath.basename(path)
    for suffix in (".ko", ".ko.xz", ".ko.zst", ".ko.gz"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.replace("-", "_")


def modinfo(elf: bytes) -> dict[str, list[str]]:
    """The ``key=value`` strings of a module's ``.modinfo`` section (ELF64 little-endian)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise ValueError("not a little-endian ELF64 file")
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

    def section(index: int) -> tuple[int, int, int]:
        base = shoff + index * shentsize
        name, = struct.unpack_from("<I", elf, base)
        offset, size = struct.unpack_from("<QQ", elf, base + 0x18)
        return name, offset, size

    _, names_at, _ = section(shstrndx)
    for index in range(shnum):
        name, offset, size = section(index)
        end = elf.index(b"\0", names_at + name)
        if elf[names_at + name:end] == b".modinfo":
            info: dict[str, list[str]] = {}
            for item in elf[offset:offset + size].split(b"\0"):
                key, sep, value = item.decode("utf-8", "replace").partition("=")
                if sep:
                    info.setdefault(key, []).append(value)
            return info
    return {}


def load_order(wanted: list[str], modules: Mapping[str, str], depends: Mapping[str, list[str]],
               builtin: set[str]) -> list[str]:
    """The module files to insmod for ``wanted`` (names), dependencies first.

    ``modules`` maps a name to its file, ``depends`` a name to the names its ``.modinfo``
    says it needs; a name built into the kernel (``modules.builtin``) needs nothing."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        name = name.replace("-", "_")
        if name in builtin or modules.get(name) in order:
            return
        if name not in modules:
            raise DreamError(f"kernel module {name} ({' → '.join(chain + (name,))}) is neither "
                             "built in nor shipped by the kernel package")
        if name in visiting:
            raise DreamError(f"kernel modules depend on each other in a circle: {' → '.join(chain + (name,))}")
        visiting.add(name)
        for dependency in depends.get(name, []):
            visit(dependency, chain + (name,))
        visiting.discard(name)
        order.append(modules[name])

    for name in wanted:
        visit(name, ())
    return order


def builtin_names(text: str) -> set[str]:
    """The names in ``modules.builtin`` (one module path a line)."""
    return {module_name(line) for line in text.splitlines() if line.strip()}


def run_depmod(root: Path, release: str) -> None:
    """depmod for ``lib/modules/<release>`` below ``root``, by ``root``'s own kmod."""
    run_from_root(root, KMOD, "depmod", ["-b", str(root), "-C", str(root / "etc" / "depmod.d"), release],
                  f"depmod for the VM's kernel {release}", "add kmod to vm.packages")
