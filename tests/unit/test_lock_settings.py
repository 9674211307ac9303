"""The settings a lock entry is hashed from (`dream.lock.lock_settings`), the builders' one
protocol, and the lock checks a builder makes before its layer is keyed (`Builder.check_lock`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dream.builders import BUILDERS
from dream.builders.base import LayerBuilder
from dream.errors import DreamError, Location
from dream.lock import lock_settings, locked_inputs, read_lock, settings_hash
from dream.recipe.load import load_recipe
from dream.recipe.model import LayerSpec

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = sorted(p.name.removesuffix(".lock.json") for p in (ROOT / "recipes").glob("*.lock.json")
                   if not p.name.endswith(".vm.lock.json"))
VM_LOCKS = sorted(p.name.removesuffix(".vm.lock.json") for p in (ROOT / "recipes").glob("*.vm.lock.json"))


@pytest.mark.parametrize("name", COMMITTED)
def test_the_committed_locks_are_fresh(name: str) -> None:
    """A change to a builder's `lock_inputs` that moves a settings hash makes every user's lock
    stale: it must be deliberate, and it shows here first."""
    recipe = load_recipe(ROOT / "recipes" / f"{name}.yaml", ROOT)
    entries = read_lock(recipe)
    settings = lock_settings(recipe)
    assert settings and {n: entries[n]["settings"] for n in settings} == {n: settings_hash(v) for n, v in settings.items()}
    for layer in recipe.layers:
        locked_inputs(recipe, layer.name, entries)  # no stale entry, no failing check_lock


@pytest.mark.parametrize("name", VM_LOCKS)
def test_the_committed_vm_locks_are_fresh(name: str) -> None:
    """Each deployment in a committed VM lock was resolved from today's packages and image pins:
    `doit render:vm` would take it as it is."""
    import json
    from dream.vm.lockfile import read_vm_lock, settings_hash, vm_lock_path
    from dream.vm.spec import vm_spec
    recipe = load_recipe(ROOT / "recipes" / f"{name}.yaml", ROOT)
    path = vm_lock_path(recipe.lock_path)
    entries = read_lock(recipe)
    image = [entries[layer.name] for layer in recipe.layers if layer.kind == "debian"]
    deployments = json.loads(path.read_text())["deployments"]
    assert deployments
    for deployment in deployments:
        packages = vm_spec(recipe.deployments[deployment].options.get("vm", {})).packages
        found = read_vm_lock(path, deployment, settings_hash(list(packages), image))
        assert {p["name"] for p in found["packages"]} >= {"linux-image-cloud-amd64", "systemd-sysv"}


def test_a_python_layer_holds_the_settings_of_the_cuda_and_python_layers_below() -> None:
    recipe = load_recipe(ROOT / "recipes" / "gpu-image.yaml", ROOT)
    settings = lock_settings(recipe)
    python = next(layer for layer in recipe.layers if layer.kind == "python")
    below = [settings[layer.name] for layer in recipe.layers[:recipe.layers.index(python)]
             if layer.kind in ("cuda", "python")]
    assert below and settings[python.name]["below"] == below
    assert lock_settings(recipe, until=python.name) == settings  # the python layer is the top lockable one


def test_every_builder_has_the_whole_protocol() -> None:
    for kind, builder in BUILDERS.items():
        assert builder.kind == kind and isinstance(builder, LayerBuilder)
        for name in ("needs_lock", "reads_lower", "resolves_together"):
            assert isinstance(getattr(builder, name), bool), (kind, name)


def _debian(*names: str) -> dict[str, Any]:
    return {"kind": "debian", "packages": [{"name": n, "version": "1"} for n in names]}


@pytest.mark.parametrize("entries, fails", [
    ({"debian": _debian("libc6", "python3.11")}, False),
    ({"debian": _debian("libc6", "python3")}, False),
    ({"a": _debian("libc6"), "b": _debian("python3")}, False),
    ({}, False),  # no Debian layer (a `from` base): not checked
    ({"base": {"kind": "from", "ref": "x"}}, False),
    ({"debian": _debian("libc6", "python3-minimal")}, True),
    ({"debian": _debian("libc6")}, True),
])
def test_a_services_layer_needs_python3_in_the_locked_debian_layers(entries: dict[str, Any], fails: bool) -> None:
    layer = LayerSpec("services", "services", {}, "", Location("recipes/x.yaml", 9))
    check = lambda: BUILDERS["services"].check_lock(layer, entries)  # noqa: E731
    if not fails:
        check()
        return
    with pytest.raises(DreamError) as caught:
        check()
    assert str(caught.value) == ("recipes/x.yaml:9: layers.services: the supervisor needs python3: add it to a "
                                 "Debian layer's packages (e.g. import debian-python)")


def test_the_default_builder_locks_nothing_and_checks_nothing() -> None:
    class Plain(LayerBuilder):
        kind, version = "plain", "1"

    layer = LayerSpec("p", "plain", {}, "", Location("recipes/x.yaml", 3))
    plain = Plain()
    assert plain.lock_inputs(layer, None, {}) is None  # type: ignore[arg-type]
    assert plain.check_lock(layer, {"debian": _debian("libc6")}) is None
    with pytest.raises(NotImplementedError):
        plain.lock(layer, None, {}, {})  # type: ignore[arg-type]
