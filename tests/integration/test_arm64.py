"""An arm64 image built on an x86_64 machine: arm64 debs, aarch64 wheels, an ld.so.cache
written by the image's own ldconfig (under qemu-user), and a mismatched wheel platform refused."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Project, make_project, require

pytestmark = pytest.mark.integration

RECIPE = """imports: [debian-python]
image: {architecture: arm64}
layers:
  - name: py
    python: {requirements: [markupsafe==3.0.2]}
"""


@pytest.fixture(scope="module")
def arm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, Path]:
    for tool in ("apt-get", "umoci", "qemu-aarch64-static"):
        require(tool)
    project = make_project(tmp_path_factory.mktemp("arm") / "p", {"arm.yaml": RECIPE}, with_demo=False)
    project.doit("lock:arm")
    project.doit("build:arm")
    bundle = project.root.parent / "bundle"
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{project.store}:arm", str(bundle)],
                   check=True, capture_output=True)
    return project, bundle / "rootfs"


def test_the_lock_holds_only_arm64_packages_and_aarch64_wheels(arm: tuple[Project, Path]) -> None:
    project, _ = arm
    layers = json.loads((project.root / "recipes/arm.lock.json").read_text())["layers"]
    assert {p["architecture"] for p in layers["debian"]["packages"]} == {"arm64", "all"}
    [wheel] = layers["py"]["wheels"]
    assert wheel["filename"].endswith("_aarch64.whl") and "x86_64" not in wheel["filename"]


def test_the_config_says_arm64(arm: tuple[Project, Path]) -> None:
    project, _ = arm
    digest = project.manifest_digest("arm")
    manifest = json.loads((project.store / "blobs/sha256" / digest[7:]).read_text())
    config = json.loads((project.store / "blobs/sha256" / manifest["config"]["digest"][7:]).read_text())
    assert (config["architecture"], config["os"]) == ("arm64", "linux")


def test_the_linker_cache_lists_the_arm64_libraries(arm: tuple[Project, Path]) -> None:
    _, rootfs = arm
    listed = subprocess.run(["ldconfig", "-p", "-C", str(rootfs / "etc/ld.so.cache")],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    listed = [line for line in listed if "=>" in line]
    assert len(listed) > 50  # the host's ldconfig left it empty
    assert all("(libc6,AArch64)" in line for line in listed)
    assert any(line.strip().startswith("libffi.so.8 ") for line in listed)


def test_python_runs_the_aarch64_extension_under_emulation(arm: tuple[Project, Path]) -> None:
    _, rootfs = arm
    probe = ("import ctypes, platform, markupsafe._speedups as s; ctypes.CDLL('libffi.so.8'); "
             "print(platform.machine(), s.__file__.rsplit('/', 1)[-1])")
    run = subprocess.run(["qemu-aarch64-static", "-L", str(rootfs), str(rootfs / "usr/bin/python3.11"),
                          "-c", probe], capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["aarch64", "_speedups.cpython-311-aarch64-linux-gnu.so"]


def test_a_wheel_platform_of_another_machine_is_refused(tmp_path: Path) -> None:
    recipe = RECIPE.replace("layers:", "python: {platform: manylinux_2_36_x86_64}\nlayers:")
    project = make_project(tmp_path / "p", {"mixed.yaml": recipe}, with_demo=False)
    run = project.doit("list", check=False)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert run.stderr.strip() == ("recipes/mixed.yaml:3: python.platform: manylinux_2_36_x86_64 is not "
                                  "for image.architecture arm64 (wheels for it end in _aarch64)")
