"""The VM's own Debian packages (a kernel, systemd as init, udev, …), locked on top of the image.

They are resolved the way a `debian` layer's are (dream/debian/apt.py: the machine's apt
sources, dream's private apt state), but apt starts from the dpkg status *of the image* instead
of an empty one: it pins only what the image lacks (a second Debian layer over the image's),
and a package the image holds at an older version than a new one needs is pinned at the newer
version (an upgrade, which replaces the image's files of that package). The pins are the
lock's entry, fetched and verified like any layer's .debs (`Apt.fetch`).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from dream.debian.apt import Apt, Package, UnknownPackages
from dream.errors import DreamError

DEFAULT_PACKAGES = ["linux-image-cloud-amd64", "systemd-sysv", "udev", "dbus", "kmod", "busybox-static"]
"""A kernel (ext4 built in; virtio as modules), systemd as PID 1, udev (device units, module
autoloading), dbus (systemd-logind: the ACPI power button → poweroff), kmod (depmod, modprobe)
and a static busybox (the initramfs's /init)."""

# `Inst name (new …)` or, for an upgrade, `Inst name [old] (new …)`
_INST = re.compile(r"^Inst (\S+) (?:\[[^\]]*\] )?\((\S+) ")


class OverImage(Apt):
    """`Apt` whose dpkg status is the image's (a file of its own), not an empty one."""

    def __init__(self, architecture: str, status: bytes, suite: str | None = None) -> None:
        super().__init__(architecture, suite=suite)
        self._scratch = tempfile.TemporaryDirectory(prefix="dream-vm-apt-")
        self.status = Path(self._scratch.name) / "status"
        self.status.write_bytes(status)

    def _simulate(self, wanted: list[str], recommends: bool) -> list[tuple[str, str]]:
        flag = "--install-recommends" if recommends else "--no-install-recommends"
        try:
            plan = self._run("apt-get", "install", "--simulate", flag, *wanted)
        except DreamError as exc:
            unknown = re.findall(r"Unable to locate package (\S+)|Package '([^']+)' has no installation candidate",
                                 str(exc))
            if unknown:
                raise UnknownPackages([a or b for a, b in unknown]) from None
            raise
        return sorted({(m.group(1).split(":")[0], m.group(2)) for m in map(_INST.match, plan.splitlines()) if m})

    def close(self) -> None:
        self._scratch.cleanup()


def lock_vm_packages(status: bytes, packages: list[str], architecture: str = "amd64",
                     suite: str | None = None) -> dict[str, Any]:
    """The lock entry of the VM's packages over an image whose dpkg status is ``status``."""
    apt = OverImage(architecture, status, suite)
    try:
        apt.update()
        pinned = apt.resolve(packages, False, False)
    except UnknownPackages as exc:
        raise DreamError(f"vm.packages: no Debian package {exc.names[0]!r} in the apt sources") from None
    finally:
        apt.close()
    return {"architecture": architecture, **({"suite": suite} if suite else {}),
            "packages": [p.as_dict() for p in pinned]}


def status_of_locked(entries: list[dict[str, Any]]) -> bytes:
    """A dpkg status for the packages that the image's Debian layers lock (their lock entries),
    from apt's package lists (``apt-cache show name=version``): what `lock_vm_packages` needs,
    without building the image first. Stanzas in name order, each marked installed."""
    stanzas: dict[str, str] = {}
    for entry in entries:
        apt = Apt(entry["architecture"], suite=entry.get("suite"))
        apt.update()
        wanted = {(p["name"], p["version"]) for p in entry["packages"]}
        shown = apt._run("apt-cache", "show", *sorted(f"{n}={v}" for n, v in wanted))
        for stanza in shown.split("\n\n"):
            lines = [line for line in stanza.strip("\n").splitlines() if line]
            fields = {line.split(": ", 1)[0]: line.split(": ", 1)[-1] for line in lines if ": " in line and line[0] != " "}
            key = (fields.get("Package", ""), fields.get("Version", ""))
            if key in wanted and key[0] not in stanzas and fields.get("Architecture") in (entry["architecture"], "all"):
                stanzas[key[0]] = "\n".join([lines[0], "Status: install ok installed", *lines[1:]])
    return "".join(stanzas[name] + "\n\n" for name in sorted(stanzas)).encode()


def fetch_vm_packages(entry: dict[str, Any]) -> dict[str, Path]:
    """The locked .debs, from dream's download cache or through apt (verified by sha256)."""
    return Apt(entry["architecture"], suite=entry.get("suite")).fetch([Package(**p) for p in entry["packages"]])
