"""A deployment's VM settings (the recipe's ``vm:`` mapping), normalized, with their defaults."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from dream.errors import DreamError
from dream.vm.packages import DEFAULT_PACKAGES

DEFAULT_EXCLUDE = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
                   "/usr/share/lintian/*", "/boot/System.map-*")
"""Left out of the VM's own packages, as the presets' Debian layers leave them out."""

_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]i?B?|[kmgt])?\s*$")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(value: int | str, what: str) -> int:
    """``512M``, ``2G``, ``1GiB`` or a number of bytes → bytes (binary units)."""
    if isinstance(value, bool):
        raise DreamError(f"{what}: a size like 512M or 2G, not {value!r}")
    if isinstance(value, int):
        return value
    match = _SIZE.match(value)
    if match is None:
        raise DreamError(f"{what}: a size like 512M or 2G, not {value!r}")
    return int(match.group(1)) * _UNITS[(match.group(2) or "")[:1].upper()]


@dataclass(frozen=True)
class VmSpec:
    """``packages``: the VM's own Debian packages over the image's; ``memory`` in MiB;
    ``disk_size``: the root disk's bytes; ``data_size``: the persistent data disk's."""

    packages: tuple[str, ...] = tuple(DEFAULT_PACKAGES)
    memory: int = 512
    cpus: int = 2
    disk_size: int = 1 << 30
    data_size: int = 1 << 30
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE

    def key_inputs(self) -> dict[str, Any]:
        """What changes the disk's bytes (memory and CPUs do not: they are QEMU's flags)."""
        return {"packages": list(self.packages), "disk_size": self.disk_size, "exclude": list(self.exclude)}


def vm_spec(settings: Mapping[str, Any] | None) -> VmSpec:
    """The ``vm:`` mapping (packages added to the defaults, sizes as ``512M``/``2G``)."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - {"packages", "memory", "cpus", "disk_size", "data_size", "exclude"})
    if unknown:
        raise DreamError(f"vm: unknown setting {unknown[0]!r} (packages, memory, cpus, disk_size, data_size, exclude)")
    packages = list(DEFAULT_PACKAGES) + [p for p in settings.get("packages", []) if p not in DEFAULT_PACKAGES]
    memory = parse_size(settings.get("memory", "512M"), "vm.memory") // (1 << 20)
    cpus = settings.get("cpus", 2)
    if not isinstance(cpus, int) or isinstance(cpus, bool) or not 1 <= cpus <= 64:
        raise DreamError(f"vm.cpus: a whole number from 1 to 64, not {cpus!r}")
    disk = parse_size(settings.get("disk_size", "1G"), "vm.disk_size")
    data = parse_size(settings.get("data_size", "1G"), "vm.data_size")
    if memory < 128:
        raise DreamError("vm.memory: at least 128M (systemd and the services need it)")
    for name, size in (("disk_size", disk), ("data_size", data)):
        if size < 64 << 20 or size % 4096:
            raise DreamError(f"vm.{name}: at least 64M, a multiple of 4K")
    exclude = tuple(DEFAULT_EXCLUDE) + tuple(p for p in settings.get("exclude", []) if p not in DEFAULT_EXCLUDE)
    return VmSpec(tuple(packages), memory, cpus, disk, data, exclude)
