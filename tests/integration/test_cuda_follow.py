"""A `cuda` layer that follows the framework's CUDA, against the real package index: torch 2.8.0
pins CUDA 12.8.1's wheels, and `version: python` must lock exactly those; a `version: "12.9"`
layer under the same torch must fail with one line naming the cuda layer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dream.lock import locked_inputs
from dream.recipe.load import load_recipe
from tests.conftest import make_project

pytestmark = pytest.mark.integration

CUDA = """layers:
  - name: cuda
    cuda: {version: %s, components: [cudart, cublas, nvjitlink]}
  - name: python
    python:
      requirements: [torch==2.8.0]
"""
ALONE = """layers:
  - name: python
    python:
      requirements: [torch==2.8.0]
"""


def _versions(lock: dict, layer: str) -> dict[str, str]:  # type: ignore[type-arg]
    return {w["name"]: w["version"] for w in lock[layer]["wheels"]}


def test_the_cuda_layer_takes_the_frameworks_own_pins(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", {"follow.yaml": CUDA % "python", "alone.yaml": ALONE},
                           with_demo=False)
    project.doit("lock:alone")
    project.doit("lock:follow")
    torch = _versions(json.loads((project.root / "recipes/alone.lock.json").read_text())["layers"], "python")
    lock = json.loads((project.root / "recipes/follow.lock.json").read_text())["layers"]
    cuda = _versions(lock, "cuda")
    assert set(cuda) == {"cuda-toolkit", "nvidia-cuda-runtime-cu12", "nvidia-cublas-cu12", "nvidia-nvjitlink-cu12"}
    for name in ("nvidia-cuda-runtime-cu12", "nvidia-cublas-cu12", "nvidia-nvjitlink-cu12"):
        assert cuda[name] == torch[name], name
    # the release whose pins are torch's (12.8.1), not the newest 12.8 (12.8.2.0: cuBLAS 12.8.5.5)
    assert lock["cuda"]["cuda"] == "12.8.1" == cuda["cuda-toolkit"]
    python = _versions(lock, "python")
    assert not set(python) & set(cuda)  # installed once, by the cuda layer
    assert python == {n: v for n, v in torch.items() if n not in cuda}  # the rest as torch alone has it


def test_a_cuda_version_torch_does_not_use_is_one_line(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", {"clash.yaml": CUDA % '"12.9"'}, with_demo=False)
    run = project.doit("lock:clash", check=False)
    assert run.returncode != 0
    output = run.stdout + run.stderr
    lines = [line for line in output.splitlines() if "clashes with" in line]
    assert len(lines) == 1, output
    assert lines[0].startswith("recipes/clash.yaml:2: layers.cuda.cuda.version: nvidia-")
    assert "from CUDA 12.9." in lines[0] and "clashes with torch==2.8.0, which needs nvidia-" in lines[0]
    assert lines[0].endswith('; use version: python or version: "12.8"')
    assert "Traceback" not in output and "uv" not in lines[0]
    assert not (project.root / "recipes/clash.lock.json").exists()


def test_one_more_small_requirement_keeps_the_cuda_entry_as_a_full_relock_has_it(tmp_path: Path) -> None:
    """The cuda layer follows torch's pins, which six does not move: its entry is kept (no
    resolving; issue 14's relock in seconds), and the lock is the one a lock from scratch of
    the same recipe writes."""
    project = make_project(tmp_path / "p", {"follow.yaml": CUDA % "python"}, with_demo=False)
    project.doit("lock:follow")
    path = project.root / "recipes/follow.lock.json"
    before = json.loads(path.read_text())["layers"]
    recipe = project.root / "recipes/follow.yaml"
    recipe.write_text(recipe.read_text().replace("[torch==2.8.0]", "[torch==2.8.0, six==1.17.0]"))
    run = project.doit("lock:follow")
    assert "cuda: kept (4 pins; the pins it follows did not move)" in run.stdout, run.stdout
    assert "python: +six 1.17.0" in run.stdout
    after = json.loads(path.read_text())["layers"]
    assert after["cuda"]["wheels"] == before["cuda"]["wheels"]
    assert after["cuda"]["settings"] != before["cuda"]["settings"]  # fresh for the new requirements
    for layer in after:  # what a build checks first: no entry is stale
        locked_inputs(load_recipe(recipe, project.root), layer, after)
    scratch = make_project(tmp_path / "q", {"follow.yaml": recipe.read_text()}, with_demo=False)
    scratch.doit("lock:follow")
    fresh = json.loads((scratch.root / "recipes/follow.lock.json").read_text())["layers"]
    assert {n: e["wheels"] for n, e in fresh.items()} == {n: e["wheels"] for n, e in after.items()}
    assert fresh["cuda"]["settings"] == after["cuda"]["settings"]
