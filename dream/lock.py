"""Lock files: every outside input of an image pinned by sha256, next to the recipe.

``recipes/<name>.lock.json`` holds one entry per layer that has outside inputs, with the hash
of the settings it was resolved from; a build refuses a missing or stale entry and names the
command that fixes it. The file is canonical, indented JSON so that diffs read well.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from dream.builders import BUILDERS
from dream.errors import DreamError, Location
from dream.recipe.model import Recipe
from dream.store.layout import canonical_json

LOCK_VERSION = 1


def settings_hash(value: Any) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(value)).hexdigest()


def read_lock(recipe: Recipe) -> dict[str, Any]:
    """The lock's layer entries ({} when the file does not exist)."""
    path = recipe.lock_path
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        if data.get("lockVersion") != LOCK_VERSION:
            raise ValueError(f"lockVersion {data.get('lockVersion')!r}, expected {LOCK_VERSION}")
        return dict(data["layers"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DreamError(f"unreadable lock ({exc}); run `doit lock:{recipe.name}`",
                         Location(_shown(recipe))) from None


def locked_inputs(recipe: Recipe, layer_name: str, entries: dict[str, Any]) -> Any:
    """The lock entry for one layer, or a clear error naming `doit lock:<image>`."""
    layer = recipe.layer(layer_name)
    builder = BUILDERS[layer.kind]
    if not builder.needs_lock:
        return None
    fix = f"run `doit lock:{recipe.name}`"
    entry = entries.get(layer_name)
    if entry is None:
        why = "no lock file" if not recipe.lock_path.exists() else "not in the lock"
        raise DreamError(f"{why} for layer {layer_name!r}; {fix}", layer.location, f"layers.{layer_name}")
    if entry.get("settings") != settings_hash(builder.lock_inputs(layer, recipe)):
        raise DreamError(f"the lock is stale (the layer's settings changed since it was locked); {fix}",
                         layer.location, f"layers.{layer_name}")
    return entry


def write_lock(recipe: Recipe) -> dict[str, Any]:
    """Resolve every lockable layer and write the lock file atomically."""
    layers: dict[str, Any] = {}
    previous = _previous(recipe)
    for layer in recipe.layers:
        builder = BUILDERS[layer.kind]
        if builder.needs_lock:
            entry = builder.lock(layer, recipe, layers, previous)
            layers[layer.name] = {"kind": layer.kind,
                                  "settings": settings_hash(builder.lock_inputs(layer, recipe)), **entry}
    text = json.dumps({"lockVersion": LOCK_VERSION, "image": recipe.name, "layers": layers},
                      indent=1, sort_keys=True) + "\n"
    temporary = recipe.lock_path.with_suffix(".tmp")
    temporary.write_text(text)
    temporary.replace(recipe.lock_path)
    return layers


def _previous(recipe: Recipe) -> dict[str, Any]:
    """The current lock's entries, which resolvers prefer to keep (so adding one requirement
    does not move every other pin); empty when ``DREAM_LOCK_UPGRADE`` is set or none is readable."""
    if os.environ.get("DREAM_LOCK_UPGRADE"):
        return {}
    try:
        return read_lock(recipe)
    except DreamError:
        return {}


def _shown(recipe: Recipe) -> str:
    return str(Path(recipe.display).with_name(recipe.lock_path.name))
