"""The VM's packages over the image's (dream.vm.packages): apt's plan read with upgrades."""

from __future__ import annotations

from dream.vm.packages import _INST, DEFAULT_PACKAGES


def test_install_and_upgrade_lines_are_both_pinned() -> None:
    plan = ("NOTE: This is only a simulation!\n"
            "Inst udev (252.39-1~deb12u2 Debian:12.12/stable [amd64])\n"
            "Inst libsystemd0 [252.30-1~deb12u2] (252.39-1~deb12u2 Debian:12.12/stable [amd64])\n"
            "Conf udev (252.39-1~deb12u2 Debian:12.12/stable [amd64])\n")
    found = [(m.group(1), m.group(2)) for m in map(_INST.match, plan.splitlines()) if m]
    assert found == [("udev", "252.39-1~deb12u2"), ("libsystemd0", "252.39-1~deb12u2")]


def test_defaults_hold_a_kernel_an_init_and_the_initramfs_tools() -> None:
    assert DEFAULT_PACKAGES[0] == "linux-image-cloud-amd64"
    assert {"systemd-sysv", "udev", "dbus", "kmod", "busybox-static"} <= set(DEFAULT_PACKAGES)
