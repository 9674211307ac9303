"""`doit lock` keeps what still fits and moves only what changed or what `--upgrade…` names
(dream/lock.py), with a scripted builder standing in for apt and uv."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import pytest

import dream.lock
from dream.builders.base import LayerBuilder
from dream.errors import DreamError, Location
from dream.lock import Upgrade, write_lock
from dream.recipe.model import LayerSpec, Recipe


class Scripted(LayerBuilder):
    """A lockable layer kind whose 'index' is a dict of name → newest version. It resolves
    like apt or uv: a preferred (previous) version is kept, anything else gets the newest."""

    kind, version, needs_lock = "scripted", "1", True

    def __init__(self, newest: dict[str, str]) -> None:
        self.newest = newest
        self.resolved: list[str] = []
        self.rechecked: list[str] = []

    def lock_inputs(self, layer: LayerSpec, recipe: Recipe, below: Mapping[str, Any]) -> Any:
        return layer.spec

    def lock(self, layer: LayerSpec, recipe: Recipe, earlier: dict[str, Any], previous: dict[str, Any]) -> Any:
        self.resolved.append(layer.name)
        kept = {p["name"]: p["version"] for p in previous.get(layer.name, {}).get("packages", [])}
        return {"packages": [{"name": n, "version": kept.get(n, self.newest[n])} for n in sorted(layer.spec)]}

    def recheck(self, layer: LayerSpec, recipe: Recipe, entry: dict[str, Any]) -> None:
        self.rechecked.append(layer.name)
        gone = [p["name"] for p in entry["packages"] if p["version"] == "vanished"]
        if gone:
            raise DreamError(f"{', '.join(gone)} no longer in the sources", layer.location)


def recipe(tmp_path: Path, **layers: list[str]) -> Recipe:
    specs = [LayerSpec(name, "scripted", names, "", Location("recipes/x.yaml", 3)) for name, names in layers.items()]
    return Recipe(path=tmp_path / "x.yaml", display="recipes/x.yaml", name="x", image={}, layers=specs)


@pytest.fixture
def index(monkeypatch: pytest.MonkeyPatch) -> Scripted:
    builder = Scripted({"libc6": "2.36-9", "bash": "5.2-1", "rich": "14.0", "numpy": "2.3", "python3.11": "3.11.2-6"})
    monkeypatch.setitem(dream.lock.BUILDERS, "scripted", builder)
    return builder


def pins(recipe: Recipe) -> dict[str, dict[str, str]]:
    layers = json.loads(recipe.lock_path.read_text())["layers"]
    return {name: {p["name"]: p["version"] for p in entry["packages"]} for name, entry in layers.items()}


def test_an_unchanged_layer_keeps_its_entry_even_when_the_sources_moved(tmp_path: Path, index: Scripted) -> None:
    write_lock(recipe(tmp_path, debian=["bash", "libc6"], python=["numpy"]))
    index.newest.update(libc6="2.36-9+deb12u13", numpy="2.4")  # a security update, a release
    index.resolved.clear()
    report = write_lock(recipe(tmp_path, debian=["bash", "libc6"], python=["numpy", "rich"]))
    assert index.resolved == ["python"] and index.rechecked == ["debian"]
    assert pins(recipe(tmp_path)) == {"debian": {"bash": "5.2-1", "libc6": "2.36-9"},
                                      "python": {"numpy": "2.3", "rich": "14.0"}}
    assert report == ["debian: kept (2 pins)", "python: +rich 14.0"]


def test_upgrade_moves_everything(tmp_path: Path, index: Scripted) -> None:
    write_lock(recipe(tmp_path, debian=["bash", "libc6"], python=["numpy"]))
    index.newest.update(libc6="2.36-10", numpy="2.4")
    report = write_lock(recipe(tmp_path, debian=["bash", "libc6"], python=["numpy"]), Upgrade.of(True, []))
    assert pins(recipe(tmp_path)) == {"debian": {"bash": "5.2-1", "libc6": "2.36-10"}, "python": {"numpy": "2.4"}}
    assert report == ["debian: ~libc6 2.36-9 → 2.36-10", "python: ~numpy 2.3 → 2.4"]


def test_upgrade_package_moves_one_pin_only(tmp_path: Path, index: Scripted) -> None:
    write_lock(recipe(tmp_path, debian=["bash", "libc6"], python=["numpy"]))
    index.newest.update(libc6="2.36-10", bash="5.3-1", numpy="2.4")
    write_lock(recipe(tmp_path, debian=["bash", "libc6"], python=["numpy"]), Upgrade.of(False, ["libc6"]))
    assert pins(recipe(tmp_path)) == {"debian": {"bash": "5.2-1", "libc6": "2.36-10"}, "python": {"numpy": "2.3"}}


def test_upgrade_package_may_name_a_layer(tmp_path: Path, index: Scripted) -> None:
    write_lock(recipe(tmp_path, debian=["bash", "libc6"], python=["numpy"]))
    index.newest.update(libc6="2.36-10", bash="5.3-1", numpy="2.4")
    write_lock(recipe(tmp_path, debian=["bash", "libc6"], python=["numpy"]), Upgrade.of(False, ["debian"]))
    assert pins(recipe(tmp_path)) == {"debian": {"bash": "5.3-1", "libc6": "2.36-10"}, "python": {"numpy": "2.3"}}


def test_an_unknown_upgrade_package_is_one_line_and_writes_nothing(tmp_path: Path, index: Scripted) -> None:
    write_lock(recipe(tmp_path, debian=["bash"]))
    before = recipe(tmp_path).lock_path.read_bytes()
    with pytest.raises(DreamError) as raised:
        write_lock(recipe(tmp_path, debian=["bash"]), Upgrade.of(False, ["bsah"]))
    assert str(raised.value) == "recipes/x.lock.json: --upgrade-package bsah: not a package, distribution or layer in the lock"
    assert recipe(tmp_path).lock_path.read_bytes() == before


def test_a_vanished_pin_stops_the_lock_and_keeps_the_file(tmp_path: Path, index: Scripted) -> None:
    index.newest["bash"] = "vanished"
    write_lock(recipe(tmp_path, debian=["bash"]))
    before = recipe(tmp_path).lock_path.read_bytes()
    with pytest.raises(DreamError, match="^recipes/x.yaml:3: bash no longer in the sources$"):
        write_lock(recipe(tmp_path, debian=["bash"]))
    assert recipe(tmp_path).lock_path.read_bytes() == before
    index.newest["bash"] = "5.3-1"
    write_lock(recipe(tmp_path, debian=["bash"]), Upgrade.of(False, ["bash"]))
    assert pins(recipe(tmp_path)) == {"debian": {"bash": "5.3-1"}}


def test_debian_and_layer_names_match_as_written_distributions_normalized(tmp_path: Path, index: Scripted) -> None:
    write_lock(recipe(tmp_path, base_os=["python3.11", "bash"], python=["numpy"]))
    index.newest.update({"python3.11": "3.11.2-7", "bash": "5.3-1", "numpy": "2.4"})
    write_lock(recipe(tmp_path, base_os=["python3.11", "bash"], python=["numpy"]), Upgrade.of(False, ["python3.11"]))
    assert pins(recipe(tmp_path))["base_os"] == {"python3.11": "3.11.2-7", "bash": "5.2-1"}
    write_lock(recipe(tmp_path, base_os=["python3.11", "bash"], python=["numpy"]), Upgrade.of(False, ["base_os", "numpy"]))
    assert pins(recipe(tmp_path)) == {"base_os": {"python3.11": "3.11.2-7", "bash": "5.3-1"}, "python": {"numpy": "2.4"}}


def test_distribution_names_are_normalized_debian_names_are_not() -> None:
    upgrade = Upgrade.of(False, ["Markdown_It.Py", "LibC6"])
    assert upgrade.moves("python", {"wheels": [{"name": "markdown-it-py"}]})
    assert not upgrade.moves("debian", {"packages": [{"name": "libc6"}]})


class Together(Scripted):
    resolves_together = True


def test_layers_that_resolve_together_are_never_kept_over_a_moved_one(tmp_path: Path, index: Scripted,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    together = Together(index.newest)
    monkeypatch.setitem(dream.lock.BUILDERS, "together", together)

    def layers(python: list[str]) -> Recipe:
        base = recipe(tmp_path, debian=["bash"])
        extra = [LayerSpec(name, "together", names, "", Location("recipes/x.yaml", 5))
                 for name, names in (("cuda", ["libc6"]), ("python", python))]
        return Recipe(path=base.path, display=base.display, name="x", image={}, layers=base.layers + extra)

    write_lock(layers(["numpy"]))
    together.resolved.clear()
    index.resolved.clear()
    write_lock(layers(["numpy", "rich"]))
    assert together.resolved == ["cuda", "python"] and index.resolved == []  # debian kept


class Following(Together):
    """A `cuda` stand-in whose layer follows the python layer: its entry still holds while the
    'framework pins' (here a dict the test moves) are the ones it was locked from. The python
    layer fails when it must resolve on top of a held entry and ``fail_on_held`` is set."""

    def __init__(self, newest: dict[str, str]) -> None:
        super().__init__(newest)
        self.framework = {"nvidia-cublas": "12.8"}
        self.fail_on_held = False

    def lock(self, layer: LayerSpec, recipe: Recipe, earlier: dict[str, Any], previous: dict[str, Any]) -> Any:
        if layer.name == "python" and self.fail_on_held and "cuda" not in self.resolved:
            self.resolved.append(layer.name)
            raise DreamError("the python requirements clash with the kept CUDA pins")
        entry = super().lock(layer, recipe, earlier, previous)
        return {**entry, "followed": dict(self.framework)} if layer.name == "cuda" else entry

    def still_holds(self, layer: LayerSpec, recipe: Recipe, entry: dict[str, Any], previous: dict[str, Any]) -> bool:
        return layer.name == "cuda" and entry.get("followed") == self.framework


def _following(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, index: Scripted) -> tuple[Following, Any]:
    following = Following(index.newest)
    monkeypatch.setitem(dream.lock.BUILDERS, "together", following)

    def layers(python: list[str]) -> Recipe:
        # the cuda layer's settings name the python requirements, as `follows` does
        specs = [LayerSpec("cuda", "together", ["libc6", *python], "", Location("recipes/x.yaml", 3)),
                 LayerSpec("python", "together", python, "", Location("recipes/x.yaml", 5))]
        return Recipe(path=tmp_path / "x.yaml", display="recipes/x.yaml", name="x", image={}, layers=specs)
    write_lock(layers(["numpy"]))
    following.resolved.clear()
    return following, layers


def test_a_following_layer_whose_pins_did_not_move_is_kept_with_fresh_settings(
        tmp_path: Path, index: Scripted, monkeypatch: pytest.MonkeyPatch) -> None:
    following, layers = _following(tmp_path, monkeypatch, index)
    before = json.loads(layers(["numpy"]).lock_path.read_text())["layers"]["cuda"]
    report = write_lock(layers(["numpy", "rich"]))
    assert following.resolved == ["python"]  # cuda held: not resolved, only its settings new
    after = json.loads(layers(["numpy"]).lock_path.read_text())["layers"]["cuda"]
    assert {**before, "settings": after["settings"]} == after and after["settings"] != before["settings"]
    dream.lock.locked_inputs(layers(["numpy", "rich"]), "cuda", {"cuda": after})  # fresh, not stale
    assert report[0] == "cuda: kept (2 pins; the pins it follows did not move)"


def test_a_following_layer_whose_pins_moved_is_resolved_again(
        tmp_path: Path, index: Scripted, monkeypatch: pytest.MonkeyPatch) -> None:
    following, layers = _following(tmp_path, monkeypatch, index)
    following.framework = {"nvidia-cublas": "12.9"}  # a new torch pins another cuBLAS
    write_lock(layers(["numpy", "rich"]))
    assert following.resolved == ["cuda", "python"]


def test_a_failure_on_top_of_a_held_entry_resolves_everything_again(
        tmp_path: Path, index: Scripted, monkeypatch: pytest.MonkeyPatch) -> None:
    following, layers = _following(tmp_path, monkeypatch, index)
    following.fail_on_held = True
    write_lock(layers(["numpy", "rich"]))
    assert following.resolved == ["python", "cuda", "python"]  # the full relock succeeded
    assert pins(layers(["numpy", "rich"]))["python"] == {"numpy": "2.3", "rich": "14.0"}
