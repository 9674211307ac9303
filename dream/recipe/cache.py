"""Validated recipes kept between runs, so that a no-op build parses no YAML and runs no cerberus.

Every doit command loads every recipe; reading the YAML with its lines, merging the imports and
validating with cerberus cost most of a no-op `doit build`. `load_cached` keeps each recipe's
normalized `Recipe` in ``<cache_dir>/<key>.pickle`` together with the facts its load rests on
(dream/recipe/facts.py): the sha256 of every YAML file read (the recipe and each imported module
or preset), every path resolved or tested on the way (import look-ups in ``layers/`` and the
presets, ``src`` and ``ca_file`` paths, containment checks) and every ``config_files`` text read
into the model. A cached model is used only when

- the file was written by this dream: `identity` hashes the source of every module the recipe
  layer may import (its own and the ``oci``, ``supervisor``, ``base`` and ``errors`` layers of
  docs/architecture.md), dream's version, the Python version, and the source of cerberus and
  PyYAML, so an edited, upgraded or reinstalled dream or library misses;
- its own sha256 matches (a truncated or damaged file is a miss, never an error, and is never
  unpickled); and
- asking the filesystem every noted question again gives every noted answer.

Otherwise the recipe is loaded afresh (`load_recipe`). A recipe with errors raises them and
writes nothing, so it is validated again on every run and prints the same lines; a load during
which the same question got two answers (the tree changed under it) is not kept either. Files
are written by temp-and-rename; a cache that cannot be written is skipped silently (it only
saves time). The folder is the project's own state (``.dream/``): whoever can write there can
as well edit the project's dodo.py, so the pickle adds no way in.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from dream.presets import PRESET_DIR
from dream.recipe import facts
from dream.recipe.model import Recipe

FORMAT = b"dream recipe cache 1\n"
SUFFIX = ".pickle"
# The recipe layer and every layer it may import (docs/architecture.md): its model is a
# function of these modules' source. tests/unit/test_recipe_cache.py checks that they cover
# what the recipe modules import.
IDENTITY_FOLDERS = ("recipe", "oci", "supervisor", "presets")
IDENTITY_FILES = ("__init__.py", "errors.py", "progress.py", "workdirs.py", "download_cache.py")
LIBRARIES = ("cerberus", "yaml")  # they parse, validate and normalize: their code is identity too
PACKAGE = Path(__file__).resolve().parent.parent  # dream/ (its __init__.py holds the version)


def identity_sources() -> list[tuple[str, Path]]:
    """The Python files whose source is part of `identity`, each with the name it is hashed
    under (relative to its package, so a copied tree is the same dream), in a fixed order."""
    found = [(name, PACKAGE / name) for name in IDENTITY_FILES]
    for folder in IDENTITY_FOLDERS:
        found += [(str(path.relative_to(PACKAGE)), path) for path in sorted((PACKAGE / folder).rglob("*.py"))]
    for library in LIBRARIES:
        spec = find_spec(library)
        if spec is not None and spec.origin:
            found += [(f"{library}/{path.name}", path) for path in sorted(Path(spec.origin).parent.glob("*.py"))]
        else:
            found.append((f"{library}: not installed", Path(library)))
    return found


@lru_cache(maxsize=1)
def identity() -> str:
    """This dream's fingerprint: the Python running it, where its presets are (a preset's
    path is shown absolute), and the source of the code a recipe's model comes from, dream's
    version (dream/__init__.py) included."""
    digest = hashlib.sha256(FORMAT)
    for part in (sys.version, sys.implementation.cache_tag, str(PRESET_DIR)):
        digest.update(part.encode() + b"\0")
    for name, path in identity_sources():
        try:
            body = path.read_bytes()
        except OSError as exc:  # a vanished module: a fingerprint no cache file will carry
            body = f"unreadable: {exc.strerror}".encode()
        digest.update(f"{name}\0{len(body)}\0".encode() + body)
    return digest.hexdigest()


def cache_file(cache_dir: Path, path: Path, root: Path) -> Path:
    """Where the cached model of the recipe at ``path`` in the project at ``root`` lives."""
    name = hashlib.sha256(f"{root}\0{path}".encode()).hexdigest()[:32]
    return cache_dir / f"{name}{SUFFIX}"


def read_cached(file: Path, path: Path, root: Path) -> Recipe | None:
    """The model in ``file`` if it is whole, this dream's, and every fact under it still holds;
    else None (whatever is wrong with the file)."""
    try:
        blob = file.read_bytes()
    except OSError:
        return None
    header = len(FORMAT) + 64 + 1
    if not blob.startswith(FORMAT) or len(blob) < header:
        return None
    expected, payload = blob[len(FORMAT):header - 1], blob[header:]
    if hashlib.sha256(payload).hexdigest().encode() != expected:
        return None
    try:
        entry = pickle.loads(payload)
        if (not isinstance(entry, dict) or entry.get("identity") != identity()
                or entry.get("root") != str(root) or entry.get("path") != str(path)):
            return None
        recipe = entry["recipe"]
        if not isinstance(recipe, Recipe) or not facts.still_true(entry["facts"]):
            return None
    except Exception:  # a damaged or foreign file is a miss, never an error
        return None
    return recipe


def write_cached(file: Path, path: Path, root: Path, recipe: Recipe, noted: dict[Any, Any]) -> None:
    """Keep ``recipe`` and the facts it rests on in ``file`` (temp-and-rename); give up quietly."""
    try:
        payload = pickle.dumps({"identity": identity(), "root": str(root), "path": str(path),
                                "facts": noted, "recipe": recipe}, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # a value pickle cannot hold: load it afresh next time
        return
    blob = FORMAT + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload
    temporary = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    try:
        file.parent.mkdir(exist_ok=True)
        temporary.write_bytes(blob)
        temporary.replace(file)
    except OSError:
        try:
            temporary.unlink(missing_ok=True)
        except OSError:
            pass


def load_cached(path: Path, root: Path, cache_dir: Path) -> Recipe:
    """`load_recipe` (same model, same errors), from ``cache_dir`` when nothing it rests on
    changed. ``cache_dir``'s parent must exist for a model to be kept (it is never created)."""
    file = cache_file(cache_dir, path, root)
    recipe = read_cached(file, path, root)
    if recipe is not None:
        return recipe
    from dream.recipe.load import load_recipe  # YAML and cerberus: only when a file changed
    with facts.Recorder() as recorder:
        recipe = load_recipe(path, root)
    if recorder.stable and cache_dir.parent.is_dir():
        write_cached(file, path, root, recipe, recorder.facts)
    return recipe
