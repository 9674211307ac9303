"""The presets that ship with dream: YAML modules a recipe imports by name
(``imports: [sshd, cuda-12]``), with the files they name (dotfiles, start scripts).

They live in the package, not in a project, so that a project of the user's own finds them after
a plain ``pip install``; a project's own ``layers/<name>.yaml`` comes first (see
dream/recipe/load.py). Paths inside a preset resolve against the preset's own file, wherever the
package is installed.
"""

from __future__ import annotations

from pathlib import Path

PRESET_DIR = Path(__file__).resolve().parent


def names() -> list[str]:
    """Every shipped preset's import name, sorted."""
    return sorted(path.stem for path in PRESET_DIR.glob("*.yaml"))
