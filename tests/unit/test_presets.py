"""Presets ship with the package and a project's own layers/ overrides them; `python -m dream
init` makes a project."""

from __future__ import annotations

import fnmatch
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from dream.errors import DreamError
from dream.presets import PRESET_DIR, names
from dream.recipe.load import load_recipe

REPO = Path(__file__).resolve().parents[2]


def recipe(root: Path, text: str) -> Path:
    path = root / "recipes" / "x.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_every_preset_is_shipped_by_the_package_data() -> None:
    assert names() == ["cuda-12", "debian-python", "home-default", "notebook", "redis", "sshd"]
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["dream.presets"]
    files = [p.relative_to(PRESET_DIR).as_posix() for p in PRESET_DIR.rglob("*")
             if p.is_file() and "__pycache__" not in p.parts and p.name != "__init__.py"]
    assert "sshd/start-sshd.sh" in files
    # setuptools' globs do not cross "/": a file nested deeper than */* would be left out of a wheel
    assert [f for f in files if not any(fnmatch.fnmatch(f, g) and f.count("/") == g.count("/") for g in patterns)] == []


def test_a_project_without_layers_imports_the_shipped_presets(tmp_path: Path) -> None:
    loaded = load_recipe(recipe(tmp_path, "imports: [debian-python, home-default]\n"), tmp_path)
    home = next(layer for layer in loaded.layers if layer.kind == "home")
    assert home.location.file == str(PRESET_DIR / "home-default.yaml")  # absolute: outside the project
    # a preset's own files resolve against the preset, wherever the package is installed
    assert {item["src"] for item in home.spec["files"]} >= {str(PRESET_DIR / "home" / "bashrc")}


def test_the_projects_own_module_wins_over_the_preset(tmp_path: Path) -> None:
    (tmp_path / "layers").mkdir()
    (tmp_path / "layers" / "debian-python.yaml").write_text(
        "layers:\n  - name: debian\n    debian: {packages: [bash]}\n")
    loaded = load_recipe(recipe(tmp_path, "imports: [debian-python]\n"), tmp_path)
    assert loaded.layers[0].spec["packages"] == ["bash"]
    assert loaded.layers[0].location.file == "layers/debian-python.yaml"


def test_an_unknown_import_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(DreamError) as caught:
        load_recipe(recipe(tmp_path, "imports: [sshd-typo]\n"), tmp_path)
    assert str(caught.value) == (f"recipes/x.yaml:1: imports: import 'sshd-typo' not found (looked for "
                                 f"layers/sshd-typo.yaml and {PRESET_DIR}/sshd-typo.yaml)")


def init(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dream", "init", str(directory)], capture_output=True, text=True)


def test_init_writes_the_two_line_dodo_and_recipes(tmp_path: Path) -> None:
    run = init(tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout == (f"dream: made dodo.py, recipes/ in {tmp_path}; put recipes in recipes/*.yaml, "
                          "then `doit list --all`\n")
    written = (tmp_path / "dodo.py").read_text()
    assert written == (REPO / "dodo.py").read_text() and len(written.splitlines()) == 2
    assert (tmp_path / "recipes").is_dir()
    listed = subprocess.run([sys.executable, "-m", "doit", "list"], cwd=tmp_path, capture_output=True, text=True)
    assert listed.returncode == 0 and "build" in listed.stdout and "shell" in listed.stdout, listed.stderr


def test_init_never_overwrites_a_dodo(tmp_path: Path) -> None:
    (tmp_path / "dodo.py").write_text("# mine\n")
    run = init(tmp_path)
    assert run.returncode == 1
    assert run.stderr == f"dream: {tmp_path / 'dodo.py'} already exists; not overwriting it (delete it to start over)\n"
    assert (tmp_path / "dodo.py").read_text() == "# mine\n" and not (tmp_path / "recipes").exists()
