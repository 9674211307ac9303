"""Merge a recipe with the modules it imports, the way NixOS modules compose.

Rules (documented in docs/recipes.md):
- mappings merge key by key, recursively;
- lists append: the imported values first, in import order, then the importing file's;
  except the lists that are one value (argv lists such as ``image.cmd``, ``image.tags``:
  `ATOMIC`), which behave as scalars;
- ``layers`` are matched by name: a layer whose name a lower file already uses is merged into
  that layer (at its place) by these same rules, so a module can add packages to the base
  system's layer instead of making a second one;
- scalars (and a scalar meeting a list or mapping): the importing file wins over what it
  imports; two imports of the same file that set different values are a conflict, reported with
  both files, unless the importing file itself settles it.

Locations travel with the values so that errors found after merging still name the file and line
that set the offending value.
"""

from __future__ import annotations

from typing import Any

from dream.errors import DreamError
from dream.recipe.yamlsource import Lines, PathKey, dotted


ATOMIC: set[PathKey] = {("image", "entrypoint"), ("image", "cmd"), ("image", "tags"),
                        ("services", "*", "command"), ("services", "*", "args"),
                        ("services", "*", "readiness", "exec"), ("services", "*", "liveness", "exec"),
                        ("deployments", "*", "services")}


def _atomic(path: PathKey) -> bool:
    """Whether the list at ``path`` is one value (``*`` in `ATOMIC` matches any name)."""
    return any(len(path) == len(pattern) and all(p in ("*", k) for p, k in zip(pattern, path))
               for pattern in ATOMIC)


class Layer:
    """A value tree together with the locations of its parts."""

    def __init__(self, data: Any, lines: Lines) -> None:
        self.data = data
        self.lines = lines


def _shift(lines: Lines, path: PathKey, offset: int) -> Lines:
    """Locations under list ``path`` with indices moved by ``offset`` (for appended lists)."""
    n = len(path)
    out: Lines = {}
    for key, loc in lines.items():
        index = key[n] if len(key) > n else None
        if key[:n] == path and isinstance(index, int):
            key = path + (index + offset,) + key[n + 1:]
        out[key] = loc
    return out


def _subtree(lines: Lines, path: PathKey) -> Lines:
    n = len(path)
    return {k: v for k, v in lines.items() if k[:n] == path}


Conflicts = dict[PathKey, DreamError]


def merge(base: Layer, top: Layer, conflicts: Conflicts | None = None) -> Layer:
    """Merge ``top`` over ``base``; see the module docstring for the rules.

    When ``conflicts`` is given (merging two imports side by side), differing scalars are
    recorded there, keyed by path, as errors naming both files; ``top`` wins either way, so the
    caller can drop the conflicts that the importing file settles.
    """
    lines = dict(base.lines)
    data = _merge_value(base.data, top.data, base.lines, top.lines, lines, conflicts, ())
    return Layer(data, lines)


def _merge_value(a: Any, b: Any, la: Lines, lb: Lines, out: Lines, conflicts: Conflicts | None,
                 path: PathKey) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        merged = dict(a)
        if path in lb and path not in out:
            out[path] = lb[path]
        for key, value in b.items():
            sub = path + (key,)
            if key in merged:
                merged[key] = _merge_value(merged[key], value, la, lb, out, conflicts, sub)
            else:
                merged[key] = value
                out.update(_subtree(lb, sub))
        return merged
    if path == ("layers",) and isinstance(a, list) and isinstance(b, list):
        return _merge_layers(a, b, la, lb, out, conflicts)
    if isinstance(a, list) and isinstance(b, list) and not _atomic(path):
        shifted = _shift(_subtree(lb, path), path, len(a))
        shifted.pop(path, None)
        out.update(shifted)
        return a + b
    if conflicts is not None and a != b:
        first, second = la.get(path), lb.get(path)
        conflicts[path] = DreamError(
            f"conflicting values from two imports: {first} sets {a!r}, {second} sets {b!r}; "
            "set it in the importing file to choose",
            second, dotted(path))
    # The top value wins: drop the base's locations below this path, take the top's.
    for key in [k for k in out if k[:len(path)] == path]:
        del out[key]
    out.update(_subtree(lb, path))
    return b


def _merge_layers(a: list[Any], b: list[Any], la: Lines, lb: Lines, out: Lines,
                  conflicts: Conflicts | None) -> list[Any]:
    """Append ``b``'s layers to ``a``'s, merging each one whose name ``a`` already has into it."""
    merged = list(a)
    index_of = {item["name"]: i for i, item in enumerate(a)
                if isinstance(item, dict) and isinstance(item.get("name"), str)}
    for j, item in enumerate(b):
        name = item.get("name") if isinstance(item, dict) else None
        source = ("layers", j)
        if isinstance(name, str) and name in index_of:
            i = index_of[name]
            moved = _move(lb, source, ("layers", i))
            merged[i] = _merge_value(merged[i], item, la, moved, out, conflicts, ("layers", i))
        else:
            out.update(_move(lb, source, ("layers", len(merged))))
            merged.append(item)
    return merged


def _move(lines: Lines, source: PathKey, target: PathKey) -> Lines:
    """The locations below ``source`` re-keyed below ``target``."""
    n = len(source)
    return {target + key[n:]: loc for key, loc in lines.items() if key[:n] == source}
