"""Lock files: every outside input of an image pinned by sha256, next to the recipe.

``recipes/<name>.lock.json`` holds one entry per layer that has outside inputs, with the hash
of the settings it was resolved from; a build refuses a missing or stale entry and names the
command that fixes it. The file is canonical, indented JSON so that diffs read well.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dream.builders import BUILDERS
from dream.errors import DreamError, Location
from dream.python.resolve import answers_kept, normalize
from dream.recipe.model import LayerSpec, Recipe
from dream.oci.digest import canonical_json

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


def lock_settings(recipe: Recipe, until: str | None = None) -> dict[str, Any]:
    """The lock inputs (`Builder.lock_inputs`) of every lockable layer, by name, in layer
    order; each builder sees those of the layers below it. With ``until``, up to that layer."""
    settings: dict[str, Any] = {}
    for layer in recipe.layers:
        builder = BUILDERS[layer.kind]
        if builder.needs_lock:
            settings[layer.name] = builder.lock_inputs(layer, recipe, dict(settings))
        if layer.name == until:
            break
    return settings


def locked_inputs(recipe: Recipe, layer_name: str, entries: dict[str, Any]) -> Any:
    """The lock entry for one layer (None for a layer without one), or a clear error naming
    `doit lock:<image>`; the layer's builder checks the lock first (`Builder.check_lock`)."""
    layer = recipe.layer(layer_name)
    builder = BUILDERS[layer.kind]
    builder.check_lock(layer, entries)
    if not builder.needs_lock:
        return None
    fix = f"run `doit lock:{recipe.name}`"
    entry = entries.get(layer_name)
    if entry is None:
        why = "no lock file" if not recipe.lock_path.exists() else "not in the lock"
        raise DreamError(f"{why} for layer {layer_name!r}; {fix}", layer.location, f"layers.{layer_name}")
    if entry.get("settings") != settings_hash(lock_settings(recipe, until=layer_name)[layer_name]):
        raise DreamError(f"the lock is stale (the layer's settings changed since it was locked); {fix}",
                         layer.location, f"layers.{layer_name}")
    return entry


@dataclass(frozen=True)
class Upgrade:
    """What `doit lock` may move: nothing that still fits (the default, as in cargo and uv),
    everything (``--upgrade``), or the named packages, distributions or layers
    (``--upgrade-package NAME``, repeatable). Debian packages and layers match as written
    (``python3.11``); Python distributions by their normalized name (``Rich`` → ``rich``)."""

    everything: bool = False
    names: frozenset[str] = frozenset()

    @classmethod
    def of(cls, everything: bool, names: list[str]) -> Upgrade:
        return cls(everything, frozenset(names))

    @property
    def distributions(self) -> frozenset[str]:
        return frozenset(normalize(n) for n in self.names)

    def moves(self, layer: str, entry: dict[str, Any]) -> bool:
        """Whether this upgrade names the layer or one of the entry's pins."""
        return (layer in self.names or bool(_debian_names(entry) & self.names)
                or bool(_wheel_names(entry) & self.distributions))


def _debian_names(entry: dict[str, Any]) -> set[str]:
    return {p["name"] for p in entry.get("packages", [])}


def _wheel_names(entry: dict[str, Any]) -> set[str]:
    return {normalize(w["name"]) for w in entry.get("wheels", [])}


