"""`debian` layers: a root filesystem from pinned Debian packages, no scripts run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dream.builders.base import BuildContext
from dream.debian.apt import Apt, Package
from dream.debian.fixups import FIXUPS_VERSION, apply_fixups
from dream.debian.unpack import unpack
from dream.oci.tree import Tree
from dream.recipe.model import LayerSpec, Recipe


class DebianBuilder:
    kind = "debian"
    version = f"1+fixups{FIXUPS_VERSION}"
    needs_lock = True

    def lock_inputs(self, layer: LayerSpec, recipe: Recipe) -> Any:
        spec = layer.spec
        return {"packages": spec["packages"], "essential": spec["essential"],
                "recommends": spec["recommends"], "architecture": recipe.image["architecture"]}

    def lock(self, layer: LayerSpec, recipe: Recipe, earlier: dict[str, Any],
             previous: dict[str, Any]) -> Any:
        spec = layer.spec
        apt = Apt(recipe.image["architecture"])
        apt.update()
        packages = apt.resolve(spec["packages"], spec["essential"], spec["recommends"])
        return {"architecture": apt.architecture, "packages": [p.as_dict() for p in packages]}

    def key_inputs(self, ctx: BuildContext) -> Any:
        packages = ctx.lock["packages"]
        return {"exclude": ctx.layer.spec["exclude"], "architecture": ctx.lock["architecture"],
                "packages": [[p["name"], p["version"], p["sha256"]] for p in packages]}

    def tree(self, ctx: BuildContext, scratch: Path) -> Tree:
        packages = [Package(**p) for p in ctx.lock["packages"]]
        debs = Apt(ctx.lock["architecture"]).fetch(packages)
        unpacked = unpack(debs, scratch)
        apply_fixups(unpacked)
        tree = unpacked.tree
        for pattern in ctx.layer.spec["exclude"]:
            tree.remove_matching(pattern)
        return tree
