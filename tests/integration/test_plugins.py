"""Plugins for real: pip installs the tiny package of tests/data/plugin (its entry points add a
renderer and a manager, both named ``hello``), and a project names its own renderer and manager
in a recipe; `doit list` shows their tasks, `doit render:hello` and `doit run:hello` run them,
and a plugin that cannot be loaded fails only its own tasks, with one line.

No network: pip builds the package with its in-tree backend (``--no-build-isolation``,
``--no-index``) into a folder put on ``PYTHONPATH``, not into the shared venv."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, Project, make_project

RECIPE = """
services:
  web:
    command: ["true"]
  worker:
    command: ["true"]
deployments:
  one:
    default: true
  two:
    services: [web]
renderers:
  mine: mymod:Mine
  broken: no_such_module:Thing
  odd: mymod:NotARenderer
managers:
  mine: mymod:MineManager
"""
MYMOD = """
from dream.renderers.base import File

class Mine:
    name = "mine"
    def render(self, plan, target):
        return [File("mine.txt", f"{plan['name']}: {', '.join(target.images)}\\n")]

class NotARenderer:
    pass

class MineManager:
    renders = None
    def up(self, plan, files, root):
        print(f"mine up {plan['name']} files={files}")
        return 4
    def down(self, plan, files, root):
        return 0
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("plugin") / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(REPO / "tests" / "data" / "plugin")],
                   check=True, capture_output=True, text=True)
    return target


@pytest.fixture
def project(tmp_path: Path, site: Path) -> tuple[Project, dict[str, str]]:
    project = make_project(tmp_path / "p", {"svc.yaml": RECIPE}, with_demo=False)
    (project.root / "mymod.py").write_text(MYMOD)
    return project, {"PYTHONPATH": os.pathsep.join([str(site), str(project.root)])}


def listed(run: subprocess.CompletedProcess[str]) -> set[str]:
    return {line.split()[0] for line in run.stdout.splitlines() if line.strip()}


def test_an_installed_plugin_adds_render_hello_and_run_hello(project: tuple[Project, dict[str, str]]) -> None:
    project_, env = project
    names = listed(project_.doit("list", env=env))
    assert {"render:hello", "run:hello", "render:mine", "run:mine", "render:procfile", "render:compose",
            "render:images", "run:procfile", "run:compose"} <= names
    info = project_.doit("info", "render:hello", env=env, check=False).stdout
    assert "entry point hello = dream_hello:HelloRenderer in dream.renderers of dream-hello 0.1" in info

    first = project_.doit("render:hello", env=env)
    assert "one: wrote build/one/hello/: hello.txt, plan.json" in first.stdout
    assert (project_.root / "build" / "one" / "hello" / "hello.txt").read_text() == "hello, one:\n- web\n- worker\n"
    assert "-- render:hello" in project_.doit("render:hello", env=env).stdout  # nothing changed: nothing runs
    project_.doit("render:hello", "-d", "two", env=env)
    assert (project_.root / "build" / "two" / "hello" / "hello.txt").read_text() == "hello, two:\n- web\n"

    run = project_.doit("run:hello", "-d", "two", env=env)
    assert "hello manager up: two: hello, two: - web" in run.stdout


def test_a_recipe_names_its_own_plugins_and_a_broken_one_fails_alone(project: tuple[Project, dict[str, str]]) -> None:
    project_, env = project
    project_.doit("render:mine", env=env)
    assert (project_.root / "build" / "one" / "mine" / "mine.txt").read_text() == "one: web, worker\n"

    run = project_.doit("run:mine", env=env, check=False)
    assert run.returncode != 0 and "mine up one files=None" in run.stdout
    assert "deployment one: manager mine exit code 4" in run.stdout + run.stderr

    for task, line in (("render:broken", "renderer broken (recipes/svc.yaml: renderers.broken = no_such_module:Thing): "
                                         "cannot load no_such_module:Thing: ModuleNotFoundError"),
                       ("render:odd", "renderer odd (recipes/svc.yaml: renderers.odd = mymod:NotARenderer): "
                                      "mymod:NotARenderer is not a renderer (it has no render method)")):
        failed = project_.doit(task, env=env, check=False)
        assert failed.returncode != 0 and line in failed.stdout + failed.stderr, task
        assert "Traceback" not in failed.stdout + failed.stderr
    assert "render:broken" in listed(project_.doit("list", env=env))
    project_.doit("render:procfile", env=env)  # the other tasks are untouched


def test_a_name_declared_twice_fails_its_task_naming_both(project: tuple[Project, dict[str, str]]) -> None:
    project_, env = project
    (project_.root / "recipes" / "more.yaml").write_text("renderers:\n  hello: mymod:Mine\n")
    failed = project_.doit("render:hello", env=env, check=False)
    assert failed.returncode != 0
    assert ("renderer 'hello' is declared twice: entry point hello = dream_hello:HelloRenderer in dream.renderers "
            "of dream-hello 0.1, and recipes/more.yaml: renderers.hello = mymod:Mine; rename one") in failed.stdout
    project_.doit("render:mine", env=env)
