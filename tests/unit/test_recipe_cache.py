"""dream/recipe/cache.py: a validated recipe is kept between runs and used only while nothing it
rests on changed (its YAML files, the paths its load looked at, dream itself)."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest

import dream
import dream.recipe.load
from dream.errors import UserErrors
from dream.recipe import cache
from dream.recipe.cache import cache_file, load_cached
from dream.recipe.load import load_recipe
from dream.recipe.model import Recipe
from dream.tasks import RECIPE_CACHE, load_recipes

RECIPE = """\
imports: [base]
image:
  name: cached
layers:
  - name: app
    files:
      - {dest: /app, src: app}
  - name: tools
    debian: {packages: [curl]}
services:
  web:
    command: python3 -m http.server
    config_files:
      - {path: web.conf, src: app/web.conf}
"""
MODULE = """\
image:
  env: {FROM_MODULE: "one"}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "recipes" / "app").mkdir(parents=True)
    (root / "layers").mkdir()
    (root / ".dream").mkdir()
    (root / "recipes" / "cached.yaml").write_text(RECIPE)
    (root / "recipes" / "app" / "web.conf").write_text("port = 8000\n")
    (root / "layers" / "base.yaml").write_text(MODULE)
    return root


class Loads:
    """Counts the fresh loads (YAML read, cerberus run) behind `load_cached`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = dream.recipe.load.load_recipe

        def counting(path: Path, root: Path | None = None) -> Recipe:
            self.count += 1
            return real(path, root)

        monkeypatch.setattr(dream.recipe.load, "load_recipe", counting)


def load(root: Path) -> Recipe:
    return load_cached(root / "recipes" / "cached.yaml", root, root / RECIPE_CACHE)


def the_file(root: Path) -> Path:
    return cache_file(root / RECIPE_CACHE, root / "recipes" / "cached.yaml", root)


def fields(recipe: Recipe) -> dict[str, Any]:
    """Every field, the ones equality leaves out (where each value was written) included."""
    out = dataclasses.asdict(recipe)
    out["places"] = [layer.places for layer in recipe.layers]
    return out


def test_the_cached_model_equals_the_freshly_loaded_one(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loads = Loads(monkeypatch)
    first = load(project)
    assert the_file(project).is_file() and loads.count == 1
    second = load(project)
    assert loads.count == 1  # from the cache: no YAML, no cerberus
    fresh = load_recipe(project / "recipes" / "cached.yaml", project)
    assert second == first == fresh
    assert fields(second) == fields(fresh)
    assert second.deployments["cached"].services["web"]["config_files"][0]["content"] == "port = 8000\n"


def test_a_change_to_an_imported_module_invalidates_it(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loads = Loads(monkeypatch)
    assert load(project).image["env"] == {"FROM_MODULE": "one"}
    (project / "layers" / "base.yaml").write_text(MODULE.replace('"one"', '"two"'))
    assert load(project).image["env"] == {"FROM_MODULE": "two"}
    assert loads.count == 2
    assert load(project).image["env"] == {"FROM_MODULE": "two"} and loads.count == 2


@pytest.mark.parametrize("change", ["config file", "src removed", "module shadows a preset"])
def test_a_change_to_what_the_load_looked_at_invalidates_it(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                             change: str) -> None:
    recipe = project / "recipes" / "cached.yaml"
    recipe.write_text(RECIPE.replace("imports: [base]", "imports: [base, redis]"))
    loads = Loads(monkeypatch)
    before = load(project)
    if change == "config file":
        (project / "recipes" / "app" / "web.conf").write_text("port = 9000\n")
        assert load(project).deployments["cached"].services["web"]["config_files"][0]["content"] == "port = 9000\n"
    elif change == "src removed":
        (project / "recipes" / "app" / "web.conf").unlink()
        with pytest.raises(UserErrors) as raised:
            load(project)
        assert "cannot read" in str(raised.value)
    else:  # a project module now found before the shipped preset of the same name
        assert "SHADOW" not in before.image["env"]
        (project / "layers" / "redis.yaml").write_text("image: {env: {SHADOW: '1'}}\n")
        assert load(project).image["env"]["SHADOW"] == "1"
    assert loads.count == 2


def dream_copy(tmp_path: Path, version: str) -> Path:
    """A copy of dream's source tree whose __init__.py says ``version``."""
    copy = tmp_path / "copy" / version / "dream"
    shutil.copytree(cache.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    init = copy / "__init__.py"
    init.write_text(init.read_text().replace(f'__version__ = "{dream.__version__}"', f'__version__ = "{version}"'))
    return copy


def test_a_changed_dream_version_invalidates_it(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    loads = Loads(monkeypatch)
    load(project)
    load(project)
    assert loads.count == 1
    same, bumped = dream_copy(tmp_path, dream.__version__), dream_copy(tmp_path, dream.__version__ + ".post1")
    assert (bumped / "__init__.py").read_text() != (same / "__init__.py").read_text()
    try:
        monkeypatch.setattr(cache, "PACKAGE", same)
        cache.identity.cache_clear()
        load(project)
        assert loads.count == 1  # the same source elsewhere is the same dream
        monkeypatch.setattr(cache, "PACKAGE", bumped)
        cache.identity.cache_clear()
        assert load(project) == load_recipe(project / "recipes" / "cached.yaml", project)
        assert loads.count == 2
    finally:
        monkeypatch.undo()
        cache.identity.cache_clear()


def test_a_changed_dream_source_changes_the_identity(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    copy = dream_copy(tmp_path, dream.__version__)
    try:
        identities = []
        for text in (None, "# an edit\n"):
            if text:
                schema = copy / "recipe" / "schema.py"
                schema.write_text(schema.read_text() + text)
            monkeypatch.setattr(cache, "PACKAGE", copy)
            cache.identity.cache_clear()
            identities.append(cache.identity())
        assert identities[0] != identities[1]
    finally:
        monkeypatch.undo()
        cache.identity.cache_clear()


def test_the_identity_covers_every_module_a_recipe_load_imports() -> None:
    from tests.unit.test_architecture import PACKAGE, all_edges
    edges = all_edges(PACKAGE)
    needed, todo = set(), ["dream.recipe.load", "dream.recipe.cache", "dream.recipe.validator"]
    while todo:
        module = todo.pop()
        if module not in needed:
            needed.add(module)
            todo += [edge.target for edge in edges if edge.source == module and not edge.typing_only]
    covered = {path for _, path in cache.identity_sources()}
    missing = []
    for module in needed:
        path = PACKAGE.parent.joinpath(*module.split("."))
        if not ({path.with_suffix(".py"), path / "__init__.py"} & covered):
            missing.append(module)
    assert missing == []


@pytest.mark.parametrize("damage", ["truncated", "flipped", "garbage", "empty", "valid digest, bad pickle",
                                    "a folder"])
def test_a_damaged_cache_file_is_ignored(project: Path, monkeypatch: pytest.MonkeyPatch, damage: str) -> None:
    good = load(project)
    file = the_file(project)
    blob = file.read_bytes()
    if damage == "truncated":
        file.write_bytes(blob[:len(blob) // 2])
    elif damage == "flipped":
        file.write_bytes(blob[:-10] + bytes([blob[-10] ^ 0xFF]) + blob[-9:])
    elif damage == "garbage":
        file.write_bytes(b"\x80\x04not a cache at all")
    elif damage == "empty":
        file.write_bytes(b"")
    elif damage == "valid digest, bad pickle":
        payload = b"\x80\x05K\x01."  # the integer 1: whole, but no cache entry
        file.write_bytes(cache.FORMAT + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
    else:
        file.unlink()
        file.mkdir()
    loads = Loads(monkeypatch)
    assert load(project) == good
    assert loads.count == 1
    if damage != "a folder":  # rewritten whole
        assert load(project) == good and loads.count == 1


def test_a_recipe_with_an_error_prints_the_same_line_every_run(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    (project / "recipes" / "cached.yaml").write_text(RECIPE.replace("name: tools", "name: app"))
    loads = Loads(monkeypatch)
    outputs = []
    for _ in range(2):
        with pytest.raises(SystemExit):
            load_recipes(project)
        outputs.append(capsys.readouterr().err)
    assert outputs[0] == outputs[1] != ""
    assert "layer name 'app' is used twice" in outputs[0]
    assert loads.count == 2  # never cached: validated again
    assert not the_file(project).exists()


def test_no_state_folder_no_cache(tmp_path: Path, project: Path) -> None:
    (project / ".dream").rmdir()
    load(project)
    assert not (project / ".dream").exists()
