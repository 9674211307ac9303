"""What every layer builder provides, and the context it builds in.

A builder answers two questions: which inputs determine the layer's bytes (`key_inputs`,
hashed into the input key, cheap enough to run on every invocation) and what the layer
contains (`tree`, only called when the store has nothing for that key).

A builder whose recipe layer becomes several image layers (a CUDA set or a Python environment
split by size) provides `parts` instead: one `Part` per image layer, each with its own key, so
each is built, cached and pushed on its own.

`Builder` is the protocol every registered builder implements; `LayerBuilder` supplies its
defaults (one layer from `key_inputs`/`tree`, nothing to lock).
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol

from dream.fetch_plan import Download
from dream.oci.tree import Tree
from dream.recipe.model import LayerSpec, Recipe
from dream.store import Descriptor, Store


@dataclass
class BuildContext:
    """Where a layer is built: the recipe, its lock entry (read on first use), the store, the
    image layers below it (kind and descriptor, for builders that read them) and the image's
    environment as those layers and the recipe make it (for a `run` step)."""

    recipe: Recipe
    layer: LayerSpec
    read_lock: Callable[[], Any]
    store: Store
    lower: Callable[[], list[tuple[str, Descriptor]]] = field(default=lambda: [])
    image_env: Callable[[], dict[str, str]] = field(default=lambda: {})

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
    descriptor and the repository (``host/repo``) it comes from. ``downloads`` lists the files
    its tree fetches (wheels, debs), so that the image's fetch plan (`dream.fetch_plan`) can
    download them before the layer builds.
    """

    name: str
    comment: str
    inputs: Callable[[], Any]
    tree: Callable[[BuildContext, Path], Tree] | None
    remote: tuple[Descriptor, str] | None = None
    downloads: Callable[[], list[Download]] | None = None


class Builder(Protocol):
    """A layer kind, as `dream.lock` and `dream.tasks` use it. ``version`` changes whenever
    the same inputs would give other bytes. Every builder in `BUILDERS` implements all of it;
    `LayerBuilder` supplies the defaults, so a builder writes only what its kind does."""

    kind: str
    version: str
    needs_lock: bool
    """Whether the layer has outside inputs pinned in the lock (``lock_inputs`` and ``lock``)."""
    reads_lower: bool
    """Whether building it reads the image layers below (`BuildContext.lower`), which must
    then be built first."""
    resolves_together: bool
    """Whether its lock is redone whenever another such layer's is (`dream.lock.write_lock`)."""

    def parts(self, ctx: BuildContext) -> list[Part]:
        """The image layers the recipe layer becomes, each with its own key, bottom first."""
        ...

    def config(self, ctx: BuildContext) -> dict[str, Any]:
        """What the layer adds to the image config: ``env`` and ``labels`` (under the recipe's
        own), ``ports`` (joined), ``cmd`` and ``healthcheck`` (Docker's ``Healthcheck``; over
        any other), ``base`` (a base image's fields)."""
        ...

    def lock_inputs(self, layer: LayerSpec, recipe: Recipe, below: Mapping[str, Any]) -> Any:
        """The settings the lock entry depends on; when they change, the lock is stale.
        ``below`` holds the lock inputs of the lockable layers below, by layer name."""
        ...

    def lock(self, layer: LayerSpec, recipe: Recipe, earlier: dict[str, Any],
             previous: dict[str, Any]) -> dict[str, Any]:
        """Resolve outside inputs (only for builders with ``needs_lock``). ``earlier`` holds the
        lock entries of the layers below, already resolved; ``previous`` the entries of the
        lock being replaced, whose pins a resolver should keep where they still fit."""
        ...

    def recheck(self, layer: LayerSpec, recipe: Recipe, entry: dict[str, Any]) -> None:
        """Raise a `DreamError` if a kept lock entry can no longer be built."""
        ...

    def still_holds(self, layer: LayerSpec, recipe: Recipe, entry: dict[str, Any],
                    previous: dict[str, Any]) -> bool:
        """Whether ``entry``, locked from other settings, is what resolving the layer again
        would give (a `cuda` layer whose followed framework pins did not move): `write_lock`
        then keeps it with its settings brought up to date instead of resolving it."""
        ...

    def check_lock(self, layer: LayerSpec, entries: Mapping[str, Any]) -> None:
        """Raise a `DreamError` if the lock's entries (every layer's, as read from the lock
        file) cannot carry this layer; called before the layer is keyed or built."""
        ...


class LayerBuilder:
    """The defaults of `Builder`: one image layer made from `key_inputs` and `tree`, nothing
    to lock, nothing added to the image config, no lock entries it depends on."""

    kind: str
    version: str
    needs_lock: bool = False
    reads_lower: bool = False
    resolves_together: bool = False

    def key_inputs(self, ctx: BuildContext) -> Any:
        """JSON-friendly description of everything that determines the layer's bytes."""
        raise NotImplementedError(f"{self.kind} layers are made of parts")

    def tree(self, ctx: BuildContext, scratch: Path) -> Tree:
        """The layer's content; may use ``scratch`` for file bytes until the layer is written."""
        raise NotImplementedError(f"{self.kind} layers are made of parts")

    def parts(self, ctx: BuildContext) -> list[Part]:
        return [Part(ctx.layer.name, ctx.layer.comment, lambda: self.key_inputs(ctx), self.tree)]

    def config(self, ctx: BuildContext) -> dict[str, Any]:
        return {}

    def lock_inputs(self, layer: LayerSpec, recipe: Recipe, below: Mapping[str, Any]) -> Any:
        return None

    def lock(self, layer: LayerSpec, recipe: Recipe, earlier: dict[str, Any],
             previous: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError(f"{self.kind} layers have nothing to lock")

    def recheck(self, layer: LayerSpec, recipe: Recipe, entry: dict[str, Any]) -> None:
        return None

    def still_holds(self, layer: LayerSpec, recipe: Recipe, entry: dict[str, Any],
                    previous: dict[str, Any]) -> bool:
        return False

    def check_lock(self, layer: LayerSpec, entries: Mapping[str, Any]) -> None:
        return None
