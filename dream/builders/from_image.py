"""Kind ``from``: the layers of an image in a registry, reused as they are.

``doit lock:<image>`` pins the reference to a manifest digest and records its config and layer
descriptors, so tasks are made without the network. The layers are never rebuilt nor
re-compressed: the image's manifest names the very same blobs, which are fetched only when
something reads them (and mounted, not copied, when pushed to the same registry). The base's
config (Env, Entrypoint, Cmd, User, WorkingDir, ports, labels, stop signal) is inherited; the
recipe's ``image`` fields override it.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Mapping

from dream.builders.base import BuildContext, LayerBuilder, Part
from dream.errors import DreamError
from dream.recipe.model import LayerSpec, Recipe
from dream.store import Descriptor


class FromBuilder(LayerBuilder):
    kind = "from"
    version = "1"
    needs_lock = True

    def lock_inputs(self, layer: LayerSpec, recipe: Recipe, below: Mapping[str, Any]) -> Any:
        return {"from": layer.spec, "architecture": recipe.image["architecture"]}

    def lock(self, layer: LayerSpec, recipe: Recipe, earlier: dict[str, Any],
             previous: dict[str, Any]) -> Any:
        """Resolve the reference. An unchanged layer never gets here: `dream.lock` keeps its
        entry, so a moving tag moves the lock only with ``--upgrade`` or ``--upgrade-package``."""
        from dream.oci.reference import parse_reference  # with the registry code: only a lock asks
        from dream.registry.resolve import resolve_base
        try:
            return resolve_base(parse_reference(layer.spec, "from"), recipe.image["architecture"])
        except DreamError as exc:
            raise DreamError(exc.message, layer.location, f"layers.{layer.name}.from") from None

    def parts(self, ctx: BuildContext) -> list[Part]:
        entry = ctx.lock
        layers = [Descriptor.from_json(layer) for layer in entry["layers"]]
        name = ctx.layer.name
        names = [name] if len(layers) == 1 else [f"{name}-{i}" for i in range(1, len(layers) + 1)]
        comment = ctx.layer.comment or f"from {entry['ref']}"
        return [Part(part, comment, functools.partial(_digest_of, layer), None, (layer, entry["source"]))
                for part, layer in zip(names, layers)]

    def config(self, ctx: BuildContext) -> dict[str, Any]:
        """The base image's config, as recipe ``image`` fields, under ``base`` (recipe wins)."""
        entry = ctx.lock
        descriptor = Descriptor.from_json(entry["config"])
        ctx.store.add_source(descriptor.digest, entry["source"])
        try:
            config = json.loads(ctx.store.local_blob(descriptor).read_bytes()).get("config") or {}
            return {"base": _inherited(config)}
        except (ValueError, TypeError, AttributeError) as exc:  # a config of another shape than OCI's
            raise DreamError(f"the base image's config {descriptor.digest[:19]}… is not a valid OCI "
                             f"image config ({exc})", ctx.layer.location, f"layers.{ctx.layer.name}.from") from None


def _digest_of(layer: Descriptor) -> dict[str, str]:
    """A base layer's key inputs: its digest (it is taken as it is, never built)."""
    return {"digest": layer.digest}


def _inherited(config: dict[str, Any]) -> dict[str, Any]:
    """The base config's fields as recipe ``image`` fields; each of OCI's types is checked,
    so a config with ``Labels`` as a list is refused instead of breaking later."""
    def typed(key: str, kind: type[Any], default: Any) -> Any:
        value = config.get(key)
        if value is None:
            return default
        if not isinstance(value, kind) or (kind is list and not all(isinstance(v, str) for v in value)):
            raise ValueError(f"{key} must be {'a list of strings' if kind is list else 'an object'}")
        return value
    labels = typed("Labels", dict, {})
    if not all(isinstance(v, str) for v in labels.values()):
        raise ValueError("Labels must map names to strings")
    base: dict[str, Any] = {
        "env": dict(item.split("=", 1) for item in typed("Env", list, []) if "=" in item),
        "labels": dict(labels),
        "ports": sorted(typed("ExposedPorts", dict, {})),
    }
    for key, field in (("Entrypoint", "entrypoint"), ("Cmd", "cmd")):
        if typed(key, list, None):
            base[field] = config[key]
    for key, field in (("User", "user"), ("WorkingDir", "workdir"), ("StopSignal", "stop_signal")):
        value = config.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a string")
        base[field] = value
    return base
