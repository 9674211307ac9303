"""Kernel modules for dream's initramfs (dream.vm.modules, dream.vm.initramfs): a module's
``.modinfo`` read from its ELF file, the load order with dependencies, the /init script."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from dream.errors import DreamError
from dream.vm.initramfs import init_script, root_modules
from dream.vm.modules import builtin_names, load_order, modinfo, module_name


def elf_with_modinfo(info: bytes) -> bytes:
    """A minimal ELF64 file: a NULL section, .modinfo and the section-name table."""
    names = b"\0.modinfo\0.shstrtab\0"
    body_at = 64
    modinfo_at, names_at = body_at, body_at + len(info)
    shoff = names_at + len(names)
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x28, shoff)
    struct.pack_into("<HHH", header, 0x3A, 64, 3, 2)

    def section(name: int, offset: int, size: int) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name, 1, 0, 0, offset, size, 0, 0, 1, 0)

    sections = bytes(64) + section(1, modinfo_at, len(info)) + section(10, names_at, len(names))
    return bytes(header) + info + names + sections


def test_modinfo_fields() -> None:
    elf = elf_with_modinfo(b"license=GPL\0depends=virtio,virtio_ring\0alias=virtio:d00000002v*\0alias=x\0")
    info = modinfo(elf)
    assert info["depends"] == ["virtio,virtio_ring"] and info["alias"] == ["virtio:d00000002v*", "x"]
    with pytest.raises(ValueError):
        modinfo(b"MZ" + bytes(100))


def test_module_names() -> None:
    assert module_name("kernel/drivers/block/virtio_blk.ko") == "virtio_blk"
    assert module_name("kernel/x/crc32c-intel.ko.xz") == "crc32c_intel"
    assert builtin_names("kernel/fs/ext4/ext4.ko\n\nkernel/lib/crc-t10dif.ko\n") == {"ext4", "crc_t10dif"}


def test_load_order_puts_dependencies_first_once() -> None:
    files = {"virtio": "v.ko", "virtio_ring": "r.ko", "virtio_pci": "p.ko", "virtio_blk": "b.ko",
             "virtio_pci_modern_dev": "m.ko"}
    depends = {"virtio_pci": ["virtio_pci_modern_dev", "virtio", "virtio_ring"], "virtio_blk": ["virtio", "virtio_ring"],
               "virtio_ring": ["virtio"]}
    assert load_order(["virtio_pci", "virtio_blk"], files, depends, set()) == ["m.ko", "v.ko", "r.ko", "p.ko", "b.ko"]
    assert load_order(["virtio_blk"], files, depends, {"virtio", "virtio_ring"}) == ["b.ko"]


def test_load_order_errors() -> None:
    with pytest.raises(DreamError, match="neither built in nor shipped"):
        load_order(["virtio_blk"], {"virtio_blk": "b.ko"}, {"virtio_blk": ["virtio"]}, set())
    with pytest.raises(DreamError, match="circle"):
        load_order(["a"], {"a": "a.ko", "b": "b.ko"}, {"a": ["b"], "b": ["a"]}, set())


def test_root_modules_from_a_kernel_tree(tmp_path: Path) -> None:
    base = tmp_path / "usr" / "lib" / "modules" / "6.1.0-test"
    for name, depends in (("virtio", ""), ("virtio_ring", "virtio"), ("virtio_blk", "virtio,virtio_ring"),
                          ("virtio_pci", "virtio,virtio_ring")):
        path = base / "kernel" / "drivers" / f"{name}.ko"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(elf_with_modinfo(f"depends={depends}\0".encode()))
    (base / "modules.builtin").write_text("kernel/fs/ext4/ext4.ko\n")
    order = [p.name for p in root_modules(tmp_path, "6.1.0-test")]
    assert order == ["virtio.ko", "virtio_ring.ko", "virtio_pci.ko", "virtio_blk.ko"]


def test_init_script_loads_the_modules_then_switches_root() -> None:
    script = init_script(["/x/kernel/drivers/virtio.ko", "/x/kernel/drivers/virtio_blk.ko"])
    assert script.startswith("#!/bin/busybox sh\n")
    assert "for module in virtio.ko virtio_blk.ko; do" in script
    assert script.rstrip().endswith("exec $bb switch_root /root /sbin/init")
