"""recipes/services-demo.yaml's db-app under the real podman 4.3 (`doit run:podman-kube`): the
Kubernetes manifests, in podman's variant, serve the app's hit counter from Redis on 127.0.0.1
once Redis is ready, the count survives a second run (the claim's volume stays), and Ctrl-C (a
SIGINT to doit's process group, as a terminal sends it) takes everything down with exit code 0;
`doit load:python-app --into podman` puts the image into podman's storage, where `podman run`
runs it. podman runs with the tests' containers.conf (tests/podman.py)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import Project, Seed, copy_services_demo, make_project, require
from tests.podman import containers, pods, podman, require_podman, volumes

pytestmark = pytest.mark.integration
DEPLOYMENT = "db-app"
APP = "http://127.0.0.1:5100/"  # the app's PORT: port_base 5000 + 100 × its place (redis, app)
PART_OF = f"app.kubernetes.io/part-of={DEPLOYMENT}"


def left_behind() -> dict[str, list[str]]:
    """What of db-app podman still has: containers, pods."""
    found = {"containers": containers(PART_OF), "pods": pods(f"{DEPLOYMENT}-")}
    return {kind: names for kind, names in found.items() if names}


def take_down() -> None:
    """Whatever a failed test left: the pods, and the test's own volume (its data)."""
    for pod in pods(f"{DEPLOYMENT}-"):
        podman("pod", "rm", "--force", pod, check=False)
    for volume in volumes(f"{DEPLOYMENT}-vol-"):
        podman("volume", "rm", "--force", volume, check=False)


def services_demo(base: Path, services: str = "", app: str = "") -> Iterator[Project]:
    """services-demo in a project of its own (``services`` put first under its recipe's
    ``services:``, ``app`` first under ``app:``), its per-service images built up front (so a
    run's deadline is the run's); no db-app of podman's before, none after."""
    require("apt-get")
    require_podman()
    project = make_project(base, with_demo=False)
    copy_services_demo(project)
    recipe = project.root / "recipes" / "services-demo.yaml"
    text = recipe.read_text()
    assert "\nservices:\n  app:\n" in text
    recipe.write_text(text.replace("\nservices:\n  app:\n", f"\nservices:\n{services}  app:\n{app}"))
    assert not left_behind(), f"a db-app is already in podman: {left_behind()}"
    assert not volumes(f"{DEPLOYMENT}-vol-"), "db-app's volume is already in podman (its count would not start at 1)"
    project.doit("render:images", "-d", DEPLOYMENT)
    yield project
    take_down()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Project]:
    """services-demo as committed."""
    yield from services_demo(tmp_path / "p")


@pytest.fixture
def unready(tmp_path: Path) -> Iterator[Project]:
    """services-demo whose Redis never becomes ready (its probe always fails), and whose app
    stops within 3 s (its gate's shell, PID 1 of the init container, ignores SIGTERM). Probes
    and grace periods are not inputs of the Debian layer: the lock stays valid."""
    yield from services_demo(tmp_path / "p",
                             services="  redis:\n    readiness: {exec: exit 1, period: 100ms, failure_threshold: 3}\n",
                             app="    stop_grace_period: 1s\n")


