"""Build-time mistakes: a missing or stale lock, zstd into an old engine; one line, no traceback."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.conftest import REPO, make_project, require, require_docker

pytestmark = pytest.mark.integration


def _failure_line(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode != 0
    assert "Traceback" not in run.stdout + run.stderr
    return run.stdout + run.stderr


def test_missing_lock_names_the_command(tmp_path) -> None:  # type: ignore[no-untyped-def]
    project = make_project(tmp_path / "p")
    (project.root / "recipes" / "python-app.lock.json").unlink()
    out = _failure_line(project.doit("build:python-app", check=False))
    assert "layers/debian-python.yaml:8: layers.debian: no lock file for layer 'debian'; " \
           "run `doit lock:python-app`" in out
    assert not (project.store / "index.json").exists() or not json.loads(
        (project.store / "index.json").read_text())["manifests"]


def test_stale_lock_names_the_command(tmp_path) -> None:  # type: ignore[no-untyped-def]
    project = make_project(tmp_path / "p")
    recipe = project.root / "recipes" / "python-app.yaml"
    recipe.write_text(recipe.read_text() + "  - name: more\n    debian: {packages: [curl]}\n")
    out = _failure_line(project.doit("build:python-app", check=False))
    assert "recipes/python-app.yaml:21: layers.more: not in the lock" in out
    assert "python-app/debian: sha256:" not in out  # stopped before any layer was built
    module = project.root / "layers" / "debian-python.yaml"
    recipe.write_text(recipe.read_text().split("  - name: more")[0])
    module.write_text(module.read_text().replace("packages: [python3, ca-certificates]",
                                                 "packages: [python3, ca-certificates, curl]"))
    out = _failure_line(project.doit("build:python-app", check=False))
    assert "the lock is stale" in out and "run `doit lock:python-app`" in out


def test_lock_resolves_and_pins(tmp_path) -> None:  # type: ignore[no-untyped-def]
    require("apt-get")
    project = make_project(tmp_path / "p")
    lock = project.root / "recipes" / "python-app.lock.json"
    lock.unlink()
    project.doit("lock:python-app")
    packages = json.loads(lock.read_text())["layers"]["debian"]["packages"]
    names = {p["name"] for p in packages}
    assert {"python3", "bash", "dash", "coreutils", "libc6", "ca-certificates"} <= names
    assert all(len(p["sha256"]) == 64 and p["filename"].startswith("pool/") for p in packages)
    assert "://" not in lock.read_text()  # no host name in a committed file


ZSTD = """
imports: [debian-python]
image: {name: zimg, compression: zstd}
layers:
  - name: top
    files: [{dest: /hello, content: "zstd\\n"}]
"""


def test_zstd_image_builds_and_old_engine_gets_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    require_docker()
    skopeo = require("skopeo")
    project = make_project(tmp_path / "p", {"zimg.yaml": ZSTD})
    shutil.copy(REPO / "recipes" / "python-app.lock.json", project.root / "recipes" / "zimg.lock.json")
    project.doit("build:zimg")
    raw = json.loads(subprocess.run([skopeo, "inspect", "--raw", f"oci:{project.store}:zimg"],
                                    capture_output=True, text=True, check=True).stdout)
    assert {layer["mediaType"] for layer in raw["layers"]} == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    version = subprocess.run(["docker", "version", "-f", "{{.Server.Version}}"], capture_output=True,
                             text=True, check=True).stdout.strip()
    run = project.doit("load:zimg", check=False)
    if int(version.split(".")[0]) < 23:
        assert "cannot load zstd layers" in _failure_line(run)
    else:
        assert run.returncode == 0
