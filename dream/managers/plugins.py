"""Renderers and managers that are not in dream: found by name, imported only when used.

A plugin is a class named ``module:Class`` (an instance, or a class called with no arguments),
declared in one of two places: an entry point of an installed package (group
``dream.renderers`` or ``dream.managers``, honcho's ``honcho_exporters`` is the model), or a
recipe's ``renderers:``/``managers:`` mapping. Each gets a ``render:<name>``/``run:<name>``
task like the built-ins (dream/tasks/services.py).

Finding the names reads only metadata and recipes, so ``doit list`` shows every plugin's task
without importing one: a plugin that cannot be imported, or is not a renderer or manager, fails
its own tasks with one line that names it and where it was declared, and nothing else. A name
declared twice (two packages, a package and a recipe, or a plugin and a built-in) is the same
kind of one line, naming both places: which one was meant is not guessed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from importlib import metadata
from typing import Any, Callable

from dream.errors import DreamError
from dream.recipe.model import Recipe

RENDERER_GROUP = "dream.renderers"
MANAGER_GROUP = "dream.managers"
BUILT_IN = "built into dream"
REQUIRED = {"renderer": ("render",), "manager": ("up",)}  # a manager's ``down`` is optional (Ctrl-C)


@dataclass(frozen=True)
class Plugin:
    """One declared renderer or manager: its name, where it came from and what it names.

    ``value`` is ``module:Class`` (empty for a built-in, whose object the tasks hold);
    ``conflict`` is the one line for a name declared twice (the task fails with it)."""

    kind: str
    name: str
    source: str
    value: str = ""
    conflict: str = ""

    def load(self) -> Any:
        """The renderer or manager object (a class is instantiated); a `DreamError` naming the
        plugin and its source when it is declared twice, cannot be imported, or has the wrong
        shape."""
        if self.conflict:
            raise DreamError(self.conflict)
        try:
            found = metadata.EntryPoint(self.name, self.value, "").load()
            made = found() if isinstance(found, type) else found
        except Exception as exc:  # noqa: BLE001 (a plugin's own code: any failure is one line)
            raise DreamError(f"{self.label}: cannot load {self.value}: {_one_line(exc)}") from None
        missing = [method for method in REQUIRED[self.kind] if not callable(getattr(made, method, None))]
        if missing:
            raise DreamError(f"{self.label}: {self.value} is not a {self.kind} "
                             f"(it has no {' or '.join(missing)} method)")
        return made

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name} ({self.source})"

    def call(self, method: Callable[..., Any], *args: Any) -> Any:
        """``method(*args)`` of the loaded plugin: a failure in the plugin's own code is one
        line naming the plugin (it is not dream's internal error); DreamError and Ctrl-C pass."""
        try:
            return method(*args)
        except DreamError:
            raise
        except Exception as exc:  # noqa: BLE001 (a plugin's own code)
            raise DreamError(f"{self.label}: {getattr(method, '__name__', 'call')} failed: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


@functools.cache
def _installed() -> metadata.EntryPoints:
    """Every installed entry point, read once: each scan of the installed distributions costs
    about 3 ms of every doit command, and both groups come from one."""
    # (A distribution seen twice on sys.path declares the same value twice: one, in `_declared`.)
    return metadata.EntryPoints(point for dist in metadata.distributions() for point in dist.entry_points)


def _entry_points(group: str, kind: str) -> list[Plugin]:
    found = []
    for point in _installed().select(group=group):
        dist = getattr(point, "dist", None)
        package = f" of {dist.name} {dist.version}" if dist is not None else ""
        found.append(Plugin(kind, point.name, f"entry point {point.name} = {point.value} in "
                                              f"{group}{package}", point.value))
    return found


def _declared(kind: str, group: str, built_in: list[str], recipes: list[Recipe],
              field: str) -> dict[str, Plugin]:
    """Every name of ``kind``: the built-ins first, then entry points, then each recipe's
    mapping. A second declaration of a name makes it a conflict, unless it names the same
    ``module:Class`` (a shared module imported by two recipes declares its plugins twice)."""
    candidates = [Plugin(kind, name, BUILT_IN) for name in built_in]
    candidates += _entry_points(group, kind)
    for recipe in recipes:
        for name, value in getattr(recipe, field).items():
            candidates.append(Plugin(kind, name, f"{recipe.display}: {field}.{name} = {value}", value))
    table: dict[str, Plugin] = {}
    for plugin in candidates:
        first = table.get(plugin.name)
        if first is None:
            table[plugin.name] = plugin
        elif not first.conflict and not (first.value and first.value == plugin.value):
            table[plugin.name] = replace(first, conflict=f"{kind} {plugin.name!r} is declared twice: "
                                                         f"{first.source}, and {plugin.source}; rename one")
    return table


def renderers(built_in: list[str], recipes: list[Recipe]) -> dict[str, Plugin]:
    """Every renderer name (``built_in``: dream's own, whose names no plugin may take)."""
    return _declared("renderer", RENDERER_GROUP, built_in, recipes, "renderers")


def managers(built_in: list[str], recipes: list[Recipe]) -> dict[str, Plugin]:
    """Every manager name (``built_in``: dream's own ``run:`` tasks)."""
    return _declared("manager", MANAGER_GROUP, built_in, recipes, "managers")
