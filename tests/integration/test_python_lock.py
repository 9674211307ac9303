"""Locking `cuda` and `python` layers against the real package index (uv + pip)."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import pytest

from dream.python.resolve import Wheel
from dream.python.target import PythonTarget
from dream.python.wheels import fetch, install_paths
from dream.store.layout import file_sha256
from tests.conftest import make_project, require, require_docker

pytestmark = pytest.mark.integration

RECIPE = """imports: [debian-python]
python: {version: "%s"}
layers:
  - name: cuda
    cuda: {version: "12.9", components: [runtime]}
  - name: py
    python: {requirements: [nvidia-cuda-runtime-cu12, mdurl==0.1.2], min_layer_size: 1000000}
"""


def test_wheels_the_cuda_layer_provides_are_not_installed_twice(tmp_path: Path) -> None:
    require("apt-get")
    project = make_project(tmp_path / "p", {"twice.yaml": RECIPE % "3.11"}, with_demo=False)
    project.doit("lock:twice")
    lock = json.loads((project.root / "recipes/twice.lock.json").read_text())["layers"]
    cuda = {w["name"]: w for w in lock["cuda"]["wheels"]}
    assert set(cuda) == {"cuda-toolkit", "nvidia-cuda-runtime-cu12"}
    assert cuda["nvidia-cuda-runtime-cu12"]["version"].startswith("12.9.")
    assert [w["name"] for w in lock["py"]["wheels"]] == ["mdurl"]
    wheel = cuda["nvidia-cuda-runtime-cu12"]
    assert wheel["filename"].endswith(".whl") and len(wheel["sha256"]) == 64 and wheel["size"] > 1_000_000
    assert wheel["libs"] == ["usr/local/lib/python3.11/dist-packages/nvidia/cuda_runtime/lib/libcudart.so.12"]
    assert "://" not in (project.root / "recipes/twice.lock.json").read_text()  # no index host
    listed = project.doit("list", "--all").stdout
    assert "layer:twice/cuda-runtime" not in listed  # 3.5 MB: under the default 16 MB, no own layer
    assert "layer:twice/cuda " in listed and "layer:twice/py " in listed


def test_an_interpreter_the_base_does_not_have_is_refused(tmp_path: Path) -> None:
    require("apt-get")
    project = make_project(tmp_path / "p", {"twice.yaml": RECIPE % "3.12"}, with_demo=False)
    run = project.doit("lock:twice", check=False)
    assert run.returncode != 0
    message = [line for line in (run.stdout + run.stderr).splitlines() if "python3.12" in line]
    assert message and message[0].startswith("recipes/twice.yaml:6: layers.py: no Debian layer below installs python3.12")


# Two python layers, so that the upper one's `drop` comes from the lower one's member list
# (`provided_by`); nvJitLink is a 39 MB wheel, above min_layer_size: a layer of its own.
TWO_LAYERS = """python: {version: "3.11"}
layers:
  - name: low
    python: {requirements: [nvidia-cuda-runtime-cu12==12.8.90], min_layer_size: 10000000}
  - name: high
    python: {requirements: [%s], min_layer_size: 10000000}
