"""The fetch plan with the real pip, against the machine's index settings: a few small wheels
of recipes/gpu-image.lock.json land verified in the download cache, and a wheel the index does
not have fails its own layer only, leaving nothing half-written."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from dream.errors import DreamError
from dream.fetch_plan import FetchPlan
from dream.python.resolve import Wheel
from dream.python.target import PythonTarget
from dream.python.wheels import cached_path, downloads
from dream.store.layout import file_sha256
from tests.conftest import REPO

pytestmark = pytest.mark.integration

TARGET = PythonTarget("3.11", "manylinux_2_36_x86_64", "/usr/local")
SMALL = ("cuda-toolkit", "cuda-pathfinder", "nvidia-cuda-runtime-cu12")  # 2 KB, 63 KB, 3.5 MB
MISSING = Wheel("mdurl", "0.0.0", "mdurl-0.0.0-py3-none-any.whl", "0" * 64, 1000)  # no such version


def locked_wheels() -> dict[str, Wheel]:
    lock = json.loads((REPO / "recipes" / "gpu-image.lock.json").read_text())
    wheels = [Wheel.from_dict(w) for entry in lock["layers"].values() for w in entry.get("wheels", [])]
    return {w.name: w for w in wheels if w.name in SMALL}


def test_the_plan_fetches_real_wheels_into_the_cache_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DREAM_CACHE", str(tmp_path / "cache"))
    wheels = locked_wheels()
    layers = [[wheels["nvidia-cuda-runtime-cu12"]], [wheels["cuda-toolkit"], wheels["cuda-pathfinder"]], [MISSING]]
    plan = FetchPlan()
    plan.start(lambda: [functools.partial(downloads, layer, TARGET) for layer in layers])
    for layer in layers[:2]:
        plan.wait(downloads(layer, TARGET))  # the failed first run was retried for this layer
        for wheel in layer:
            assert file_sha256(cached_path(wheel)) == wheel.sha256
    with pytest.raises(DreamError, match=r"^pip could not download the locked wheels: .*mdurl"):
        plan.wait(downloads([MISSING], TARGET))
    left = sorted(p.name for p in (tmp_path / "cache" / "wheels").iterdir())
    assert left == sorted(w.sha256 for w in wheels.values())  # no scratch, nothing of mdurl
