"""The validated recipe, as the rest of dream sees it (no YAML, no cerberus)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dream.errors import Location

CUDA_FOLLOW = "python"  # cuda `version: python`: take the versions the python layers' requirements pin


@dataclass(frozen=True)
class HostSettings:
    """How to reach one registry: ``plain_http`` (None: https, or http for loopback hosts
    that do not speak TLS) and an extra CA bundle to trust.

    A recipe's ``registries.<host>`` section; plain data here so that loading a recipe imports
    nothing of the registry (dream/registry/settings.py applies the environment over it)."""

    plain_http: bool | None = None
    ca_file: str | None = None


@dataclass(frozen=True)
class Deployment:
    """A named set of services; ``services`` holds their normalized settings in run order,
    ``options`` each renderer's settings for it by renderer name (``{"compose": {...}}``,
    normalized, defaults filled)."""

    name: str
    services: dict[str, dict[str, Any]]
    env: dict[str, str]
    port_base: int
    default: bool
    user: str | None
    log_dir: str | None
    location: Location | None
    recipe: str
    options: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class LayerSpec:
    """One layer of an image: its name, its kind (builder) and that kind's settings.

    ``spec`` is JSON-friendly and normalized (defaults filled, host paths made absolute), so its
    canonical JSON is part of the layer's input key.
    """

    name: str
    kind: str
    spec: Any
    comment: str
    location: Location
    places: dict[str, Location] = field(default_factory=dict, compare=False)

    def at(self, sub: str) -> tuple[Location, str]:
        """Where a value inside the spec was written (``packages[2]``) and its error path
        (``layers.debian.debian.packages[2]``); the layer's own line where unknown."""
        return self.places.get(sub, self.location), f"layers.{self.name}.{self.kind}.{sub}"


@dataclass(frozen=True)
class Recipe:
    """An image recipe after imports are merged and the schema has validated it."""

    path: Path
    display: str
    name: str
    image: dict[str, Any]
    layers: list[LayerSpec] = field(default_factory=list)
    python: dict[str, Any] = field(default_factory=dict)
    deployments: dict[str, Deployment] = field(default_factory=dict)
    registries: dict[str, HostSettings] = field(default_factory=dict)
    renderers: dict[str, str] = field(default_factory=dict)  # name → "module:Class", as an entry point
    managers: dict[str, str] = field(default_factory=dict)

    @property
    def builds_image(self) -> bool:
        """A recipe with layers is an image; one without only holds deployments."""
        return bool(self.layers)

    @property
    def lock_path(self) -> Path:
        """The lock file sits next to the recipe: ``recipes/x.yaml`` → ``recipes/x.lock.json``."""
        return self.path.with_name(self.path.name.removesuffix(".yaml").removesuffix(".yml") + ".lock.json")

    def layer(self, name: str) -> LayerSpec:
        return next(layer for layer in self.layers if layer.name == name)
