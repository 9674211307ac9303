"""QEMU's side of `run:vm` (dream.vm.qemu): the command line, the KVM probe's decision, the
port forwards, QMP against a stand-in server, the console's text, the data disk."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from dream.errors import DreamError
from dream.vm import qemu
from dream.vm.qemu import Machine, console_line, forwards, kvm_works, qemu_argv


def machine(**changes: object) -> Machine:
    base = dict(kernel=Path("/s/kernel"), initrd=Path("/s/initrd"), disk=Path("/s/disk"), data=Path("/v/data.ext4"),
                cmdline="console=ttyS0 root=/dev/vda", memory=768, cpus=2, forwards={15100: 5100, 16379: 6379},
                qmp=Path("/tmp/q/qmp.sock"), name="dream-db-app")
    base.update(changes)
    return Machine(**base)  # type: ignore[arg-type]


def option(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv) if word == flag]


def test_tcg_command_line() -> None:
    argv = qemu_argv("qemu-system-x86_64", machine(), "tcg")
    assert argv[:3] == ["qemu-system-x86_64", "-nodefaults", "-no-user-config"]
    assert option(argv, "-accel") == ["tcg"] and option(argv, "-cpu") == ["max"]
    assert option(argv, "-m") == ["768"] and option(argv, "-smp") == ["2"]
    assert option(argv, "-kernel") == ["/s/kernel"] and option(argv, "-initrd") == ["/s/initrd"]
    assert option(argv, "-append") == ["console=ttyS0 root=/dev/vda"]
    drives = option(argv, "-drive")
    assert drives[0] == "file=/s/disk,format=raw,if=virtio,snapshot=on,cache=unsafe"  # the blob is never written
    assert drives[1] == "file=/v/data.ext4,format=raw,if=virtio"
    assert option(argv, "-netdev") == ["user,id=net0,ipv6=off,hostfwd=tcp:127.0.0.1:15100-:5100,"
                                       "hostfwd=tcp:127.0.0.1:16379-:6379"]
    assert option(argv, "-qmp") == ["unix:/tmp/q/qmp.sock,server=on,wait=off"]
    assert option(argv, "-serial") == ["chardev:console"] and "-no-reboot" in argv
    assert option(argv, "-chardev") == ["stdio,id=console,signal=off"]  # Ctrl-C is ours, not QEMU's


def test_kvm_command_line_and_no_data_disk() -> None:
    argv = qemu_argv("qemu", machine(data=None, forwards={}), "kvm")
    assert option(argv, "-accel") == ["kvm"] and option(argv, "-cpu") == ["host"]
    assert len(option(argv, "-drive")) == 1 and option(argv, "-netdev") == ["user,id=net0,ipv6=off"]


def test_commas_in_paths_are_doubled() -> None:
    argv = qemu_argv("qemu", machine(disk=Path("/a,b/disk")), "tcg")
    assert option(argv, "-drive")[0].startswith("file=/a,,b/disk,format=raw")


def test_kvm_probe_verdict() -> None:
    assert kvm_works(b"SeaBIOS\r\n[    0.000000] Linux version 6.1.0-57-cloud-amd64 (debian-kernel@...")
    assert not kvm_works(b"")  # hung after the BIOS: nothing on the serial console in 2 s
    assert not kvm_works(b"qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\n")


def test_probe_command_boots_the_kernel_under_kvm() -> None:
    argv = qemu.probe_argv("qemu", Path("/s/kernel"))
    assert option(argv, "-accel") == ["kvm"] and option(argv, "-kernel") == ["/s/kernel"]
    assert option(argv, "-serial") == ["stdio"] and "-no-reboot" in argv


def test_accelerator_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    def probe(binary: str, kernel: Path, seconds: float = 2.0) -> bool:
        calls.append(kernel)
        return False

    monkeypatch.setattr(qemu, "probe_kvm", probe)
    monkeypatch.setattr(qemu, "_ACCEL", {})
    assert qemu.choose_accel("qemu", Path("/k1"), {}) == "tcg"
    assert qemu.choose_accel("qemu", Path("/k1"), {}) == "tcg"
    assert calls == [Path("/k1")]  # probed once a process
    assert qemu.choose_accel("qemu", Path("/k2"), {"DREAM_VM_ACCEL": "KVM"}) == "kvm"
    assert calls == [Path("/k1")]
    with pytest.raises(DreamError, match="kvm or tcg"):
        qemu.choose_accel("qemu", Path("/k1"), {"DREAM_VM_ACCEL": "hvf"})


def test_probe_without_usable_dev_kvm_is_tcg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qemu.os, "access", lambda path, mode: False)
    assert qemu.probe_kvm("/nonexistent/qemu", Path("/k")) is False


def test_forwards() -> None:
    assert forwards([5100, 6379]) == {5100: 5100, 6379: 6379}
    assert forwards([5100, 6379], 10000) == {15100: 5100, 16379: 6379}
    with pytest.raises(DreamError, match="outside 1-65535"):
        forwards([60000], 10000)


def test_console_line_drops_colours_and_carriage_returns() -> None:
    assert console_line(b"[\x1b[0;32m  OK  \x1b[0m] Started \x1b[0;1;39mdbus\x1b[0m.\r") == "[  OK  ] Started dbus."
    assert console_line(b"caf\xc3\xa9 \xff") == "caf\u00e9 \ufffd"


def test_qmp_handshake_then_command(tmp_path: Path) -> None:
    path = tmp_path / "qmp.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    seen: list[str] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn, conn.makefile("rwb") as stream:
            stream.write(b'{"QMP": {"version": {}, "capabilities": []}}\n')
            stream.flush()
            for _ in range(2):
                seen.append(json.loads(stream.readline())["execute"])
                stream.write(b'{"event": "POWERDOWN", "timestamp": {}}\n{"return": {}}\n')
                stream.flush()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        assert qemu.qmp(path, "system_powerdown") == {"return": {}}
    finally:
        thread.join(5)
        server.close()
    assert seen == ["qmp_capabilities", "system_powerdown"]


def test_data_disk_is_made_once(tmp_path: Path) -> None:
    if shutil.which("mke2fs") is None and not Path("/sbin/mke2fs").exists():
        pytest.skip("e2fsprogs not installed")
    disk = tmp_path / "vm" / "data.ext4"
    assert qemu.ensure_data_disk(disk, 64 << 20, "dream-data") is True
    assert disk.stat().st_size == 64 << 20
    label = subprocess.run(["dumpe2fs", "-h", str(disk)], capture_output=True, text=True).stdout
    assert "Filesystem volume name:   dream-data" in label
    disk.write_bytes(b"kept")
    assert qemu.ensure_data_disk(disk, 64 << 20, "dream-data") is False and disk.read_bytes() == b"kept"
