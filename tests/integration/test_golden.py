"""Every committed recipe, built from its lock into an empty store, is the image recorded in
tests/golden/manifests.json: a change of image bytes is then always deliberate (the golden file
changes in the same commit). python-app and gpu-image are checked where their modules build them
from empty stores anyway (test_image.py, test_gpu_image.py); services-demo here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO, copy_services_demo, make_project, require

pytestmark = pytest.mark.integration
GOLDEN = json.loads((REPO / "tests" / "golden" / "manifests.json").read_text())


def test_every_committed_recipe_has_a_golden_digest() -> None:
    assert sorted(GOLDEN) == sorted(path.stem for path in (REPO / "recipes").glob("*.yaml"))


def golden(name: str) -> str:
    return GOLDEN[name]


def test_services_demo_is_its_golden_image(tmp_path: Path) -> None:
    require("apt-get")
    project = make_project(tmp_path / "p", with_demo=False)
    copy_services_demo(project)
    assert not project.store.exists()  # an empty store: nothing is reused
    project.doit("build:services-demo", env={"DREAM_LAYER_CACHE": "off"})
    assert project.manifest_digest("services-demo") == golden("services-demo")
