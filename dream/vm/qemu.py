"""Boot a built VM with QEMU: direct kernel boot, the console streamed, a clean ACPI poweroff.

- Accelerator: KVM only where it really runs a guest. ``/dev/kvm`` can exist while the CPU
  has no virtualization extensions (``-accel kvm`` then hangs after the BIOS), so the choice is
  a 2-second probe (`probe_kvm`): the kernel under ``-accel kvm`` must print its first line on
  the serial console; otherwise TCG. ``DREAM_VM_ACCEL=kvm|tcg`` overrides the probe.
- Disks: the root is the store's disk blob itself, opened with ``snapshot=on`` (QEMU's own
  copy-on-write overlay in a temporary qcow2 file, dropped when QEMU ends), so the built disk is
  never written and every boot starts from the same bytes. Persistent volumes live on a
  separate data disk (``<state>/data.ext4``, made once, labelled ``dream-data``) that the VM
  mounts at /var/lib/dream/data: it is what a second boot keeps.
- Network: user-mode (no root, no bridge); each of the deployment's ports is forwarded from
  127.0.0.1 only (``hostfwd=tcp:127.0.0.1:H-:P``, H = P + the port offset); in the guest a
  socket unit carries 10.0.2.15:P to 127.0.0.1:P, where the model's services listen.
- Console: the serial port on QEMU's stdout, each line printed as ``vm | …`` (and kept in
  ``<state>/console.log``); the guest's journal is forwarded there, so every service's output
  shows. The line ``dream-vm: ready <deployment>`` (dream-vm-ready.service, after every unit of
  the deployment target started and passed its readiness) marks "all ready".
- Stop: Ctrl-C (or SIGTERM) presses the ACPI power button over QMP (``system_powerdown``);
  systemd-logind powers off, stopping the units within their grace periods. QEMU ends with the
  guest. If it has not after the VM's grace (the longest stop grace period + a margin), QMP
  ``quit``, then SIGKILL: no QEMU is ever left behind.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

from dream.errors import DreamError

QEMU = "qemu-system-x86_64"
PROBE_SECONDS = 2.0
PREFIX = "vm | "
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|[\x00-\x08\x0b-\x1f\x7f]")
_ACCEL: dict[str, str] = {}  # kernel path → the accelerator the probe chose (once a process)


def qemu_binary() -> str:
    found = shutil.which(QEMU)
    if found is None:
        raise DreamError(f"{QEMU} not found: `run:vm` needs QEMU (apt-get install qemu-system-x86)")
    return found


# -- the accelerator ----------------------------------------------------------------------------

def kvm_works(output: bytes) -> bool:
    """The probe's verdict: the guest kernel printed its banner under ``-accel kvm``."""
    return b"Linux version" in output


def probe_argv(qemu: str, kernel: Path) -> list[str]:
    return [qemu, "-nodefaults", "-no-user-config", "-machine", "pc", "-accel", "kvm", "-cpu", "host",
            "-m", "128", "-display", "none", "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1",
            "-serial", "stdio", "-no-reboot"]


def probe_kvm(qemu: str, kernel: Path, seconds: float = PROBE_SECONDS) -> bool:
    """Boot ``kernel`` under KVM for at most ``seconds``: does it get as far as its banner?"""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    process = subprocess.Popen(probe_argv(qemu, kernel), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)
    output = b""
    try:
        assert process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + seconds
        while not kvm_works(output) and (left := deadline - time.monotonic()) > 0:
            if not selector.select(left):
                break
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                break
            output += chunk
        selector.close()
    finally:
        _kill(process)
    return kvm_works(output)


def choose_accel(qemu: str, kernel: Path, environ: Mapping[str, str] = os.environ) -> str:
    """``kvm`` or ``tcg``: ``DREAM_VM_ACCEL`` if set, else the probe's verdict (cached)."""
    forced = environ.get("DREAM_VM_ACCEL", "").strip().lower()
    if forced:
        if forced not in ("kvm", "tcg"):
            raise DreamError(f"DREAM_VM_ACCEL must be kvm or tcg, not {forced!r}")
        return forced
    key = str(kernel)
    if key not in _ACCEL:
        _ACCEL[key] = "kvm" if probe_kvm(qemu, kernel) else "tcg"
    return _ACCEL[key]


