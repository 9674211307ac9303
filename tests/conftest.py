"""Shared fixtures: a throw-away dream project, and the rule for missing real components.

A missing real component (docker, skopeo, umoci, apt) skips a test on a developer's machine but
fails it in CI (``CI`` set): CI must prove the real thing works, never skip it silently.

The python-app Debian layer (tens of MB, about 12 s to build) is built once per session into a
seed store (`python_app_seed`); ``make_project(..., seed=...)`` hard-links its blobs into the
project's store and copies its refs, so the build finds that layer up to date. The store is
content-addressed, so sharing a blob's file is safe as long as no test writes INTO it: a test that
damages blobs in place works on real copies (`shutil.copytree`), or on an unseeded store. The
seed's blobs are re-hashed at the end of the session, which fails loudly if one changed. A test
that checks bytes or digests built from an EMPTY store (golden digests, reproducibility) must not
take a seed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dream.presets import PRESET_DIR

REPO = Path(__file__).resolve().parent.parent

# the registry fixtures (anonymous, basic auth over TLS, token auth), shared by every module
pytest_plugins = ["tests.registries"]


def require(tool: str) -> str:
    """The path of ``tool``; skip without it locally, fail without it in CI."""
    found = shutil.which(tool)
    if found:
        return found
    message = f"{tool} is not installed"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must have every real component)")
    pytest.skip(message)


def require_docker() -> None:
    require("docker")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        message = "the Docker engine is not running"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@dataclass
class Project:
    """A dream project in a temp dir: run `doit` in it, against its own store."""

    root: Path
    store: Path

    def doit(self, *args: str, check: bool = True, env: dict[str, str] | None = None,
             ) -> subprocess.CompletedProcess[str]:
        run = subprocess.run([sys.executable, "-m", "doit", *args], cwd=self.root, text=True,
                             capture_output=True, env={**os.environ, "DREAM_STORE": str(self.store),
                                                       **(env or {})})
        if check and run.returncode != 0:
            raise AssertionError(f"doit {' '.join(args)} failed ({run.returncode}):\n{run.stdout}\n{run.stderr}")
        return run

    @staticmethod
    def ran_layers(run: subprocess.CompletedProcess[str]) -> list[str]:
        """The layer tasks doit executed (``.  layer:x``), not those up to date (``-- layer:x``)."""
        return [line.split()[1] for line in run.stdout.splitlines() if line.startswith(".  layer:")]

    def manifest_digest(self, name: str) -> str:
        import json
        index = json.loads((self.store / "index.json").read_text())
        return next(m["digest"] for m in index["manifests"]
                    if m["annotations"]["org.opencontainers.image.ref.name"] == name)


@dataclass(frozen=True)
class Seed:
    """A store holding layers that many tests would otherwise build again (`python_app_seed`)."""

    store: Path

    def blobs(self) -> list[Path]:
        return sorted((self.store / "blobs" / "sha256").iterdir())

    def plant(self, store: Path) -> None:
        """Hard-link the seed's blobs into ``store`` and copy its refs (small files, which dream
        touches with utime and tests rewrite in place); never ``dream/verified``: its markers
        record the inode and ctime, so ``store`` hashes each linked blob once, like any copy."""
        blobs = store / "blobs" / "sha256"
        blobs.mkdir(parents=True, exist_ok=True)
        for blob in self.blobs():
            os.link(blob, blobs / blob.name)
        for ref in (self.store / "dream" / "refs").glob("*/*.json"):
            target = store / "dream" / "refs" / ref.parent.name / ref.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ref, target)


def copy_services_demo(project: "Project") -> None:
    """recipes/services-demo.yaml, its lock and its folder, as committed, into ``project``."""
    for name in ("services-demo.yaml", "services-demo.lock.json"):
        shutil.copy(REPO / "recipes" / name, project.root / "recipes" / name)
    shutil.copytree(REPO / "recipes" / "services-demo", project.root / "recipes" / "services-demo")


def make_project(base: Path, recipes: dict[str, str] | None = None, with_demo: bool = True,
                 with_gpu: bool = False, seed: Seed | None = None) -> Project:
    """A project holding dodo.py, a copy of the shipped presets as its own layers/ (so a test may
    edit a module; the project's own modules win over the package's) and (by default) the demo
    recipe; ``with_gpu`` adds the reference GPU recipe, its lock and its app; ``seed`` plants a
    seed store's layers in the project's store (see the module docstring)."""
    base.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dodo.py", base / "dodo.py")
    shutil.copytree(PRESET_DIR, base / "layers", ignore=shutil.ignore_patterns("__init__.py", "__pycache__"))
    (base / "recipes").mkdir()
    if with_demo:
        for name in ("python-app.yaml", "python-app.lock.json"):
            shutil.copy(REPO / "recipes" / name, base / "recipes" / name)
        shutil.copytree(REPO / "recipes" / "app", base / "recipes" / "app")
    if with_gpu:
        for name in ("gpu-image.yaml", "gpu-image.lock.json"):
            shutil.copy(REPO / "recipes" / name, base / "recipes" / name)
        shutil.copytree(REPO / "recipes" / "gpu-app", base / "recipes" / "gpu-app")
    for name, text in (recipes or {}).items():
        (base / "recipes" / name).write_text(text)
    if seed is not None:
        seed.plant(base / "store")
    return Project(base, base / "store")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture(scope="session")
def python_app_seed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seed]:
    """The python-app Debian layer, built once for the session (see the module docstring)."""
    project = make_project(tmp_path_factory.mktemp("seed") / "p")
    project.doit("layer:python-app/debian")
    seed = Seed(project.store)
    assert seed.blobs() and list((seed.store / "dream" / "refs").glob("*/*.json")), "the seed holds no layer"
    yield seed
    changed = [blob.name for blob in seed.blobs() if _sha256(blob) != blob.name]
    if changed:
        pytest.fail(f"a test wrote into a seed blob shared by hard links (it must damage a copy): {changed}")


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return make_project(tmp_path / "project")
