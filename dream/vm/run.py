"""`run:vm`: a built VM booted from the store, with its data disk, in the foreground."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from dream.store.layout import Store
from dream.vm.build import BuiltVm
from dream.vm.qemu import Machine, Vm, ensure_data_disk, forwards, run
from dream.vm.spec import VmSpec

DATA_DISK = "data.ext4"
CONSOLE_LOG = "console.log"


def machine(store: Store, built: BuiltVm, spec: VmSpec, state: Path, port_offset: int = 0) -> Machine:
    """The `Machine` of a built VM: its blobs, the data disk below ``state`` (made if missing)."""
    kernel, initrd, disk = built.paths(store)
    data = state / DATA_DISK
    ensure_data_disk(data, spec.data_size, str(built.config["data"]["label"]))
    return Machine(kernel, initrd, disk, data, str(built.config["cmdline"]), spec.memory, spec.cpus,
                   forwards([int(p) for p in built.config["ports"]], port_offset),
                   name=f"dream-{built.config['deployment']}")


def start(store: Store, built: BuiltVm, spec: VmSpec, state: Path, port_offset: int = 0,
          say: Callable[[str], None] = print) -> Vm:
    """A `Vm` ready to `Vm.start` (its console kept in ``state/console.log``, new each boot)."""
    state.mkdir(parents=True, exist_ok=True)
    log = state / CONSOLE_LOG
    log.unlink(missing_ok=True)
    return Vm(machine(store, built, spec, state, port_offset), str(built.config["ready"]), log, say)


def run_vm(store: Store, built: BuiltVm, spec: VmSpec, state: Path, port_offset: int = 0,
           say: Callable[[str], None] = print) -> int:
    """Boot, stream the console, wait for all services, power off on Ctrl-C; the exit code."""
    vm = start(store, built, spec, state, port_offset, say)
    return run(vm, float(built.config["grace"]), str(built.config["deployment"]), hosts=vm.machine.forwards)