# -- the command line ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Machine:
    """What one boot needs: the blobs, the data disk, sizes, ports and where QMP listens."""

    kernel: Path
    initrd: Path
    disk: Path
    data: Path | None
    cmdline: str
    memory: int = 512
    cpus: int = 1
    forwards: Mapping[int, int] = field(default_factory=dict)  # host port → guest port
    qmp: Path | None = None
    name: str = "dream-vm"


def qemu_argv(qemu: str, machine: Machine, accel: str) -> list[str]:
    """QEMU's command line for ``machine`` under ``accel`` (kvm or tcg)."""
    forwards = "".join(f",hostfwd=tcp:127.0.0.1:{host}-:{guest}" for host, guest in sorted(machine.forwards.items()))
    argv = [qemu, "-nodefaults", "-no-user-config", "-name", machine.name,
            "-machine", "pc", "-accel", accel, "-cpu", "host" if accel == "kvm" else "max",
            "-m", str(machine.memory), "-smp", str(machine.cpus), "-display", "none",
            "-kernel", str(machine.kernel), "-initrd", str(machine.initrd), "-append", machine.cmdline,
            "-drive", f"file={_drive_path(machine.disk)},format=raw,if=virtio,snapshot=on,cache=unsafe"]
    if machine.data is not None:
        argv += ["-drive", f"file={_drive_path(machine.data)},format=raw,if=virtio"]
    argv += ["-netdev", f"user,id=net0,ipv6=off{forwards}", "-device", "virtio-net-pci,netdev=net0",
             "-device", "virtio-rng-pci",
             "-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console", "-no-reboot"]
    if machine.qmp is not None:
        argv += ["-qmp", f"unix:{machine.qmp},server=on,wait=off"]
    return argv


def _drive_path(path: Path) -> str:
    text = str(path)
    if "," in text:  # QEMU's option syntax doubles a comma that is part of a value
        text = text.replace(",", ",,")
    return text


def forwards(ports: Sequence[int], offset: int = 0) -> dict[int, int]:
    """Host port → guest port: each port at itself plus ``offset`` on the host's 127.0.0.1."""
    mapping = {port + offset: port for port in ports}
    bad = [host for host in mapping if not 0 < host < 65536]
    if bad:
        raise DreamError(f"port offset {offset} puts guest port {mapping[bad[0]]} at {bad[0]}, outside 1-65535")
    return mapping


# -- QMP ----------------------------------------------------------------------------------------

def qmp(path: Path, command: str, timeout: float = 5.0) -> dict[str, object]:
    """One QMP command (after the capabilities handshake); its reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(str(path))
        reader = conn.makefile("rb")

        def reply() -> dict[str, object]:
            while True:
                line = reader.readline()
                if not line:
                    raise OSError("QMP closed the connection")
                message = json.loads(line)
                if "event" not in message:
                    return dict(message)

        reply()  # the greeting
        for name in ("qmp_capabilities", command):
            conn.sendall(json.dumps({"execute": name}).encode() + b"\n")
            answer = reply()
        return answer


# -- the data disk --------------------------------------------------------------------------------

def ensure_data_disk(path: Path, size: int, label: str) -> bool:
    """The persistent data disk, made (empty ext4, root-owned) if missing; True if made now."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    mke2fs = shutil.which("mke2fs") or "/sbin/mke2fs"
    partial = path.with_name(path.name + ".new")
    with open(partial, "wb") as handle:
        handle.truncate(size)
    run = subprocess.run([mke2fs, "-q", "-F", "-t", "ext4", "-L", label, "-E", "root_owner=0:0", str(partial)],
                         capture_output=True, text=True)
    if run.returncode != 0:
        partial.unlink(missing_ok=True)
        raise DreamError(f"mke2fs of the VM's data disk {path} failed: {run.stderr.strip()}")
    os.replace(partial, path)
    return True


# -- one running VM -------------------------------------------------------------------------------

def console_line(raw: bytes) -> str:
    """A serial console line as text: no carriage returns, colours or cursor moves."""
    return ANSI.sub("", raw.decode("utf-8", "replace").replace("\r", ""))


