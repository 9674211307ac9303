"""Every module of dream imports, and every outside package it imports is declared in
pyproject.toml: an undeclared import would pass here only where someone installed it by hand,
so this also runs in tools/test.sh's fresh virtual environment."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import pkgutil
import re
import sys
import tomllib
from pathlib import Path

import pytest

import dream

REPO = Path(__file__).resolve().parents[2]
MODULES = sorted(m.name for m in pkgutil.walk_packages(dream.__path__, "dream."))


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    """The dependencies and the extras' (an optional import, such as `inspect`'s drawsvg, is
    declared in its extra; the `test` extra is not for dream's own code)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = [spec for name, specs in project.get("optional-dependencies", {}).items() if name != "test"
              for spec in specs]
    return {_normalized(re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0]) for spec in project["dependencies"] + extras}


@pytest.mark.parametrize("module", MODULES)
def test_every_module_imports(module: str) -> None:
    importlib.import_module(module)


def test_every_outside_import_is_a_declared_dependency() -> None:
    distributions = importlib.metadata.packages_distributions()
    declared = _declared()
    undeclared = set()
    for path in Path(dream.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                     else [])
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "dream":
                    continue
                owners = {_normalized(d) for d in distributions.get(top, [top])}
                if not owners & declared:
                    undeclared.add(f"{path.relative_to(REPO)}: {top} ({', '.join(sorted(owners))})")
    assert not undeclared, "imports that pyproject.toml does not declare: " + "; ".join(sorted(undeclared))
