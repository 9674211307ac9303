"""The service tasks' wiring (dream/tasks/services.py) and the Compose manager's command lines
(dream/managers/compose.py, with a fake process runner; the real engine run is the conformance
suite's): which tasks exist, how ``-d`` reaches an ``uptodate`` check, when ``render:*`` is up
to date, which image a task builds first, what ``run:compose`` starts and takes down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from doit.loader import generate_tasks
from doit.task import Task

from dream.boundary import guard_creator
from dream.errors import DreamError
from dream.managers import host
from dream.managers.compose import ComposeManager
from dream.managers.images import service_references
from dream.oci.descriptor import Descriptor
from dream.renderers import RENDERERS
from dream.renderers.base import File
from dream.services.per_service import image_tag
from dream.tasks import load_recipes
from dream.tasks.services import BUILT_IN_MANAGERS, BUILT_IN_RENDERERS, service_tasks
from tests.conftest import make_project, require_docker
from tests.registries import RunningRegistry

SERVICES = """
services:
  web:
    command: ["python3", "-m", "http.server"]
    config_files:
      - {path: web.conf, content: "port 1\\n"}
  worker:
    command: ["true"]
deployments:
  one:
    default: true
  two:
    services: [web]
"""
TINY = """
image: {name: tiny}
layers:
  - name: app
    files: [{dest: /app, src: files}]
services:
  box:
    command: ["true"]
deployments:
  tinyd: {}
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    project = make_project(tmp_path / "p", {"svc.yaml": SERVICES, "tiny.yaml": TINY}, with_demo=False)
    (project.root / "recipes" / "files").mkdir()
    (project.root / "recipes" / "files" / "hello").write_text("hi\n")
    return project.root


def tasks(root: Path) -> dict[str, Task]:
    """The service tasks as doit makes them from the creators, behind dream's boundary."""
    made: dict[str, Task] = {}
    for name, creator in service_tasks(load_recipes(root), root).items():
        for task in generate_tasks(name, guard_creator(creator, name)(), creator.__doc__):
            made[task.name] = task
    return made


def chosen(task: Task, *args: str) -> Task:
    """``task`` as doit holds it after parsing ``doit <task> <args>``."""
    task.init_options(list(args))
    return task


def check(task: Task) -> bool:
    (test, _, _), = task.uptodate
    return bool(test(task))


def run(task: Task) -> Any:
    """The task's action with its options, as doit calls it."""
    task.init_options()
    (action,) = task.actions
    return action.py_callable(*action.args, **{k: v for k, v in task.options.items()})


def test_the_built_in_names_are_the_tables() -> None:
    assert sorted(BUILT_IN_RENDERERS) == sorted(RENDERERS)
    assert sorted(BUILT_IN_MANAGERS) == ["compose", "kubernetes", "podman-kube", "procfile", "systemd"]


def test_every_renderer_and_manager_has_its_task_and_each_takes_d(root: Path) -> None:
    made = tasks(root)
    every = ("render:procfile", "render:compose", "render:kubernetes", "render:images", "run:procfile",
             "run:compose", "run:kubernetes", "run:podman-kube", "render:systemd", "run:systemd")
    assert {*every, "load:tinyd-box", "push:tinyd-box"} <= set(made)
    # only an image recipe's services get load:/push: (svc.yaml's deployments run in no image)
    assert not any(name.startswith(("load:one-", "push:one-")) for name in made)
    for name in every:
        assert [p["name"] for p in made[name].params][0] == "deployment", name
    assert made["load:tinyd-box"].task_dep == ["build:tiny"]
    assert [p["name"] for p in made["load:tinyd-box"].params] == ["into"]


def test_render_is_up_to_date_exactly_when_the_files_on_disk_are_what_it_writes(root: Path) -> None:
    made = tasks(root)
    task = chosen(made["render:procfile"], "-d", "two")
    assert not check(task)
    run(task)
    assert check(task)
    out = root / "build" / "two" / "procfile"
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == [".env", "Procfile", "plan.json", "web.conf"]
    assert not check(chosen(tasks(root)["render:procfile"], "-d", "one"))  # another deployment: its own files

    (out / "Procfile").write_text((out / "Procfile").read_text() + "# edited\n")
    assert not check(task)
    run(task)
    os.chmod(out / ".env", 0o644)  # rendered 0600
    assert not check(task)
    run(task)
    (out / "config" / "web" / "stray.conf").write_text("left over\n")  # a write empties config/ first
    assert not check(task)
    run(task)
    assert check(task) and not (out / "config" / "web" / "stray.conf").exists()


