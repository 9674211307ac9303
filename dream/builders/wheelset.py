"""What `cuda` and `python` layers share: a locked set of wheels split into image layers.

The split rule (documented in docs/gpu-images.md): every wheel of at least ``min_layer_size``
bytes gets an image layer of its own, bottom first in name order; the smaller wheels share one
layer on top, up to ``small_layer_size`` bytes (smallest first; those that do not fit get layers
of their own as well), so the layer that everyday changes rebuild stays small in a 7 GB image. Big wheels (torch, cuBLAS, cuDNN …) rarely change, so their layers keep their
digests while the small top layer absorbs everyday changes.

No file may appear in two layers: at lock time every wheel's member list is compared with the
wheels below it (in the image's layer order), and the paths already provided (such as the
namespace file ``nvidia/__init__.py`` that every NVIDIA wheel ships) are recorded as ``drop``.
Locking reads those member lists from the wheels' central directories (`dream.python.members`),
never the wheels themselves: wheels are downloaded at build time only.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from dream.builders.base import BuildContext, Part
from dream.errors import DreamError
from dream.oci.tree import Tree
from dream.python.resolve import ResolveError, Wheel, resolve
from dream.python.target import PythonTarget
from dream.python.bytecode import add_bytecode, compiler_key
from dream.python.wheels import downloads, fetch, install_paths

if TYPE_CHECKING:  # lock time only: it parses requirements with packaging
    from dream.python.blame import RequirementSites

INSTALL_VERSION = "3"  # bump when the same wheels would install to other bytes


def split(wheels: list[Wheel], min_size: int, small_size: int) -> list[tuple[Wheel | None, list[Wheel]]]:
    """[(big wheel, [it]) …, (None, [small wheels])] in layer order (the last only if any).

    Big: at least ``min_size`` bytes, or among the wheels under it one that does not fit in
    the small layer's ``small_size`` bytes once the smaller ones are in (smallest first, ties
    by name: every wheel of the small layer is smaller than every big one)."""
    small, total = [], 0
    for wheel in sorted((w for w in wheels if w.size < min_size), key=lambda w: (w.size, w.name)):
        if total + wheel.size > small_size:
            break
        small.append(wheel)
        total += wheel.size
    chosen = {w.sha256 for w in small}
    big = sorted((w for w in wheels if w.sha256 not in chosen), key=lambda w: w.name)
    small.sort(key=lambda w: w.name)
    groups: list[tuple[Wheel | None, list[Wheel]]] = [(w, [w]) for w in big]
    if small:
        groups.append((None, small))
    return groups


def lock_wheels(wheels: list[Wheel], min_size: int, target: PythonTarget,
                provided: set[str]) -> list[Wheel]:
    """Fill in ``size``, ``drop`` and ``libs`` from the wheels' sizes and member lists (read
    without downloading them). ``provided`` holds the image paths of the wheels below.

    A path two wheels ship goes to the first in (at least ``min_size`` first, then by name)
    order and is the other's ``drop``. Every path is then installed by exactly one wheel, so
    which image layer each wheel lands in (`split`, a build-time choice) never matters here."""
    from dream.python.members import listings  # lock time only: it brings an HTTP client
    listed = listings(wheels, target)
    sized = [Wheel(w.name, w.version, w.filename, w.sha256, w.size or listed[w.sha256].size)
             for w in wheels]
    provided = set(provided)
    locked = []
    for wheel in sorted(sized, key=lambda w: (w.size < min_size, w.name)):
        files = install_paths(listed[wheel.sha256].names, target)
        drop = tuple(sorted(f for f in files if f in provided))
        libs = tuple(sorted(f for f in files if _is_shared_library(f)))
        provided.update(files)
        locked.append(Wheel(wheel.name, wheel.version, wheel.filename, wheel.sha256,
                            wheel.size, drop, libs))
    return sorted(locked, key=lambda w: w.name)


def _is_shared_library(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return name.startswith("lib") and (name.endswith(".so") or ".so." in name)


def wheel_parts(ctx: BuildContext, wheels: list[Wheel], min_size: int, small_size: int,
                short_name: Callable[[Wheel], str], extra_top: Callable[[Tree], None] | None = None,
                extra_inputs: Any = None) -> list[Part]:
    """One `Part` per group of `split`; ``extra_top`` adds files to the top (small-wheel) layer."""
    target = PythonTarget.of(ctx.recipe)
    bytecode = bool(ctx.recipe.python.get("bytecode", True))
    groups = split(wheels, min_size, small_size)
    if extra_top is not None and (not groups or groups[-1][0] is not None):
        groups.append((None, []))
    parts = []
    for big, group in groups:
        name = f"{ctx.layer.name}-{short_name(big)}" if big else ctx.layer.name
        comment = (f"{big.name} {big.version}" if big
                   else ctx.layer.comment or f"{len(group)} small wheels")
        top = extra_top if big is None else None
        inputs = {"install": INSTALL_VERSION, "target": target.key(),
                  "wheels": [[w.name, w.version, w.sha256, list(w.drop)] for w in group],
                  **({"extra": extra_inputs} if top else {})}
        parts.append(Part(name, comment, functools.partial(_inputs, inputs, target, bytecode),
                          functools.partial(_part_tree, group, target, bytecode, top),
                          downloads=functools.partial(downloads, group, target)))
    return parts


def _inputs(inputs: dict[str, Any], target: PythonTarget, bytecode: bool) -> dict[str, Any]:
    """The part's inputs and, when it compiles bytecode, the interpreter that does (asked
    only when the key is needed, never while the tasks are listed)."""
    return {**inputs, "bytecode": compiler_key(target.version) if bytecode else "off"}


def _part_tree(group: list[Wheel], target: PythonTarget, bytecode: bool,
               extra_top: Callable[[Tree], None] | None, ctx: BuildContext, scratch: Path) -> Tree:
    """The wheels installed into a tree whose file entries point into the wheel files
    (`dream.python.install`): the tar streams their members, nothing is unpacked to disk; only
    the compiled bytecode is written, to ``scratch``."""
    from dream.python.install import install_into  # imports installer: a no-op build never does
    paths = fetch(group, target)
    tree = Tree(f"{ctx.recipe.name}/{ctx.layer.name}")
    modules = [module for wheel in group for module in install_into(tree, paths[wheel.sha256], wheel, target)]
    if bytecode:
        add_bytecode(tree, modules, target.version, scratch, tree.label)
    if extra_top is not None:
        extra_top(tree)
    return tree


def provided_by(earlier: dict[str, Any], target: PythonTarget) -> set[str]:
    """The image paths the wheels of lower layers' lock entries install."""
    from dream.python.members import listings
    wheels = [Wheel.from_dict(w) for entry in earlier.values() for w in entry.get("wheels", [])]
    listed = listings(wheels, target)
    return {f for w in wheels for f in install_paths(listed[w.sha256].names, target)}


def pins(entries: dict[str, Any]) -> list[str]:
    """``name==version`` for every wheel in some lock entries."""
    return sorted({f"{w['name']}=={w['version']}" for e in entries.values() for w in e.get("wheels", [])})


def resolve_keeping(requirements: list[str], target: PythonTarget, constraints: list[str],
                    previous: list[str], what: str, sites: RequirementSites | None = None) -> list[Wheel]:
    """Resolve while keeping the previous lock's versions; where the requirements no longer
    allow that (a raised minimum, say), resolve afresh. ``--upgrade`` passes no previous
    versions (see `dream.lock`). With ``sites`` (where the recipe wrote ``requirements``), a
    failure names the recipe line of the requirement it is about."""
    if previous:
        try:
            return resolve(requirements, target, constraints + previous, what)
        except DreamError:
            pass
    try:
        return resolve(requirements, target, constraints, what)
    except ResolveError as error:
        if sites is None:
            raise
        raise sites.blame(error) from None
