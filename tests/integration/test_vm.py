"""services-demo's db-app as a VM: its disk built from the image's own layers (twice, from empty
stores: the same digest), booted under QEMU (TCG here) with systemd running Redis and the app
from the rendered units; the app answers on a forwarded loopback port once Redis is ready, a
second boot keeps Redis's count on the data disk, and Ctrl-C powers the VM off within the
grace period, leaving no QEMU behind.

QEMU, e2fsprogs and apt are real components: without them the test skips on a developer's
machine and fails in CI (tests/conftest.py `require`)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from dream.oci.descriptor import Descriptor
from dream.recipe.load import load_recipe
from dream.renderers.base import Target
from dream.renderers.systemd import SystemdRenderer
from dream.services.plan import build_plan
from dream.store.layout import Store, file_sha256, open_store
from dream.vm.build import BuiltVm, build_vm, config_dir
from dream.vm.packages import lock_vm_packages, status_of_locked
from dream.vm.run import start
from dream.vm.spec import VmSpec, vm_spec
from tests.conftest import Project, copy_services_demo, make_project, require

pytestmark = pytest.mark.integration
DEPLOYMENT = "db-app"
READY_TIMEOUT = 120.0  # a TCG boot takes 15-30 s here


@dataclass
class Demo:
    project: Project
    store: Store
    built: BuiltVm
    spec: VmSpec
    offset: int
    second_digest: str


def free_offset() -> int:
    """A port offset that puts 5000, 5100 and 6379 on free ports of 127.0.0.1."""
    for offset in range(21000, 40000, 997):
        try:
            for port in (5000, 5100, 6379):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port + offset))
        except OSError:
            continue
        return offset
    pytest.fail("no free port offset for the VM's forwards")


def qemu_processes(marker: str) -> dict[int, str]:
    """The QEMU processes whose command line names ``marker`` (the test's store), by pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "qemu-system" in command and marker in command:
            found[int(entry.name)] = command
    return found


def build_into(store: Store, image: Descriptor, lock: dict[str, Any], plan: dict[str, Any],
               units: dict[str, str], spec: VmSpec) -> BuiltVm:
    return build_vm(store, image, lock, units, plan, spec, DEPLOYMENT, say=lambda line: None)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    for tool in ("qemu-system-x86_64", "mke2fs", "debugfs", "apt-get"):
        require(tool)
    base = tmp_path_factory.mktemp("vm")
    project = make_project(base / "p", with_demo=False)
    copy_services_demo(project)
    project.doit("build:services-demo")
    store = open_store(project.store)
    image = store.tagged("services-demo")
    assert image is not None
    recipe = load_recipe(project.root / "recipes" / "services-demo.yaml", project.root)
    plan = build_plan(recipe.deployments[DEPLOYMENT], in_image=True)
    files = SystemdRenderer().render(plan, Target(root=Path("/"), out=project.root / "build",
                                                  options={"root": "/", "config_dir": config_dir(DEPLOYMENT)}))
    units = {f.path: f.content for f in files}
    spec = vm_spec({})
    image_lock = json.loads((project.root / "recipes" / "services-demo.lock.json").read_text())
    lock = lock_vm_packages(status_of_locked([image_lock["layers"]["debian"]]), list(spec.packages))
    started = time.monotonic()
    built = build_into(store, image, lock, plan, units, spec)
    took = time.monotonic() - started
    # the second build: a store holding only the image's blobs (no VM blob, no ref)
    other = open_store(base / "other-store")
    manifest = store.read_manifest(image.digest)
    for digest in [image.digest, manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]:
        os.link(store.blob_path(digest), other.blob_path(digest))
    second = build_into(other, image, lock, plan, units, spec)
    print(f"VM disk {built.disk.digest} ({built.disk.size >> 20} MiB) built in {took:.1f} s; "
          f"second build {second.disk.digest}")
    yield Demo(project, store, built, spec, free_offset(), second.disk.digest)
    leftover = qemu_processes(str(project.store))
    for pid in leftover:  # never leave one behind, even when an assertion failed
        os.kill(pid, signal.SIGKILL)
    assert not leftover, leftover


def test_two_builds_from_empty_stores_give_the_same_disk(demo: Demo) -> None:
    assert demo.second_digest == demo.built.disk.digest
    tagged = demo.store.tagged(f"{DEPLOYMENT}.vm")
    assert tagged is not None and tagged.digest == demo.built.manifest.digest
    kernel, initrd, disk = demo.built.paths(demo.store)
    assert disk.stat().st_size == demo.spec.disk_size
    assert subprocess.run(["e2fsck", "-fn", str(disk)], capture_output=True).returncode == 0
    assert initrd.read_bytes().startswith(b"070701")


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def boot(demo: Demo, state: Path) -> tuple[float, str, list[str], str]:
    """One boot: time to ready, the app's answer, the console, the accelerator; powered off."""
    vm = start(demo.store, demo.built, demo.spec, state, demo.offset, say=lambda line: None)
    with vm:
        vm.start()
        ready = vm.wait_ready(READY_TIMEOUT)
        assert ready, "\n".join(vm.lines[-40:])
        answer = get(f"http://127.0.0.1:{5100 + demo.offset}/")
        began = time.monotonic()
        assert vm.powerdown(float(demo.built.config["grace"])), "\n".join(vm.lines[-30:])
        assert time.monotonic() - began < float(demo.built.config["grace"])
        assert vm.ready_after is not None
        return vm.ready_after, answer, list(vm.lines), vm.accel


def test_boot_app_after_redis_and_the_second_boot_keeps_the_count(demo: Demo, tmp_path: Path) -> None:
    state = tmp_path / "state"
    ready, answer, lines, accel = boot(demo, state)
    console = "\n".join(lines)
    assert re.search(r"redis says PONG; start number 1\b", console), console[-3000:]
    assert console.index("Ready to accept connections") < console.index("redis says PONG")
    first = int(answer.split(":")[1])
    print(f"boot to all ready: {ready:.1f} s ({accel})")
    ready2, answer2, lines2, _ = boot(demo, state)
    assert re.search(r"start number 2\b", "\n".join(lines2))
    assert int(answer2.split(":")[1]) > first  # Redis's data lives on the data disk
    print(f"second boot to all ready: {ready2:.1f} s")


def test_ctrl_c_powers_off_within_the_grace_period(demo: Demo, tmp_path: Path) -> None:
    """Through the tasks a user types: `doit lock:vm` pins the same packages, `doit run:vm`
    boots the very disk the fixture built (same inputs, same key), and Ctrl-C powers it off."""
    project = demo.project
    locked = project.doit("lock:vm", "-d", DEPLOYMENT)
    assert "services-demo.vm.lock.json: db-app: " in locked.stdout, locked.stdout
    run = subprocess.Popen([sys.executable, "-m", "doit", "run:vm", "-d", DEPLOYMENT, "--port-offset", str(demo.offset)],
                           cwd=project.root, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           start_new_session=True,
                           env={**os.environ, "DREAM_STORE": str(project.store), "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    try:
        assert run.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT + 30
        for line in run.stdout:
            lines.append(line.rstrip("\n"))
            if "all services ready" in line or time.monotonic() > deadline:
                break
        assert any("all services ready" in line for line in lines), "\n".join(lines[-40:])
        assert get(f"http://127.0.0.1:{5100 + demo.offset}/").startswith("hits: ")
        assert not any(line.startswith("db-app: VM disk ") for line in lines), "built again: " + "\n".join(lines)
        began = time.monotonic()
        os.killpg(run.pid, signal.SIGINT)
        rest, _ = run.communicate(timeout=float(demo.built.config["grace"]) + 10)
        took = time.monotonic() - began
        lines += rest.splitlines()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    output = "\n".join(lines)
    assert run.returncode == 0, output[-3000:]
    assert "powered off in" in output and took < float(demo.built.config["grace"]), output[-2000:]
    assert "vm | " in output  # the console, streamed with its prefix
    assert not qemu_processes(str(demo.store.root))
    disk = demo.store.blob_path(demo.built.disk.digest)
    assert "sha256:" + file_sha256(disk) == demo.built.disk.digest  # booting never wrote the built disk
