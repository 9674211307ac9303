"""Load a recipe: read YAML, resolve and merge imports, validate, normalize into a `Recipe`.

Every problem becomes a `DreamError` with a file, a line and a dotted path; a recipe's problems
are collected and raised together as `UserErrors`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from dream.errors import DreamError, Location, UserErrors
from dream.recipe import facts
from dream.oci.tree import climbing_symlink
from dream.presets import PRESET_DIR
from dream.recipe.merge import Layer, merge
from dream.recipe.paths import PathRefused, source_path
from dream.recipe.model import LayerSpec, Recipe
from dream.recipe.rules import FORMS
from dream.recipe.schema import LAYER_KINDS, NAME_RE, validator
from dream.recipe.model import HostSettings
from dream.oci.reference import parse_reference
from dream.recipe.yamlsource import Lines, PathKey, dotted, host_path, location_of, read_yaml
from dream.recipe.services import Deployment
from dream.recipe.services import normalize as normalize_services

MODULE_DIR = "layers"


class _Loader:
    """Reads one recipe and its import closure; each module file is included once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.included: set[Path] = set()

    def display(self, path: Path) -> str:
        """``path`` relative to the project; a shipped preset outside it (in site-packages)
        absolute. Either way ``root / display`` is the file again (dotfiles resolve by it)."""
        if not path.is_absolute() or (path.is_relative_to(PRESET_DIR) and not path.is_relative_to(self.root)):
            return str(path)
        try:
            return os.path.relpath(path, self.root)
        except ValueError:
            return str(path)

    def load(self, path: Path, stack: tuple[tuple[Path, Location | None], ...], origin: Location | None) -> Layer:
        """``stack``: the files being loaded, outermost first, each with the import line that
        brought it in; ``origin`` is the line importing ``path``."""
        path = facts.resolve(path)
        shown = self.display(path)
        chain = [file for file, _ in stack]
        if path in chain:
            raise self.cycle(stack[chain.index(path):], origin)
        self.included.add(path)
        data, lines = read_yaml(path, shown)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise DreamError("a recipe or module must be a mapping of fields", lines.get(()))
        imports = data.get("imports", [])
        if not isinstance(imports, list):
            return Layer(data, lines)  # the schema reports the wrong type with its line
        merged: Layer | None = None
        conflicts: dict[PathKey, DreamError] = {}
        for index, name in enumerate(imports):
            where = lines.get(("imports", index))
            if not isinstance(name, str):
                continue  # reported by the schema
            target = self.resolve_import(name, path, where)
            if target in self.included and target not in chain and target != path:
                continue  # already merged through another import (a diamond)
            module = self.load(target, stack + ((path, origin),), where)
            module.data.pop("imports", None)
            merged = module if merged is None else merge(merged, module, conflicts)
        own = Layer(data, lines)
        unsettled = [error for at, error in conflicts.items() if at not in lines]
        if unsettled:
            raise UserErrors(unsettled)
        return own if merged is None else merge(merged, own)

    def cycle(self, ring: tuple[tuple[Path, Location | None], ...], closing: Location | None) -> DreamError:
        """One cycle is one line, whichever of its files a recipe enters it by: it starts at
        the file whose name sorts first and is reported at the import line that closes it (so
        every recipe reaching the cycle names it with the same words, and `load_recipes`
        prints it once). ``ring``: the files of the cycle in import order, each with the
        line that imported it; ``closing``: the line by which the last imports the first."""
        files = [file for file, _ in ring]
        into = [closing] + [where for _, where in ring[1:]]  # into[i]: the line importing files[i]
        start = min(range(len(files)), key=lambda i: self.display(files[i]))
        order = files[start:] + files[:start]
        text = " -> ".join(self.display(file) for file in order + [order[0]])
        return DreamError(f"import cycle: {text}", into[start], "imports")

    def resolve_import(self, name: str, importer: Path, where: Location | None) -> Path:
        """A path (``parts/x.yaml``) against the importing file, kept inside the project (or,
        for a shipped preset, the preset folder) by dream/recipe/paths.py's rule; a name in the
        project's own ``layers/`` first, then among the presets shipped with dream."""
        if "/" in name or name.endswith((".yaml", ".yml")):
            try:
                candidates = [source_path(name, importer, self.root)]
            except PathRefused as exc:
                raise DreamError(f"import {name!r} {exc}", where, "imports") from None
        else:
            candidates = [self.root / MODULE_DIR / f"{name}.yaml", PRESET_DIR / f"{name}.yaml"]
        for candidate in candidates:
            if facts.is_file(candidate):
                if candidate.is_relative_to(self.root / MODULE_DIR):
                    try:  # a project module that is a symlink out of the project
                        return source_path(str(candidate.relative_to(self.root)), self.root / "dodo.py", self.root)
                    except PathRefused as exc:
                        raise DreamError(f"import {name!r} {exc}", where, "imports") from None
                return facts.resolve(candidate)
        looked = " and ".join(self.display(facts.resolve(c)) for c in candidates)
        raise DreamError(f"import {name!r} not found (looked for {looked})", where, "imports")


