"""Locks against the real apt sources: a pin that vanished from them is one line naming the
fix, at lock time and at build time, and `--upgrade-package` / `--upgrade` move it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import Project, make_project, require

pytestmark = pytest.mark.integration


def _one_line(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode != 0 and "Traceback" not in run.stdout + run.stderr
    return next(line for line in (run.stdout + run.stderr).splitlines() if "no longer in the apt sources" in line)


@pytest.fixture
def vanished(tmp_path) -> Project:  # type: ignore[no-untyped-def]
    """python-app with its lock's `dash` pinned to a version no apt source has."""
    require("apt-get")
    project = make_project(tmp_path / "p")
    path = project.root / "recipes/python-app.lock.json"
    lock = json.loads(path.read_text())
    dash = next(p for p in lock["layers"]["debian"]["packages"] if p["name"] == "dash")
    dash.update(version="0.0.1-gone", sha256="0" * 64)
    path.write_text(json.dumps(lock, indent=1, sort_keys=True) + "\n")
    return project


def test_a_vanished_pin_fails_the_lock_in_one_line_and_keeps_the_file(vanished: Project) -> None:
    path = vanished.root / "recipes/python-app.lock.json"
    before = path.read_bytes()
    line = _one_line(vanished.doit("lock:python-app", check=False))
    assert line.endswith("layers.debian: dash 0.0.1-gone no longer in the apt sources; run "
                         "`doit lock:python-app --upgrade-package dash` (or `--upgrade` for everything)")
    assert path.read_bytes() == before


def test_a_vanished_pin_fails_the_build_in_one_line(vanished: Project) -> None:
    line = _one_line(vanished.doit("build:python-app", check=False))
    assert "--upgrade-package dash" in line and line.startswith("layers/debian-python.yaml:")


def test_upgrade_package_moves_only_that_pin(vanished: Project) -> None:
    path = vanished.root / "recipes/python-app.lock.json"
    before = {p["name"]: p for p in json.loads(path.read_text())["layers"]["debian"]["packages"]}
    run = vanished.doit("lock:python-app", "--upgrade-package", "dash")
    after = {p["name"]: p for p in json.loads(path.read_text())["layers"]["debian"]["packages"]}
    assert [n for n in after if after[n] != before.get(n)] == ["dash"]
    assert after["dash"]["version"] != "0.0.1-gone" and len(after["dash"]["sha256"]) == 64
    assert f"~dash 0.0.1-gone → {after['dash']['version']}" in run.stdout


def test_upgrade_resolves_everything_afresh(vanished: Project) -> None:
    vanished.doit("lock:python-app", "--upgrade")
    packages = json.loads((vanished.root / "recipes/python-app.lock.json").read_text())["layers"]["debian"]["packages"]
    assert "0.0.1-gone" not in {p["version"] for p in packages}
    assert {"python3", "dash", "libc6"} <= {p["name"] for p in packages}


def test_an_unknown_debian_package_points_at_its_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    require("apt-get")
    recipe = "imports: [debian-python]\nlayers:\n  - name: debian\n    debian:\n      packages: [curl, jqq]\n"
    project = make_project(tmp_path / "p", {"typo.yaml": recipe}, with_demo=False)
    run = project.doit("lock:typo", check=False)
    assert run.returncode != 0 and "Traceback" not in run.stdout + run.stderr
    assert "recipes/typo.yaml:5: layers.debian.debian.packages: no Debian package 'jqq' in the apt sources" \
        in run.stdout.splitlines()
    assert not (project.root / "recipes/typo.lock.json").exists()


def test_two_processes_updating_one_apt_state_at_once_both_succeed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """apt-get fails at once on its lists lock ("Could not get lock"); two `doit lock` runs on
    one machine share the state, so the second waits for the first instead."""
    require("apt-get")
    script = f"from pathlib import Path; from dream.debian.apt import Apt; Apt(root=Path({str(tmp_path)!r})).update()"
    runs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]  # type: ignore[union-attr]
    assert [code for code, _ in results] == [0, 0], results
