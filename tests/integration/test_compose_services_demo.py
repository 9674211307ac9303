"""recipes/services-demo.yaml under Docker Compose, on the real engine with Debian's
docker-compose: as committed, `doit run:compose` serves the app's hit counter from Redis on
127.0.0.1 and Ctrl-C ends it with exit code 0 and no container left; `doit render:compose`
writes a file compose itself accepts and is up to date the second time; with a readiness probe
that never passes, `docker-compose ps` shows Redis unhealthy and the app (which waits for
`healthy`) is never started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from tests.conftest import Project, copy_services_demo, make_project, require, require_docker

pytestmark = pytest.mark.integration
DEPLOYMENT = "db-app"


def services_demo(base: Path) -> Project:
    require("apt-get")
    require("docker-compose")
    require_docker()
    project = make_project(base, with_demo=False)
    copy_services_demo(project)
    return project


def remove_volumes() -> None:
    """`down` keeps the named volumes, as it should; the test's own go."""
    volumes = subprocess.run(["docker", "volume", "ls", "-q", "--filter",
                              f"label=com.docker.compose.project={DEPLOYMENT}"],
                             capture_output=True, text=True, check=True).stdout.split()
    if volumes:
        subprocess.run(["docker", "volume", "rm", *volumes], capture_output=True, check=True)


def start(project: Project) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "doit", "run:compose"], cwd=project.root, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "DREAM_STORE": str(project.store), "PYTHONUNBUFFERED": "1"})


def test_services_demo_as_committed_counts_hits_in_redis_and_ctrl_c_ends_it(tmp_path: Path) -> None:
    project = services_demo(tmp_path / "p")
    assert not containers(), "a db-app compose project is already on the engine"
    run = start(project)
    try:
        deadline, answer = time.monotonic() + 180, ""
        while time.monotonic() < deadline and "hits" not in answer:
            assert run.poll() is None, run.communicate()[0]
            time.sleep(0.5)
            try:  # the app's PORT: port_base 5000 + 100 × its place (redis, app)
                with urllib.request.urlopen("http://127.0.0.1:5100/", timeout=2) as response:
                    answer = response.read().decode()
            except OSError:
                continue
        assert "hits" in answer, answer
        health: dict[str, str] = {}
        while time.monotonic() < deadline and health != {"redis": "healthy", "app": "healthy"}:
            time.sleep(0.2)  # the app answers before the engine's next healthcheck has run
            health = {name: state["health"] for name, state in containers().items()}
        assert health == {"redis": "healthy", "app": "healthy"}, health
    finally:
        run.send_signal(signal.SIGINT)
        output, _ = run.communicate(timeout=60)
        remove_volumes()
    assert run.returncode == 0, output
    assert not containers(), output


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """services-demo whose database never becomes ready: its readiness probe always fails, and
    its process ignores SIGTERM, so that after the probe failed it stays (unhealthy) for its
    15 s grace instead of ending at once and being restarted. Probes and commands are not
    inputs of the Debian layer: the lock stays valid."""
    project = services_demo(tmp_path_factory.mktemp("compose") / "p")
    recipe = project.root / "recipes" / "services-demo.yaml"
    text = recipe.read_text()
    assert "\nservices:\n  app:\n" in text
    recipe.write_text(text.replace("\nservices:\n  app:\n", """
services:
  redis:
    command: "trap '' TERM; while :; do sleep 0.2; done"
    readiness: {exec: exit 1, period: 100ms, failure_threshold: 3}
    stop_grace_period: 15s
  app:
"""))
    yield project
    remove_volumes()


def compose_file(project: Project) -> Path:
    return project.root / "build" / DEPLOYMENT / "compose" / "compose.yaml"


def containers() -> dict[str, dict[str, str]]:
    """The engine's containers of the compose project, by service: state and health."""
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={DEPLOYMENT}"],
                         capture_output=True, text=True, check=True).stdout.split()
    if not ids:
        return {}
    found = {}
    for item in json.loads(subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True,
                                          check=True).stdout):
        state = item["State"]
        found[item["Config"]["Labels"]["com.docker.compose.service"]] = {
            "status": state["Status"], "health": (state.get("Health") or {}).get("Status", "")}
    return found


def test_render_compose_is_valid_for_docker_compose_and_up_to_date_the_second_time(demo: Project) -> None:
    demo.doit("render:compose")
    rendered = yaml.safe_load(compose_file(demo).read_text())
    assert rendered["services"]["app"]["depends_on"] == {"redis": {"condition": "service_healthy"}}
    check = subprocess.run(["docker-compose", "-f", str(compose_file(demo)), "config", "-q"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    again = demo.doit("render:compose").stdout
    assert "-- render:compose" in again and ".  " not in again, again  # nothing ran


def test_an_unhealthy_database_holds_back_the_app_and_ctrl_c_leaves_nothing(demo: Project) -> None:
    assert not containers(), "a db-app compose project is already on the engine"
    run = start(demo)
    try:
        deadline = time.monotonic() + 120
        seen: dict[str, dict[str, str]] = {}
        while time.monotonic() < deadline and seen.get("redis", {}).get("health") != "unhealthy":
            assert run.poll() is None, run.communicate()[0]
            time.sleep(0.5)
            seen = containers()
        assert seen.get("redis", {}).get("health") == "unhealthy", seen
        ps = subprocess.run(["docker-compose", "-p", DEPLOYMENT, "-f", str(compose_file(demo)), "ps"],
                            capture_output=True, text=True, check=True).stdout
        assert "(unhealthy)" in ps, ps
        time.sleep(2)  # long enough for a start that should not happen
        assert containers().get("app", {}).get("status") in (None, "created"), containers()
    finally:
        run.send_signal(signal.SIGINT)
        output, _ = run.communicate(timeout=60)
    assert not containers(), output
    assert "Traceback" not in output, output
