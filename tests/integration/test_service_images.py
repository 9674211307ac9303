"""Per-service images of the real services-demo recipe (deployment db-app: redis and app): the
store grows by their small layers, configs and manifests only; skopeo reads them; the Docker
engine loads them, `docker inspect` shows the Healthcheck, and the redis image run on its own
(no network) becomes healthy through `python3 -m dream_supervisor probe`, then stops within
its grace period."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dream.engine import load
from dream.managers.images import build_service_images
from dream.recipe.load import load_recipe
from dream.recipe.model import Deployment
from dream.store import Descriptor, Store
from tests.conftest import Project, copy_services_demo, make_project, require, require_docker

pytestmark = pytest.mark.integration
CONTAINER = "dream-test-service-image-redis"


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def store_bytes(store: Path) -> int:
    return sum(path.stat().st_size for path in (store / "blobs" / "sha256").iterdir())


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, Deployment]:
    require("apt-get")
    project = make_project(tmp_path_factory.mktemp("service-images") / "p", with_demo=False)
    copy_services_demo(project)
    project.doit("build:services-demo", env={"DREAM_LAYER_CACHE": "off"})
    recipe = load_recipe(project.root / "recipes" / "services-demo.yaml", project.root)
    return project, recipe.deployments["db-app"]


@pytest.fixture(scope="module")
def images(demo: tuple[Project, Deployment]) -> dict[str, Descriptor]:
    project, deployment = demo
    store = Store(project.store)
    before = store_bytes(project.store)
    built = build_service_images(store, deployment)
    grew = store_bytes(project.store) - before
    own = {}
    for name, descriptor in built.items():
        manifest = store.read_manifest(descriptor.digest)
        own[name] = manifest["layers"][-1]["size"] + manifest["config"]["size"] + descriptor.size
        print(f"{name}: small layer {manifest['layers'][-1]['size']:,} + config {manifest['config']['size']:,}"
              f" + manifest {descriptor.size:,} = {own[name]:,} bytes")
    print(f"the store grew by {grew:,} bytes for {len(built)} per-service images")
    assert grew == sum(own.values())  # nothing of the recipe's layers is copied
    assert all(size < 100_000 for size in own.values()), own
    return built


def test_a_second_build_writes_nothing(demo: tuple[Project, Deployment], images: dict[str, Descriptor]) -> None:
    project, deployment = demo
    before = {path.name for path in (project.store / "blobs" / "sha256").iterdir()}
    assert build_service_images(Store(project.store), deployment) == images
    assert {path.name for path in (project.store / "blobs" / "sha256").iterdir()} == before


def test_skopeo_reads_each_image(demo: tuple[Project, Deployment], images: dict[str, Descriptor]) -> None:
    skopeo = require("skopeo")
    project, _ = demo
    base = json.loads(subprocess.run([skopeo, "inspect", f"oci:{project.store}:services-demo"],
                                     capture_output=True, text=True, check=True).stdout)
    for name, descriptor in images.items():
        tag = f"oci:{project.store}:db-app-{name}"
        seen = json.loads(subprocess.run([skopeo, "inspect", tag], capture_output=True, text=True, check=True).stdout)
        assert seen["Digest"] == descriptor.digest
        assert seen["Layers"][:-1] == base["Layers"]
        assert seen["Labels"]["dev.dream.service"] == name
        assert seen["Labels"]["dev.dream.deployment"] == "db-app"
        config = json.loads(subprocess.run([skopeo, "inspect", "--config", tag], capture_output=True,
                                           text=True, check=True).stdout)
        assert config["config"]["Entrypoint"][-1] == f"/etc/dream/services/db-app-{name}.json"


@pytest.fixture(scope="module")
def loaded(demo: tuple[Project, Deployment], images: dict[str, Descriptor]) -> Iterator[dict[str, str]]:
    require_docker()
    project, _ = demo
    store = Store(project.store)
    names = {}
    for name, descriptor in images.items():
        print(load(store, descriptor, f"db-app-{name}", ["latest"]))
        names[name] = f"db-app-{name}:latest"
    yield names
    docker("rm", "-f", CONTAINER, check=False)
    for reference in names.values():
        docker("rmi", reference, check=False)


def test_docker_inspect_shows_the_healthcheck(loaded: dict[str, str]) -> None:
    for name, reference in loaded.items():
        config = json.loads(docker("inspect", reference).stdout)[0]["Config"]
        assert config["Healthcheck"]["Test"] == ["CMD", "python3", "-m", "dream_supervisor", "probe",
                                                 f"/etc/dream/services/db-app-{name}.json"]
        assert config["User"] == "root" and config["StopSignal"] == "SIGTERM"
    redis = json.loads(docker("inspect", loaded["redis"]).stdout)[0]["Config"]
    assert redis["Healthcheck"]["Interval"] == 100_000_000  # the preset's period: 100ms
    assert redis["Healthcheck"]["Retries"] == 100
    assert redis["ExposedPorts"] == {"6379/tcp": {}}
    app = json.loads(docker("inspect", loaded["app"]).stdout)[0]["Config"]
    assert app["Healthcheck"]["Interval"] == 200_000_000
    assert "ExposedPorts" not in app or app["ExposedPorts"] is None


def test_the_redis_image_becomes_healthy_and_stops_within_its_grace(loaded: dict[str, str]) -> None:
    docker("rm", "-f", CONTAINER, check=False)
    docker("run", "-d", "--pull", "never", "--network", "none", "--name", CONTAINER, loaded["redis"])
    try:
        deadline = time.monotonic() + 60
        state: dict = {}  # type: ignore[type-arg]
        while time.monotonic() < deadline:
            state = json.loads(docker("inspect", CONTAINER).stdout)[0]["State"]
            if state.get("Health", {}).get("Status") == "healthy" or not state["Running"]:
                break
            time.sleep(0.2)
        logs = docker("logs", CONTAINER).stdout
        assert state.get("Health", {}).get("Status") == "healthy", (state, logs)
        last = state["Health"]["Log"][-1]
        assert last["ExitCode"] == 0 and "redis: /bin/sh -c" in last["Output"], last
        assert "redis is ready" in logs
        started = time.monotonic()
        docker("stop", "-t", "30", CONTAINER)
        took = time.monotonic() - started
        assert took < 10, f"docker stop took {took:.1f}s (redis's grace is 10 s)"
        state = json.loads(docker("inspect", CONTAINER).stdout)[0]["State"]
        assert state["ExitCode"] == 0, docker("logs", CONTAINER).stdout
    finally:
        docker("rm", "-f", CONTAINER, check=False)
