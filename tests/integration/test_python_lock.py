"""Locking `cuda` and `python` layers against the real package index (uv + pip)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import make_project, require

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
