"""dream in a user's own project: a plain (non-editable) ``pip install`` of this repository into
a fresh virtual environment, then, in an empty directory outside the repository, ``python -m
dream init``, one recipe importing the shipped presets, ``doit lock``, ``build`` and ``load``.

The repository is copied first (its tracked and untracked, not ignored, files), so the install
writes no build/ into the checkout, and nothing of the checkout is importable from the project:
the test asserts that dream is imported from the new environment's site-packages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, require, require_docker

pytestmark = pytest.mark.integration

RECIPE = """\
# a GPU box: Debian + Python, CUDA from NVIDIA's wheels, sshd under dream's supervisor
imports: [debian-python, cuda-12, sshd]
image: {name: mybox}
layers:
  - name: services
    services: {}
"""


def run(argv: list[str], cwd: Path, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh environment with dream installed from a copy of this repository, not editable."""
    base = tmp_path_factory.mktemp("install")
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.split("\0")
    source = base / "dream-src"
    for name in filter(None, files):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    environment = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(environment)], check=True)
    run([str(environment / "bin" / "pip"), "install", "-q", str(source)], base, dict(os.environ))
    shutil.rmtree(source)  # nothing may come from the source tree now
    return environment


def test_a_project_of_ones_own_builds_and_loads_with_the_shipped_presets(venv: Path, tmp_path: Path) -> None:
    require("apt-get")
    require_docker()
    project = tmp_path / "mybox"
    project.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "DREAM_STORE")}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    python = str(venv / "bin" / "python")
    where = run([python, "-c", "import dream.presets; print(dream.presets.PRESET_DIR)"], project, env).stdout.strip()
    assert where.startswith(str(venv)) and where.endswith("site-packages/dream/presets")

    assert run([python, "-m", "dream", "init"], project, env).stdout.startswith("dream: made dodo.py, recipes/")
    again = run([python, "-m", "dream", "init"], project, env, check=False)
    assert again.returncode == 1 and again.stderr == (f"dream: {project / 'dodo.py'} already exists; "
                                                      "not overwriting it (delete it to start over)\n")
    (project / "recipes" / "mybox.yaml").write_text(RECIPE)
    doit = str(venv / "bin" / "doit")

    unlocked = run([doit, "build:mybox"], project, env, check=False)  # errors name the shipped preset
    assert unlocked.returncode != 0 and "Traceback" not in unlocked.stdout + unlocked.stderr
    assert (f"{where}/debian-python.yaml:8: layers.debian: no lock file for layer 'debian'; "
            "run `doit lock:mybox`") in unlocked.stdout + unlocked.stderr

    run([doit, "lock:mybox"], project, env)
    built = run([doit, "build:mybox"], project, env)
    assert "mybox: sha256:" in built.stdout
    assert sorted(p.name for p in project.iterdir()) == [".dream", "dodo.py", "recipes"]
    run([doit, "load:mybox"], project, env)
    probe = ("import ctypes, os; ctypes.CDLL('libcublas.so.12'); "
             "print(os.environ['CUDA_VERSION'], os.path.exists('/usr/sbin/sshd'))")
    out = subprocess.run(["docker", "run", "--rm", "--pull", "never", "--network", "none", "mybox",
                          "python3", "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out[0].startswith("12.9.") and out[1] == "True"
    started = subprocess.run(["docker", "run", "--rm", "--pull", "never", "--network", "none", "mybox",
                              "timeout", "-s", "INT", "3", "python3", "-m", "dream_supervisor",
                              "/etc/dream/deployments/mybox.json"], capture_output=True, text=True)
    assert "not starting sshd" in started.stdout + started.stderr  # the preset's start script ran
