"""What every layer builder provides, and the context it builds in.

A builder answers two questions: which inputs determine the layer's bytes (`key_inputs`,
hashed into the input key, cheap enough to run on every invocation) and what the layer
contains (`tree`, only called when the store has nothing for that key).
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol

from dream.oci.tree import Tree
from dream.recipe.model import LayerSpec, Recipe
from dream.store import Store


@dataclass
class BuildContext:
    """Where a layer is built: the recipe, its lock entry for this layer, the store."""

    recipe: Recipe
    layer: LayerSpec
    lock: Any
    store: Store

    @contextlib.contextmanager
    def scratch(self) -> Iterator[Path]:
        """A temporary directory on the store's file system, removed afterwards."""
        with tempfile.TemporaryDirectory(dir=self.store.tmp_dir, prefix="build-") as path:
            yield Path(path)


class Builder(Protocol):
    """A layer kind. ``version`` changes whenever the same inputs would give other bytes."""

    kind: str
    version: str
    needs_lock: bool

    def key_inputs(self, ctx: BuildContext) -> Any:
        """JSON-friendly description of everything that determines the layer's bytes."""

    def tree(self, ctx: BuildContext, scratch: Path) -> Tree:
        """The layer's content; may use ``scratch`` for file bytes until the layer is written."""

    def lock_inputs(self, layer: LayerSpec, recipe: Recipe) -> Any:
        """The settings the lock entry depends on; when they change, the lock is stale."""

    def lock(self, layer: LayerSpec, recipe: Recipe) -> Any:
        """Resolve outside inputs (only for builders with ``needs_lock``)."""