class Vm:
    """A QEMU process for one `Machine`; `start`, `wait_ready`, `powerdown`, `kill`."""

    def __init__(self, machine: Machine, ready: str, log: Path | None = None,
                 say: Callable[[str], None] = print, qemu: str | None = None, accel: str | None = None) -> None:
        self.qemu = qemu or qemu_binary()
        self.accel = accel or choose_accel(self.qemu, machine.kernel)
        self._scratch: str | None = None
        if machine.qmp is None:  # a short path: unix socket names hold at most 107 bytes
            self._scratch = tempfile.mkdtemp(prefix="dream-vm-")
            machine = replace(machine, qmp=Path(self._scratch) / "qmp.sock")
        self.machine = machine
        self.ready_marker = ready
        self.log_path = log
        self.say = say
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.ready_after: float | None = None
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def argv(self) -> list[str]:
        return qemu_argv(self.qemu, self.machine, self.accel)

    def start(self) -> None:
        self.started = time.monotonic()
        self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self._reader = threading.Thread(target=self._read, name="vm-console", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        log = open(self.log_path, "ab") if self.log_path else None
        try:
            for raw in self.process.stdout:
                if log:
                    log.write(raw)
                    log.flush()
                line = console_line(raw.rstrip(b"\n"))
                self.lines.append(line)
                if line.strip():
                    self.say(PREFIX + line)
                if self.ready_marker in line and not self._ready.is_set():
                    self.ready_after = time.monotonic() - self.started
                    self._ready.set()
        finally:
            if log:
                log.close()
            self._ready.set()  # nobody waits for a VM that is gone

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, timeout: float) -> bool:
        """Until the ready line (True), QEMU's end or ``timeout`` (False)."""
        self._ready.wait(timeout)
        return self.ready_after is not None

    def wait(self, timeout: float | None = None) -> int | None:
        if self.process is None:
            return None
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        if self._reader is not None:
            self._reader.join(2)
        return code

    def powerdown(self, grace: float) -> bool:
        """The ACPI power button; True if QEMU ended (the guest powered off) within ``grace``."""
        if not self.running():
            return True
        try:
            assert self.machine.qmp is not None
            qmp(self.machine.qmp, "system_powerdown")
        except (OSError, ValueError) as exc:
            self.say(f"{PREFIX}(QMP system_powerdown failed: {exc})")
            return False
        return self.wait(grace) is not None

    def kill(self) -> None:
        """QMP ``quit``, then SIGKILL to QEMU's process group; always waits for it."""
        if self.process is None:
            return
        if self.running() and self.machine.qmp is not None:
            try:
                qmp(self.machine.qmp, "quit", timeout=2)
            except (OSError, ValueError):
                pass
            self.wait(3)
        _kill(self.process)
        if self._reader is not None:
            self._reader.join(2)

    def close(self) -> None:
        self.kill()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def __enter__(self) -> "Vm":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


class _Stop(Exception):
    """SIGTERM, seen as Ctrl-C is: power the VM off."""


def run(vm: Vm, grace: float, deployment: str, ready_timeout: float = 300.0,
        hosts: Mapping[int, int] | None = None) -> int:
    """The VM in the foreground until it powers off or Ctrl-C/SIGTERM powers it off; the exit
    code (0: a clean poweroff asked for by the user)."""
    def stop(signum: int, frame: object) -> None:
        raise _Stop()

    previous = signal.signal(signal.SIGTERM, stop) if threading.current_thread() is threading.main_thread() else None
    try:
        vm.say(f"{deployment}: booting ({vm.accel.upper()}, {vm.machine.memory} MiB, {vm.machine.cpus} CPU); "
               "Ctrl-C powers it off")
        vm.start()
        try:
            if vm.wait_ready(ready_timeout):
                where = ", ".join(f"127.0.0.1:{h} → {g}" for h, g in sorted((hosts or {}).items()))
                vm.say(f"{deployment}: all services ready {vm.ready_after:.1f} s after QEMU started"
                       + (f"; ports {where}" if where else ""))
            elif vm.running():
                vm.say(f"{deployment}: not ready after {ready_timeout:.0f} s (see the console above)")
            code = vm.wait()
            vm.say(f"{deployment}: the VM stopped by itself (QEMU exit {code})")
            return 1
        except (KeyboardInterrupt, _Stop):
            vm.say(f"{deployment}: powering off (ACPI power button; at most {grace:.0f} s)")
            began = time.monotonic()
            if vm.powerdown(grace):
                vm.say(f"{deployment}: powered off in {time.monotonic() - began:.1f} s")
                return 0
            vm.say(f"{deployment}: still running after {grace:.0f} s: QEMU killed")
            return 1
    finally:
        vm.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
