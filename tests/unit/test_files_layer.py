"""`files` layers: excludes, modes, owners, links; keys depend on content, not host paths."""

from __future__ import annotations

import os
from pathlib import Path

from dream.builders.base import BuildContext
from dream.builders.files import FilesBuilder
from dream.errors import Location
from dream.recipe.model import LayerSpec, Recipe


def context(items: list[dict]) -> BuildContext:  # type: ignore[type-arg]
    layer = LayerSpec("l", "files", items, "", Location("r.yaml"))
    recipe = Recipe(Path("r.yaml"), "r.yaml", "r", {}, [layer])
    return BuildContext(recipe, layer, None, None)  # type: ignore[arg-type]


def app(root: Path) -> Path:
    (root / "pkg" / "__pycache__").mkdir(parents=True)
    (root / "pkg" / "__pycache__" / "m.pyc").write_bytes(b"x")
    (root / "pkg" / "m.py").write_text("print(1)\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o700)
    os.symlink("run.sh", root / "start")
    return root


def test_excludes_match_names_at_any_depth_and_paths(tmp_path: Path) -> None:
    src = app(tmp_path / "a")
    tree = FilesBuilder().tree(context([{"dest": "/app", "src": str(src), "exclude": ["__pycache__", "pkg/m.py"]}]))
    assert sorted(tree.entries) == ["app", "app/pkg", "app/run.sh", "app/start"]


def test_modes_normalized_owner_applied_links_kept(tmp_path: Path) -> None:
    src = app(tmp_path / "a")
    tree = FilesBuilder().tree(context([{"dest": "/app", "src": str(src), "exclude": [], "owner": "1000:100"}]))
    run, start, module = tree.get("app/run.sh"), tree.get("app/start"), tree.get("app/pkg/m.py")
    assert (run.mode, run.uid, run.gid) == (0o755, 1000, 100)  # type: ignore[union-attr]
    assert module.mode == 0o644 and start.kind == "symlink" and start.link == "run.sh"  # type: ignore[union-attr]


def test_key_ignores_host_location_but_not_content(tmp_path: Path) -> None:
    first, second = app(tmp_path / "a"), app(tmp_path / "elsewhere" / "b")
    key = lambda src: FilesBuilder().key_inputs(context([{"dest": "/app", "src": str(src), "exclude": []}]))  # noqa: E731
    assert key(first) == key(second)
    (second / "pkg" / "m.py").write_text("print(2)\n")
    assert key(first) != key(second)