class Run:
    """``doit run:podman-kube`` in a process group of its own (a terminal's foreground job), its
    output collected line by line."""

    def __init__(self, project: Project) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "doit", "run:podman-kube", "-d", DEPLOYMENT], cwd=project.root, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, process_group=0,
            env={**os.environ, "DREAM_STORE": str(project.store), "PYTHONUNBUFFERED": "1"})
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def answer(self, seconds: float) -> str:
        """The app's first answer, waiting at most ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"run:podman-kube ended ({self.process.returncode}):\n{self.output}"
            try:
                with urllib.request.urlopen(APP, timeout=2) as response:
                    return str(response.read().decode())
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"the app did not answer on {APP} in {seconds} s:\n{self.output}")

    def wait_for(self, text: str, seconds: float) -> None:
        """Until a line of the output holds ``text``, at most ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not any(text in line for line in self.lines):
            time.sleep(0.2)
        assert any(text in line for line in self.lines), f"no line says {text!r}:\n{self.output}"

    def ctrl_c(self) -> int:
        """SIGINT to the process group, as Ctrl-C in a terminal; the exit code."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
        try:
            code = self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise AssertionError(f"run:podman-kube did not end after Ctrl-C:\n{self.output}") from None
        self.reader.join(timeout=10)
        return code


def hits(answer: str) -> int:
    match = re.fullmatch(r"hits: (\d+)\n", answer)
    assert match, answer
    return int(match[1])


def test_db_app_counts_hits_in_redis_keeps_them_for_the_next_run_and_ctrl_c_ends_it(demo: Project) -> None:
    counted = 0
    for start in (1, 2):
        run = Run(demo)
        try:
            count = hits(run.answer(180))
            assert count > counted, (count, counted)  # the second run sees the first run's hits
            counted = count
            # the app has no retry loop: its first line proves Redis was ready before it started
            run.wait_for(f"redis says PONG; start number {start}", 30)
            # each pod's log is streamed apart, so redis's own "ready" line may come after the app's
            run.wait_for("dream | redis is ready", 30)
            assert any(line.startswith("redis | ") and "redis is ready" in line for line in run.lines), run.output
            assert any(line.startswith("app | ") and "redis says PONG" in line for line in run.lines), run.output
            run.wait_for("dream: app is ready", 30)
            assert "dream: redis is ready" in run.output, run.output
            assert "Traceback" not in run.output, run.output
        finally:
            code = run.ctrl_c()
        assert code == 0, run.output
        assert "dream: stopping db-app" in run.output, run.output
        assert not left_behind(), f"{left_behind()}\n{run.output}"
        assert volumes(f"{DEPLOYMENT}-vol-") == ["db-app-vol-data-redis"], run.output  # the data stays
        assert (demo.root / "build" / DEPLOYMENT / "podman-kube" / "podman-kube.yaml").is_file()


def test_load_into_podman_then_podman_runs_the_image(tmp_path: Path, python_app_seed: Seed) -> None:
    require_podman()
    project = make_project(tmp_path / "p", seed=python_app_seed)
    held = podman("image", "inspect", "--format", "{{.Id}}", "localhost/python-app:latest", check=False)
    if held.returncode == 0:  # a first load, every layer sent: not a name of the image may stay
        podman("rmi", "--force", held.stdout.strip())
    loaded = project.doit("load:python-app", "--into", "podman").stdout
    sent = re.search(r"^loaded (localhost/python-app:[^ ,]+, )*localhost/python-app:latest "
                     r"\((\d+) of (\d+) layers sent, [\d,]+ bytes\)$", loaded, re.M)
    assert sent and sent[2] == sent[3] != "0", loaded
    names = podman("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert "localhost/python-app:latest" in names and not any(n.startswith("127.0.0.1:") for n in names), names
    ran = podman("run", "--rm", "--network", "host", "localhost/python-app:latest")
    assert ran.stdout.startswith("hello from dream (Python 3."), ran.stdout
    again = project.doit("load:python-app", "--into", "podman").stdout
    assert "-- load:python-app" in again, again  # up to date: podman holds this store's image
    forced = project.doit("--always-execute", "load:python-app", "--into", "podman").stdout
    assert re.search(r"\(0 of \d+ layers sent", forced), forced  # podman takes only what it lacks


def test_an_unready_redis_holds_back_the_app_and_ctrl_c_during_the_play_leaves_nothing(unready: Project) -> None:
    run = Run(unready)
    try:
        deadline, status = time.monotonic() + 120, {}
        while time.monotonic() < deadline and status.get("db-app-app-pod-0-wait-redis") != "running":
            assert run.process.poll() is None, run.output
            time.sleep(0.3)
            status = {name: podman("container", "inspect", "--format", "{{.State.Status}}", name,
                                   check=False).stdout.strip() for name in containers(PART_OF)}
        assert status.get("db-app-app-pod-0-wait-redis") == "running", (status, run.output)  # the gate waits
        run.wait_for("dream: redis is not ready after 3 probes", 30)
        time.sleep(2)  # long enough for a start that must not happen
        app = podman("container", "inspect", "--format", "{{.State.Status}}", "db-app-app-pod-0-app").stdout.strip()
        assert app == "created", app
        assert "redis says PONG" not in run.output, run.output
    finally:
        code = run.ctrl_c()
    assert code == 0, run.output
    assert not left_behind(), f"{left_behind()}\n{run.output}"
    assert "Traceback" not in run.output, run.output
