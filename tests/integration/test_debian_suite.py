"""A `debian` layer on another suite than the machine's (trixie on bookworm): the machine's
mirrors and keyring, re-pointed; Python 3.13 images without a new base."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import make_project, require, require_docker

pytestmark = pytest.mark.integration

RECIPE = """imports: [debian-python]
image: {name: trixie-app}
python: {version: "3.13", platform: manylinux_2_41_x86_64}
layers:
  - name: debian
    debian: {suite: trixie}
  - name: py
    python: {requirements: [markupsafe==3.0.2]}
"""


def test_a_trixie_image_runs_python_313(tmp_path: Path) -> None:
    require("apt-get")
    require_docker()
    project = make_project(tmp_path / "p", {"trixie.yaml": RECIPE}, with_demo=False)
    project.doit("lock:trixie-app")
    lock = json.loads((project.root / "recipes/trixie.lock.json").read_text())["layers"]
    assert lock["debian"]["suite"] == "trixie"
    versions = {p["name"]: p["version"] for p in lock["debian"]["packages"]}
    assert versions["base-files"].startswith("13.") and "python3.13" in versions
    assert lock["py"]["wheels"][0]["filename"].startswith("MarkupSafe-3.0.2-cp313-cp313-manylinux")
    project.doit("build:trixie-app")
    project.doit("load:trixie-app")
    probe = ("import sys, markupsafe._speedups; "
             "print('%d.%d' % sys.version_info[:2], open('/etc/debian_version').read().split('.')[0])")
    run = subprocess.run(["docker", "run", "--rm", "--network", "none", "trixie-app", "python3", "-c", probe],
                         capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["3.13", "13"]
    subprocess.run(["docker", "rmi", "trixie-app"], capture_output=True)
