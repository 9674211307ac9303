"""What every layer builder provides, and the context it builds in.

A builder answers two questions: which inputs determine the layer's bytes (`key_inputs`,
hashed into the input key, cheap enough to run on every invocation) and what the layer
contains (`tree`, only called when the store has nothing for that key).

A builder whose recipe layer becomes several image layers (a CUDA set or a Python environment
split by size) provides `parts` instead: one `Part` per image layer, each with its own key, so
each is built, cached and pushed on its own.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from dream.oci.tree import Tree
from dream.recipe.model import LayerSpec, Recipe
from dream.store import Descriptor, Store


@dataclass
class BuildContext:
    """Where a layer is built: the recipe, its lock entry (read on first use), the store, and
    the image layers below it (kind and descriptor, for builders that read them)."""

    recipe: Recipe
    layer: LayerSpec
    read_lock: Callable[[], Any]
    store: Store
    lower: Callable[[], list[tuple[str, Descriptor]]] = field(default=lambda: [])

    @cached_property
    def lock(self) -> Any:
        return self.read_lock()

    @contextlib.contextmanager
    def scratch(self) -> Iterator[Path]:
        """A temporary directory on the store's file system, removed afterwards."""
        with tempfile.TemporaryDirectory(dir=self.store.tmp_dir, prefix="build-") as path:
            yield Path(path)


@dataclass(frozen=True)
class Part:
    """One image layer: its name, history comment, key inputs (computed lazily) and content.

    A layer taken as it is from a registry (a base image's) has no tree: ``remote`` holds its
    descriptor and the repository (``host/repo``) it comes from.
    """

    name: str
    comment: str
    inputs: Callable[[], Any]
    tree: Callable[[BuildContext, Path], Tree] | None
    remote: tuple[Descriptor, str] | None = None


class Builder(Protocol):
    """A layer kind. ``version`` changes whenever the same inputs would give other bytes.

    Optional, found by name: ``parts`` (several image layers, see `parts_of`), ``config``
    (env and labels for the image, `image_config_of`), ``recheck(layer, recipe, entry)``
    (raise if a kept lock entry can no longer be built, `dream.lock`) and
    ``resolves_together`` (its lock is redone whenever another such layer's is)."""

    kind: str
    version: str
    needs_lock: bool

    def key_inputs(self, ctx: BuildContext) -> Any:
        """JSON-friendly description of everything that determines the layer's bytes."""

    def tree(self, ctx: BuildContext, scratch: Path) -> Tree:
        """The layer's content; may use ``scratch`` for file bytes until the layer is written."""

    def lock_inputs(self, layer: LayerSpec, recipe: Recipe) -> Any:
        """The settings the lock entry depends on; when they change, the lock is stale."""

    def lock(self, layer: LayerSpec, recipe: Recipe, earlier: dict[str, Any],
             previous: dict[str, Any]) -> Any:
        """Resolve outside inputs (only for builders with ``needs_lock``). ``earlier`` holds the
        lock entries of the layers below, already resolved; ``previous`` the entries of the
        lock being replaced, whose pins a resolver should keep where they still fit."""


def parts_of(builder: Any, ctx: BuildContext) -> list[Part]:
    """The image layers a recipe layer becomes: the builder's `parts`, or the layer itself."""
    if hasattr(builder, "parts"):
        return builder.parts(ctx)
    return [Part(ctx.layer.name, ctx.layer.comment, lambda: builder.key_inputs(ctx), builder.tree)]


def image_config_of(builder: Any, ctx: BuildContext) -> dict[str, dict[str, str]]:
    """Env and labels a builder adds to the image config (the recipe's own values win)."""
    return builder.config(ctx) if hasattr(builder, "config") else {}
