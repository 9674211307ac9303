"""The conformance suite's machinery: the deployment's image (built once per session), one
project per manager, and a `Runs` record of each manager's two runs of the deployment, which
every fact test reads (one deployment start per run, not per fact).

A manager is driven the way a person drives it: started in a session of its own, stopped by a
SIGINT to that whole process group (Ctrl-C in a terminal). Everything is observed from outside:
the app's answers on 127.0.0.1, the `events` file in the volume data/record (on the host, or
the compose project's named volume, read where the engine keeps it: the suite runs as root,
as CI does), the processes in /proc (every service carries the run's marker, CONF_MARKER, in
its environment, inside containers too; redis-server is known by its title) and the engine's
containers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import Project, make_project

HERE = Path(__file__).resolve().parent
RECIPE = HERE / "recipe"
DEPLOYMENT = "conformance"
LONG_RUNNING = ("redis", "app", "stubborn")
GRACE = {"redis": 10.0, "app": 3.0, "stubborn": 1.0}  # stop_grace_period, as the recipe says
START_TIMEOUT = 120.0  # s: compose loads four images into the engine on its first run
STOP_TIMEOUT = 30.0


def need(tool: str) -> str:
    """A real component of the suite: missing is a failure, never a skip."""
    found = shutil.which(tool)
    if not found:
        raise AssertionError(f"{tool} is not installed: the conformance suite runs every manager for real")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def recipe_text(ports: dict[str, int], marker: str) -> str:
    text = (RECIPE / "conformance.yaml").read_text()
    for name, value in {"REDIS_PORT": str(ports["redis"]), "APP_PORT": str(ports["app"]),
                        "MARKER": marker}.items():
        text = text.replace(f"@{name}@", value)
    left = re.findall(r"@[A-Z_]+@", text)
    assert not left, f"tokens left in the recipe: {left}"
    return text


def alive(pid: int) -> bool:
    """True for a live process, False for one that is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:].split()[:1] not in ([b"Z"], [b"X"])


