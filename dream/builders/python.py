"""`python` layers: a Python environment from a lock of wheels, split into image layers by size.

Resolution is for the image's interpreter (version and platform from the recipe's ``python``
section), never the host's. Wheels only: nothing is built and nothing runs inside the image.
Distributions that the image's `cuda` layers already install are pinned to the same versions
while resolving and then left out, so no wheel is installed twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from dream.builders.base import BuildContext, LayerBuilder, Part
from dream.builders.wheelset import lock_wheels, pins, provided_by, resolve_keeping, wheel_parts
from dream.errors import DreamError
from dream.python.resolve import Wheel
from dream.python.target import PythonTarget
from dream.recipe.model import LayerSpec, Recipe

if TYPE_CHECKING:
    from dream.python.blame import RequirementSites


class PythonBuilder(LayerBuilder):
    kind = "python"
    version = "1"
    needs_lock = True
    resolves_together = True  # cuda and python pins constrain each other (dream.lock)

    def lock_inputs(self, layer: LayerSpec, recipe: Recipe, below: Mapping[str, Any]) -> Any:
        """Its own settings and those of the cuda and python layers below it (from ``below``),
        in layer order: a python layer resolves against their pins."""
        under = [other for other in recipe.layers[:recipe.layers.index(layer)]
                 if other.kind in ("cuda", "python")]
        return {"requirements": layer.spec["requirements"], "min_layer_size": layer.spec["min_layer_size"],
                "python": PythonTarget.of(recipe).key(),
                "below": [below[o.name] for o in under]}

    def lock(self, layer: LayerSpec, recipe: Recipe, earlier: dict[str, Any],
             previous: dict[str, Any]) -> Any:
        target = PythonTarget.of(recipe)
        _check_interpreter(layer, target, earlier)
        below = [Wheel.from_dict(w) for entry in earlier.values() for w in entry.get("wheels", [])]
        resolved = resolve_keeping(layer.spec["requirements"], target,
                                   [f"{w.name}=={w.version}" for w in below], pins(previous),
                                   f"the requirements of layer {layer.name!r}",
                                   sites=_sites(layer))
        present = {w.name for w in below}
        own = [w for w in resolved if w.name not in present]
        locked = lock_wheels(own, layer.spec["min_layer_size"], target, provided_by(earlier, target))
        return {"python": target.version, "wheels": [w.as_dict() for w in locked]}

    def parts(self, ctx: BuildContext) -> list[Part]:
        wheels = [Wheel.from_dict(w) for w in ctx.lock["wheels"]]
        return wheel_parts(ctx, wheels, ctx.layer.spec["min_layer_size"],
                           ctx.layer.spec["small_layer_size"], lambda w: w.name)


def _sites(layer: LayerSpec) -> RequirementSites:
    from dream.python.blame import RequirementSites  # packaging's parser: lock time only
    return RequirementSites(layer)


def _check_interpreter(layer: LayerSpec, target: PythonTarget, earlier: dict[str, Any]) -> None:
    """A Debian layer below must install ``python<version>``, or the wheels would fit no one."""
    debian = [entry for entry in earlier.values() if entry.get("kind") == "debian"]
    if not debian:
        return
    wanted = f"python{target.version}"
    if not any(p["name"] == wanted for entry in debian for p in entry["packages"]):
        raise DreamError(f"no Debian layer below installs {wanted}; set `python.version` to the "
                         "image's interpreter or add the package", layer.location, f"layers.{layer.name}")