def load_recipe(path: Path, root: Path | None = None) -> Recipe:
    """Load, merge, validate and normalize the recipe at ``path``.

    ``root`` is the project directory (module names resolve in ``root/layers``; error messages
    show paths relative to it). Raises `UserErrors` listing every problem found.
    """
    root = facts.resolve(root or Path.cwd())
    loader = _Loader(root)
    tree = loader.load(path, (), None)
    check = validator()
    ok = check.validate(tree.data)
    errors = [] if ok else _flatten(check.errors, (), tree.lines)
    if not ok:
        raise UserErrors(_sorted(errors))
    document = check.document
    errors = _check_layer_names(document, tree.lines)
    if errors:
        raise UserErrors(errors)
    path = facts.resolve(path)
    return _normalize(path, loader.display(path), document, tree.lines, root)


def _flatten(errors: Any, path: PathKey, lines: Lines) -> list[DreamError]:
    out: list[DreamError] = []
    for key, items in errors.items():
        sub = path + (key,)
        for item in items:
            if isinstance(item, dict):
                out.extend(_flatten(item, sub, lines))
            else:
                out.append(DreamError(_friendly(item, sub), location_of(lines, sub), dotted(sub)))
    return out


_FRIENDLY = {
    "unknown field": "unknown field (see docs/recipe-reference.md for the fields)",
    "must be of string type": "must be a string",
    "must be of list type": "must be a list",
    "must be of dict type": "must be a mapping",
    "must be of boolean type": "must be true or false",
    "must be of integer type": "must be an integer",
    "must be of float type": "must be a number of seconds or a duration such as 500ms, 2s, 1m",
}


def _friendly(message: str, path: PathKey) -> str:
    if path[-1] == "mode" and message == "must be of string type":
        return 'write modes as quoted octal strings, e.g. "0644"'
    if path[-1] == "version" and message == "must be of string type":
        return 'must be a string: write versions quoted, e.g. "12.8" (unquoted, 12.10 reads as 12.1)'
    if message.startswith("value does not match regex"):
        pattern = message.removeprefix("value does not match regex ").strip("'")
        return f"must be {FORMS[pattern]}" if pattern in FORMS else "has the wrong form"
    return _FRIENDLY.get(message, message)


def _sorted(errors: list[DreamError]) -> list[DreamError]:
    return sorted(errors, key=lambda e: (e.location.file if e.location else "",
                                         e.location.line if e.location else 0, e.path))


def _check_layer_names(document: dict[str, Any], lines: Lines) -> list[DreamError]:
    seen: dict[str, int] = {}
    errors = []
    for index, layer in enumerate(document["layers"]):
        name = layer["name"]
        if name in seen:
            first = location_of(lines, ("layers", seen[name]))
            errors.append(DreamError(f"layer name {name!r} is used twice (first at {first})",
                                     location_of(lines, ("layers", index, "name")),
                                     f"layers[{index}].name"))
        seen.setdefault(name, index)
    return errors


def _normalize(path: Path, display: str, doc: dict[str, Any], lines: Lines, root: Path) -> Recipe:
    image = dict(doc["image"])
    if "name" not in image:
        image["name"] = path.name.removesuffix(".yaml").removesuffix(".yml")
        if not re.fullmatch(NAME_RE, image["name"]):
            raise UserErrors([DreamError(f"the image is named after the file, and {image['name']!r} is no "
                                         "image name (lowercase letters, digits and . _ - between them): "
                                         "set image.name or rename the file", Location(display))])
    layers = []
    errors: list[DreamError] = []
    for index, layer in enumerate(doc["layers"]):
        kind = next(k for k in LAYER_KINDS if k in layer)
        spec = layer[kind]
        where = location_of(lines, ("layers", index)) or Location(display)
        if kind == "files":
            spec = [_file_entry(item, ("layers", index, "files", i), lines, root, errors)
                    for i, item in enumerate(spec)]
        elif kind == "home":
            spec = dict(spec, gid=spec.get("gid", spec["uid"]),
                        home=spec.get("home", f"/home/{spec['user']}"),
                        files=[_file_entry(item, ("layers", index, "home", "files", i), lines, root, errors)
                               for i, item in enumerate(spec["files"])])
        elif kind == "from":
            _check_reference(spec, ("layers", index, "from"), lines, errors)
        elif kind == "run":
            spec = dict(spec, user=spec.get("user") or image.get("user") or "root",
                        inputs=[_file_entry(item, ("layers", index, "run", "inputs", i), lines, root, errors)
                                for i, item in enumerate(spec["inputs"])])
        places = {dotted(at[3:]): found for at, found in lines.items()
                  if len(at) > 3 and at[:3] == ("layers", index, kind)}
        layers.append(LayerSpec(name=layer["name"], kind=kind, spec=spec,
                                comment=layer.get("comment", ""), location=where, places=places))
    for index, target in enumerate(image["push"]):
        _check_reference(target, ("image", "push", index), lines, errors)
    if image.get("cache"):
        _check_reference(image["cache"], ("image", "cache"), lines, errors)
    registries = {host: _registry(host, settings, lines, root, errors)
                  for host, settings in doc["registries"].items()}
    python = _python_target(doc["python"], image["architecture"], lines, errors)
    deployments, problems = normalize_services(doc, image["name"], lines, root)
    errors.extend(problems)
    errors.extend(_check_services_layers(layers, deployments))
    if errors:
        raise UserErrors(_sorted(errors))
    return Recipe(path=path, display=display, name=image["name"], image=image, layers=layers,
                  python=python, deployments=deployments, registries=registries,
                  renderers=dict(doc["renderers"]), managers=dict(doc["managers"]))