def environ(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            raw = handle.read()
    except OSError:
        return {}
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {key.decode(errors="replace"): value.decode(errors="replace") for key, _, value in pairs}


def marked(marker: str, redis_port: int) -> dict[int, str]:
    """pid → service of every live process of the run, here or in any container (their
    processes are this kernel's too): those carrying ``marker`` in their environment (with the
    ``DREAM_SERVICE`` they got), and redis-server on its port (it writes its title over its
    environment, so its argv says who it is)."""
    found = {}
    title = f"redis-server 127.0.0.1:{redis_port}"
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid() and alive(int(entry)):
            env = environ(int(entry))
            if env.get("CONF_MARKER") == marker:
                found[int(entry)] = env.get("DREAM_SERVICE", "?")
            elif command_of(int(entry)) == title:
                found[int(entry)] = "redis"
    return found


def command_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


@dataclass
class Run:
    """What one run of the deployment showed."""

    number: int
    output: list[str] = field(default_factory=list)  # the manager's stdout and stderr, merged
    answer: dict | None = None      # the app's JSON on 127.0.0.1:APP_PORT (None: it never answered)
    problem: str = ""               # why the run did not get as far as it should have
    events: dict[str, list[float]] = field(default_factory=dict)  # data/record/events of this run
    running: dict[int, str] = field(default_factory=dict)          # pid → service, before the stop
    gone_after: dict[str, float] = field(default_factory=dict)     # service → s from SIGINT to its end
    exit_after: float | None = None  # s from SIGINT to the manager's exit
    exit_code: int | None = None
    leftovers: list[str] = field(default_factory=list)  # what still ran (or existed) afterwards

    def log(self) -> str:
        return "\n".join(self.output[-80:])

    def first(self, event: str) -> float | None:
        return min(self.events[event]) if self.events.get(event) else None


class Driver:
    """How the suite drives one manager: how to start it, where its record is, what it
    leaves; the stop (SIGINT to its process group) and the watching are the same for all."""

    name = ""

    def __init__(self, project: Project, ports: dict[str, int], marker: str) -> None:
        self.project, self.ports, self.marker = project, ports, marker

    def environment(self) -> dict[str, str]:
        env = {**os.environ, "DREAM_STORE": str(self.project.store), "NO_COLOR": "1"}
        env.pop("HONCHO_PROCESS_NAME", None)
        env.pop("DREAM_DEPLOYMENT", None)
        return env

    def prepare(self) -> None:
        """What runs once before the first start (rendering)."""

    def command(self) -> list[str]:
        raise NotImplementedError

    def app_ended(self, run: Run) -> bool:
        """Whether the manager said that the app ended (while it runs on: compose)."""
        return False

    def processes(self) -> dict[int, str]:
        return marked(self.marker, self.ports["redis"])

    def record(self) -> str:
        """The text of data/record/events as the services wrote it ("" before the first run)."""
        path = self.project.root / "data" / "record" / "events"
        return path.read_text() if path.exists() else ""

    def leftovers(self) -> list[str]:
        return [f"pid {pid} ({service}): {command_of(pid)}" for pid, service in self.processes().items()]

    def clean(self) -> None:
        """Kill whatever a failed run left (never needed when every fact holds)."""
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    # -- one run ----------------------------------------------------------------------------

    def run(self, number: int, wait_for_liveness: bool) -> Run:
        run = Run(number)
        before = self.record()
        proc = subprocess.Popen(self.command(), cwd=self.project.root, env=self.environment(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        reader = threading.Thread(target=lambda: run.output.extend(line.rstrip("\n") for line in proc.stdout),  # type: ignore[union-attr]
                                  daemon=True)
        reader.start()
        try:
            self.wait_until_up(run, proc, before, wait_for_liveness)
            run.running = self.processes()
            self.stop(run, proc)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            reader.join(10)
        run.leftovers = self.leftovers()
        for line in self.record()[len(before):].splitlines():
            what, _, at = line.partition(" ")
            run.events.setdefault(what, []).append(float(at))
        return run

    def wait_until_up(self, run: Run, proc: subprocess.Popen[str], before: str, wait_for_liveness: bool) -> None:
        """Until the app answers, redis, the app and the stubborn one all run and the migration
        has finished (at most 3 s more: a manager that does not order them starts the app first);
        with ``wait_for_liveness``, also until the liveness probe has asked the app twice (at
        most 3 s: a manager without probes never does)."""
        url = f"http://127.0.0.1:{self.ports['app']}/"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None or self.app_ended(run):
                run.problem = (f"{self.name} ended before the app answered (exit code {proc.returncode})"
                               if proc.poll() is not None else "the app ended before it answered")
                return
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    run.answer = json.loads(answer.read())
                break
            except OSError:
                if time.monotonic() > deadline:
                    run.problem = f"the app did not answer on {url} within {START_TIMEOUT:g}s"
                    return
                time.sleep(0.1)
        deadline = time.monotonic() + 10
        while not set(LONG_RUNNING) <= set(self.processes().values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        deadline = time.monotonic() + 3
        while "migrate-done " not in self.record()[len(before):] and time.monotonic() < deadline:
            time.sleep(0.05)
        if wait_for_liveness:
            deadline = time.monotonic() + 3
            while run.answer["health_hits"] < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
                with urllib.request.urlopen(url, timeout=2) as answer:
                    run.answer = json.loads(answer.read())

    def stop(self, run: Run, proc: subprocess.Popen[str]) -> None:
        """SIGINT to the manager's process group, then watch each service's processes end."""
        services = set(run.running.values())
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        deadline = started + STOP_TIMEOUT
        while time.monotonic() < deadline:
            now = time.monotonic()
            alive = set(self.processes().values())
            for service in services - alive - set(run.gone_after):
                run.gone_after[service] = now - started
            if proc.poll() is not None and run.exit_after is None:
                run.exit_after = now - started
                run.exit_code = proc.returncode
            if run.exit_after is not None and not alive:
                return
            time.sleep(0.02)
        run.problem = run.problem or f"{self.name} did not stop within {STOP_TIMEOUT:g}s of SIGINT"


class ProcfileDriver(Driver):
    """dream's supervisor on the host: ``doit run:procfile -d conformance``."""

    name = "procfile"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "doit", "run:procfile", "-d", DEPLOYMENT]


class HonchoDriver(Driver):
    """honcho on the files ``doit render:procfile`` writes (its Procfile and .env)."""

    name = "honcho"

    def prepare(self) -> None:
        self.honcho = need("honcho")
        self.project.doit("render:procfile", "-d", DEPLOYMENT)

    def command(self) -> list[str]:
        return [self.honcho, "-d", str(self.project.root / "build" / DEPLOYMENT / "procfile"), "start"]


class ComposeDriver(Driver):
    """``doit run:compose -d conformance``: the per-service images on the real Docker engine,
    by Debian's docker-compose."""

    name = "compose"

    def prepare(self) -> None:
        need("docker")
        need("docker-compose")
        if docker("info", check=False).returncode != 0:
            raise AssertionError("the Docker engine is not running (start it: nohup dockerd >/tmp/dockerd.log 2>&1 &)")
        self.clean()

    def command(self) -> list[str]:
        return [sys.executable, "-m", "doit", "run:compose", "-d", DEPLOYMENT]

    def app_ended(self, run: Run) -> bool:
        return any(f"{DEPLOYMENT}_app_1 exited with code" in line for line in list(run.output))

    def containers(self) -> list[str]:
        listed = docker("ps", "-a", "--filter", f"label=com.docker.compose.project={DEPLOYMENT}",
                        "--format", "{{.Names}} {{.Status}}").stdout
        return listed.splitlines()

    def volumes(self) -> list[str]:
        return docker("volume", "ls", "-q", "--filter",
                      f"label=com.docker.compose.project={DEPLOYMENT}").stdout.split()

    def record(self) -> str:
        for volume in self.volumes():
            info = json.loads(docker("volume", "inspect", volume).stdout)[0]
            if info["Labels"].get("com.docker.compose.volume", "").endswith("data-record"):
                path = Path(info["Mountpoint"]) / "events"
                return path.read_text() if path.exists() else ""
        return ""

    def leftovers(self) -> list[str]:
        try:
            containers = [f"container {line}" for line in self.containers()]
        except subprocess.CalledProcessError as exc:
            containers = [f"the engine could not say which containers exist: {exc.stderr.strip()}"]
        return super().leftovers() + containers

    def clean(self) -> None:
        super().clean()
        try:
            names = [line.split()[0] for line in self.containers()]
            if names:
                docker("rm", "-f", *names, check=False)
            if self.volumes():
                docker("volume", "rm", "-f", *self.volumes(), check=False)
        except subprocess.CalledProcessError:
            pass  # no engine, nothing of ours in it


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check)


class PodmanKubeDriver(Driver):
    """``doit run:podman-kube -d conformance``: the Kubernetes manifests of ``render:kubernetes``
    (with local images) under ``podman kube play``, the per-service images loaded into podman."""

    name = "podman-kube"
    PREFIX = f"{DEPLOYMENT}-"  # every pod, container and volume of the deployment is named so

    def prepare(self) -> None:
        need("podman")
        need("catatonit")
        self.clean()

    def command(self) -> list[str]:
        return [sys.executable, "-m", "doit", "run:podman-kube", "-d", DEPLOYMENT]

    def containers(self) -> list[str]:
        listed = podman("ps", "-a", "--format", "{{.Names}} {{.Status}}").stdout.splitlines()
        return [line for line in listed if line.startswith(self.PREFIX)]

    def volumes(self) -> list[str]:
        return [name for name in podman("volume", "ls", "--format", "{{.Name}}").stdout.split()
                if name.startswith(self.PREFIX)]

    def record(self) -> str:
        for volume in self.volumes():
            if volume.endswith("data-record"):
                path = Path(podman("volume", "inspect", "--format", "{{.Mountpoint}}", volume).stdout.strip()) / "events"
                return path.read_text() if path.exists() else ""
        return ""

    def leftovers(self) -> list[str]:
        return super().leftovers() + [f"container {line}" for line in self.containers()]

    def clean(self) -> None:
        super().clean()
        pods = [name for name in podman("pod", "ps", "--format", "{{.Name}}", check=False).stdout.split()
                if name.startswith(self.PREFIX)]
        if pods:
            podman("pod", "rm", "-f", *pods, check=False)
        if self.volumes():
            podman("volume", "rm", "-f", *self.volumes(), check=False)


class VmDriver(Driver):
    """``doit run:vm -d conformance``: the deployment's systemd units in a VM made from the
    image's layers, booted by QEMU. Its processes are the VM's kernel's, not this one's: a
    service runs from systemd's "Started" line on the console to its "Stopped" or "Deactivated"
    line, and the record is read from the data disk (debugfs, no mount) once the VM is off."""

    name = "systemd-vm"
    UNIT = re.compile(rf"systemd\[1\]: (?:(Started|Stopped) {DEPLOYMENT}-(\w+)\.service|"
                      rf"{DEPLOYMENT}-(\w+)\.service: (?:Deactivated|Failed|Main process exited))")

    def prepare(self) -> None:
        for tool in ("qemu-system-x86_64", "mke2fs", "debugfs"):
            need(tool)
        self.project.doit("lock:vm", "-d", DEPLOYMENT)
        self.state = self.project.root / ".dream" / "vm" / DEPLOYMENT

    def command(self) -> list[str]:
        return [sys.executable, "-m", "doit", "run:vm", "-d", DEPLOYMENT]

    def processes(self) -> dict[int, str]:
        try:
            console = (self.state / "console.log").read_text(errors="replace")
        except (OSError, AttributeError):
            return {}
        running: set[str] = set()
        for match in self.UNIT.finditer(console):
            started, service, ended = match.group(1), match.group(2), match.group(3)
            if started == "Started":
                running.add(service)
            else:
                running.discard(service or ended)
        return {-number: service for number, service in enumerate(sorted(running), 1)}

    def record(self) -> str:
        disk = getattr(self, "state", None)
        if disk is None or not (disk / "data.ext4").exists() or self.qemu():
            return ""  # not yet, or still running: read once the VM is off
        read = subprocess.run(["debugfs", "-R", "cat /volumes/data/record/events", str(disk / "data.ext4")],
                              capture_output=True, text=True)
        return read.stdout if read.returncode == 0 else ""

    def qemu(self) -> list[str]:
        marker = str(self.project.root)
        return [f"pid {pid}: qemu" for pid in os.listdir("/proc") if pid.isdigit() and alive(int(pid))
                and "qemu-system" in command_of(int(pid)) and marker in command_of(int(pid))]

    def leftovers(self) -> list[str]:
        return [f"unit {service}" for service in self.processes().values()] + self.qemu()

    def clean(self) -> None:
        for pid in self.qemu():
            try:
                os.kill(int(pid.split()[1].rstrip(":")), signal.SIGKILL)
            except (OSError, ValueError):
                pass


MANAGERS: dict[str, type[Driver]] = {"procfile": ProcfileDriver, "honcho": HonchoDriver,
                                     "compose": ComposeDriver, "podman-kube": PodmanKubeDriver,
                                     "systemd-vm": VmDriver}


@dataclass
class Record:
    """A manager's two runs (or the error that kept them from happening)."""

    manager: str
    runs: list[Run] = field(default_factory=list)
    error: str = ""


class Runs:
    """Each manager's runs, made the first time a test asks for them and kept for the session."""

    def __init__(self, image_project: Project, base: Path) -> None:
        self.image_project, self.base = image_project, base
        self.records: dict[str, Record] = {}
        self.drivers: list[Driver] = []

    def project_for(self, name: str, ports: dict[str, int], marker: str) -> Project:
        """A project of its own (its own data/ and build/), on the session's store, where the
        image is already built."""
        project = make_project(self.base / name, {"conformance.yaml": recipe_text(ports, marker)},
                               with_demo=False)
        shutil.copytree(RECIPE / "conformance", project.root / "recipes" / "conformance")
        shutil.copy(self.image_project.root / "recipes" / "conformance.lock.json",
                    project.root / "recipes" / "conformance.lock.json")
        return Project(project.root, self.image_project.store)

    def __call__(self, name: str) -> Record:
        if name not in self.records:
            record = self.records[name] = Record(name)
            ports = {"redis": free_port(), "app": free_port()}
            marker = f"{name}-{uuid.uuid4().hex}"
            manager = MANAGERS[name](self.project_for(name, ports, marker), ports, marker)
            self.drivers.append(manager)
            try:
                manager.prepare()
                for number in (1, 2):
                    record.runs.append(manager.run(number, wait_for_liveness=number == 1))
                    if record.runs[-1].problem:
                        break
            except (AssertionError, OSError, subprocess.SubprocessError) as exc:
                record.error = f"{type(exc).__name__}: {exc}"
            finally:
                manager.clean()
        return self.records[name]

    def close(self) -> None:
        for driver in self.drivers:
            driver.clean()


@pytest.fixture(scope="session")
def conformance_image(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """The deployment's recipe image (Debian, python3, Redis), locked and built once."""
    base = tmp_path_factory.mktemp("conformance")
    project = make_project(base / "image", {"conformance.yaml": recipe_text({"redis": 1, "app": 2}, "image")},
                           with_demo=False)
    shutil.copytree(RECIPE / "conformance", project.root / "recipes" / "conformance")
    project.doit("lock:conformance")
    project.doit("build:conformance")
    return project


@pytest.fixture(scope="session")
def runs(conformance_image: Project, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    made = Runs(conformance_image, tmp_path_factory.mktemp("managers"))
    yield made
    made.close()