def write_lock(recipe: Recipe, upgrade: Upgrade = Upgrade(), refresh: bool = True) -> list[str]:
    """Resolve what is new or changed, keep every other pin, and write the lock atomically.

    A layer whose settings are those it was locked with keeps its entry as it is (checked to
    be still buildable); a changed layer is resolved afresh, preferring the previous pins.
    Layers whose wheels constrain each other (``cuda`` and ``python``: the python layers
    resolve against the CUDA pins, a CUDA layer may follow the python requirements) are
    resolved together: when one of them is, all are, so that none is kept on top of pins
    that moved; except an entry that `Builder.still_holds` under its new settings (a cuda
    layer whose followed pins did not move), kept with its settings updated. Should the
    layers resolved on top of such an entry fail, everything is resolved again without it,
    so the error is the one a full relock gives. Returns one line per locked layer saying
    what moved.
    """
    current = _previous(recipe)
    previous = {} if upgrade.everything else current
    _check_names(recipe, upgrade, current)
    preferred = {name: _without(entry, upgrade) for name, entry in previous.items()
                 if name not in upgrade.names}
    lockable = [layer for layer in recipe.layers if BUILDERS[layer.kind].needs_lock]
    settings = {name: settings_hash(inputs) for name, inputs in lock_settings(recipe).items()}

    def kept(layer: LayerSpec) -> bool:
        old = previous.get(layer.name)
        return old is not None and old.get("settings") == settings[layer.name] and not upgrade.moves(layer.name, old)

    def holds(layer: LayerSpec) -> bool:
        old = previous.get(layer.name)
        return (refresh and old is not None and not kept(layer) and not upgrade.moves(layer.name, old)
                and BUILDERS[layer.kind].still_holds(layer, recipe, old, preferred))

    together = [layer for layer in lockable if BUILDERS[layer.kind].resolves_together]
    layers: dict[str, Any] = {}
    report = []
    with answers_kept():  # layers that resolve together ask uv some questions twice
        held = {layer.name for layer in together if holds(layer)}
        relock_all = any(not kept(layer) and layer.name not in held for layer in together)
        try:
            for layer in lockable:
                builder = BUILDERS[layer.kind]
                if layer.name in held:
                    builder.recheck(layer, recipe, previous[layer.name])
                    layers[layer.name] = {**previous[layer.name], "settings": settings[layer.name]}
                    change = f"kept ({len(_pins(layers[layer.name]))} pins; the pins it follows did not move)"
                elif kept(layer) and not (relock_all and layer in together):
                    old = previous[layer.name]
                    builder.recheck(layer, recipe, old)
                    layers[layer.name] = old
                    change = _changes(current.get(layer.name), old)
                else:
                    entry = builder.lock(layer, recipe, layers, preferred)
                    layers[layer.name] = {"kind": layer.kind, "settings": settings[layer.name], **entry}
                    change = _changes(current.get(layer.name), layers[layer.name])
                report.append(f"{layer.name}: {change}")
        except DreamError:
            if not held:
                raise
            return write_lock(recipe, upgrade, refresh=False)
    text = json.dumps({"lockVersion": LOCK_VERSION, "image": recipe.name, "layers": layers},
                      indent=1, sort_keys=True) + "\n"
    temporary = recipe.lock_path.with_suffix(".tmp")
    temporary.write_text(text)
    temporary.replace(recipe.lock_path)
    return report


def _check_names(recipe: Recipe, upgrade: Upgrade, previous: dict[str, Any]) -> None:
    """``--upgrade-package`` must name something the lock pins (a typo would move nothing)."""
    layers = {layer.name for layer in recipe.layers}
    debian = set().union(*(_debian_names(e) for e in previous.values()))
    wheels = set().union(*(_wheel_names(e) for e in previous.values()))
    unknown = sorted(n for n in upgrade.names if n not in layers | debian and normalize(n) not in wheels)
    if unknown and previous:
        raise DreamError(f"--upgrade-package {', '.join(unknown)}: not a package, distribution "
                         f"or layer in the lock", Location(_shown(recipe)))


def _without(entry: dict[str, Any], upgrade: Upgrade) -> dict[str, Any]:
    """A lock entry less the pins the upgrade names (so that the resolver may move them)."""
    out = dict(entry)
    if "packages" in out:
        out["packages"] = [p for p in out["packages"] if p["name"] not in upgrade.names]
    if "wheels" in out:
        out["wheels"] = [w for w in out["wheels"] if normalize(w["name"]) not in upgrade.distributions]
    return out


def _pins(entry: dict[str, Any] | None) -> dict[str, str]:
    if entry is None:
        return {}
    pins = {p["name"]: p["version"] for p in entry.get("packages", [])}
    pins.update({w["name"]: w["version"] for w in entry.get("wheels", [])})
    if "digest" in entry:  # a `from` layer: its reference, pinned to a manifest digest
        pins[entry["ref"]] = entry["digest"]
    return pins


def _changes(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """``kept (87 pins)`` or ``+rich 14.1.0, ~numpy 2.3.1 → 2.3.2, -foo``."""
    before, after = _pins(old), _pins(new)
    if old is not None and before == after:
        return f"kept ({len(after)} pins)"
    added = [f"+{n} {v}" for n, v in sorted(after.items()) if n not in before]
    moved = [f"~{n} {before[n]} → {v}" for n, v in sorted(after.items()) if n in before and before[n] != v]
    removed = [f"-{n}" for n in sorted(before) if n not in after]
    changes = added + moved + removed
    shown = ", ".join(changes[:8]) + (f" and {len(changes) - 8} more" if len(changes) > 8 else "")
    return shown or f"resolved ({len(after)} pins, none moved)"


def _previous(recipe: Recipe) -> dict[str, Any]:
    """The current lock's entries (empty when none is readable)."""
    try:
        return read_lock(recipe)
    except DreamError:
        return {}


def _shown(recipe: Recipe) -> str:
    return str(Path(recipe.display).with_name(recipe.lock_path.name))