def test_d_and_dream_deployment_choose_what_the_check_compares(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run(chosen(tasks(root)["render:procfile"], "-d", "two"))
    monkeypatch.setenv("DREAM_DEPLOYMENT", "two")
    assert check(chosen(tasks(root)["render:procfile"]))
    monkeypatch.setenv("DREAM_DEPLOYMENT", "one")
    assert not check(chosen(tasks(root)["render:procfile"]))


def test_a_check_that_cannot_choose_says_run_and_the_action_says_why(root: Path) -> None:
    task = chosen(tasks(root)["render:procfile"], "-d", "nope")
    assert not check(task)
    failed = run(task)
    assert "no deployment 'nope' (the project has one, tinyd, two)" in str(failed)


def test_the_image_tasks_build_the_chosen_deployments_recipe_first(root: Path) -> None:
    for name in ("render:compose", "render:images", "run:compose"):
        task = chosen(tasks(root)[name], "-d", "tinyd")
        assert not check(task)
        assert task.setup_tasks == ["build:tiny"], name
        other = chosen(tasks(root)[name], "-d", "two")  # its recipe builds no image: nothing to build
        check(other)
        assert other.setup_tasks == [], name


def test_render_compose_without_the_recipe_image_names_the_build(root: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DREAM_STORE", str(tmp_path / "empty-store"))
    failed = run(chosen(tasks(root)["render:compose"], "-d", "tinyd"))
    assert "deployment tinyd runs in image tiny, which is not built; run `doit build:tiny`" in str(failed)


def test_a_deployment_whose_recipe_has_no_layers_gets_no_service_images_and_says_why(root: Path) -> None:
    failed = run(chosen(tasks(root)["render:images"], "-d", "two"))
    assert ("deployment two: its recipe svc has no layers, so there is no image to run its services in "
            "(add a Debian layer with python3)") in str(failed)


def test_written_compares_text_mode_and_leftover_config(tmp_path: Path) -> None:
    files = [File("config/a/x.conf", "x\r\n"), File("top.txt", "t\n", 0o600)]
    assert not host.written(tmp_path, files)
    host.write_files(tmp_path, files)
    assert host.written(tmp_path, files)  # a carriage return survives the comparison
    (tmp_path / "other.txt").write_text("not ours, not in config/\n")
    assert host.written(tmp_path, files)
    assert not host.written(tmp_path, [File("config/a/x.conf", "x\n"), files[1]])


def test_every_renderer_gets_the_images_and_its_options(root: Path) -> None:
    (deployment,) = [d for r in load_recipes(root) for d in r.deployments.values() if d.name == "tinyd"]
    seen: list[Any] = []

    class Spy:
        name = "spy"

        def render(self, plan: Any, target: Any) -> list[File]:
            seen.append(target)
            return []

    out, files = host.rendered(deployment, root, Spy())
    assert out == root / "build" / "tinyd" / "spy" and [f.path for f in files] == ["plan.json"]
    assert seen[0].images == service_references(deployment) == {"box": "tinyd-box:latest"}
    assert seen[0].options == {}  # the deployment has no settings for "spy"
    out, _ = host.rendered(deployment, root, Spy(), "compose")  # a renderer declared under a name
    assert out.name == "compose"
    assert seen[1].options == deployment.options["compose"] == {"network": "host", "publish_address": "127.0.0.1"}


# -- the Compose manager, with a fake runner ------------------------------------------------

class FakeProcess:
    def __init__(self, argv: list[str], log: list[Any], codes: list[Any]) -> None:
        self.argv, self.log, self.codes = argv, log, codes
        self.returncode: int | None = None

    def wait(self) -> int:
        outcome = self.codes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        self.returncode = int(outcome)
        return self.returncode

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, signum: int) -> None:
        self.log.append(("signal", self.argv[5], signum))  # the verb, after -p D -f F


class Runner:
    """``popen`` for ComposeManager: records each command; each wait pops the next outcome."""

    def __init__(self, **outcomes: list[Any]) -> None:
        self.outcomes, self.log = outcomes, []

    def __call__(self, argv: list[str]) -> FakeProcess:
        self.log.append(argv)
        return FakeProcess(argv, self.log, self.outcomes[argv[5]])


PLAN = {"name": "demo", "services": []}
FILES = Path("/p/build/demo/compose")


def manager(runner: Runner, **kwargs: Any) -> ComposeManager:
    return ComposeManager(popen=runner, which=lambda name: f"/usr/bin/{name}", **kwargs)


def test_up_runs_compose_in_the_foreground_then_down_and_returns_its_code() -> None:
    runner = Runner(up=[3], down=[0])
    assert manager(runner).up(PLAN, FILES, Path("/p")) == 3
    assert runner.log == [
        ["/usr/bin/docker-compose", "-p", "demo", "-f", "/p/build/demo/compose/compose.yaml", "up", "--remove-orphans"],
        ["/usr/bin/docker-compose", "-p", "demo", "-f", "/p/build/demo/compose/compose.yaml", "down"]]
    assert manager(Runner(up=[0], down=[1])).up(PLAN, FILES, Path("/p")) == 1  # a failed down is not success


def test_ctrl_c_stops_compose_once_then_down_keeps_volumes_and_is_success() -> None:
    runner = Runner(up=[KeyboardInterrupt(), 130], down=[0])
    assert manager(runner).up(PLAN, FILES, Path("/p")) == 0
    assert runner.log[1] == ("signal", "up", signal.SIGINT)
    assert runner.log[2][-1] == "down"
    twice = Runner(up=[KeyboardInterrupt(), KeyboardInterrupt(), 137], down=[KeyboardInterrupt(), 0])
    assert manager(twice).up(PLAN, FILES, Path("/p")) == 0  # Ctrl-C during down: down still finishes
    assert [entry for entry in twice.log if entry[0] == "signal"] == [("signal", "up", signal.SIGINT)] * 2


def test_whatever_ends_the_wait_compose_is_stopped_and_taken_down() -> None:
    """An interrupt that lands outside the wait's own handler (while printing) must not leave
    compose running without its ``down``."""
    runner = Runner(up=[RuntimeError("between two waits"), 0], down=[0])
    with pytest.raises(RuntimeError, match="between two waits"):
        manager(runner).up(PLAN, FILES, Path("/p"))
    assert ("signal", "up", signal.SIGINT) in runner.log and runner.log[-1][-1] == "down"


def test_down_removes_volumes_only_when_asked() -> None:
    runner = Runner(up=[0], down=[0])
    manager(runner, remove_volumes=True).up(PLAN, FILES, Path("/p"))
    assert runner.log[-1][-2:] == ["down", "-v"]


def test_no_docker_compose_is_one_line_before_any_load_or_start() -> None:
    runner = Runner()
    loads: list[Any] = []
    compose = ComposeManager(popen=runner, which=lambda name: None, store=FakeStore(),
                             images={"web": MANIFEST}, load=lambda *a: loads.append(a))
    with pytest.raises(DreamError, match="docker-compose is not installed; install Debian's docker-compose"):
        compose.up(PLAN, FILES, Path("/p"))
    assert runner.log == [] and loads == []


MANIFEST = Descriptor("application/vnd.oci.image.manifest.v1+json", "sha256:" + "a" * 64, 10)
BLOBS = [{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "c" * 64, "size": 2},
         {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + "1" * 64, "size": 3}]


class FakeStore:
    def __init__(self) -> None:
        self.fetched: list[str] = []
        self.locked = False

    @contextmanager
    def lock(self, name: str, shared: bool = False) -> Iterator[None]:
        self.locked = True
        yield
        self.locked = False

    def read_manifest(self, digest: str) -> dict[str, Any]:
        return {"config": BLOBS[0], "layers": BLOBS[1:]}

    def local_blob(self, descriptor: Descriptor) -> Path:
        assert self.locked
        self.fetched.append(descriptor.digest)
        return Path("/dev/null")


def test_up_loads_each_service_image_under_its_tag_first() -> None:
    store, loads = FakeStore(), []
    runner = Runner(up=[0], down=[0])

    def load(store_: Any, manifest: Descriptor, name: str, tags: list[str]) -> str:
        loads.append((name, tags, list(runner.log)))
        return f"loaded {name}:{tags[0]}"

    compose = ComposeManager(store=store, images={"web": MANIFEST, "db": MANIFEST},  # type: ignore[arg-type]
                             popen=runner, which=lambda name: "/usr/bin/docker-compose", load=load)  # type: ignore[arg-type]
    assert compose.up(PLAN, FILES, Path("/p")) == 0
    assert [(name, tags) for name, tags, _ in loads] == [("demo-web", ["latest"]), ("demo-db", ["latest"])]
    assert all(started == [] for _, _, started in loads)  # loaded before compose starts
    assert store.fetched == [b["digest"] for b in BLOBS] * 2  # a blob only a registry held is fetched
    assert {f"{image_tag('demo', s)}:latest" for s in ("web", "db")} == {"demo-web:latest", "demo-db:latest"}


# -- real doit: the second render runs nothing ---------------------------------------------

def test_a_second_render_runs_nothing_and_render_compose_builds_the_image_first(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", {"svc.yaml": SERVICES, "tiny.yaml": TINY}, with_demo=False)
    (project.root / "recipes" / "files").mkdir()
    (project.root / "recipes" / "files" / "hello").write_text("hi\n")
    first = project.doit("render:procfile", "-d", "two")
    assert ".  render:procfile" in first.stdout and "two: wrote build/two/procfile/Procfile and .env" in first.stdout
    assert "-- render:procfile" in project.doit("render:procfile", "-d", "two").stdout
    assert ".  render:procfile" in project.doit("render:procfile").stdout  # the default, one: not rendered yet

    built = project.doit("render:compose", "-d", "tinyd").stdout
    assert built.index(".  build:tiny") < built.index(".  render:compose")
    assert "tinyd-box: sha256:" in built and "wrote build/tinyd/compose/: compose.yaml, plan.json" in built
    again = project.doit("render:compose", "-d", "tinyd").stdout
    assert "-- render:compose" in again and "build:tiny" not in again  # up to date: no setup task runs
    assert "image: tinyd-box:latest" in (project.root / "build" / "tinyd" / "compose" / "compose.yaml").read_text()


@pytest.mark.integration
def test_one_services_image_loads_into_the_engine_and_pushes(registry_anonymous: RunningRegistry,
                                                             tmp_path: Path) -> None:
    require_docker()
    project = make_project(tmp_path / "p", {"tiny.yaml": TINY}, with_demo=False)
    (project.root / "recipes" / "files").mkdir()
    (project.root / "recipes" / "files" / "hello").write_text("hi\n")
    loaded = project.doit("load:tinyd-box").stdout
    assert loaded.index(".  build:tiny") < loaded.index(".  load:tinyd-box") and "loaded tinyd-box:latest" in loaded
    try:
        labels = subprocess.run(["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", "tinyd-box:latest"],
                                capture_output=True, text=True, check=True).stdout
        assert json.loads(labels).items() >= {"dev.dream.deployment": "tinyd", "dev.dream.service": "box"}.items()
    finally:
        subprocess.run(["docker", "image", "rm", "tinyd-box:latest"], capture_output=True)

    compose = project.root / "build" / "tinyd" / "compose" / "compose.yaml"
    project.doit("render:compose")
    assert yaml.safe_load(compose.read_text())["services"]["box"]["image"] == "tinyd-box:latest"  # not pushed
    repo = f"{registry_anonymous.host}/services/tiny"
    pushed = project.doit("push:tinyd-box", "--to", repo,
                          env={"DOCKER_CONFIG": str(registry_anonymous.docker_config(tmp_path))}).stdout
    assert f"pushed {repo}@{project.manifest_digest('tinyd-box')}" in pushed
    assert "tinyd-box" in pushed  # the service's tag, not the recipe's
    assert ".  render:compose" in project.doit("render:compose").stdout  # the push changed what it writes
    assert yaml.safe_load(compose.read_text())["services"]["box"]["image"] == \
        f"{repo}@{project.manifest_digest('tinyd-box')}"


def test_run_compose_without_docker_compose_says_so_and_builds_nothing(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", {"tiny.yaml": TINY}, with_demo=False)
    (project.root / "recipes" / "files").mkdir()
    (project.root / "recipes" / "files" / "hello").write_text("hi\n")
    (tmp_path / "bin").mkdir()
    run = project.doit("run:compose", env={"PATH": str(tmp_path / "bin")}, check=False)
    assert run.returncode != 0
    assert ("docker-compose is not installed; install Debian's docker-compose (apt-get install "
            "docker-compose) to run a deployment with run:compose") in run.stdout
    assert "build:tiny" not in run.stdout and "Traceback" not in run.stdout + run.stderr


def test_a_service_image_tag_that_is_another_images_is_refused_by_name() -> None:
    from types import SimpleNamespace

    from dream.tasks.services import tag_clashes
    deployments = {"a": SimpleNamespace(name="a", services={"b-c": {}, "x": {}}),
                   "a-b": SimpleNamespace(name="a-b", services={"c": {}}),
                   "web": SimpleNamespace(name="web", services={"app": {}})}
    clashes = tag_clashes(deployments, {"web-app"})  # type: ignore[arg-type]
    assert set(clashes) == {("a", "b-c"), ("a-b", "c"), ("web", "app")}
    assert clashes["a", "b-c"] == ("the image tag a-b-c would name service b-c of deployment a and service c "
                                   "of deployment a-b; rename the deployment or the service")
    assert clashes["web", "app"].startswith("the image tag web-app would name image web-app and service app")
