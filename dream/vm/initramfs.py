"""dream's own initramfs: the few modules the root disk needs, a static busybox and a 20-line
/init that loads them, mounts the root and hands over to systemd.

Debian's cloud kernel has ext4 (and crc32c) built in but virtio_pci and virtio_blk as modules
(its /boot/config-*), so without an initramfs the kernel cannot see /dev/vda. Everything comes
from the assembled root (the locked packages): busybox from ``busybox-static``, the modules
from the kernel package, their dependencies from each module's ``.modinfo``. The archive is
`dream.vm.cpio`'s: sorted, root-owned, one mtime, so the same root gives the same bytes.

A failure in /init (a module that does not load, no root device after 5 s) prints one line
and exits; the kernel panics, and with ``panic=-1`` and QEMU's ``-no-reboot`` the VM ends.
"""

from __future__ import annotations

from pathlib import Path

from dream.errors import DreamError
from dream.vm.cpio import Member, archive
from dream.vm.modules import builtin_names, load_order, modinfo, module_name

ROOT_MODULES = ["virtio_pci", "virtio_blk"]
BUSYBOX = "usr/bin/busybox"

INIT = """\
#!/bin/busybox sh
# dream's initramfs: load the root disk's modules, mount the root, start its init.
bb=/bin/busybox
$bb mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev
$bb mount -t proc -o nosuid,nodev,noexec proc /proc
root=/dev/vda
for arg in $($bb cat /proc/cmdline); do
  case "$arg" in root=*) root="${arg#root=}" ;; esac
done
for module in @MODULES@; do
  $bb insmod "/lib/modules/$module" || { echo "dream initramfs: insmod $module failed"; exit 1; }
done
tries=0
while [ ! -b "$root" ]; do
  tries=$((tries + 1))
  [ "$tries" -gt 500 ] && { echo "dream initramfs: no root device $root"; exit 1; }
  $bb sleep 0.01
done
$bb mount -t ext4 -o rw "$root" /root || { echo "dream initramfs: cannot mount $root"; exit 1; }
$bb umount /proc
$bb mount -o move /dev /root/dev
exec $bb switch_root /root /sbin/init
"""


def kernel_release(root: Path) -> str:
    """The one kernel release below ``usr/lib/modules`` of the assembled root."""
    modules = root / "usr" / "lib" / "modules"
    releases = sorted(p.name for p in modules.iterdir() if p.is_dir()) if modules.is_dir() else []
    if len(releases) != 1:
        raise DreamError(f"the VM's root must hold exactly one kernel, it has {len(releases)} "
                         f"({', '.join(releases) or 'none'}): add one linux-image package to vm.packages")
    return releases[0]


def init_script(modules: list[str]) -> str:
    return INIT.replace("@MODULES@", " ".join(Path(m).name for m in modules))


def root_modules(root: Path, release: str, wanted: list[str] = ROOT_MODULES) -> list[Path]:
    """The module files for ``wanted``, dependencies first."""
    base = root / "usr" / "lib" / "modules" / release
    files = {module_name(p.name): p for p in sorted(base.glob("kernel/**/*.ko"))}
    needed: dict[str, list[str]] = {}

    def depends(name: str) -> list[str]:
        if name not in needed and name in files:
            needed[name] = [d for d in modinfo(files[name].read_bytes()).get("depends", [""])[0].split(",") if d]
        return needed.get(name, [])

    builtin_file = base / "modules.builtin"
    builtin = builtin_names(builtin_file.read_text()) if builtin_file.exists() else set()
    # read the .modinfo of the modules the wanted ones can reach, no more
    todo, seen = list(wanted), set()
    while todo:
        name = todo.pop().replace("-", "_")
        if name not in seen:
            seen.add(name)
            todo += depends(name)
    order = load_order(wanted, {n: str(p) for n, p in files.items()}, needed, builtin)
    return [Path(p) for p in order]


def build_initramfs(root: Path, release: str, wanted: list[str] = ROOT_MODULES, mtime: int = 0) -> bytes:
    """The initramfs (an uncompressed newc cpio) for the kernel ``release`` of ``root``."""
    busybox = root / BUSYBOX
    if not busybox.is_file():
        raise DreamError("the VM's root has no /usr/bin/busybox: add busybox-static to vm.packages")
    modules = root_modules(root, release, wanted)
    names = [p.name for p in modules]
    if len(set(names)) != len(names):
        raise DreamError(f"two of the initramfs's modules have one file name: {', '.join(names)}")
    members = [Member.file("init", init_script([str(p) for p in modules]).encode(), 0o755),
               Member.file("bin/busybox", busybox.read_bytes(), 0o755),
               Member.symlink("bin/sh", "busybox"),
               Member.directory("dev"), Member.char_device("dev/console", 5, 1),
               Member.directory("proc"), Member.directory("sys"), Member.directory("root")]
    members += [Member.file(f"lib/modules/{p.name}", p.read_bytes()) for p in modules]
    return archive(members, mtime)
