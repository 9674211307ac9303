"""Containment: the one rule that decides whether a path written in a recipe may be used.

Two kinds of paths appear in recipes:

* **Source paths** name host files dream reads: ``files[].src`` (files and home layers),
  ``config_files[].src`` and ``imports`` written as paths. They are relative to the YAML file
  that writes them and must stay, after resolution, inside the project (the directory holding
  ``dodo.py``); a preset shipped with dream may also name files in dream's own preset folder.
* **Runtime paths** name places below a deployment's root (the project on the host, ``/`` in an
  image): ``volumes[].path``, ``env_files``, ``log_file``, ``log_dir``; and
  ``config_files[].path`` below the service's config folder. They must be relative and stay
  strictly below that root.

For both: an absolute path is refused (there is no opt-in: copy the file into the project), a
``..`` may climb only as long as the result stays inside, and symlinks are resolved, so a link
inside the project that points out of it is refused too. `contain` is that decision; the
supervisor (a standard-library package of its own, copied into images) repeats the last check
before it wipes a volume.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from dream.presets import PRESET_DIR
from dream.recipe import facts


class PathRefused(ValueError):
    """A recipe path that leaves where it may point; the message is for the user."""


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def lexically_below(value: str) -> bool:
    """``value`` is relative and, with ``.`` and ``..`` folded, names something strictly below
    its base (``a/../b`` yes; ``.``, ``a/..``, ``../x`` no)."""
    if not value or os.path.isabs(value):
        return False
    folded = os.path.normpath(value)
    return folded != "." and folded != ".." and not folded.startswith("../")


def contain(value: str, base: Path, roots: Sequence[Path], where: str = "the project",
            allow_root: bool = True) -> Path:
    """``value`` resolved against ``base`` (symlinks followed), if it stays inside one of
    ``roots``; else `PathRefused` saying why. ``allow_root=False`` also refuses a root itself."""
    if "\0" in value:
        raise PathRefused("must not contain a NUL character")
    if os.path.isabs(value):
        raise PathRefused(f"must be a relative path inside {where}, not an absolute one")
    roots = [facts.resolve(root) for root in roots]
    candidate = base / value
    lexical = Path(os.path.normpath(candidate))
    try:
        resolved = facts.resolve(candidate)
    except (OSError, RuntimeError) as exc:  # a symlink loop (RuntimeError before Python 3.13)
        raise PathRefused(f"cannot be resolved ({getattr(exc, 'strerror', None) or exc})") from None
    if not any(_inside(resolved, root) for root in roots):
        if any(_inside(lexical, root) for root in roots):
            raise PathRefused(f"leaves {where} through a symlink (resolves to {resolved})")
        raise PathRefused(f"leaves {where} (resolves to {resolved})")
    if not allow_root and resolved in roots:
        raise PathRefused(f"must name something below {where}, not {where} itself")
    return resolved


def source_roots(yaml_file: Path, project: Path) -> tuple[Path, ...]:
    """Where a source path written in ``yaml_file`` may point: the project, and for a preset
    shipped with dream also the preset folder (presets name their dotfiles and scripts)."""
    if facts.resolve(yaml_file).is_relative_to(PRESET_DIR):
        return (project, PRESET_DIR)
    return (project,)


def source_path(value: str, yaml_file: Path, project: Path) -> Path:
    """A host file or directory a recipe reads, resolved against the YAML file that names it."""
    return contain(value, yaml_file.parent, source_roots(yaml_file, project))


def runtime_path(value: str, root: Path, where: str = "the deployment's root") -> str:
    """A path below a deployment's root: checked lexically (it must hold for ``/`` in an image
    too) and against ``root`` on this host (no symlink out of it); returned as written."""
    if "\0" not in value and not os.path.isabs(value) and not lexically_below(value):
        raise PathRefused(f"must name something below {where} (got {value!r})")
    contain(value, root, (root,), where, allow_root=False)
    return value