WHEEL_MACHINE = {"amd64": "x86_64", "arm64": "aarch64"}


def _python_target(python: dict[str, Any], architecture: str, lines: Lines,
                   errors: list[DreamError]) -> dict[str, Any]:
    """The wheel platform follows ``image.architecture``; a platform of another machine would
    mix x86_64 wheels into an arm64 image (or the reverse), so it is refused."""
    machine = WHEEL_MACHINE[architecture]
    python = dict(python)
    platform = python.setdefault("platform", f"manylinux_2_36_{machine}")
    if not platform.endswith("_" + machine):
        at = ("python", "platform")
        errors.append(DreamError(f"{platform} is not for image.architecture {architecture} "
                                 f"(wheels for it end in _{machine})", location_of(lines, at), dotted(at)))
    return python


def _check_reference(text: str, at: PathKey, lines: Lines, errors: list[DreamError]) -> None:
    try:
        parse_reference(text, "reference")
    except DreamError as exc:
        errors.append(DreamError(exc.message, location_of(lines, at), dotted(at)))


def _registry(host: str, settings: dict[str, Any], lines: Lines, root: Path,
              errors: list[DreamError]) -> HostSettings:
    """A ``registries.<host>`` entry, its ``ca_file`` resolved against the file that wrote it."""
    ca_file = None
    if "ca_file" in settings:
        at = ("registries", host, "ca_file")
        ca_file = host_path(lines, at, settings["ca_file"], root, contained=False)
        if not facts.is_file(ca_file):
            errors.append(DreamError(f"no such file: {settings['ca_file']}", location_of(lines, at), dotted(at)))
    return HostSettings(plain_http=settings.get("plain_http"), ca_file=str(ca_file) if ca_file else None)


def _check_services_layers(layers: list[LayerSpec], deployments: dict[str, Deployment]) -> list[DreamError]:
    """A `services` layer names one of this recipe's deployments (or there is exactly one)."""
    errors = []
    for layer in layers:
        if layer.kind != "services":
            continue
        wanted = layer.spec.get("deployment")
        if wanted is None:
            defaults = [d for d in deployments.values() if d.default] or list(deployments.values())
            if len(defaults) != 1:
                errors.append(DreamError(
                    "name the deployment to put into the image (this recipe has "
                    f"{', '.join(deployments) or 'none'})", layer.location, f"layers.{layer.name}.services"))
        elif wanted not in deployments:
            errors.append(DreamError(f"no deployment {wanted!r} in this recipe (it has "
                                     f"{', '.join(deployments) or 'none'})", layer.location,
                                     f"layers.{layer.name}.services.deployment"))
    return errors


def _file_entry(item: dict[str, Any], at: PathKey, lines: Lines, root: Path,
                errors: list[DreamError]) -> dict[str, Any]:
    """Resolve ``src`` against the file that wrote it, keep it inside the project
    (dream/recipe/paths.py), and check that it exists; refuse a ``symlink`` whose relative
    target climbs above the image root from ``dest`` (dream could not use the image as a base)."""
    item = dict(item)
    if item.get("dest", "").strip("/") == "" and "src" not in item and "directory" not in item:
        errors.append(DreamError("a file or symlink cannot replace the image root: name a path below /",
                                 location_of(lines, at + ("dest",)), dotted(at + ("dest",))))
    elif "symlink" in item:
        why = climbing_symlink(item["dest"], item["symlink"])
        if why is not None:
            errors.append(DreamError(why, location_of(lines, at + ("symlink",)), dotted(at + ("symlink",))))
    if "src" in item:
        try:
            source = host_path(lines, at + ("src",), item["src"], root)
        except DreamError as exc:
            errors.append(exc)
            return item
        if not facts.exists(source):
            errors.append(DreamError(f"no such file or directory: {item['src']}",
                                     location_of(lines, at + ("src",)), dotted(at + ("src",))))
        item["src"] = str(source)
    return item