"""
HIGH = "nvidia-nvjitlink-cu12==12.8.93"


def _expected(lock: dict, tmp_path: Path) -> dict[str, dict]:
    """size, libs and drop as the old downloading code computed them: the wheels fetched with
    pip (into a cache of the test's own) and read with zipfile, lower layer first."""
    target = PythonTarget("3.11", "manylinux_2_36_x86_64", "/usr/local")
    provided: set[str] = set()
    out = {}
    for layer in ("low", "high"):
        for entry in lock[layer]["wheels"]:
            wheel = Wheel.from_dict(entry)
            path = fetch([wheel], target, tmp_path / "pip-cache")[wheel.sha256]
            assert file_sha256(path) == wheel.sha256
            files = install_paths(zipfile.ZipFile(path).namelist(), target)
            out[wheel.name] = {"size": path.stat().st_size,
                               "libs": sorted(f for f in files if _shared_library(f.rsplit("/", 1)[-1])),
                               "drop": sorted(f for f in files if f in provided)}
            provided.update(files)
    return out


def _shared_library(name: str) -> bool:
    return name.startswith("lib") and (name.endswith(".so") or ".so." in name)


def test_a_lock_reads_member_lists_not_wheels(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", {"lean.yaml": TWO_LAYERS % HIGH}, with_demo=False)
    cache = tmp_path / "cache"
    project.doit("lock:lean", env={"DREAM_CACHE": str(cache)})
    assert not (cache / "wheels").exists() or not any((cache / "wheels").iterdir())
    assert len(list((cache / "wheel-members").glob("*.json"))) == 2
    lock = json.loads((project.root / "recipes/lean.lock.json").read_text())["layers"]
    got = {w["name"]: {k: w[k] for k in ("size", "libs", "drop")}
           for layer in ("low", "high") for w in lock[layer]["wheels"]}
    expected = _expected(lock, tmp_path)
    assert got == expected
    assert got["nvidia-nvjitlink-cu12"]["size"] > 10_000_000
    assert got["nvidia-nvjitlink-cu12"]["drop"] == ["usr/local/lib/python3.11/dist-packages/nvidia/__init__.py"]
    assert "://" not in (project.root / "recipes/lean.lock.json").read_text()

    # Another machine: an empty cache, the lower layer kept from the lock, the upper one changed.
    # The lower wheels' member lists come from the index again (by their exact pins), not a download.
    (project.root / "recipes/lean.yaml").write_text(TWO_LAYERS % (HIGH + ", mdurl==0.1.2"))
    other = tmp_path / "other-cache"
    project.doit("lock:lean", env={"DREAM_CACHE": str(other)})
    assert not (other / "wheels").exists() or not any((other / "wheels").iterdir())
    relocked = json.loads((project.root / "recipes/lean.lock.json").read_text())["layers"]
    high = {w["name"]: w for w in relocked["high"]["wheels"]}
    assert set(high) == {"nvidia-nvjitlink-cu12", "mdurl"}
    assert high["nvidia-nvjitlink-cu12"]["drop"] == expected["nvidia-nvjitlink-cu12"]["drop"]
    assert relocked["low"] == lock["low"]


def test_an_unknown_distribution_names_the_recipe_line(tmp_path: Path) -> None:
    recipe = ('python: {version: "3.11"}\nlayers:\n  - name: app\n    python:\n      requirements:\n'
              '        - flask\n        - reqeusts\n')
    project = make_project(tmp_path / "p", {"web.yaml": recipe}, with_demo=False)
    run = project.doit("lock:web", check=False, env={"DREAM_CACHE": str(tmp_path / "cache")})
    assert run.returncode != 0
    lines = [line for line in (run.stdout + run.stderr).splitlines() if "reqeusts" in line]
    assert lines == ["recipes/web.yaml:7: layers.app.python.requirements[1]: no distribution 'reqeusts' "
                     "on the package index (looked in pip's configured indexes and find-links)"]
    assert "Traceback" not in run.stdout + run.stderr


WEB = """imports: [debian-python]
python: {version: "3.11"}
image:
  name: web
  workdir: /app
  entrypoint: [python3]
  cmd: [/app/main.py]
layers:
  - name: deps
    python: {requirements: [requests==2.32.3, flask==3.1.1]}
  - name: app
    files:
      - {dest: /app/main.py, content: "%s"}
"""
MAIN = ("import flask, requests\\napp = flask.Flask(__name__)\\n"
        "print('web', requests.__version__, flask.__version__)\\n")


def test_a_web_service_depending_on_requests_locks_builds_and_runs(tmp_path: Path) -> None:
    require("apt-get")
    project = make_project(tmp_path / "p", {"web.yaml": WEB % MAIN}, with_demo=False)
    project.doit("lock:web")
    lock = json.loads((project.root / "recipes/web.lock.json").read_text())["layers"]["deps"]
    chosen = {w["name"]: w["filename"] for w in lock["wheels"]}
    assert "-cp311-cp311-manylinux" in chosen["charset-normalizer"]  # the interpreter's own build
    assert chosen["requests"] == "requests-2.32.3-py3-none-any.whl"
    require_docker()
    project.doit("load:web")
    probe = "import requests, charset_normalizer; print(requests.__version__)"
    out = subprocess.run(["docker", "run", "--pull", "never", "--rm", "--network", "none", "web", "-c", probe],
                         capture_output=True, text=True, check=True).stdout
    assert out == "2.32.3\n"
    out = subprocess.run(["docker", "run", "--pull", "never", "--rm", "--network", "none", "web"],
                         capture_output=True, text=True, check=True).stdout
    assert out == "web 2.32.3 3.1.1\n"
